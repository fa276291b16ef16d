"""Which Kafka source `ffs stream` uses, and the options it gives Spark's own connector.
The connector jar cannot be downloaded on these machines, so Spark is stood in for by a
recorder of the builder calls; the Python source itself runs for real in
tests/integration/test_stream_kill.py."""

from __future__ import annotations

import pytest

from ffs.config import Secret, load_config
from ffs.errors import ConfigError
from jobs import stream


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
    def __init__(self, has_jar: bool):
        self.calls: list = []
        self.has_jar = has_jar
        self.readStream = _Reader(self.calls)
        spark = self

        class _Class:
            @staticmethod
            def forName(name):
                if not spark.has_jar:
                    raise RuntimeError(f"ClassNotFoundException: {name}")

        class _Lang:
            Class = _Class

        class _Java:
            lang = _Lang

        class _Jvm:
            java = _Java

        self._jvm = _Jvm

        class _Sources:
            def register(self, cls):
                spark.calls.append(("register", cls.name()))

        self.dataSource = _Sources()


def _cfg():
    cfg = load_config(env={})
    cfg.kafka.bootstrap_servers = "k1:9093,k2:9093"
    return cfg


def test_without_the_connector_jar_the_python_source_reads_by_offset():
    spark, cfg = _Spark(has_jar=False), _cfg()
    stream._source(spark, cfg, lambda _line: None)
    calls = dict(c for c in spark.calls if c[0] not in ("register",))
    assert ("register", "ffs_kafka") in spark.calls
    assert calls["format"] == "ffs_kafka"
    assert calls["topics"] == "ffs.labels,ffs.transactions"  # labels snapshot first
    assert calls["max_events_per_batch"] == str(cfg.stream.max_events_per_batch)


def test_with_the_jar_the_connector_gets_sasl_ssl_settings(monkeypatch):
    import pyspark.sql.functions as F

    monkeypatch.setattr(F, "expr", lambda text: _Alias(text))
    spark, cfg = _Spark(has_jar=True), _cfg()
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
    assert calls["kafka.ssl.ca.location"] == "/etc/ca.pem"
    assert calls["maxOffsetsPerTrigger"] == str(cfg.stream.max_events_per_batch)
    jaas = calls["kafka.sasl.jaas.config"]
    assert "ScramLoginModule" in jaas and 'username="svc"' in jaas and "s3cr3t" in jaas
    assert not any(key.startswith("kafka.sasl.password") or key == "kafka.sasl.username"
                   for key in calls)  # librdkafka names, meaningless to the Java client


class _Alias:
    def __init__(self, text):
        self.text = text

    def alias(self, name):
        return f"{self.text} AS {name}"


def test_an_unknown_source_kind_is_a_config_error():
    cfg = _cfg()
    cfg.stream.source = "carrier-pigeon"
    with pytest.raises(ConfigError, match="auto, native or python"):
        stream._source(_Spark(has_jar=False), cfg, lambda _line: None)


def test_the_stream_refuses_to_start_without_a_broker_address():
    cfg = load_config(env={})
    with pytest.raises(ConfigError, match="ffs broker"):
        stream.StreamJob(cfg)
