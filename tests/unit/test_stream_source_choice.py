"""The options `ffs stream` gives Spark's Kafka connector for SASL/TLS clusters (the Java
client's names, not librdkafka's), recorded from the builder calls; the connector itself runs
for real against Apache Kafka in tests/integration/test_stream_kill.py."""

from __future__ import annotations

import pytest

from ffs.config import Secret, load_config
from ffs.errors import ConfigError, TerminalError
from ffs.jobs.stream import job as stream


class _Reader:
    def __init__(self, log):
        self.log = log

    def format(self, name):
        self.log.append(("format", name))
        return self

    def option(self, key, value):
        self.log.append((key, value))
        return self

    def load(self):
        return self

    def select(self, *cols):
        self.log.append(("select", len(cols)))
        return self


class _Spark:
    """Records the reader's builder calls; whether the connector is there is patched in."""

    def __init__(self):
        self.calls: list = []
        self.readStream = _Reader(self.calls)


def _with_connector(monkeypatch, present: bool) -> _Spark:
    monkeypatch.setattr(stream, "native_kafka_available", lambda spark: present)
    return _Spark()


def _cfg():
    cfg = load_config(env={})
    cfg.kafka.bootstrap_servers = "k1:9093,k2:9093"
    return cfg


def test_without_the_connector_jar_the_stream_says_how_to_get_it(monkeypatch):
    with pytest.raises(TerminalError, match="make setup"):
        stream._source(_with_connector(monkeypatch, False), _cfg(), lambda _line: None)


def test_with_the_jar_the_connector_gets_sasl_ssl_settings(monkeypatch):
    import pyspark.sql.functions as F

    monkeypatch.setattr(F, "expr", lambda text: _Alias(text))
    spark, cfg = _with_connector(monkeypatch, True), _cfg()
    k = cfg.kafka
    k.security_protocol, k.sasl_mechanism = "SASL_SSL", "SCRAM-SHA-512"
    k.sasl_username, k.sasl_password = "svc", Secret("s3cr3t")
    k.ssl_ca_location = "/etc/ca.pem"
    stream._source(spark, cfg, lambda _line: None)
    calls = dict(c for c in spark.calls)
    assert calls["format"] == "kafka"
    assert calls["subscribe"] == "ffs.labels,ffs.transactions"
    assert calls["kafka.bootstrap.servers"] == "k1:9093,k2:9093"
    assert calls["kafka.security.protocol"] == "SASL_SSL"
    assert calls["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert calls["kafka.ssl.truststore.type"] == "PEM"  # librdkafka's CA file, Java's name
    assert calls["kafka.ssl.truststore.location"] == "/etc/ca.pem"
    assert calls["maxOffsetsPerTrigger"] == str(cfg.stream.max_events_per_batch)
    jaas = calls["kafka.sasl.jaas.config"]
    assert "ScramLoginModule" in jaas and 'username="svc"' in jaas and "s3cr3t" in jaas
    librdkafka_only = ("kafka.sasl.password", "kafka.sasl.username", "kafka.ssl.ca.location",
                       "kafka.log.connection.close")
    assert not any(key in librdkafka_only for key in calls)  # unknown to the Java client


class _Alias:
    def __init__(self, text):
        self.text = text

    def alias(self, name):
        return f"{self.text} AS {name}"


def test_the_stream_refuses_to_start_without_a_broker_address():
    cfg = load_config(env={})
    with pytest.raises(ConfigError, match="ffs broker"):
        stream.StreamJob(cfg)


def test_the_source_waits_briefly_for_kafka_fetches_unless_told_otherwise(monkeypatch):
    import pyspark.sql.functions as F

    monkeypatch.setattr(F, "expr", lambda text: _Alias(text))
    spark, cfg = _with_connector(monkeypatch, True), _cfg()
    stream._source(spark, cfg, lambda _line: None)
    assert dict(spark.calls)["kafka.fetch.max.wait.ms"] == "50"
    spark, cfg.stream.fetch_max_wait_ms = _Spark(), 0  # 0: the Java client's own default
    stream._source(spark, cfg, lambda _line: None)
    assert "kafka.fetch.max.wait.ms" not in dict(spark.calls)


class _Conf:
    def __init__(self):
        self.values: dict = {}

    def set(self, key, value):
        self.values[key] = value


@pytest.mark.parametrize("checkpoint, file_system_logs", [
    ("data/stream/checkpoint", True), ("/checkpoint/stream", True),
    ("file:///var/ffs/checkpoint", True), ("file:/var/ffs/checkpoint", True),
    ("hdfs://nn:8020/ffs/checkpoint", False), ("hdfs:/ffs/checkpoint", False),
    ("s3a://bucket/ffs/checkpoint", False)])
def test_only_a_local_checkpoint_writes_its_logs_through_the_file_system_api(
        checkpoint, file_system_logs):
    class Session:
        conf = _Conf()

    stream._local_checkpoint_logs(Session, checkpoint)
    chosen = Session.conf.values.get("spark.sql.streaming.checkpointFileManagerClass")
    assert (chosen == stream._FILE_SYSTEM_LOGS) is file_system_logs
