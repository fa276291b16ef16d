"""Validation of PySpark frames: the same suites as pandas, run by GX's Spark engine, give the
same checks with the same outcomes on the same data (the unit tests' frames, made Spark's)."""

from __future__ import annotations

import numpy as np
import pytest

from ffs.transformations.features import RECENCY_FEATURES, Agg
from ffs.validation.run import KINDS, ValidationReport, validate
from tests.unit.test_validation import N, _features, _first, _labels, _tx

pytestmark = [pytest.mark.spark, pytest.mark.slow]

FRAMES = {"transactions": _tx, "labels": _labels, "features": _features}


def _triples(report: ValidationReport) -> list[tuple[str, str | None, bool]]:
    return sorted((r.check, r.column or "", r.success) for r in report.results)  # type: ignore


def _both(spark, kind: str, frame) -> tuple[ValidationReport, ValidationReport]:
    """The pandas and the Spark report of the same data; their checks must agree."""
    on_pandas = validate(kind, frame)
    on_spark = validate(kind, spark.createDataFrame(frame))
    assert _triples(on_spark) == _triples(on_pandas)
    assert on_spark.rows == on_pandas.rows
    return on_pandas, on_spark


def _failed(report: ValidationReport) -> set[tuple[str, str | None]]:
    return {(r.check, r.column) for r in report.failures}


@pytest.mark.parametrize("kind", KINDS)
def test_clean_batches_pass_on_spark_with_the_pandas_checks(spark, kind):
    on_pandas, on_spark = _both(spark, kind, FRAMES[kind]())
    assert on_spark.ok, [r.line() for r in on_spark.failures]
    assert on_spark.warnings == []
    assert on_spark.rows == N and len(on_spark.results) == len(on_pandas.results) > 3


def test_transaction_faults_fail_on_spark_as_on_pandas(spark):
    tx = _tx()
    tx.loc[3, "transaction_id"] = 2
    tx.loc[5, "amount"] = -4.0
    tx["customer_id"] = tx["customer_id"].astype("float64")
    tx.loc[7, "customer_id"] = np.nan  # a null in Spark (Arrow converts NaN to null)
    on_pandas, on_spark = _both(spark, "transactions", tx)
    assert _failed(on_spark) == _failed(on_pandas) == {
        ("expect_column_values_to_be_unique", "transaction_id"),
        ("expect_column_values_to_be_between", "amount"),
        ("expect_column_values_to_not_be_null", "customer_id"),
    }
    lines = {r.column: r.details for r in on_spark.failures}
    assert lines["amount"] == "1 of 40 rows unexpected (2.5%), e.g. [-4.0]; expected >= 0"
    assert lines["transaction_id"] == "2 of 40 rows unexpected (5%), e.g. [2, 2]"
    assert lines["customer_id"] == "1 of 40 rows unexpected (2.5%)"  # no list of nulls
    assert [r.line() for r in on_spark.failures] == [r.line() for r in on_pandas.failures]


@pytest.mark.parametrize("fault", ["negative_amount", "duplicate_id", "null_key"])
def test_each_transaction_fault_alone_fails_its_check_on_spark(spark, fault):
    tx = _tx()
    if fault == "negative_amount":
        tx.loc[5, "amount"] = -4.0
        expected = ("expect_column_values_to_be_between", "amount")
    elif fault == "duplicate_id":
        tx.loc[3, "transaction_id"] = 2
        expected = ("expect_column_values_to_be_unique", "transaction_id")
    else:
        tx["terminal_id"] = tx["terminal_id"].astype("float64")
        tx.loc[7, "terminal_id"] = np.nan
        expected = ("expect_column_values_to_not_be_null", "terminal_id")
    on_pandas, on_spark = _both(spark, "transactions", tx)
    assert _failed(on_spark) == _failed(on_pandas) == {expected}
    assert not on_spark.ok


def test_label_outside_zero_one_fails_on_spark(spark):
    labels = _labels()
    labels.loc[4, "is_fraud"] = 2
    on_pandas, on_spark = _both(spark, "labels", labels)
    assert _failed(on_spark) == _failed(on_pandas) == {
        ("expect_column_values_to_be_in_set", "is_fraud")}
    assert on_spark.failures[0].details == on_pandas.failures[0].details
    assert "[2]" in on_spark.failures[0].details


def test_feature_of_the_wrong_type_fails_on_spark(spark):
    count = _first(lambda f: f.agg == Agg.COUNT)
    features = _features()
    features[count] = features[count].astype("float64")
    on_pandas, on_spark = _both(spark, "features", features)
    assert _failed(on_spark) == _failed(on_pandas) == {("expect_column_type_to_be", count)}
    # Spark names the types its own way; the line says which dtype was declared.
    assert on_spark.failures[0].details == "observed DoubleType; expected LongType (dtype int64)"
    assert on_pandas.failures[0].details == "observed float64; expected dtype int64"


