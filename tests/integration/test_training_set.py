"""Training sets: exact windows at arbitrary timestamps, columns carried, both engines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffs.config import Config
from ffs.errors import InputError
from ffs.jobs.batch.backfill import backfill
from ffs.jobs.batch.training_set import training_set
from ffs.transformations import schema
from tests.conftest import random_events
from tests.reference import reference_features


@pytest.fixture()
def store(tmp_path):
    tx, labels, points = random_events(seed=5, n=250)
    tx.to_parquet(tmp_path / "tx.parquet")
    labels.to_parquet(tmp_path / "labels.parquet")
    cfg = Config()
    cfg.offline.path = str(tmp_path / "offline")
    cfg.validation.data_docs_dir = str(tmp_path / "docs")
    cfg.spark.buckets = 3
    backfill(cfg, tmp_path / "tx.parquet", tmp_path / "labels.parquet", "local",
             log=lambda _: None)
    entities = points.assign(label=np.arange(len(points)) % 2, note="x")
    # shuffle the entity rows: output order must follow the input, whatever it is
    return cfg, tx, labels, entities.sample(frac=1.0, random_state=0)


def _check(out, tx, labels, entities):
    assert list(out["label"]) == list(entities["label"]) and (out["note"] == "x").all()
    ntx = schema.normalize_transactions(tx).rows
    nlab = schema.normalize_labels(labels, ntx).rows
    expected = reference_features(ntx, nlab, entities)
    for col in expected.columns:
        np.testing.assert_allclose(out[col].to_numpy(float), expected[col].to_numpy(float),
                                   rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=col)


def test_training_set_from_offline_store_matches_reference(store):
    cfg, tx, labels, entities = store
    out = training_set(entities, cfg, engine="local")
    _check(out, tx, labels, entities)


@pytest.mark.spark
@pytest.mark.slow
def test_training_set_with_spark_matches_reference(store, spark):
    cfg, tx, labels, entities = store
    out = training_set(entities, cfg, engine="spark", spark=spark)
    _check(out, tx, labels, entities)


def test_training_set_needs_the_entity_columns(store):
    cfg, *_ = store
    with pytest.raises(InputError, match="missing column"):
        training_set(pd.DataFrame({"customer_id": [1]}), cfg, engine="local")


def test_training_set_reports_bad_timestamps(store):
    cfg, *_ = store
    bad = pd.DataFrame({"customer_id": [1, 2], "terminal_id": [1, 2],
                        "event_timestamp": ["2024-01-05", "yesterday-ish"]})
    with pytest.raises(InputError, match="1 entity row"):
        training_set(bad, cfg, engine="local")


def test_training_set_without_a_store_says_to_backfill(tmp_path):
    cfg = Config()
    cfg.offline.path = str(tmp_path / "empty")
    entities = pd.DataFrame({"customer_id": [1], "terminal_id": [1],
                             "event_timestamp": ["2024-01-05"]})
    with pytest.raises(InputError, match="ffs backfill"):
        training_set(entities, cfg, engine="local")


def test_event_rows_set_aside_are_counted_by_reason_and_logged(tmp_path):
    """Issue 10, defect 7: explicit event inputs lost their bad rows without a word."""
    tx, labels, points = random_events(seed=7, n=120)
    bad = tx.head(3).copy()
    bad["transaction_id"] = [10**6, 10**6 + 1, tx["transaction_id"].iloc[5]]  # last: duplicate
    bad["amount"] = [-1.0, 5.0, 5.0]
    bad.loc[bad.index[1], "customer_id"] = None
    early = labels.head(1).assign(label_timestamp=tx["event_timestamp"].min()
                                  - pd.Timedelta(days=1),
                                  transaction_id=tx["transaction_id"].iloc[-1])
    lines: list[str] = []
    out = training_set(points.head(20), Config(), transactions=pd.concat([tx, bad]),
                       labels=pd.concat([labels, early]), log=lines.append)
    assert out.attrs["rejected"]["transactions"] == {
        "amount is negative": 1, "missing customer_id": 1, "duplicate transaction_id": 1}
    assert sum(out.attrs["rejected"]["labels"].values()) == 1
    assert any("3 transactions row(s) set aside" in line for line in lines)
    assert any("1 labels row(s) set aside" in line for line in lines)
    assert len(out) == 20


def test_entity_ids_as_text_or_floats_find_the_stored_integer_ids(store):
    """Issue 10, defect 2: "124" for the stored customer 124 used to find no events (every
    window 0) while HTTP answered the real counts; one id model reads it as 124 everywhere."""
    cfg, tx, labels, entities = store
    as_int = training_set(entities, cfg, engine="local")
    spelled = entities.assign(customer_id=entities["customer_id"].map(lambda c: f"00{c}"),
                              terminal_id=entities["terminal_id"].astype(float))
    as_text = training_set(spelled, cfg, engine="local")
    assert as_int["customer_nb_tx_30d"].sum() > 0
    pd.testing.assert_frame_equal(as_text.drop(columns=["customer_id", "terminal_id"]),
                                  as_int.drop(columns=["customer_id", "terminal_id"]))
    assert as_text["customer_id"].tolist() == entities["customer_id"].tolist()
    with pytest.raises(InputError, match=r"entity table: 1 customer_id value\(s\) refused"):
        training_set(entities.assign(customer_id=["c|1"] + [1] * (len(entities) - 1)), cfg)
