"""One micro-batch of the stream (jobs/stream/batch.py) against a real Redis, without Kafka:
published rows are collected in a list. The enriched topic's last row per transaction must
equal the offline reference (transformations.engine.compute_features) whatever the arrival
order within the allowed lateness; late, conflicting and orphan events go to dead letters."""

from __future__ import annotations

import functools
import json
import struct
import time

import numpy as np
import pandas as pd
import pytest

from ffs.bus import messages as M
from ffs.config import Config
from ffs.jobs.stream.batch import BatchProcessor
from ffs.jobs.tools.consistency import _same
from ffs.online import layout
from ffs.transformations.features import entity, feature_names
from ffs.transformations.ids import ALL_STRING
from tests.conftest import text_ids

CUSTOMER, TERMINAL = entity("customer"), entity("terminal")

# the events carry text ids ("c1", "t-1"): every id column is declared string
parse_transaction = functools.partial(M.parse_transaction, id_types=ALL_STRING)
parse_label = functools.partial(M.parse_label, id_types=ALL_STRING)

pytestmark = pytest.mark.redis

T0 = 1704067200  # 2024-01-01T00:00:00Z: in the past, so never "future_timestamp"
DAY = 86_400
SHUFFLE_S = 1800  # out-of-order runs shuffle inside 30-minute windows (allowed lateness 1 h)


def private_redis():
    """A client of a private redis-server, stopped when the generator ends (a fixture body)."""
    import redis

    from ffs.online.redis_server import RedisServer

    server = RedisServer().start()  # a missing redis-server fails here, with the fix to run
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()
    server.stop()


@pytest.fixture()
def conn():
    yield from private_redis()


class Bus:
    """Collects what the processor publishes; counts flushes."""

    def __init__(self):
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushes = 0

    def publish(self, topic, key, value):
        self.sent.append((topic, key, value))

    def flush(self):
        self.flushes += 1

    def rows(self, topic: str) -> list[dict]:
        return [json.loads(v) for t, _, v in self.sent if t == topic]

    def dead(self, cfg: Config) -> list[dict]:
        return self.rows(cfg.kafka.dead_letter_topic)

    def enriched(self, cfg: Config, kind: str) -> list[dict]:
        return [r for r in self.rows(cfg.kafka.enriched_topic) if r["kind"] == kind]

    def last_enriched(self, cfg: Config) -> dict[str, dict]:
        return {r["transaction_id"]: r for r in self.enriched(cfg, "transaction")}


def processor(cfg: Config, conn, bus: Bus | None = None) -> tuple[BatchProcessor, Bus]:
    bus = bus or Bus()
    return BatchProcessor(cfg, conn, bus.publish, bus.flush), bus


# ---- events ------------------------------------------------------------------------------

def make_events(seed: int = 3):
    """Bursts of payments (so a 30-minute shuffle really reorders them) over 24 days, by 4
    customers at 5 terminals, with same-second ties; labels soon after or 8-12 days after
    their transaction, and revisions a day later with the opposite verdict."""
    rng = np.random.default_rng(seed)
    rows = []
    for _b in range(36):
        start = T0 + int(rng.integers(0, 24 * DAY))
        n = int(rng.integers(4, 12))
        secs = start + np.sort(rng.integers(0, 1500, n))
        secs[1::4] = secs[0::4][:len(secs[1::4])]  # ties in the same second
        for s in secs:
            rows.append((int(s), f"c{rng.integers(0, 4)}", f"m{rng.integers(0, 5)}",
                         round(float(rng.uniform(0, 200)), 2)))
    rows.sort()
    tx = pd.DataFrame(rows, columns=["t", "customer_id", "terminal_id", "amount"])
    tx.insert(0, "transaction_id", [f"tx{i}" for i in range(len(tx))])
    picked = tx.sample(frac=0.5, random_state=seed)
    late = rng.random(len(picked)) < 0.5
    delay = np.where(late, rng.integers(8 * DAY, 12 * DAY, len(picked)),
                     rng.integers(0, 7200, len(picked)))
    labels = pd.DataFrame({"transaction_id": picked["transaction_id"].to_numpy(),
                           "is_fraud": (rng.random(len(picked)) < 0.6).astype(int),
                           "label_t": picked["t"].to_numpy() + delay})
    revised = labels.sample(frac=0.25, random_state=seed + 1).assign(
        is_fraud=lambda d: 1 - d["is_fraud"], label_t=lambda d: d["label_t"] + DAY)
    labels = pd.concat([labels, revised], ignore_index=True)
    return tx, labels


