"""Issue 10, defect 3: the stream's results depend on the events only, never on how the backlog
is cut into micro-batches, and `ffs consistency` sees it when they do not.

Before: read in one batch or in small batches with restarts, the same topic contents kept
different payments for a conflicting duplicate transaction_id (event-time order inside a
batch, arrival order across batches), the first batch (no watermark yet) accepted a years-old
event that later batches refused as beyond_retention, the stream applied a label stamped
before its transaction, and the consistency check said CONSISTENT for both runs (it trusted the
stream's own dead letters)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import redis

from ffs.bus import kafka
from ffs.bus import messages as M
from ffs.bus.producer import EventProducer
from ffs.config import Config, IdsConfig, KafkaConfig
from ffs.jobs.stream.batch import BatchProcessor
from ffs.jobs.tools.consistency import check
from ffs.online.redis_server import RedisServer

pytestmark = pytest.mark.redis

DAY = 86_400
T0 = 1_735_689_600  # 2025-01-01T00:00:00Z


def _contents() -> list[tuple[str, str, bytes]]:
    """(topic kind, key, value) in publish order: ordinary traffic of 6 customers over 10
    days, and the cases whose fate used to depend on batching."""
    rng = np.random.default_rng(11)
    out = []
    times = np.sort(rng.integers(T0, T0 + 10 * DAY, 160))
    for i, t in enumerate(times):
        cid = int(rng.integers(1, 7))
        tx = {"transaction_id": 1000 + i, "customer_id": cid,
              "terminal_id": int(rng.integers(1, 5)), "event_timestamp": M.iso(int(t)),
              "amount": round(float(rng.uniform(1, 90)), 2)}
        out.append(("tx", str(cid), M.transaction_message(tx)))
        if i % 4 == 0:
            out.append(("label", str(1000 + i), M.label_message(
                {"transaction_id": 1000 + i, "is_fraud": int(i % 8 == 0),
                 "label_timestamp": M.iso(int(t) + 600)})))
        if i == 30:  # a conflicting copy of this payment, stamped 10 minutes earlier
            copy = {**tx, "amount": 999.0, "event_timestamp": M.iso(int(t) - 600)}
            out.append(("tx", str(cid), M.transaction_message(copy)))
        if i == 60:  # a payment from two years before, after newer ones on its partition
            old = {"transaction_id": 7, "customer_id": cid, "terminal_id": 1,
                   "event_timestamp": M.iso(T0 - 700 * DAY), "amount": 5.0}
            out.append(("tx", str(cid), M.transaction_message(old)))
        if i == 81:  # a label stamped a minute before its payment
            out.append(("label", str(1000 + i), M.label_message(
                {"transaction_id": 1000 + i, "is_fraud": 1,
                 "label_timestamp": M.iso(int(t) - 60)})))
    return out


@pytest.fixture(scope="module")
def topics(kafka_broker):
    """The input topics, published once; each run gets its own output topics and Redis."""
    base = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers, partitions=3,
                       transactions_topic="determinism.tx", labels_topic="determinism.labels")
    kafka.ensure_topics(base, [base.transactions_topic, base.labels_topic])
    with EventProducer(base, validate=False) as bus:
        for kind, key, value in _contents():
            topic = base.transactions_topic if kind == "tx" else base.labels_topic
            bus.send_raw(topic, key, value, timestamp_ms=T0 * 1000)
        bus.flush()
    records = sorted(list(kafka.read_all(base, base.transactions_topic))
                     + list(kafka.read_all(base, base.labels_topic)),
                     key=lambda r: (r.topic, r.partition, r.offset))
    return base, records


def _run(topics, name: str, batch_size: int | None, server: RedisServer,
         order=None) -> tuple[Config, dict]:
    """Process the topics with its own dead-letter and enriched topics and Redis db, in one
    batch or in batches of `batch_size` messages per partition, with a new processor (a
    restart) for every batch. Returns the config and the online state."""
    base, records = topics
    cfg = Config()
    cfg.ids = IdsConfig()
    cfg.kafka = dataclasses.replace(base, enriched_topic=f"determinism.{name}.enriched",
                                    dead_letter_topic=f"determinism.{name}.dead")
    cfg.redis.url = server.url
    cfg.redis.prefix = f"run{name}"
    kafka.ensure_topics(cfg.kafka, [cfg.kafka.enriched_topic, cfg.kafka.dead_letter_topic])
    conn = redis.Redis.from_url(server.url)
    out = EventProducer(cfg.kafka, validate=False)
    by_partition: dict[tuple[str, int], list] = {}
    for r in records:
        by_partition.setdefault((r.topic, r.partition), []).append(r)
    if batch_size is None:
        batches = [records]
    else:  # as Spark's maxOffsetsPerTrigger slices a backlog: a little of every partition
        longest = max(len(v) for v in by_partition.values())
        batches = [[r for v in by_partition.values() for r in v[i:i + batch_size]]
                   for i in range(0, longest, batch_size)]
    for batch_id, batch in enumerate(batches):
        proc = BatchProcessor(cfg, conn, out.send_raw, out.flush)
        if order is not None:
            proc._write_order = order
        rows = {"topic": [r.topic for r in batch], "partition": [r.partition for r in batch],
                "offset": [r.offset for r in batch], "key": [r.key for r in batch],
                "value": [r.value for r in batch], "timestamp_ms": [r.timestamp_ms for r in batch]}
        proc.process(batch_id, rows)
    out.close()
    state = {k: _dump(conn, k) for k in conn.scan_iter(match=f"{cfg.redis.prefix}:*")
             if b":stream:" not in k}
    conn.close()
    return cfg, {k.split(b":", 1)[1]: v for k, v in state.items()}


def _dump(conn, key):
    kind = conn.type(key)
    if kind == b"zset":
        return conn.zrange(key, 0, -1, withscores=True)
    if kind == b"string":
        return conn.get(key)
    return conn.dump(key)


def _dead(cfg: Config) -> dict:
    import json

    return {(d["source_topic"], d["partition"], d["offset"]): d["reason"] for d in
            (json.loads(r.value) for r in kafka.read_all(cfg.kafka, cfg.kafka.dead_letter_topic))}


def test_one_batch_and_small_batches_with_restarts_keep_the_same_events(topics):
    with RedisServer() as server:
        one_cfg, one = _run(topics, "one", None, server)
        small_cfg, small = _run(topics, "small", 4, server)
        assert one == small
        dead = _dead(one_cfg)
        assert dead == _dead(small_cfg)
        reasons = sorted(dead.values())
        assert reasons == sorted([M.CONFLICT, M.BEYOND_RETENTION, M.LABEL_BEFORE_TRANSACTION])
        for cfg in (one_cfg, small_cfg):
            report = check(cfg, samples=300, log=lambda _: None)
            assert report.ok, report.lines()
            assert report.decisions.messages == len(topics[1]) and report.excluded == 3


def test_consistency_sees_a_stream_whose_winner_depends_on_the_batch(topics):
    """The old write order (event time first) kept the earlier-stamped conflicting copy when
    both copies were in one batch: the check must report it, not CONSISTENT."""

    def by_event_time(txs):
        txs.sort(key=lambda pair: pair[0].t)

    with RedisServer() as server:
        cfg, _state = _run(topics, "old", None, server, order=by_event_time)
        report = check(cfg, samples=300, log=lambda _: None)
    assert not report.ok
    assert report.decisions.by_kind == {"accepted -> conflicting_duplicate": 1,
                                        "conflicting_duplicate -> accepted": 1}
    assert "INCONSISTENT" in report.lines()[-1]
