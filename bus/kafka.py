"""Kafka clients from config: connection settings (SASL/TLS included), topic creation,
offset-range reads by assigned partition (the stream keeps its offsets in Spark's checkpoint
and the analytics store in its own database, so neither needs a group), watermarks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ffs.config import KafkaConfig
from ffs.errors import ConfigError, TransientError


def client_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings. The only place the SASL password is revealed; never log this."""
    if not cfg.bootstrap_servers:
        raise ConfigError("kafka.bootstrap_servers is empty: start the embedded broker "
                          "(bus.broker.LocalKafka) or set FFS_KAFKA_BOOTSTRAP_SERVERS")
    s: dict[str, Any] = {"bootstrap.servers": cfg.bootstrap_servers,
                            "security.protocol": cfg.security_protocol,
                            # idle connections closed by the broker are normal, not news
                            "log.connection.close": False}
    if cfg.sasl_mechanism:
        s["sasl.mechanism"] = cfg.sasl_mechanism
        if cfg.sasl_username is None or cfg.sasl_password is None:
            raise ConfigError(f"kafka.sasl_mechanism={cfg.sasl_mechanism} needs "
                              f"kafka.sasl_username and kafka.sasl_password")
        s["sasl.username"] = cfg.sasl_username
        s["sasl.password"] = cfg.sasl_password.reveal()
    if cfg.ssl_ca_location:
        s["ssl.ca.location"] = cfg.ssl_ca_location
    return s


class _DropStartupNoise(logging.Filter):
    """A broker that has just started answers "coordinator load in progress" to a producer's
    first idempotence handshake, and librdkafka warns while it retries: expected, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Coordinator load in progress" not in record.getMessage()


_client_log = logging.getLogger("ffs.kafka.client")
_client_log.addFilter(_DropStartupNoise())


def topics(cfg: KafkaConfig) -> list[str]:
    return [cfg.transactions_topic, cfg.labels_topic, cfg.enriched_topic,
            cfg.dead_letter_topic]


def admin(cfg: KafkaConfig):
    from confluent_kafka.admin import AdminClient

    return AdminClient(client_settings(cfg))


def ensure_topics(cfg: KafkaConfig, names: list[str] | None = None,
                  timeout_s: float = 15.0) -> list[str]:
    """Create the topics that do not exist (cfg.partitions each); returns those created."""
    from confluent_kafka.admin import NewTopic

    names = names or topics(cfg)
    client = admin(cfg)
    try:
        existing = set(client.list_topics(timeout=timeout_s).topics)
    except Exception as exc:
        raise TransientError(f"Kafka at {cfg.bootstrap_servers} did not answer: {exc}") from None
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = client.create_topics([NewTopic(n, cfg.partitions, 1) for n in missing])
    for name, fut in futures.items():
        try:
            fut.result(timeout_s)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # a concurrent creator won: fine
                raise TransientError(f"creating topic {name!r} failed: {exc}") from None
    _wait_for_topics(client, missing, timeout_s)
    return missing


def _wait_for_topics(client, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = client.list_topics(timeout=timeout_s).topics
        # created is not ready: a real Kafka elects each partition's leader a moment later
        if all(n in md and md[n].partitions and all(
                p.leader >= 0 and p.error is None for p in md[n].partitions.values())
               for n in names):
            return
        time.sleep(0.05)
    raise TransientError(f"topics {names} did not appear within {timeout_s:.0f} s")


def producer(cfg: KafkaConfig, **extra):
    from confluent_kafka import Producer

    settings = client_settings(cfg)
    # batching for throughput; idempotence keeps each partition in send order through
    # retries (without it a batch retried after a leader change lands behind later ones:
    # seen on the first sends after a topic is created) and implies acks=all
    settings.update({"linger.ms": 5, "batch.num.messages": 10000,
                     "queue.buffering.max.messages": 1_000_000,
                     "queue.buffering.max.kbytes": 1_048_576, "enable.idempotence": True,
                     "logger": _client_log})
    settings.update(extra)
    return Producer(settings)


def consumer(cfg: KafkaConfig, **extra):
    from confluent_kafka import Consumer

    settings = client_settings(cfg)
    settings.update({"group.id": "ffs-reader", "enable.auto.commit": False,
                     "enable.partition.eof": True, "auto.offset.reset": "earliest",
                     "fetch.wait.max.ms": 50})
    settings.update(extra)
    return Consumer(settings)


def partitions(cfg: KafkaConfig, topic: str, timeout_s: float = 10.0, client=None) -> list[int]:
    """client: an existing consumer or admin client to ask (saves a connection)."""
    md = (client or admin(cfg)).list_topics(topic, timeout=timeout_s).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        raise TransientError(f"topic {topic!r} not found on {cfg.bootstrap_servers}")
    return sorted(md.partitions)


def watermarks(cfg: KafkaConfig, topic_names: list[str], cons=None,
               timeout_s: float = 10.0) -> dict[str, tuple[int, int]]:
    """{"topic:partition": (low, high)} for every partition of the topics."""
    from confluent_kafka import TopicPartition

    own = cons is None
    cons = cons or consumer(cfg)
    try:
        out = {}
        for topic in topic_names:
            for p in partitions(cfg, topic, timeout_s, cons):
                out[f"{topic}:{p}"] = _watermark(cons, TopicPartition(topic, p), timeout_s)
        return out
    finally:
        if own:
            cons.close()


def _watermark(cons, tp, timeout_s: float) -> tuple[int, int]:
    """Retries while a partition's leadership settles (just created, or a broker restarted):
    Kafka answers NOT_LEADER / LEADER_NOT_AVAILABLE for a moment, which is not an error."""
    from confluent_kafka import KafkaError, KafkaException

    settling = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return cons.get_watermark_offsets(tp, timeout=timeout_s)
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in settling) or time.monotonic() > deadline:
                raise TransientError(f"{tp.topic}:{tp.partition}: {err.str()}") from None
            time.sleep(0.05)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_range(cfg: KafkaConfig, topic: str, partition: int, start: int, end: int,
               cons=None, timeout_s: float = 30.0) -> Iterator[Record]:
    """Messages with start <= offset < end of one partition, in order."""
    from confluent_kafka import KafkaError, TopicPartition

    if end <= start:
        return
    own = cons is None
    cons = cons or consumer(cfg)
    try:
        cons.assign([TopicPartition(topic, partition, start)])
        next_offset, deadline = start, time.monotonic() + timeout_s
        while next_offset < end:
            msgs = cons.consume(num_messages=min(10000, end - next_offset), timeout=0.5)
            if not msgs and time.monotonic() > deadline:
                raise TransientError(f"{topic}:{partition}: no data at offset {next_offset} "
                                     f"(wanted up to {end}) within {timeout_s:.0f} s")
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise TransientError(f"{topic}:{partition}: {err}")
                off = m.offset()
                if off >= end:
                    next_offset = end
                    break
                deadline = time.monotonic() + timeout_s
                next_offset = off + 1
                ts = m.timestamp()[1]
                yield Record(topic, partition, off, m.key(), m.value(), ts)
    finally:
        if own:
            cons.close()
        else:
            cons.unassign()


def read_all(cfg: KafkaConfig, topic: str) -> Iterator[Record]:
    """Everything a topic holds right now, partition by partition."""
    cons = consumer(cfg)
    try:
        for key, (lo, hi) in watermarks(cfg, [topic], cons).items():
            yield from read_range(cfg, topic, int(key.rsplit(":", 1)[1]), lo, hi, cons)
    finally:
        cons.close()
