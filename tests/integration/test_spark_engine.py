"""The Spark engine against the in-process engine and the reference, on the same events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffs.config import Config
from ffs.jobs.batch.features_job import compute
from ffs.transformations import engine, schema
from tests.conftest import random_events
from tests.reference import reference_features

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def events():
    tx, labels, points = random_events(seed=11, n=400)
    tx = schema.normalize_transactions(tx).rows
    labels = schema.normalize_labels(labels, tx).rows
    return tx, labels, points


def test_spark_training_points_equal_reference(spark, events):
    tx, labels, points = events
    cfg = Config()
    cfg.spark.buckets = 3
    got = compute(cfg, tx, labels, points, "spark", spark=spark)
    expected = reference_features(tx, labels, points)
    for col in expected.columns:
        np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float),
                                   rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=col)


def test_spark_backfill_mode_equals_local_engine(spark, events):
    tx, labels, _ = events
    cfg = Config()
    cfg.spark.buckets = 3
    got = compute(cfg, tx, labels, None, "spark", spark=spark)
    expected = engine.compute_features(tx, labels, tx)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)


def test_spark_handles_buckets_without_points_or_events(spark, events):
    tx, labels, _ = events
    cfg = Config()
    cfg.spark.buckets = 16  # more buckets than entities: some are empty on one side
    points = pd.DataFrame({"customer_id": [0, 12345], "terminal_id": [0, 54321],
                           "event_timestamp": pd.to_datetime(["2024-01-20", "2024-01-20"],
                                                             utc=True)})
    got = compute(cfg, tx, labels, points, "spark", spark=spark)
    expected = engine.compute_features(tx, labels, points)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)
    assert got.loc[1, "customer_nb_tx_30d"] == 0
