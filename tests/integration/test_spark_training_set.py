"""`ffs training-set --engine spark`: file to file on Spark, the same rows, values and order
as the in-process engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffs.cli import main
from ffs.config import Config
from ffs.errors import InputError
from ffs.jobs.batch.backfill import backfill
from ffs.jobs.batch.spark_training_set import training_set_files
from ffs.jobs.batch.training_set import training_set
from tests.conftest import random_events

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark-training")
    tx, labels, points = random_events(seed=11, n=400)
    tx.to_parquet(root / "tx.parquet")
    labels.to_parquet(root / "labels.parquet")
    cfg = Config()
    cfg.offline.path = str(root / "offline")
    cfg.validation.enabled = False
    cfg.spark.buckets = 3
    backfill(cfg, root / "tx.parquet", root / "labels.parquet", "local", log=lambda _: None)
    # shuffled, with columns of their own, ids spelled as text: order and values must hold
    entities = points.assign(label=np.arange(len(points)) % 2, note="x") \
        .sample(frac=1.0, random_state=1).reset_index(drop=True)
    entities["customer_id"] = entities["customer_id"].map(lambda c: f"00{c}")
    path = root / "entities.parquet"
    entities.to_parquet(path, index=False)
    return cfg, root, entities, path


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        if pd.api.types.is_datetime64_any_dtype(want[c]):
            assert (pd.to_datetime(got[c], utc=True) == want[c]).all(), c
        elif pd.api.types.is_numeric_dtype(want[c]):
            np.testing.assert_allclose(got[c].to_numpy(float), want[c].to_numpy(float),
                                       rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=c)
        else:
            assert got[c].astype(str).tolist() == want[c].astype(str).tolist(), c


def test_spark_training_set_from_the_store_equals_the_local_engine(spark, backfilled, tmp_path):
    cfg, _, entities, path = backfilled
    want = training_set(entities, cfg, engine="local")
    out = tmp_path / "ts.parquet"
    summary = training_set_files(cfg, spark, path, out)
    got = pd.read_parquet(out)
    assert summary.rows == len(entities) and summary.columns == got.shape[1]
    assert got["customer_nb_tx_30d"].sum() > 0  # the text ids found their events
    _same(got, want)


def test_spark_training_set_from_files_counts_what_it_sets_aside(spark, backfilled, tmp_path):
    cfg, root, entities, path = backfilled
    tx = pd.read_parquet(root / "tx.parquet")
    bad = tx.head(2).assign(transaction_id=[10**6, 10**6 + 1], amount=[-1.0, 3.0])
    bad.loc[bad.index[1], "customer_id"] = None
    tx_path = tmp_path / "tx.parquet"
    pd.concat([tx, bad]).to_parquet(tx_path, index=False)
    want = training_set(entities, cfg, transactions=tx_path, labels=root / "labels.parquet")
    out = tmp_path / "ts.csv"
    summary = training_set_files(cfg, spark, path, out, tx_path, root / "labels.parquet")
    assert summary.rejected == want.attrs["rejected"]
    assert summary.rejected["transactions"] == {"amount is negative": 1,
                                                "missing customer_id": 1}
    _same(pd.read_csv(out), want)


def test_a_bad_entity_row_is_an_input_error_not_a_spark_trace(spark, backfilled, tmp_path):
    cfg, *_ = backfilled
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"customer_id": [1, 2], "terminal_id": [1, 2],
                  "event_timestamp": ["2024-01-05", "yesterday-ish"]}).to_parquet(bad)
    with pytest.raises(InputError, match="1 entity row"):
        training_set_files(cfg, spark, bad, tmp_path / "out.parquet")
    lacking = tmp_path / "lacking.parquet"
    pd.DataFrame({"customer_id": [1]}).to_parquet(lacking)
    with pytest.raises(InputError, match="missing column"):
        training_set_files(cfg, spark, lacking, tmp_path / "out.parquet")


def test_the_cli_runs_the_distributed_path(backfilled, tmp_path, capsys, monkeypatch):
    cfg, root, entities, path = backfilled
    monkeypatch.setenv("FFS_VALIDATION_ENABLED", "false")
    out = tmp_path / "cli.parquet"
    code = main(["training-set", "--entities", str(path), "--output", str(out),
                 "--engine", "spark", "--offline", cfg.offline.path])
    assert code == 0
    assert f"training set: {len(entities):,} rows" in capsys.readouterr().out
    assert len(pd.read_parquet(out)) == len(entities)
