"""Feast as most teams run it (benchmarks/feast_baseline.py: plain views over the features
table, built from the loaded repo's declarations), and what its historical retrieval returns.

No Redis needed: the end-to-end test uses a throwaway repo with the file offline store.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import feast
import numpy as np
import pandas as pd
import pytest
from feast.types import Float64, Int64

from benchmarks import feast_baseline as D
from feature_repo.store import REDIS_ENV, REPO_DIR, feast_redis_connection
from ffs.config import load_config
from ffs.transformations.engine import compute_features
from ffs.transformations.features import (
    FEATURE_SERVICE,
    RECENCY_FEATURES,
    REQUEST_FEATURES,
    WINDOW_FEATURES,
    Agg,
    feature_dtypes,
    feature_names,
)
from ffs.transformations.schema import normalize_transactions

PROJECT_ROOT = Path(__file__).resolve().parents[2]
B = D.build(D.offline_features_path())
VIEWS = {v.name: v for v in B["views"]}


# --- definitions -------------------------------------------------------------------------

def _service_features(service) -> list[tuple[str, str]]:
    return [(p.name, f.name) for p in service.feature_view_projections for f in p.features]


def test_service_reaches_every_declared_feature_exactly_once():
    service = B["service"]
    assert service.name == FEATURE_SERVICE == "fraud_detection_v2"
    names = [f for _, f in _service_features(service)]
    assert len(names) == len(set(names)), "a feature is reachable twice"
    assert sorted(names) == sorted(feature_names())
    assert len(names) == len(WINDOW_FEATURES) + len(RECENCY_FEATURES) + len(REQUEST_FEATURES)


def test_views_group_features_by_entity():
    got = {view: {f for v, f in _service_features(B["service"]) if v == view}
           for view in ("customer_features", "terminal_features", "transaction_features")}
    expect_customer = {f.name for f in WINDOW_FEATURES if f.entity.value == "customer"}
    expect_customer |= {r.name for r in RECENCY_FEATURES if r.entity.value == "customer"}
    assert got["customer_features"] == expect_customer
    assert got["terminal_features"] == {
        f.name for f in WINDOW_FEATURES if f.entity.value == "terminal"}
    assert got["transaction_features"] == {f.name for f in REQUEST_FEATURES} >= {
        "amount", "tx_during_weekend", "tx_during_night", "amount_over_customer_avg_30d"}
    assert "customer_nb_tx_10m" in got["customer_features"]
    assert "terminal_risk_7d_delay7d" in got["terminal_features"]
    assert "customer_secs_since_prev_tx" in got["customer_features"]


def test_entities_and_join_keys():
    assert (B["customer"].name, B["customer"].join_key) == ("customer", "customer_id")
    assert (B["terminal"].name, B["terminal"].join_key) == ("terminal", "terminal_id")
    assert B["customer"].value_type == feast.ValueType.INT64
    assert B["terminal"].value_type == feast.ValueType.INT64
    assert VIEWS["customer_features"].entities == ["customer"]
    assert VIEWS["terminal_features"].entities == ["terminal"]
    assert VIEWS["transaction_features"].entities == ["customer"]


def test_dtypes_follow_declarations():
    fields = {f.name: f.dtype for v in VIEWS.values() for f in v.features}
    assert set(fields) == set(feature_dtypes())
    for name, dtype in feature_dtypes().items():
        assert fields[name] == {"int64": Int64, "float64": Float64}[dtype], name
    # independent of the mapping: counts are integers, means and rates floats
    for f in WINDOW_FEATURES:
        want = Int64 if f.agg in (Agg.COUNT, Agg.COUNT_DISTINCT) else Float64
        assert fields[f.name] == want, f.name
    assert fields["tx_during_weekend"] == Int64
    assert fields["amount"] == Float64
    assert fields["customer_secs_since_prev_tx"] == Float64


def test_ttl_and_source():
    for v in VIEWS.values():
        assert v.ttl == timedelta(days=37)
        assert v.batch_source is B["source"]
    assert B["source"].timestamp_field == "event_timestamp"
    assert Path(B["source"].path).is_absolute()


def test_source_path_comes_from_config_and_is_absolute():
    rel = load_config(path=None, env={"FFS_OFFLINE_PATH": "somewhere/offline"})
    assert D.offline_features_path(rel) == PROJECT_ROOT / "somewhere/offline/features"
    absolute = load_config(path=None, env={"FFS_OFFLINE_PATH": "/srv/lake/offline"})
    assert D.offline_features_path(absolute) == Path("/srv/lake/offline/features")
    built = D.build(D.offline_features_path(absolute))
    assert built["source"].path == "/srv/lake/offline/features"


def test_feature_store_yaml(monkeypatch):
    from feast.repo_config import load_repo_config

    monkeypatch.setenv(REDIS_ENV, "redis.example:6390,db=2")
    cfg = load_repo_config(REPO_DIR, REPO_DIR / "feature_store.yaml")
    assert cfg.project == "fraud_features"
    assert cfg.provider == "local"
    assert cfg.entity_key_serialization_version == 3
    assert cfg.online_store.type == "redis"
    assert cfg.online_store.connection_string == "redis.example:6390,db=2"
    assert (REPO_DIR / cfg.registry.path).resolve() == PROJECT_ROOT / "data/feast_registry.db"


def test_redis_connection_from_ffs_config():
    assert feast_redis_connection(load_config(path=None, env={})) == "127.0.0.1:6379"
    cfg = load_config(path=None, env={"FFS_REDIS_URL": "rediss://cache:6380/3",
                                      "FFS_REDIS_PASSWORD": "s3cret"})
    assert feast_redis_connection(cfg) == "cache:6380,db=3,password=s3cret,ssl=true"


def test_open_store_fills_the_redis_connection(monkeypatch):
    from feature_repo.store import open_store

    monkeypatch.setenv(REDIS_ENV, "")  # unset: filled in from ffs config (restored after)
    cfg = load_config(path=None, env={"FFS_REDIS_URL": "redis://cache.local:6390/1"})
    store = open_store(cfg=cfg)
    assert store.config.online_store.connection_string == "cache.local:6390,db=1"
    assert store.project == "fraud_features"
    monkeypatch.setenv(REDIS_ENV, "other:7000")  # set: kept as it is
    assert open_store(cfg=cfg).config.online_store.connection_string == "other:7000"


# --- end to end: what get_historical_features returns --------------------------------------

T0 = pd.Timestamp("2024-03-01", tz="UTC")
STALE_CUSTOMER = 99
UNSEEN = 24  # entity row of a customer with no transactions at all


def _transactions() -> pd.DataFrame:
    """~200 transactions: 6 customers x 8 terminals over 12 days at distinct seconds, plus
    customer 99, who pays three times on 2 March and never again."""
    rng = np.random.default_rng(7)
    n = 195
    secs = rng.choice(12 * 86400, size=n, replace=False)
    raw = pd.DataFrame({
        "transaction_id": np.arange(n),
        "event_timestamp": T0 + pd.to_timedelta(np.sort(secs), unit="s"),
        "customer_id": rng.integers(1, 7, n),
        "terminal_id": rng.integers(10, 18, n),
        "amount": rng.uniform(1, 150, n).round(2),
    })
    stale = pd.DataFrame({
        "transaction_id": [1000, 1001, 1002],
        "event_timestamp": pd.to_datetime(["2024-03-02 10:00:01", "2024-03-02 10:05:03",
                                           "2024-03-02 12:00:05"], utc=True),
        "customer_id": STALE_CUSTOMER,
        "terminal_id": [20, 20, 21],
        "amount": [10.0, 20.0, 30.0],
    })
    return normalize_transactions(pd.concat([raw, stale], ignore_index=True)).rows


def _write_offline(tx: pd.DataFrame, root: Path) -> pd.DataFrame:
    """The backfill's layout: features/event_date=YYYY-MM-DD/*.parquet."""
    feats = compute_features(tx, None, tx[["customer_id", "terminal_id", "event_timestamp",
                                           "amount"]])
    table = pd.concat([tx[["transaction_id", "customer_id", "terminal_id",
                           "event_timestamp"]].reset_index(drop=True), feats], axis=1)
    table["event_timestamp"] = table["event_timestamp"].astype("datetime64[us, UTC]")
    for day, part in table.groupby(table["event_timestamp"].dt.strftime("%Y-%m-%d")):
        d = root / "features" / f"event_date={day}"
        d.mkdir(parents=True)
        part.to_parquet(d / "part-00000.parquet", index=False)
    return table


