"""Online reads equal the training set at the same request time, on the same events.

This is the parity suite's online leg: the offline engine is itself checked against the
brute-force reference (tests/unit/test_window_semantics.py), so equality here ties the Redis
read to the reference too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffs.config import Config
from ffs.jobs.batch.backfill import backfill
from ffs.jobs.batch.offline_store import OfflineStore
from ffs.jobs.batch.training_set import training_set
from ffs.jobs.tools.generate import GenerateSpec, generate_to
from ffs.online import layout
from ffs.online.client import MISSING_ENTITY, PRESENT, OnlineClient
from ffs.online.loader import load_state
from ffs.transformations import ids as _ids
from tests.conftest import text_ids

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from ffs.online.redis_server import RedisServer

    server = RedisServer().start()  # a missing redis-server fails here, with the fix to run
    import redis

    tmp = tmp_path_factory.mktemp("parity")
    gen = generate_to(tmp / "in", GenerateSpec(customers=150, terminals=300, days=50, seed=5))
    cfg = Config()
    cfg.offline.path = str(tmp / "offline")
    cfg.validation.enabled = False
    backfill(cfg, gen.transactions_path, gen.labels_path, "local", log=lambda _: None)
    store = OfflineStore(cfg.offline.path)
    tx, labels = store.read("transactions"), store.read("labels")
    conn = redis.Redis.from_url(server.url)
    summary = load_state(conn, tx, labels)
    yield cfg, tx, labels, conn, summary
    server.stop()


def _compare(result, expected: pd.DataFrame, skip=()):
    for col in expected.columns:
        if col in skip:
            continue
        got = np.array([np.nan if v is None else v for v in result.values[col]], dtype=float)
        np.testing.assert_allclose(got, expected[col].to_numpy(float), rtol=1e-12, atol=1e-9,
                                   equal_nan=True, err_msg=col)


@pytest.mark.parametrize("later", ["0s", "30min", "1h", "20h", "3d", "8d", "31d"])
def test_online_read_equals_training_set_at_any_later_time(world, later):
    cfg, tx, labels, conn, summary = world
    t = pd.Timestamp(summary.as_of, unit="s", tz="UTC") + pd.Timedelta(later)
    rng = np.random.default_rng(len(later))
    customers = rng.choice(tx["customer_id"].unique(), 60).tolist() + [10**9]
    terminals = rng.choice(tx["terminal_id"].unique(), 60).tolist() + [10**9]
    rows = [{"customer_id": c, "terminal_id": k}
            for c, k in zip(customers, terminals, strict=False)]
    result = OnlineClient(conn).get_features(rows, as_of=t)
    entities = pd.DataFrame({"customer_id": customers, "terminal_id": terminals,
                             "event_timestamp": [t] * len(rows)})
    expected = training_set(entities, cfg, engine="local")[result.feature_names]
    _compare(result, expected, skip=("amount", "amount_over_customer_avg_30d"))
    assert result.statuses["customer_nb_tx_1d"][-1] == MISSING_ENTITY
    assert result.statuses["customer_nb_tx_1d"][0] == PRESENT


def test_scored_transaction_counts_exactly_as_in_the_training_set(world):
    cfg, tx, labels, conn, summary = world
    t0 = pd.Timestamp(summary.as_of, unit="s", tz="UTC")
    picked = tx.sample(40, random_state=1)
    new = pd.DataFrame({
        "transaction_id": np.arange(40) + 10**12,
        "customer_id": picked["customer_id"].to_numpy(),
        "terminal_id": picked["terminal_id"].to_numpy()[::-1],
        "event_timestamp": t0 + pd.to_timedelta(np.arange(40) * 7, unit="s"),
        "amount": np.round(np.linspace(1, 400, 40), 2),
    })
    client = OnlineClient(conn)
    for row in new.to_dict("records"):
        # one at a time: each is scored before the next is known, as in production
        got = client.get_features([row])
        extended = pd.concat([tx, pd.DataFrame([row])], ignore_index=True)
        expected = training_set(pd.DataFrame([row]), cfg, transactions=extended,
                                labels=labels, engine="local")[got.feature_names]
        _compare(got, expected)


def test_already_ingested_transaction_is_not_counted_twice(world):
    cfg, tx, labels, conn, summary = world
    last = tx.sort_values("event_timestamp").tail(25)
    rows = last[["transaction_id", "customer_id", "terminal_id", "event_timestamp",
                 "amount"]].to_dict("records")
    got = OnlineClient(conn).get_features(rows)
    expected = training_set(last[["customer_id", "terminal_id", "event_timestamp", "amount"]],
                            cfg, engine="local")[got.feature_names]
    _compare(got, expected)


def _snapshot(conn) -> dict:
    out = {}
    for k in sorted(conn.scan_iter(count=1000)):
        kind = conn.type(k)
        if kind == b"zset":
            out[k] = conn.zrange(k, 0, -1, withscores=True)
        else:
            out[k] = conn.get(k)
    return out


def test_loading_twice_gives_the_same_state(world):
    cfg, tx, labels, conn, summary = world
    before = _snapshot(conn)
    load_state(conn, tx, labels)
    assert _snapshot(conn) == before


def test_state_is_bounded_by_retention_and_expires(world):
    cfg, tx, labels, conn, summary = world
    from ffs.transformations.features import entity

    keep = layout.retention_s(entity("customer"))
    cid = tx["customer_id"].iloc[0]
    ev_key = layout.entity_key("ffs", entity("customer"), str(cid))
    times = [s for _, s in conn.zrange(ev_key, 0, -1, withscores=True)]
    assert min(times) > summary.as_of - keep
    assert 0 < conn.ttl(ev_key) <= keep
    tx_keys = list(conn.scan_iter(match="ffs:x:*", count=1000))
    assert tx_keys and 0 < conn.ttl(tx_keys[0]) <= layout.retention_s(entity("terminal"))


def test_string_ids_materialize_and_read_as_the_training_set_does(tmp_path):
    """Issue 10, defect 1: an offline store with string ids crashed `ffs materialize`
    (AttributeError in the loader) and left Redis empty."""
    import redis

    from ffs.online.redis_server import RedisServer

    gen = generate_to(tmp_path / "in", GenerateSpec(customers=40, terminals=80, days=20, seed=9))
    tx = pd.read_parquet(gen.transactions_path)
    labels = pd.read_parquet(gen.labels_path)
    for frame, cols in ((tx, ("transaction_id", "customer_id", "terminal_id")),
                        (labels, ("transaction_id",))):
        for c in cols:
            frame[c] = c[0] + "-" + frame[c].astype(str)  # never an integer again
    tx.to_parquet(tmp_path / "tx.parquet")
    labels.to_parquet(tmp_path / "labels.parquet")
    cfg = text_ids()
    cfg.offline.path = str(tmp_path / "offline")
    cfg.validation.enabled = False
    backfill(cfg, tmp_path / "tx.parquet", tmp_path / "labels.parquet", "local",
             log=lambda _: None)
    store = OfflineStore(cfg.offline.path)
    stored_tx, stored_labels = store.read("transactions"), store.read("labels")
    assert stored_tx["customer_id"].iloc[0].startswith("c-")
    with RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        summary = load_state(conn, stored_tx, stored_labels)
        assert summary.entities["customer"] == stored_tx["customer_id"].nunique() > 0
        t = pd.Timestamp(summary.as_of, unit="s", tz="UTC") + pd.Timedelta("2h")
        customers = stored_tx["customer_id"].drop_duplicates().head(30).tolist()
        terminals = stored_tx["terminal_id"].drop_duplicates().head(30).tolist()
        rows = [{"customer_id": c, "terminal_id": k}
                for c, k in zip(customers, terminals, strict=True)]
        result = OnlineClient(conn, id_types=_ids.types(cfg)).get_features(rows, as_of=t)
        entities = pd.DataFrame({"customer_id": customers, "terminal_id": terminals,
                                 "event_timestamp": [t] * len(rows)})
        expected = training_set(entities, cfg, engine="local")[result.feature_names]
        _compare(result, expected, skip=("amount", "amount_over_customer_avg_30d"))
        assert set(result.statuses["customer_nb_tx_30d"]) == {PRESENT}
        assert expected["customer_nb_tx_30d"].min() > 0  # real windows, not empty ones
        conn.close()
