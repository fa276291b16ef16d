"""Event-at-a-time writes (what the stream will call): out of order, duplicated, replayed,
and still equal to the training set at the same instant."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffs.config import Config
from ffs.jobs.batch.training_set import training_set
from ffs.jobs.tools.generate import GenerateSpec, generate_frames
from ffs.online.client import OnlineClient
from ffs.online.writer import OnlineWriter
from ffs.transformations import schema
from ffs.transformations.features import INPUT_COLUMNS
from ffs.transformations.timestamps import to_seconds
from tests.integration.test_online_parity import _compare, _snapshot

pytestmark = pytest.mark.redis


@pytest.fixture()
def conn():
    import redis

    from ffs.online.redis_server import RedisServer

    server = RedisServer().start()  # a missing redis-server fails here, with the fix to run
    yield redis.Redis.from_url(server.url)
    server.stop()


@pytest.fixture(scope="module")
def events():
    raw_tx, raw_labels = generate_frames(GenerateSpec(customers=40, terminals=60, days=45, seed=9))
    tx = schema.normalize_transactions(raw_tx).rows
    labels = schema.normalize_labels(raw_labels, tx).rows
    # a few revisions: genuine after fraud, two days later
    fraud = labels[labels["is_fraud"] == 1].head(5)
    revised = fraud.assign(is_fraud=0,
                           label_timestamp=fraud["label_timestamp"] + pd.Timedelta(days=2))
    labels = pd.concat([labels, revised], ignore_index=True)
    return tx, labels


def _tx_events(tx: pd.DataFrame, seed: int, lateness: int = 25) -> list[dict]:
    ordered = tx.sort_values(["event_timestamp", "transaction_id"]).assign(
        t=lambda d: to_seconds(d["event_timestamp"]))
    # what a message carries: the derived columns are the writer's to compute
    rows = ordered[["transaction_id", "customer_id", "terminal_id", "t", *INPUT_COLUMNS]]
    rng = np.random.default_rng(seed)
    order = np.arange(len(rows))
    for lo in range(0, len(order), lateness):  # shuffled within blocks: bounded lateness
        rng.shuffle(order[lo:lo + lateness])
    return rows.iloc[order].to_dict("records")


def _label_events(labels: pd.DataFrame) -> list[dict]:
    lab = labels.sort_values("label_timestamp").assign(label_t=lambda d: to_seconds(
        d["label_timestamp"]))
    return lab[["transaction_id", "is_fraud", "label_t"]].to_dict("records")


def _ingest(writer, tx, labels, seed=0):
    tx_out, _, _ = writer.write_transactions(_tx_events(tx, seed))
    lab_out, _, _ = writer.write_labels(_label_events(labels))
    return tx_out, lab_out


def test_out_of_order_writes_equal_the_training_set(conn, events, tmp_path):
    tx, labels = events
    tx_out, lab_out = _ingest(OnlineWriter(conn), tx, labels)
    assert tx_out.written == len(tx) and tx_out.duplicate == 0
    assert lab_out.written == len(labels)
    cfg = Config()
    newest = int(max(to_seconds(tx["event_timestamp"]).max(),
                     to_seconds(labels["label_timestamp"]).max()))
    client = OnlineClient(conn)
    pairs = tx[["customer_id", "terminal_id"]].drop_duplicates().head(80)
    rows = pairs.to_dict("records")
    for later in (0, 3600, 86400 * 3):
        t = pd.Timestamp(newest + later, unit="s", tz="UTC")
        got = client.get_features(rows, as_of=t)
        expected = training_set(pairs.assign(event_timestamp=t), cfg, transactions=tx,
                                labels=labels, engine="local")[got.feature_names]
        _compare(got, expected, skip=("amount", "amount_over_customer_avg_30d"))


def test_replaying_everything_changes_nothing(conn, events):
    tx, labels = events
    writer = OnlineWriter(conn)
    _ingest(writer, tx, labels, seed=1)
    before = _snapshot(conn)
    tx_out, lab_out = _ingest(writer, tx, labels, seed=2)  # a different order, all again
    assert tx_out.duplicate == len(tx) and tx_out.written == 0
    assert _snapshot(conn) == before


def test_stale_and_unknown_labels_are_reported_not_applied(conn, events):
    tx, labels = events
    writer = OnlineWriter(conn)
    _ingest(writer, tx, labels)
    before = _snapshot(conn)
    revised = labels[labels["label_timestamp"] > labels.groupby("transaction_id")[
        "label_timestamp"].transform("min")]
    first = labels[labels["transaction_id"].isin(revised["transaction_id"])].sort_values(
        "label_timestamp").drop_duplicates("transaction_id")
    assert len(first) == 5
    out, per_event, _ = writer.write_labels(_label_events(first))  # older labels, replayed late
    assert out.stale == 5 and set(per_event) == {"stale"}
    out, _, _ = writer.write_labels([{"transaction_id": 10**15, "is_fraud": 1, "label_t": 0}])
    assert out.unknown_transaction == 1
    assert _snapshot(conn) == before


def test_a_trim_keeps_the_base_second_and_records_only_what_reads_take(conn, events):
    """Records keep no own value of a column only summed (online/layout.py), so a trim keeps
    the newest second older than its cutoff: an edge between that second and the records
    still read is that second's last record, exact, whatever order the events came in."""
    from ffs.online import layout
    from ffs.transformations.features import entity

    tx, labels = events
    customer = entity("customer")
    fmt = layout.record_format(customer)
    assert set(fmt.cumulative) - set(fmt.numbers)  # the shipped repo has one only summed
    cid = tx["customer_id"].iloc[0]
    mine = tx[tx["customer_id"] == cid].head(6).copy()
    day = 86400
    t0 = int(to_seconds(mine["event_timestamp"]).min())
    at = [t0, t0 + day, t0 + 2 * day, t0 + 2 * day, t0 + 33 * day + 1, t0 + 33 * day + 7200]
    mine["event_timestamp"] = pd.to_datetime(at, unit="s", utc=True)
    writer = OnlineWriter(conn)
    ev = _tx_events(mine, seed=0, lateness=1)
    # the base second's two payments arrive after the newest one: late, then trimmed around
    out, _, _ = writer.write_transactions([ev[i] for i in (0, 1, 4, 2, 5, 3)])
    assert out.written == 6
    key = layout.entity_key("ffs", customer, str(cid))
    kept = conn.zrange(key, 0, -1, withscores=True)
    assert [s for _m, s in kept] == at[2:]  # the first two trimmed, the base second kept
    assert all(len(m) == fmt.fixed_size + len(m[fmt.fixed_size:]) for m, _s in kept)
    cfg = Config()
    client = OnlineClient(conn)
    rows = [{"customer_id": cid, "terminal_id": mine["terminal_id"].iloc[-1]}]
    pairs = pd.DataFrame(rows)
    for t in (at[-1], at[-1] + 3600, at[2] + 31 * day):
        ts = pd.Timestamp(t, unit="s", tz="UTC")
        got = client.get_features(rows, as_of=ts)
        expected = training_set(pairs.assign(event_timestamp=ts), cfg, transactions=mine,
                                labels=labels.iloc[:0], engine="local")[got.feature_names]
        _compare(got, expected, skip=("amount", "amount_over_customer_avg_30d"))