def test_feature_row_faults_fail_on_spark(spark):
    mean = _first(lambda f: f.agg == Agg.MEAN)
    recency = RECENCY_FEATURES[0].name
    features = _features()
    features.loc[3, "transaction_id"] = 4
    features.loc[5, mean] = -1.0
    features.loc[6, recency] = -2.0
    features.loc[7, "tx_during_night"] = 2
    on_pandas, on_spark = _both(spark, "features", features)
    assert _failed(on_spark) == _failed(on_pandas) == {
        ("expect_column_values_to_be_unique", "transaction_id"),
        ("expect_column_values_to_be_between", mean),
        ("expect_column_values_to_be_between", recency),
        ("expect_column_distinct_values_to_be_in_set", "tx_during_night"),
    }
    assert [r.line() for r in on_spark.failures] == [r.line() for r in on_pandas.failures]


def test_null_means_only_warn_on_spark(spark):
    mean = _first(lambda f: f.agg == Agg.MEAN)
    features = _features()
    features.loc[: N // 2, mean] = np.nan
    _, on_spark = _both(spark, "features", features)
    assert on_spark.ok
    assert [(r.check, r.column) for r in on_spark.warnings] == [
        ("expect_column_values_to_not_be_null", mean)]


def test_empty_and_incomplete_spark_batches_fail(spark):
    empty = validate("transactions", spark.createDataFrame(_tx()).limit(0))
    assert empty.rows == 0
    assert _failed(empty) == {("expect_table_row_count_to_be_between", None)}
    gone = validate("transactions", spark.createDataFrame(_tx().drop(columns=["amount"])))
    table = [r for r in gone.failures if r.check == "expect_table_columns_to_match_set"]
    assert len(table) == 1 and "amount" in table[0].details
    assert all(r.details == "column is missing" for r in gone.failures if r.column == "amount")


def test_spark_batch_is_released_unless_the_caller_cached_it(spark):
    frame = spark.createDataFrame(_tx())
    validate("transactions", frame)
    assert not frame.storageLevel.useMemory and not frame.storageLevel.useDisk
    kept = spark.createDataFrame(_tx()).cache()
    validate("transactions", kept)
    assert kept.storageLevel.useMemory
    kept.unpersist()


def test_only_a_costly_lineage_is_cached_while_it_is_checked(spark, tmp_path, monkeypatch):
    """GX runs a few dozen jobs on a batch: a join is computed once and cached for them; a
    plain Parquet read is not (each job reads only the columns it needs); both are released."""
    from ffs.jobs.batch.offline_store import write_parquet

    write_parquet(_tx(), tmp_path / "tx.parquet")  # microseconds, as the store writes
    read = spark.read.parquet(str(tmp_path / "tx.parquet"))
    frames = type(read)  # PySpark 4's classic DataFrame, not the pyspark.sql.DataFrame base
    cached = []
    persist = frames.persist
    monkeypatch.setattr(frames, "persist",
                        lambda self, *a: cached.append(self) or persist(self, *a))
    assert validate("transactions", read.where("amount >= 0")).ok
    assert cached == []
    ids = read.select("transaction_id")
    joined = read.join(ids, on="transaction_id")
    assert validate("transactions", joined).ok
    assert cached == [joined]
    assert not joined.storageLevel.useMemory and not joined.storageLevel.useDisk


def test_spark_data_docs_are_written(spark, tmp_path):
    site = tmp_path / "docs"
    labels = _labels()
    labels.loc[0, "is_fraud"] = 2
    validate("labels", spark.createDataFrame(labels), data_docs_dir=site)
    validate("features", spark.createDataFrame(_features()), data_docs_dir=site)
    html = (site / "index.html").read_text()
    assert "labels" in html and "features_spark" in html
    assert list((site / "validations" / "labels").rglob("*.html"))


def test_spark_suites_are_the_pandas_ones_with_spark_type_names():
    from ffs.validation.suites import BUILDERS, SPARK_TYPES, for_spark

    for kind in ("transactions", "labels"):
        suite = BUILDERS[kind]()
        assert for_spark(suite) is suite  # no column type named: the very same suite
    pandas_suite = BUILDERS["features"]()
    spark_suite = for_spark(pandas_suite)
    assert len(spark_suite.expectations) == len(pandas_suite.expectations)
    for p, s in zip(pandas_suite.expectations, spark_suite.expectations, strict=True):
        kw_p, kw_s = p.configuration.kwargs, s.configuration.kwargs
        assert p.expectation_type == s.expectation_type and p.meta["severity"] == s.meta["severity"]
        assert {k: v for k, v in kw_p.items() if k != "type_"} == {
            k: v for k, v in kw_s.items() if k != "type_"}
        if p.expectation_type == "expect_column_type_to_be":
            assert kw_s["type_"] == SPARK_TYPES[kw_p["type_"]] and s.meta["dtype"] == kw_p["type_"]
            assert kw_p["type_"] in ("int64", "float64")  # the pandas suite is left as it was
