"""`ffs backfill` end to end on generated traffic: Spark, the offline store, the gate."""

from __future__ import annotations

import pandas as pd
import pytest

from ffs.config import Config
from ffs.errors import ValidationFailed
from ffs.jobs.batch.backfill import backfill
from ffs.jobs.batch.offline_store import OfflineStore
from ffs.jobs.tools.generate import GenerateSpec, generate_to
from ffs.transformations import engine, schema


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    out = tmp_path_factory.mktemp("traffic")
    spec = GenerateSpec(customers=120, terminals=200, days=20, seed=3)
    return generate_to(out, spec)


def _cfg(tmp_path) -> Config:
    cfg = Config()
    cfg.offline.path = str(tmp_path / "offline")
    cfg.validation.data_docs_dir = str(tmp_path / "docs")
    cfg.spark.buckets = 3
    return cfg


def _expected(traffic) -> pd.DataFrame:
    tx = schema.normalize_transactions(schema.read_table(traffic.transactions_path)).rows
    labels = schema.normalize_labels(schema.read_table(traffic.labels_path), tx).rows
    feats = engine.compute_features(tx, labels, tx)
    base = tx[["transaction_id", "customer_id", "terminal_id", "event_timestamp"]]
    return pd.concat([base, feats], axis=1).sort_values("transaction_id").reset_index(drop=True)


def _published(cfg) -> pd.DataFrame:
    out = OfflineStore(cfg.offline.path).read("features")
    return out.sort_values("transaction_id").reset_index(drop=True)


@pytest.mark.spark
@pytest.mark.slow
def test_spark_backfill_publishes_exact_features_and_is_idempotent(spark, traffic, tmp_path):
    cfg = _cfg(tmp_path)
    first = backfill(cfg, traffic.transactions_path, traffic.labels_path, "spark",
                     log=lambda _: None, spark=spark)
    assert first.transactions == traffic.n_transactions and first.labels == traffic.n_labels
    published = _published(cfg)
    expected = _expected(traffic)
    pd.testing.assert_frame_equal(published[expected.columns], expected, check_dtype=False)
    assert (tmp_path / "docs" / "index.html").exists()

    backfill(cfg, traffic.transactions_path, traffic.labels_path, "spark", log=lambda _: None,
             spark=spark)
    again = _published(cfg)
    assert len(again) == len(published)  # no duplicates on re-run
    pd.testing.assert_frame_equal(again, published)
    partitions = list((tmp_path / "offline" / "features").iterdir())
    assert len(partitions) == 20 and all(p.name.startswith("event_date=") for p in partitions)


def _break_features(monkeypatch):
    """Make the engine emit a risk above 1 on a few rows, which the gate must refuse;
    returns the real function, to put back."""
    real = engine.compute_features

    def broken(*args, **kwargs):
        out = real(*args, **kwargs)
        out.loc[out.index[:5], "terminal_risk_7d_delay7d"] = 1.5
        return out

    monkeypatch.setattr(engine, "compute_features", broken)
    return real


def test_backfill_refuses_to_publish_a_batch_that_fails_validation(traffic, tmp_path,
                                                                   monkeypatch):
    cfg = _cfg(tmp_path)
    _break_features(monkeypatch)
    with pytest.raises(ValidationFailed) as err:
        backfill(cfg, traffic.transactions_path, traffic.labels_path, "local",
                 log=lambda _: None)
    assert "terminal_risk_7d_delay7d" in str(err.value)
    store = OfflineStore(cfg.offline.path)
    assert not store.exists("features") and not store.exists("transactions")
    assert not any((tmp_path / "offline" / "_staging").glob("*"))


def test_backfill_sets_bad_rows_aside_with_reasons(traffic, tmp_path):
    cfg = _cfg(tmp_path)
    raw = schema.read_table(traffic.transactions_path)
    bad = raw.head(3).copy()
    bad["amount"] = [-1.0, float("nan"), 5.0]
    bad["transaction_id"] = [10**9, 10**9 + 1, raw["transaction_id"].iloc[0]]
    path = tmp_path / "with_bad.csv"
    pd.concat([raw, bad]).to_csv(path, index=False)
    summary = backfill(cfg, path, traffic.labels_path, "local", log=lambda _: None)
    assert summary.rejected["transactions"] == {
        "amount is negative": 1, "missing amount": 1, "duplicate transaction_id": 1}
    rejects = pd.read_parquet(tmp_path / "offline" / "rejects" / "transactions.parquet")
    assert len(rejects) == 3 and set(rejects["reason"]) == set(summary.rejected["transactions"])
    assert len(_published(cfg)) == len(raw)


def test_a_refused_batch_keeps_the_audit_trail_of_what_was_refused(traffic, tmp_path,
                                                                    monkeypatch):
    """Issue 10, defect 7: a refused backfill used to delete the previous batch's rejects."""
    cfg = _cfg(tmp_path)
    raw = schema.read_table(traffic.transactions_path)
    bad = raw.head(2).copy()
    bad["amount"] = [-1.0, -2.0]
    bad["transaction_id"] = [10**9, 10**9 + 1]
    first = tmp_path / "first.csv"
    pd.concat([raw, bad]).to_csv(first, index=False)
    backfill(cfg, first, traffic.labels_path, "local", log=lambda _: None)
    latest = tmp_path / "offline" / "rejects" / "transactions.parquet"
    kept = pd.read_parquet(latest)
    assert len(kept) == 2

    real = _break_features(monkeypatch)
    with pytest.raises(ValidationFailed):  # clean input this time, refused by the gate
        backfill(cfg, traffic.transactions_path, traffic.labels_path, "local",
                 log=lambda _: None)
    pd.testing.assert_frame_equal(pd.read_parquet(latest), kept)  # still the published run's
    history = sorted((tmp_path / "offline" / "rejects" / "history").glob("*-transactions.*"))
    assert len(history) == 1  # the refused run had no rejects of its own

    monkeypatch.setattr(engine, "compute_features", real)
    backfill(cfg, traffic.transactions_path, traffic.labels_path, "local", log=lambda _: None)
    assert not latest.exists()  # the newest published run refused nothing
    assert len(sorted((tmp_path / "offline" / "rejects" / "history").glob("*"))) == 1
