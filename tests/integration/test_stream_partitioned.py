"""The stream's partitioned batch (jobs/stream/partitioned.py): tasks per Kafka partition,
run at once in threads, each with its own processor, against a real Redis. It must publish
the offline features and leave a state no read can tell from one process's, in order or
shuffled within the lateness, re-run or not; Spark's own tasks are the same functions
(tests/integration/test_stream_kill.py runs them on the real job)."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import pandas as pd
import pytest

from ffs.bus import messages as M
from ffs.jobs.stream import partitioned as P
from ffs.jobs.stream.batch import BatchProcessor
from tests.integration.test_stream_batch import (
    DAY,
    T0,
    Bus,
    mismatches,
    offline,
    private_redis,
    shuffled,
    snapshot,
    split,
    stream_data,
)

pytestmark = pytest.mark.redis


def split_rows(rows: dict[str, list]) -> list[dict[str, list]]:
    """A batch's rows by topic partition, as Spark's Kafka source hands them to its tasks."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i, tp in enumerate(zip(rows["topic"], rows["partition"], strict=True)):
        groups.setdefault(tp, []).append(i)
    return [{c: [rows[c][i] for i in idx] for c in P.COLUMNS} for idx in groups.values()]


class LocalTasks:
    """Tasks in threads over one batch split by partition, each with its own processor, as
    each executor has: Spark's tasks without a JVM. reverse: the tasks in reverse order."""

    def __init__(self, rows: dict[str, list], make_processor: Callable[[], BatchProcessor],
                 threads: int = 4, reverse: bool = False):
        self.parts = split_rows(rows)
        if reverse:
            self.parts.reverse()
        self.make_processor, self.threads = make_processor, threads

    def run(self, phase: str, plan: P.Plan, topic: str) -> list[dict]:
        # through JSON both ways, as the Spark tasks' plan and summaries go
        plan = P.Plan(**json.loads(json.dumps(asdict(plan))))
        fn = P.PHASES[phase]
        parts = [rows for rows in self.parts if rows["topic"][0] == topic]
        with ThreadPoolExecutor(self.threads) as pool:
            out = list(pool.map(lambda rows: fn(self.make_processor(), plan, rows), parts))
        return [json.loads(json.dumps(s)) for s in out]


@pytest.fixture()
def conn():
    yield from private_redis()


@pytest.fixture(scope="module")
def data():
    return stream_data()

PARTITIONS = 4


class Feed:
    """Raw Kafka rows over 4 partitions per topic, as the producer keys them (transactions by
    customer, labels by transaction id), offsets per partition in arrival order."""

    def __init__(self, partitions: int = PARTITIONS):
        self.offsets: dict[tuple[str, int], int] = {}
        self.n = partitions
        self.pin: dict[bytes, int] = {}  # key -> partition, where a test moves one

    def rows(self, events) -> dict[str, list]:
        cols = {c: [] for c in P.COLUMNS}
        now_ms = time.time_ns() // 1_000_000
        for e in events:
            topic, key, value = e[-3:]
            part = self.pin.get(key, zlib.crc32(key) % self.n)
            off = self.offsets.get((topic, part), 0)
            self.offsets[(topic, part)] = off + 1
            for c, v in zip(cols, (topic, part, off, key, value, now_ms), strict=True):
                cols[c].append(v)
        return cols


def partitions_of(cfg, n: int = PARTITIONS):
    return lambda: [f"{cfg.kafka.transactions_topic}:{p}" for p in range(n)]


def run(cfg, conn, events, n_batches=9, mode="partitioned", reverse=False, feed=None):
    bus = Bus()
    feed = feed or Feed()

    def make():
        return BatchProcessor(cfg, conn, bus.publish, bus.flush)

    driver = make()
    reports = []
    for b, batch in enumerate(split(events, n_batches)):
        rows = feed.rows(batch)
        if mode == "driver":
            reports.append(driver.process(b, rows))
        else:
            tasks = LocalTasks(rows, make, reverse=reverse)
            reports.append(P.PartitionedBatch(driver, partitions_of(cfg)).process(b, tasks))
    return bus, reports


