"""The online state on a Redis Cluster (3 primaries, 3 replicas, on free ports) equals the
state on one Redis, and stays bounded and exact when a primary dies.

* the loader (`ffs materialize`) on generated data, then reads of every feature (scored
  transactions, already ingested ones, unknown entities, several request times): values and
  statuses identical to the one-node client on the same rows; the keys hold the same data;
* the stream's batch processor (jobs/stream/batch.py, driven without Kafka as in
  test_stream_batch.py) over a shuffled timeline with late events and revised labels: the
  cluster's state and enriched rows equal the one-node run's;
* a primary SIGKILLed during reads and during a batch: reads answer within the timeout,
  UNAVAILABLE exactly for the values that node serves, PRESENT (and equal) for the others; the
  batch fails; a replica takes over (cluster_state:ok); reads recover; the interrupted batch
  re-run gives the state of a clean run: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from ffs.config import Config
from ffs.jobs.batch.backfill import backfill
from ffs.jobs.batch.offline_store import OfflineStore
from ffs.jobs.tools.generate import GenerateSpec, generate_to
from ffs.online import layout
from ffs.online.client import PRESENT, UNAVAILABLE, OnlineClient, redis_client
from ffs.online.loader import load_state
from ffs.online.redis_cluster import RedisCluster
from ffs.online.redis_server import RedisServer
from ffs.online.shards import slot_of
from ffs.transformations.features import entity
from tests.conftest import text_ids
from tests.integration.test_stream_batch import (
    Bus,
    Feed,
    make_events,
    processor,
    shuffled,
    split,
    timeline,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT_MS = 200
SLACK_S = 1.0  # timeout + slack: a 2-core machine shared with other work
CUSTOMER, TERMINAL = entity("customer"), entity("terminal")


def cluster_conn(cluster: RedisCluster, timeout_ms: int = TIMEOUT_MS):
    cfg = Config()
    cfg.redis.url, cfg.redis.cluster, cfg.redis.timeout_ms = cluster.url, True, timeout_ms
    return redis_client(cfg.redis)


def snapshot(conn, nodes=None) -> dict:
    """Every key's content: sorted sets with scores, strings, hashes (the stream's progress
    without its wall-clock stamp)."""
    import redis

    out = {}
    conns = [conn] if nodes is None else [redis.Redis(port=n.port) for n in nodes]
    for c in conns:
        for k in c.scan_iter(count=1000):
            kind = c.type(k)
            if kind == b"zset":
                out[k] = c.zrange(k, 0, -1, withscores=True)
            elif kind == b"hash":
                out[k] = {f: v for f, v in c.hgetall(k).items() if f != b"updated_ms"}
            else:
                out[k] = c.get(k)
    return out


@pytest.fixture(scope="module")
def cluster():
    with RedisCluster(primaries=3, replicas=1) as c:
        yield c


@pytest.fixture(scope="module")
def single():
    with RedisServer() as s:
        import redis

        conn = redis.Redis.from_url(s.url)
        yield conn
        conn.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    gen = generate_to(tmp / "in", GenerateSpec(customers=60, terminals=120, days=40, seed=11))
    cfg = Config()
    cfg.offline.path = str(tmp / "offline")
    cfg.validation.enabled = False
    backfill(cfg, gen.transactions_path, gen.labels_path, "local", log=lambda _: None)
    store = OfflineStore(cfg.offline.path)
    return store.read("transactions"), store.read("labels")


def request_rows(tx: pd.DataFrame, t0: pd.Timestamp, seed: int) -> list[dict]:
    """Plain reads, unknown entities, new scored transactions, already ingested ones."""
    rng = np.random.default_rng(seed)
    customers = rng.choice(tx["customer_id"].unique(), 40).tolist() + [10**9]
    terminals = rng.choice(tx["terminal_id"].unique(), 40).tolist() + [10**9 + 1]
    rows: list[dict] = [{"customer_id": c, "terminal_id": k}
                        for c, k in zip(customers, terminals, strict=True)]
    rows += [{"transaction_id": 10**12 + i, "customer_id": c, "terminal_id": k,
              "event_timestamp": t0 + pd.Timedelta(seconds=37 * i), "amount": 3.5 + i}
             for i, (c, k) in enumerate(zip(customers[:20], terminals[::-1][:20], strict=True))]
    last = tx.sort_values("event_timestamp").tail(15)
    rows += last[["transaction_id", "customer_id", "terminal_id", "event_timestamp",
                  "amount"]].to_dict("records")
    return rows


def test_loaded_state_and_every_feature_equal_one_redis(cluster, single, world):
    tx, labels = world
    conn = cluster_conn(cluster, timeout_ms=5000)
    s1 = load_state(conn, tx, labels)
    s2 = load_state(single, tx, labels)
    assert s1.entities == s2.entities and s1.transactions_indexed == s2.transactions_indexed
    assert snapshot(conn, cluster.primaries()) == snapshot(single)
    # the keys spread over every primary: each has a share of the entities
    assert all(sum(1 for _ in __import__("redis").Redis(port=n.port).scan_iter(count=1000))
               for n in cluster.primaries())
    on_cluster, on_one = OnlineClient(conn), OnlineClient(single)
    t0 = pd.Timestamp(s1.as_of, unit="s", tz="UTC")
    for k, later in enumerate(["0s", "2h", "3d", "31d"]):
        rows = request_rows(tx, t0 + pd.Timedelta(later), k)
        got = on_cluster.get_features(rows, as_of=t0 + pd.Timedelta(later))
        want = on_one.get_features(rows, as_of=t0 + pd.Timedelta(later))
        assert got.error is None and got.unavailable is None
        assert got.values == want.values, later
        assert got.statuses == want.statuses, later
        assert PRESENT in got.statuses["customer_nb_tx_1d"]
    ids = tx["terminal_id"].unique()[:30].tolist() + [10**9]
    got_e = on_cluster.get_entity_features("terminal", ids, as_of=t0)
    want_e = on_one.get_entity_features("terminal", ids, as_of=t0)
    assert (got_e.values, got_e.statuses) == (want_e.values, want_e.statuses)
    # loading twice changes nothing
    load_state(conn, tx, labels)
    assert snapshot(conn, cluster.primaries()) == snapshot(single)
    conn.close()


def stream_events():
    cfg = text_ids()
    tx, labels = make_events(seed=4)
    return cfg, shuffled(timeline(tx, labels, cfg), seed=4)


def run_stream(cfg, conn, events, n_batches=6):
    proc, bus = processor(cfg, conn)
    feed = Feed()
    reports = [proc.process(b, feed.rows(batch))
               for b, batch in enumerate(split(events, n_batches))]
    return bus, reports


def test_stream_batches_write_the_same_state_as_one_redis(cluster, single):
    cfg, events = stream_events()
    cfg.redis.prefix = "st"
    conn = cluster_conn(cluster, timeout_ms=5000)
    bus_c, rep_c = run_stream(cfg, conn, events)
    bus_1, rep_1 = run_stream(cfg, single, events)
    assert [(r.written, r.duplicates, r.labels_written, r.corrections, r.dead_letters)
            for r in rep_c] == [(r.written, r.duplicates, r.labels_written, r.corrections,
                                 r.dead_letters) for r in rep_1]
    assert sum(r.corrections for r in rep_c) > 0  # late events and labels were exercised
    strip = _strip_enriched_time
    assert strip(bus_c.last_enriched(cfg)) == strip(bus_1.last_enriched(cfg))
    one = {k: v for k, v in snapshot(single).items() if k.startswith(b"st:")}
    mine = {k: v for k, v in snapshot(conn, cluster.primaries()).items()
            if k.startswith(b"st:")}
    assert mine == one
    # a batch replayed (a retried Spark batch) changes nothing
    proc, _bus = processor(cfg, conn)
    proc.process(99, Feed().rows(events[:40]))
    again = {k: v for k, v in snapshot(conn, cluster.primaries()).items()
             if k.startswith(b"st:") and k != b"st:stream:state"}
    assert again == {k: v for k, v in one.items() if k != b"st:stream:state"}
    conn.close()


def _strip_enriched_time(rows: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in r.items() if not f.endswith("_ms")} for k, r in rows.items()}


def test_primary_killed_during_reads_and_a_batch(world, single):
    """Its own cluster: this one loses two primaries, one during reads, one during a batch."""
    tx, labels = world
    cfg, events = stream_events()
    cfg.redis.prefix = "kx"
    first, second = split(events, 2)
    # the clean run, on one Redis: both halves
    clean_bus = Bus()
    proc_1, _ = processor(cfg, single, clean_bus)
    feed_1 = Feed()
    proc_1.process(0, feed_1.rows(first))
    proc_1.process(1, feed_1.rows(second))
    load_state(single, tx, labels)
    with RedisCluster(primaries=3, replicas=1) as cl:
        conn = cluster_conn(cl)
        load_state(cluster_conn(cl, 5000), tx, labels)
        feed = Feed()
        proc, bus = processor(cfg, cluster_conn(cl, 5000))
        proc.process(0, feed.rows(first))
        client, ref = OnlineClient(conn), OnlineClient(single)
        t0 = pd.Timestamp(int(tx["event_timestamp"].max().timestamp()), unit="s", tz="UTC")
        rows = request_rows(tx, t0, 7)
        want = ref.get_features(rows, as_of=t0)
        assert client.get_features(rows, as_of=t0).values == want.values

        # 1. during reads: kill the primary of the first row's customer
        victim = cl.node_of(slot_of(layout.entity_key("ffs", CUSTOMER,
                                                      str(rows[0]["customer_id"]))))
        dead_slots = _slots_of(victim)
        cl.kill(victim)
        # right after the kill (a failover takes over the node timeout, 1 s): bounded, and
        # UNAVAILABLE exactly for the values the dead node held
        started = time.monotonic()
        got = client.get_features(rows, as_of=t0)
        assert time.monotonic() - started < TIMEOUT_MS / 1000 + SLACK_S
        assert got.error is None and got.unavailable is not None
        for ent, name in ((CUSTOMER, "customer_nb_tx_1d"), (TERMINAL, "terminal_nb_tx_7d_delay7d")):
            lost = _lost(rows, ent, dead_slots)
            assert any(lost) and not all(lost), name
            for i, gone in enumerate(lost):
                if gone:
                    assert (got.values[name][i], got.statuses[name][i]) == (None, UNAVAILABLE)
                else:
                    assert (got.values[name][i], got.statuses[name][i]) == (
                        want.values[name][i], want.statuses[name][i]), (name, i)
        for _ in range(3):  # and every later call, until the failover
            started = time.monotonic()
            client.get_features(rows, as_of=t0)
            assert time.monotonic() - started < TIMEOUT_MS / 1000 + SLACK_S
        cl.wait_ok(timeout=30)  # a replica took over
        assert len(cl.primaries()) == 3 and victim not in cl.primaries()
        got = _until_served(client, rows, t0)
        assert got.unavailable is None and got.values == want.values

        # 2. during a batch: a primary that still has a replica dies between the batch's
        # index reads and its entity writes; the other nodes take their share of the writes
        victim2 = next(n for n in cl.primaries() if _has_replica(n))
        shards = proc.writer._shards
        calls = {"n": 0}
        run = shards.run

        def dying(batch, *a, **kw):
            calls["n"] += 1
            if calls["n"] == 2:
                cl.kill(victim2)
            return run(batch, *a, **kw)

        shards.run = dying
        rows_2 = feed.rows(second)
        with pytest.raises(Exception):  # noqa: B017, PT011 - a Redis connection error
            proc.process(1, rows_2)
        assert calls["n"] >= 2
        cl.wait_ok(timeout=30)
        assert victim2 not in cl.primaries()
        _until_served(client, rows, t0)
        # the interrupted batch, re-run with the same id and offsets (as Spark re-runs it)
        proc2, bus2 = processor(cfg, cluster_conn(cl, 5000))
        proc2.process(1, rows_2)
        mine = {k: v for k, v in snapshot(conn, cl.primaries()).items()
                if k.startswith(b"kx:")}
        clean = {k: v for k, v in snapshot(single).items() if k.startswith(b"kx:")}
        assert mine.keys() == clean.keys()
        assert mine == clean
        assert _strip_enriched_time({**bus.last_enriched(cfg), **bus2.last_enriched(cfg)}) \
            == _strip_enriched_time(clean_bus.last_enriched(cfg))
        got = _until_served(client, rows, t0)
        assert got.values == ref.get_features(rows, as_of=t0).values


def _until_served(client, rows, t0, within_s: float = 10.0):
    """Reads until every value is served (the client refreshes its slot map by itself)."""
    deadline = time.monotonic() + within_s
    while True:
        got = client.get_features(rows, as_of=t0)
        if (got.unavailable is None and got.error is None) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _has_replica(node) -> bool:
    import redis

    c = redis.Redis(port=node.port)
    try:
        return c.info("replication")["connected_slaves"] > 0
    finally:
        c.close()


def _slots_of(node) -> set[int]:
    import redis

    c = redis.Redis(port=node.port)
    try:
        out: set[int] = set()
        for entry in c.execute_command("CLUSTER", "SLOTS"):
            if int(entry[2][1]) == node.port:
                out |= set(range(entry[0], entry[1] + 1))
        return out
    finally:
        c.close()


def _lost(rows, ent, dead_slots) -> list[bool]:
    """Which rows' values of `ent` a dead node held: its entity value's keys, or the index
    key of the row's scored transaction (whether it joins its windows)."""
    out = []
    for r in rows:
        value = layout.entity_value([r[k] for k in ent.keys])
        key_lost = slot_of(layout.entity_key("ffs", ent, value)) in dead_slots
        tx_lost = r.get("event_timestamp") is not None and r.get("transaction_id") is not None \
            and slot_of(layout.tx_key("ffs", r["transaction_id"])) in dead_slots
        out.append(key_lost or tx_lost)
    return out