def _entity_rows(tx: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    k = 24
    rows = pd.DataFrame({
        "customer_id": rng.integers(1, 7, k),
        "terminal_id": rng.integers(10, 18, k),
        "event_timestamp": T0 + pd.to_timedelta(rng.integers(3600, 14 * 86400, k), unit="s"),
    })
    some_tx = tx.iloc[[5, 50, 150]][["customer_id", "terminal_id", "event_timestamp"]]
    special = pd.DataFrame({
        "customer_id": [STALE_CUSTOMER, STALE_CUSTOMER, STALE_CUSTOMER],
        "terminal_id": [20, 21, 20],
        "event_timestamp": pd.to_datetime(
            ["2024-03-04 12:00:00",  # 2 days after the customer's last payment
             "2024-03-01 00:00:00",  # before the customer's first payment
             "2024-04-20 00:00:00"],  # past the 37-day ttl
            utc=True),
    })
    unseen = pd.DataFrame({"customer_id": [500], "terminal_id": [12],
                           "event_timestamp": [T0 + pd.Timedelta(days=5)]})
    out = pd.concat([rows, unseen, some_tx, special], ignore_index=True)
    assert out.loc[UNSEEN, "customer_id"] == 500
    return out


@pytest.fixture(scope="module")
def feast_run(tmp_path_factory):
    from benchmarks.feast_peer import feast_historical

    tmp = tmp_path_factory.mktemp("feast_peer")
    tx = _transactions()
    table = _write_offline(tx, tmp / "offline")
    entity_df = _entity_rows(tx)
    run = feast_historical(tmp / "offline" / "features", entity_df, tmp / "work")
    return tx, table, entity_df, run


def _as_of(table: pd.DataFrame, entity_df: pd.DataFrame, key: list[str], cols: list[str]):
    """Per entity row: the entity's table row with the latest event_timestamp <= the row's
    timestamp, within the ttl (what an as-of join returns)."""
    left = entity_df.reset_index().sort_values("event_timestamp")
    left["event_timestamp"] = left["event_timestamp"].astype("datetime64[us, UTC]")
    right = table[[*key, "event_timestamp", *cols]].sort_values("event_timestamp")
    out = pd.merge_asof(left[["index", *key, "event_timestamp"]], right, on="event_timestamp",
                        by=key, direction="backward", tolerance=pd.Timedelta(D.TTL))
    return out.set_index("index").sort_index()[cols]


def test_feast_historical_returns_rows_in_order_with_every_feature(feast_run):
    _, _, entity_df, run = feast_run
    df, seconds = run  # unpacks like the (df, seconds) tuple
    assert len(df) == len(entity_df)
    assert list(df.columns[:3]) == ["customer_id", "terminal_id", "event_timestamp"]
    assert list(df.columns[3:]) == feature_names()
    pd.testing.assert_series_equal(df["customer_id"], entity_df["customer_id"],
                                   check_dtype=False)
    assert (df["event_timestamp"] == entity_df["event_timestamp"]).all()
    assert 0 < seconds < 120
    assert run.consolidate_seconds > 0 and run.source_path.suffix == ".parquet"


def _feast_expectation(table: pd.DataFrame,
                       entity_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Every feature as an as-of join would give it, and which rows Feast 0.67's file store
    drops: those where some view's entity has rows in the table but none within the ttl."""
    parts, dropped = [], pd.Series(False, index=entity_df.index)
    for view, names in D.view_feature_names().items():
        key = list(D.view_entities()[view].keys)  # several for a composite key
        got = _as_of(table, entity_df, key, names)
        parts.append(got)
        known = entity_df[key].apply(tuple, axis=1).isin(set(table[key].apply(tuple, axis=1)))
        dropped |= known & ~_has_match(table, entity_df, key)
    expect = pd.concat(parts, axis=1)[feature_names()]
    expect.loc[dropped, :] = np.nan
    return expect, dropped


def _has_match(table, entity_df, key) -> pd.Series:
    left = entity_df.reset_index().sort_values("event_timestamp")
    left["event_timestamp"] = left["event_timestamp"].astype("datetime64[us, UTC]")
    right = table[[*key, "event_timestamp"]].assign(hit=True).sort_values("event_timestamp")
    m = pd.merge_asof(left[["index", *key, "event_timestamp"]], right, on="event_timestamp",
                      by=key, direction="backward", tolerance=pd.Timedelta(D.TTL))
    return m.set_index("index").sort_index()["hit"].eq(True)


def test_feast_returns_value_at_last_event_at_or_before(feast_run):
    _, table, entity_df, run = feast_run
    expect, dropped = _feast_expectation(table, entity_df)
    for name in feature_names():
        np.testing.assert_allclose(run.df[name].to_numpy(dtype=float),
                                   expect[name].to_numpy(dtype=float),
                                   rtol=1e-12, equal_nan=True, err_msg=name)
    # Feast keeps a row whose customer it has never seen: customer features null, terminal
    # features there ...
    unseen = run.df.loc[UNSEEN]
    assert pd.isna(unseen["customer_nb_tx_1d"]) and pd.isna(unseen["amount"])
    assert unseen["terminal_nb_tx_1h"] >= 0 and not dropped[UNSEEN]
    # ... but drops rows whose entity only has rows outside [t - ttl, t]
    assert dropped.iloc[-2:].all()  # customer 99 before its first payment / past the ttl
    assert run.df.iloc[-2:][feature_names()].isna().all(axis=None)
    assert run.extras["requests_dropped_by_feast"] == dropped.sum()


def test_duplicate_entity_rows_each_get_an_answer(feast_run, tmp_path):
    from benchmarks.feast_peer import feast_historical

    _, _, entity_df, run = feast_run
    twice = pd.concat([entity_df.iloc[[0, 1]], entity_df.iloc[[0]]], ignore_index=True)
    twice["label"] = [1, 0, 0]
    again = feast_historical(run.source_path, twice, tmp_path / "work")
    assert len(again.df) == 3
    assert list(again.df["label"]) == [1, 0, 0]
    assert again.df.loc[2, "customer_nb_tx_7d"] == run.df.loc[0, "customer_nb_tx_7d"]
    assert again.df.loc[0, "customer_nb_tx_7d"] == run.df.loc[0, "customer_nb_tx_7d"]
    assert again.consolidate_seconds == 0  # a single file is read as it is


def test_feast_at_a_transaction_time_returns_that_transaction(feast_run):
    tx, table, entity_df, run = feast_run
    own = table.set_index("event_timestamp")
    for i in range(len(entity_df) - 6, len(entity_df) - 3):  # the three rows at tx times
        ts = entity_df.loc[i, "event_timestamp"]
        row = own.loc[ts]
        assert run.df.loc[i, "amount"] == row["amount"]
        assert run.df.loc[i, "customer_nb_tx_1d"] == row["customer_nb_tx_1d"]


def test_feast_is_stale_where_the_engine_is_exact(feast_run):
    """2 days after customer 99's last payment Feast still serves the 1-day count at that
    payment (3); the window at the requested time is empty (0)."""
    tx, _, entity_df, run = feast_run
    stale, before, expired = (len(entity_df) - 3, len(entity_df) - 2, len(entity_df) - 1)
    exact = compute_features(tx, None, entity_df.iloc[[stale]])
    assert exact.loc[0, "customer_nb_tx_1d"] == 0
    assert exact.loc[0, "customer_nb_tx_1h"] == 0
    assert run.df.loc[stale, "customer_nb_tx_1d"] == 3
    assert run.df.loc[stale, "customer_sum_amount_1h"] == 30.0  # the 12:00 payment's hour
    assert run.df.loc[stale, "amount"] == 30.0  # the last payment's amount, not a request's
    assert run.df.loc[stale, "customer_nb_tx_1d"] > exact.loc[0, "customer_nb_tx_1d"]
    # before the first payment and past the ttl, Feast has no row: nulls
    for i in (before, expired):
        assert pd.isna(run.df.loc[i, "customer_nb_tx_1d"])
        assert pd.isna(run.df.loc[i, "amount"])