def _labels(bus, cfg):
    return sorted((r["transaction_id"], r["is_fraud"], r["label_time_ms"])
                  for r in bus.enriched(cfg, "label"))


def test_in_order_tasks_publish_the_offline_features_and_one_process_state(conn, data,
                                                                          monkeypatch):
    cfg, tx, labels, expected, events = data
    one, one_reports = run(cfg, conn, events, mode="driver")
    one_state = snapshot(conn)
    conn.flushall()

    from ffs.online.writer import OnlineWriter

    tried, real = [], OnlineWriter.write_labels
    monkeypatch.setattr(OnlineWriter, "write_labels",
                        lambda self, labs: real(self, tried.extend(labs) or labs))
    bus, reports = run(cfg, conn, events)
    # labels run after the batch's transactions are written: none is tried twice
    assert len(tried) == len(labels)
    assert sum(r.written for r in reports) == len(tx)
    assert sum(r.n_dead for r in reports) == 0 and bus.dead(cfg) == []
    assert mismatches(bus.last_enriched(cfg), expected) == []
    assert snapshot(conn) == one_state
    assert _labels(bus, cfg) == _labels(one, cfg)
    assert sum(r.labels_written for r in reports) == len(labels)
    assert reports[-1].labels_waiting == 0
    assert [r.watermark for r in reports] == [r.watermark for r in one_reports]
    # every transaction enriched once in its own batch (corrections come on top)
    assert sum(r.enriched for r in reports) == len(tx)


@pytest.mark.parametrize("reverse", [False, True], ids=["tasks-in-order", "tasks-reversed"])
def test_shuffled_within_lateness_converges_to_the_same_rows_and_state(conn, data, reverse):
    cfg, _tx, labels, expected, events = data
    run(cfg, conn, events, mode="driver")
    in_order = snapshot(conn)
    conn.flushall()

    bus, reports = run(cfg, conn, shuffled(events, seed=5), reverse=reverse)
    assert bus.dead(cfg) == []
    assert sum(r.corrections for r in reports) > 0  # the correction path was exercised
    assert mismatches(bus.last_enriched(cfg), expected) == []
    assert snapshot(conn) == in_order
    assert conn.zcard(f"{cfg.redis.prefix}:stream:pending_labels") == 0
    want = sorted((r.transaction_id, int(r.is_fraud), int(r.label_t) * 1000)
                  for r in labels.itertuples(index=False))
    assert _labels(bus, cfg) == want


def test_without_the_drivers_corrections_late_events_leave_wrong_rows(conn, data, monkeypatch):
    """Proves the test above can fail: the corrections read on the driver are needed."""
    cfg, _tx, _labels, expected, events = data
    monkeypatch.setattr(BatchProcessor, "_affected", lambda self, anchors, until=None: [])
    bus, _ = run(cfg, conn, shuffled(events, seed=5))
    assert len(mismatches(bus.last_enriched(cfg), expected)) > 0


def test_a_batch_that_fails_between_its_passes_is_rerun_to_the_same_result(conn, data,
                                                                         monkeypatch):
    cfg, _tx, _labels, expected, events = data
    run(cfg, conn, events, mode="driver")
    clean = snapshot(conn)
    conn.flushall()

    bus, feed = Bus(), Feed()
    make = lambda: BatchProcessor(cfg, conn, bus.publish, bus.flush)  # noqa: E731
    driver = make()
    batches = [feed.rows(b) for b in split(shuffled(events, seed=7), 6)]
    real = P.PHASES["enrich"]

    def killed(proc, plan, rows):
        raise RuntimeError("executor lost during the enrichment pass")

    for b, rows in enumerate(batches):
        if b == 3:  # the writes of batch 3 are done, its enrichment dies, Spark re-runs it
            monkeypatch.setitem(P.PHASES, "enrich", killed)
            with pytest.raises(RuntimeError):
                P.PartitionedBatch(driver, partitions_of(cfg)).process(
                    b, LocalTasks(rows, make))
            monkeypatch.setitem(P.PHASES, "enrich", real)
        P.PartitionedBatch(driver, partitions_of(cfg)).process(b, LocalTasks(rows, make))
    assert bus.dead(cfg) == []
    assert mismatches(bus.last_enriched(cfg), expected) == []
    assert snapshot(conn) == clean