def timeline(tx: pd.DataFrame, labels: pd.DataFrame, cfg: Config) -> list[tuple]:
    """(t, topic, key, value) in event-time order, a transaction before labels on ties."""
    k = cfg.kafka
    out = []
    for i, r in enumerate(tx.itertuples(index=False)):
        # a few accepted shapes: ISO Z, epoch milliseconds
        ts = r.t * 1000 if i % 3 == 0 else M.iso(r.t)
        value = M.transaction_message({"transaction_id": r.transaction_id,
                                       "customer_id": r.customer_id,
                                       "terminal_id": r.terminal_id,
                                       "event_timestamp": ts, "amount": r.amount})
        out.append((r.t, 0, k.transactions_topic, r.customer_id.encode(), value))
    for r in labels.itertuples(index=False):
        value = M.label_message(M.Label(r.transaction_id, int(r.is_fraud), int(r.label_t)))
        out.append((r.label_t, 1, k.labels_topic, r.transaction_id.encode(), value))
    out.sort(key=lambda e: (e[0], e[1]))
    return [(t, topic, key, value) for t, _, topic, key, value in out]


def shuffled(events: list[tuple], seed: int) -> list[tuple]:
    """Shuffled inside fixed 30-minute windows of event time: lateness < 30 min."""
    rng = np.random.default_rng(seed)
    out, window = [], []
    for e in events + [(None,)]:
        if window and (e[0] is None or e[0] // SHUFFLE_S != window[0][0] // SHUFFLE_S):
            rng.shuffle(window)
            out += window
            window = []
        if e[0] is not None:
            window.append(e)
    assert sorted(out, key=lambda e: (e[0], e[1] != "ffs.transactions")) != out
    return out


class Feed:
    """Turns events into batches of raw Kafka rows, offsets per topic in arrival order."""

    def __init__(self):
        self.offsets: dict[str, int] = {}

    def rows(self, events) -> dict[str, list]:
        cols = {c: [] for c in ("topic", "partition", "offset", "key", "value", "timestamp_ms")}
        now_ms = time.time_ns() // 1_000_000
        for e in events:
            topic, key, value = e[-3:]
            off = self.offsets.get(topic, 0)
            self.offsets[topic] = off + 1
            for c, v in zip(cols, (topic, 0, off, key, value, now_ms), strict=True):
                cols[c].append(v)
        return cols


def split(events: list, n: int) -> list[list]:
    size = -(-len(events) // n)
    return [events[i:i + size] for i in range(0, len(events), size)]


def run(cfg, conn, events, n_batches=9):
    proc, bus = processor(cfg, conn)
    feed = Feed()
    reports = [proc.process(b, feed.rows(batch)) for b, batch in
               enumerate(split(events, n_batches))]
    return bus, reports


# ---- reference and comparisons --------------------------------------------------------------

def offline(tx: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    frame = tx.assign(event_timestamp=pd.to_datetime(tx["t"], unit="s", utc=True)).drop(
        columns="t")
    lab = labels.assign(label_timestamp=pd.to_datetime(labels["label_t"], unit="s", utc=True),
                        is_fraud=labels["is_fraud"].astype("int64")).drop(columns="label_t")
    from ffs.transformations.engine import compute_features

    out = compute_features(frame, lab, frame)
    out.index = tx["transaction_id"].to_numpy()
    return out


def mismatches(last: dict[str, dict], expected: pd.DataFrame) -> list[tuple]:
    bad = []
    assert set(last) == set(expected.index), "every transaction has an enriched row"
    for txid, row in last.items():
        for name in feature_names():
            if not _same(row.get(name, "absent"), expected.at[txid, name]):
                bad.append((txid, name, row.get(name, "absent"), expected.at[txid, name]))
    return bad


def canonical_events(key: bytes, members: list[tuple[bytes, float]]) -> list:
    """An entity's `:ev` set in a form that no read can tell apart (see _canonical); other
    sets as they are."""
    if not key.endswith(b":ev"):
        return members
    name = key.split(b"{", 1)[1].split(b":", 1)[0].decode()
    fmt = layout.record_format(entity(name))
    return _canonical(members, fmt) if fmt.has_count else members


def _canonical(members: list[tuple[bytes, float]], fmt=None) -> list[tuple]:
    """A customer's records with the same second in canonical form. Records carry running
    totals (count, cents) in arrival order, so two payments of one customer in the same second
    swap totals when they arrive in the other order: the bytes differ but no read can tell,
    because a read at or after that second uses the group's last record and one before it uses
    the previous group (tasks of a partitioned batch writing one terminal at once order its
    seconds' payments either way too). Kept per second: the payments (own values, terminal,
    id), sorted, the count before the group and the running totals after it (the totals
    before a group are the previous group's after; records keep no own value of a column
    only summed)."""
    groups: dict[float, list] = {}
    for member, score in members:
        groups.setdefault(score, []).append(member)
    fmt = fmt or layout.record_format(CUSTOMER)
    size = fmt.fixed_size
    n_cum = len(fmt.cumulative) + sum(fmt.squares)
    out = []
    for score, group in groups.items():
        recs = []
        for m in group:
            fixed = struct.unpack(fmt.struct.replace("I4", "I").replace("i8", "q"), m[:size])
            count, totals, own = fixed[0], fixed[1:1 + n_cum], fixed[1 + n_cum:]
            recs.append((count, totals, own, m[size:]))
        recs.sort()
        first, last = recs[0], recs[-1]
        out.append((score, sorted((own, rest) for _c, _t, own, rest in recs),
                    first[0] - 1, (last[0], last[1])))
    return out


def snapshot(conn, skip_stream: bool = True) -> dict:
    out = {}
    for key in sorted(conn.scan_iter(count=1000)):
        if skip_stream and b":stream:" in key:
            continue
        kind = conn.type(key)
        if kind == b"zset":
            members = conn.zrange(key, 0, -1, withscores=True)
            out[key] = ("zset", canonical_events(key, members))
        elif kind == b"string":
            out[key] = ("string", conn.get(key))
        elif kind == b"hash":
            out[key] = ("hash", conn.hgetall(key))
        else:
            raise AssertionError(f"unexpected Redis type {kind!r} at {key!r}")
    return out


# ---- ordering ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    return stream_data()


def stream_data():
    """(config, transactions, labels, their offline features, the Kafka timeline)."""
    cfg = text_ids()
    tx, labels = make_events()
    assert (labels.groupby("transaction_id").size() > 1).any()  # revisions
    first_label = labels.merge(tx, on="transaction_id")
    assert ((first_label["label_t"] - first_label["t"]) > 7 * DAY).sum() > 10
    assert tx.duplicated("t").sum() > 10  # ties
    return cfg, tx, labels, offline(tx, labels), timeline(tx, labels, cfg)


def test_in_order_batches_publish_the_offline_features(conn, data):
    cfg, tx, labels, expected, events = data
    bus, reports = run(cfg, conn, events)
    assert len(reports) == 9 and bus.flushes == 9
    assert sum(r.written for r in reports) == len(tx)
    assert sum(r.n_dead for r in reports) == 0 and bus.dead(cfg) == []
    assert mismatches(bus.last_enriched(cfg), expected) == []
    # the features are not trivially empty
    assert expected["terminal_risk_30d_delay7d"].gt(0).sum() > 5
    assert expected["customer_nb_tx_1d"].gt(3).sum() > 5
    # one label row per applied label, with its own values
    got = sorted((r["transaction_id"], r["is_fraud"], r["label_time_ms"])
                 for r in bus.enriched(cfg, "label"))
    want = sorted((r.transaction_id, int(r.is_fraud), int(r.label_t) * 1000)
                  for r in labels.itertuples(index=False))
    assert got == want
    assert sum(r.labels_written for r in reports) == len(labels)
    assert reports[-1].labels_waiting == 0


def test_out_of_order_within_lateness_converges_to_the_same_rows_and_state(conn, data):
    cfg, tx, labels, expected, events = data
    bus, _ = run(cfg, conn, events)
    in_order = snapshot(conn)
    conn.flushall()

    late_bus, reports = run(cfg, conn, shuffled(events, seed=5))
    assert late_bus.dead(cfg) == []
    assert sum(r.corrections for r in reports) > 0  # the correction path was exercised
    assert mismatches(late_bus.last_enriched(cfg), expected) == []
    assert snapshot(conn) == in_order
    assert conn.zcard(f"{cfg.redis.prefix}:stream:pending_labels") == 0
    got = sorted((r["transaction_id"], r["is_fraud"], r["label_time_ms"])
                 for r in late_bus.enriched(cfg, "label"))
    want = sorted((r.transaction_id, int(r.is_fraud), int(r.label_t) * 1000)
                  for r in labels.itertuples(index=False))
    assert got == want


def test_without_corrections_late_events_leave_wrong_rows(conn, data, monkeypatch):
    """Proves the test above can fail: with the correction path disabled, some transaction's
    last row keeps features computed before a late event of its customer or terminal."""
    cfg, _tx, _labels, expected, events = data
    late = shuffled(events, seed=5)
    monkeypatch.setattr(BatchProcessor, "_affected", lambda self, anchors, until=None: [])
    bus, reports = run(cfg, conn, late)
    assert sum(r.corrections for r in reports) == 0
    assert len(mismatches(bus.last_enriched(cfg), expected)) > 0


def test_enrichment_can_be_turned_off(conn, data):
    cfg, tx, _labels, _expected, events = data
    cfg = text_ids()
    cfg.stream.enrich = False
    bus, reports = run(cfg, conn, events)
    assert bus.enriched(cfg, "transaction") == []
    assert sum(r.written for r in reports) == len(tx)


# ---- re-runs and watermark ------------------------------------------------------------------

def _tx(txid, t, customer="c1", terminal="m1", amount=10.0, ts=None):
    return (t, "ffs.transactions", customer.encode(), M.transaction_message(
        {"transaction_id": txid, "customer_id": customer, "terminal_id": terminal,
         "event_timestamp": M.iso(t) if ts is None else ts, "amount": amount}))


def _label(txid, label_t, is_fraud=1):
    return (label_t, "ffs.labels", txid.encode(),
            M.label_message(M.Label(txid, is_fraud, label_t)))


def _rows(events, first_offset=0):
    feed = Feed()
    feed.offsets = {"ffs.transactions": first_offset, "ffs.labels": first_offset}
    return feed.rows(events)


def _state(conn, cfg):
    state = {k.decode(): v.decode() for k, v in
             conn.hgetall(f"{cfg.redis.prefix}:stream:state").items()}
    state.pop("updated_ms", None)
    return state


@pytest.mark.parametrize("crash", [True, False], ids=["crash-before-commit", "after-commit"])
def test_rerun_of_a_batch_changes_nothing_and_keeps_its_watermark(conn, crash):
    cfg = text_ids()
    lateness = cfg.stream.allowed_lateness_s
    proc, bus = processor(cfg, conn)
    t = T0 + 10 * DAY
    r0 = proc.process(0, _rows([_tx("a", t), _tx("b", t + 60, customer="c2")]))
    assert r0.watermark == t + 60
    # batch 1: an event 50 min behind the watermark t + 60 (on time), and a transaction and
    # its label 2 h later that move the watermark on both topics
    newest = t + 60 + 7200
    batch1 = _rows([_tx("c", t + 60 - 3000), _tx("d", newest, terminal="m2"),
                    _label("d", newest)], first_offset=10)
    if crash:
        def boom():
            raise RuntimeError("killed after the writes, before the batch committed")

        proc.flush = boom
        with pytest.raises(RuntimeError):
            proc.process(1, batch1)
        proc.flush = bus.flush
    else:
        r1 = proc.process(1, batch1)
        assert r1.n_dead == 0 and r1.written == 2 and r1.labels_written == 1
        assert r1.watermark == newest
    before, state = snapshot(conn), _state(conn, cfg)
    assert layout.tx_key("ffs", "c").encode() in before
    spells = conn.zrangebyscore(layout.fraud_key("ffs", TERMINAL, "m2"), 0, "+inf")
    assert [m.split(b"\t")[0] for m in spells] == [b"d"] and spells[0].endswith(b"\t")  # open

    again = proc.process(1, batch1)
    assert again.n_dead == 0 and bus.dead(cfg) == []  # "c" is judged as in the first run
    assert again.written == 0 and again.duplicates == 2 and again.labels_written == 1
    assert again.watermark == newest
    assert snapshot(conn) == before
    if not crash:
        assert _state(conn, cfg) == state
    # its rows are published again (at least once), with the same features
    last = bus.last_enriched(cfg)
    assert last["c"]["customer_nb_tx_1d"] == 1 and last["a"]["customer_nb_tx_1d"] == 2

    # a new batch is judged against the advanced watermark: the same lateness is now too late
    r2 = proc.process(2, _rows([_tx("e", t + 60 - 3000)], first_offset=20))
    assert t + 60 - 3000 < newest - lateness
    assert r2.watermark == newest
    assert r2.dead_letters == {M.TOO_LATE: 1}
    assert conn.exists(layout.tx_key("ffs", "e")) == 0


# ---- refused events ----------------------------------------------------------------------

def test_late_old_and_future_events_go_to_dead_letters(conn):
    cfg = text_ids()
    lateness = cfg.stream.allowed_lateness_s
    proc, bus = processor(cfg, conn)
    t = T0 + 40 * DAY
    # each partition's lateness is judged against its own newest event: both get one at t
    proc.process(0, _rows([_tx("base", t), _label("base", t, is_fraud=0)]))
    future = int(time.time()) + cfg.stream.max_future_s + 3600
    events = [_tx("ok-edge", t - lateness),  # exactly the allowed lateness: accepted
              _tx("late", t - lateness - 1),
              _tx("ancient", t - layout.retention_s(CUSTOMER)),
              _tx("future", future),
              _label("base", t - lateness - 1),
              _label("base", t - 60 * DAY),
              _label("base", future),
              (t, "ffs.transactions", b"k", b"{not json"),
              (t, "other.topic", None, b"{}")]
    rep = proc.process(1, _rows(events, first_offset=100))
    assert rep.dead_letters == {M.TOO_LATE: 2, M.BEYOND_RETENTION: 2, M.FUTURE: 2,
                                M.NOT_JSON: 1, M.BAD_TYPE: 1}
    assert rep.written == 1 and rep.labels == 0
    assert rep.watermark == t  # refused events do not move it
    dead = {(d["source_topic"], d["offset"]): d for d in bus.dead(cfg)}
    expect = {("ffs.transactions", 101): M.TOO_LATE, ("ffs.transactions", 102): M.BEYOND_RETENTION,
              ("ffs.transactions", 103): M.FUTURE, ("ffs.labels", 100): M.TOO_LATE,
              ("ffs.labels", 101): M.BEYOND_RETENTION, ("ffs.labels", 102): M.FUTURE,
              ("ffs.transactions", 104): M.NOT_JSON, ("other.topic", 0): M.BAD_TYPE}
    assert {k: d["reason"] for k, d in dead.items()} == expect
    keys = {k for t_, k, _ in bus.sent if t_ == cfg.kafka.dead_letter_topic}
    assert b"ffs.transactions/0/101" in keys and b"ffs.labels/0/102" in keys
    late = dead[("ffs.transactions", 101)]
    assert late["partition"] == 0 and late["key"] == "c1"
    assert parse_transaction(late["value"].encode()).transaction_id == "late"
    assert dead[("ffs.transactions", 104)]["value"] == "{not json"
    for txid in ("late", "ancient", "future"):
        assert conn.exists(layout.tx_key("ffs", txid)) == 0
    assert conn.exists(layout.tx_key("ffs", "ok-edge")) == 1
    assert conn.zcard(layout.entity_key("ffs", CUSTOMER, "c1")) == 2  # base and ok-edge only
    assert conn.zcard(layout.fraud_key("ffs", TERMINAL, "m1")) == 0  # no fraud label applied
    assert layout.decode_tx(conn.get(layout.tx_key("ffs", "base")))["label_t"] == t


def test_a_label_waits_for_its_transaction(conn):
    cfg = text_ids()
    proc, bus = processor(cfg, conn)
    t = T0 + 20 * DAY
    proc.process(0, _rows([_tx("x0", t)]))
    r1 = proc.process(1, _rows([_label("x1", t + 100)], first_offset=1))
    assert r1.labels_waiting == 1 and r1.labels_written == 0 and r1.n_dead == 0
    assert bus.enriched(cfg, "label") == []
    # the transaction arrives (a little before its label's time), one batch later
    r2 = proc.process(2, _rows([_tx("x1", t + 50, terminal="m7")], first_offset=1))
    assert r2.labels_written == 1 and r2.labels_waiting == 0 and r2.n_dead == 0
    assert [(r["transaction_id"], r["is_fraud"], r["label_time_ms"])
            for r in bus.enriched(cfg, "label")] == [("x1", 1, (t + 100) * 1000)]
    stored = layout.decode_tx(conn.get(layout.tx_key("ffs", "x1")))
    assert stored["label_t"] == t + 100 and stored["is_fraud"] == 1
    # one fraud spell, open since the label's own time
    assert conn.zrangebyscore(layout.fraud_key("ffs", TERMINAL, "m7"), 0, "+inf") == [
        f"x1\t{t + 100}\t".encode()]
    # and the set's summary: newest spell start t + 100, none revised (reads take ZCOUNT)
    assert conn.zrangebyscore(layout.fraud_key("ffs", TERMINAL, "m7"), "-inf", -1) == [
        f"#summary\t{t + 100}\t0".encode()]


def test_a_label_without_transaction_is_dead_lettered_after_the_lateness(conn):
    cfg = text_ids()
    lateness = cfg.stream.allowed_lateness_s
    proc, bus = processor(cfg, conn)
    t = T0 + 20 * DAY
    proc.process(0, _rows([_tx("x0", t), _label("x0", t)]))
    r1 = proc.process(1, _rows([_label("ghost", t + 10)], first_offset=7))
    assert r1.labels_waiting == 1
    # the watermark moves on both topics
    r2 = proc.process(2, _rows([_tx("x2", t + 10 + lateness), _label("x2", t + 10 + lateness)],
                               first_offset=20))
    assert r2.labels_waiting == 1 and r2.n_dead == 0  # exactly at the limit: still waits
    r3 = proc.process(3, _rows([_tx("x3", t + 11 + lateness), _label("x3", t + 11 + lateness)],
                               first_offset=30))
    assert r3.dead_letters == {M.UNKNOWN_TRANSACTION: 1} and r3.labels_waiting == 0
    [dead] = bus.dead(cfg)
    assert dead["reason"] == M.UNKNOWN_TRANSACTION
    assert (dead["source_topic"], dead["partition"], dead["offset"]) == ("ffs.labels", 0, 7)
    assert parse_label(dead["value"].encode()) == M.Label("ghost", 1, t + 10)
    assert "ghost" not in {r["transaction_id"] for r in bus.enriched(cfg, "label")}
    r4 = proc.process(4, _rows([_tx("x4", t + 12 + lateness), _label("x4", t + 12 + lateness)],
                               first_offset=40))
    assert r4.n_dead == 0 and r4.labels_waiting == 0  # dead-lettered once only


def test_conflicting_and_exact_duplicates(conn):
    cfg = text_ids()
    proc, bus = processor(cfg, conn)
    t = T0 + 20 * DAY
    r0 = proc.process(0, _rows([_tx("d1", t, amount=10.0), _tx("d1", t, amount=10.0)]))
    assert r0.written == 1 and r0.duplicates == 1 and r0.n_dead == 0
    stored = conn.get(layout.tx_key("ffs", "d1"))
    r1 = proc.process(1, _rows([_tx("d1", t, amount=99.0),  # conflicting
                                _tx("d1", t + 1, amount=10.0),  # conflicting time
                                _tx("d1", t, customer="c9"),  # conflicting customer
                                _tx("d1", t, amount=10.0, ts=t * 1000)],  # same, other shape
                               first_offset=2))
    assert r1.dead_letters == {M.CONFLICT: 3}
    assert r1.written == 0 and r1.duplicates == 1
    assert conn.get(layout.tx_key("ffs", "d1")) == stored  # the first one stays
    assert conn.zcard(layout.entity_key("ffs", CUSTOMER, "c1")) == 1  # counted once
    assert conn.exists(layout.entity_key("ffs", CUSTOMER, "c9")) == 0
    dead = bus.dead(cfg)
    assert sorted(d["offset"] for d in dead) == [2, 3, 4]
    assert {parse_transaction(d["value"].encode()).get("amount") for d in dead} == {99.0, 10.0}
    assert all(r["amount"] == 10.0 and r["customer_nb_tx_1d"] == 1
               for r in bus.enriched(cfg, "transaction"))


def test_a_conflicting_copy_in_the_same_batch_gets_no_enriched_row(conn):
    """The enriched topic is upserted by transaction_id: a refused copy published after the
    accepted one would replace its row."""
    cfg = text_ids()
    proc, bus = processor(cfg, conn)
    t = T0 + 20 * DAY
    rep = proc.process(0, _rows([_tx("q1", t, amount=5.0), _tx("q1", t + 5, amount=6.0,
                                                                 customer="c7")]))
    assert rep.written == 1 and rep.dead_letters == {M.CONFLICT: 1}
    rows = bus.enriched(cfg, "transaction")
    assert [(r["customer_id"], r["amount"], r["event_time_ms"]) for r in rows] == \
        [("c1", 5.0, t * 1000)]
    assert bus.last_enriched(cfg)["q1"]["customer_avg_amount_1d"] == 5.0


# ---- a backlog batch spanning more than the longest window ---------------------------------

def _backlog(days: int = 45):
    """One customer paying every 12 hours at two terminals for `days` days."""
    t0 = 1_767_225_600  # 2026-01-01
    rows = [{"transaction_id": f"b{i}", "customer_id": "c1", "terminal_id": f"m{i % 2}",
             "t": t0 + i * 43_200, "amount": 10.0 + i} for i in range(days * 2)]
    tx = pd.DataFrame(rows)
    labels = pd.DataFrame({"transaction_id": ["b3", "b20"], "is_fraud": [1, 1],
                           "label_t": [t0 + 3 * 43_200 + 60, t0 + 20 * 43_200 + 60]})
    return tx, labels


@pytest.mark.parametrize("batches", [1, 3], ids=["one-batch", "three-batches"])
def test_a_backlog_batch_longer_than_the_retention_enriches_exactly(conn, batches):
    """A replayed backlog puts weeks of events in one batch: the reads at the early events'
    times need records that trimming relative to the newest event would already drop."""
    cfg = text_ids()
    tx, labels = _backlog()
    events = [_tx(r.transaction_id, r.t, r.customer_id, r.terminal_id, r.amount)
              for r in tx.itertuples()] + [_label(r.transaction_id, r.label_t)
                                           for r in labels.itertuples()]
    events.sort(key=lambda e: e[0])
    proc, bus = processor(cfg, conn)
    feed = Feed()
    for i, part in enumerate(split(events, batches)):
        proc.process(i, feed.rows(part))
    assert mismatches(bus.last_enriched(cfg), offline(tx, labels)) == []