def _late_partition(conn, claim_known: bool):
    """Customer c0 pays at terminal m1 every day for 40 days, on partition 0; customer c1 paid
    there on days 5-8, on partition 1, which delivers only after the others (a new partition,
    or its producer was down): its events have nothing to be late against and are read at
    their own old times. claim_known: the driver wrongly believes partition 1 already seen."""
    cfg = text_ids_cfg()
    bus = Bus()
    make = lambda: BatchProcessor(cfg, conn, bus.publish, bus.flush)  # noqa: E731
    driver = make()
    feed = Feed(partitions=2)
    feed.pin = {b"c0": 0, b"c1": 1}
    pay = [(f"a{d}", T0 + d * DAY, "c0", 10.0) for d in range(40)]
    old = [(f"b{d}", T0 + d * DAY + 60, "c1", 20.0) for d in range(5, 9)]
    topic = cfg.kafka.transactions_topic
    parts = [f"{topic}:0"] if claim_known else [f"{topic}:0", f"{topic}:1"]
    for b, batch in enumerate([pay[:20], pay[20:], old]):
        rows = feed.rows([_tx(*e) for e in batch])
        P.PartitionedBatch(driver, lambda: parts).process(b, LocalTasks(rows, make))
    assert bus.dead(cfg) == []
    frame = pd.DataFrame(pay + old, columns=["transaction_id", "t", "customer_id", "amount"])
    frame["terminal_id"] = "m1"
    labels = pd.DataFrame({"transaction_id": pd.Series(dtype=str),
                           "is_fraud": pd.Series(dtype="int64"),
                           "label_t": pd.Series(dtype="int64")})
    return mismatches(bus.last_enriched(cfg), offline(frame, labels))


def test_a_partition_seen_late_with_old_events_keeps_what_its_reads_need(conn):
    """Every task sees only its own events, so no task can tell the batch reads days back:
    the driver allows trimming only when every partition with data has progress."""
    assert _late_partition(conn, claim_known=False) == []


def test_trimming_in_that_batch_would_lose_what_its_old_reads_need(conn):
    """Proves the test above can fail."""
    bad = _late_partition(conn, claim_known=True)
    assert {txid for txid, *_ in bad} & {"b5", "b6", "b7", "b8"}


def text_ids_cfg():
    from tests.conftest import text_ids

    cfg = text_ids()
    cfg.stream.allowed_lateness_s = 3600
    return cfg


def _tx(txid, t, customer, amount, terminal="m1"):
    return (t, "ffs.transactions", customer.encode(), M.transaction_message(
        {"transaction_id": txid, "customer_id": customer, "terminal_id": terminal,
         "event_timestamp": M.iso(t), "amount": amount}))


def test_a_clusters_tasks_get_no_secrets_and_take_their_own(monkeypatch):
    import pickle

    from ffs.config import Secret, load_config

    cfg = load_config(env={})
    cfg.redis.password, cfg.kafka.sasl_password = Secret("r-pass"), Secret("k-pass")
    cfg.spark.master = "k8s://https://api:6443"
    blob = P.task_config(cfg)
    assert b"r-pass" not in blob and b"k-pass" not in blob
    monkeypatch.setenv("FFS_REDIS_PASSWORD", "executor-pass")
    monkeypatch.delenv("FFS_CONFIG", raising=False)
    got = P._with_own_secrets(pickle.loads(blob), True)
    assert got.redis.password.reveal() == "executor-pass" and got.kafka.sasl_password is None
    cfg.spark.master = "local[2]"  # one machine: the closure never leaves it
    assert pickle.loads(P.task_config(cfg)).redis.password.reveal() == "r-pass"
