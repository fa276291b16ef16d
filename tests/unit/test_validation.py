"""Validation suites: clean batches pass, each kind of bad data fails the check meant for it.

Frames are tiny; the first validation pays the Great Expectations import (a few seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffs.errors import InputError, ValidationFailed
from ffs.transformations.features import (
    RECENCY_FEATURES,
    WINDOW_FEATURES,
    Agg,
    feature_dtypes,
    feature_names,
)
from ffs.validation.run import KINDS, CheckResult, ValidationReport, gate, validate

N = 40
T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _tx() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "transaction_id": np.arange(N, dtype=np.int64),
        "event_timestamp": T0 + pd.to_timedelta(np.arange(N) * 600, unit="s"),
        "customer_id": rng.integers(0, 5, N),
        "terminal_id": rng.integers(0, 8, N),
        "amount": rng.gamma(2.0, 30.0, N).round(2),
    })


def _labels() -> pd.DataFrame:
    return pd.DataFrame({
        "transaction_id": np.arange(N, dtype=np.int64),
        "is_fraud": (np.arange(N) % 10 == 0).astype(np.int64),
        "label_timestamp": T0 + pd.Timedelta(days=8),
    })


def _features() -> pd.DataFrame:
    """A clean feature table built from the declarations (plausible values, right dtypes)."""
    rng = np.random.default_rng(1)
    tx = _tx()
    out = tx[["transaction_id", "customer_id", "terminal_id", "event_timestamp"]].copy()
    out["amount"] = tx["amount"]
    windows = {f.name: f for f in WINDOW_FEATURES}
    recency = {f.name: f for f in RECENCY_FEATURES}
    for name, dtype in feature_dtypes().items():
        if name in out:
            continue
        f = windows.get(name)
        if f is not None and f.agg in (Agg.COUNT, Agg.COUNT_DISTINCT):
            out[name] = rng.integers(1 if f.includes_request_time else 0, 5, N)
        elif f is not None and f.agg == Agg.FRAUD_RATE:
            out[name] = rng.random(N)
        elif name in recency:
            out[name] = rng.integers(0, recency[name].horizon_s, N).astype(np.float64)
            out.loc[0, name] = np.nan  # the customer's first transaction
        elif dtype == "int64":
            out[name] = rng.integers(0, 2, N)
        else:
            out[name] = rng.gamma(2.0, 30.0, N)
    return out[["transaction_id", "customer_id", "terminal_id", "event_timestamp",
                *feature_names()]].astype(feature_dtypes())


def _failed(report: ValidationReport, check: str, column: str | None) -> list[CheckResult]:
    return [r for r in report.failures if r.check == check and r.column == column]


def _first(pred) -> str:
    return next(f.name for f in WINDOW_FEATURES if pred(f))


@pytest.mark.parametrize("kind,frame", [("transactions", _tx), ("labels", _labels),
                                        ("features", _features)])
def test_clean_batches_pass(kind, frame):
    report = validate(kind, frame())
    assert report.ok, [r.line() for r in report.failures]
    assert report.warnings == []
    assert report.rows == N and len(report.results) > 3
    gate(report)


def test_every_check_has_a_severity_and_every_feature_a_value_rule():
    from ffs.validation.suites import BUILDERS

    assert set(BUILDERS) == set(KINDS)
    for build in BUILDERS.values():
        assert {e.meta["severity"] for e in build().expectations} <= {"fail", "warn"}
    value_rules = {"expect_column_values_to_be_between", "expect_column_min_to_be_between",
                   "expect_column_distinct_values_to_be_in_set"}
    covered = {e.column for e in BUILDERS["features"]().expectations
               if e.expectation_type in value_rules}
    assert set(feature_names()) - covered == set()


def test_unknown_kind_is_an_input_error():
    with pytest.raises(InputError, match="unknown validation suite"):
        validate("orders", _tx())


def test_transaction_faults_each_fail_their_check():
    tx = _tx()
    tx.loc[3, "transaction_id"] = 2
    tx.loc[5, "amount"] = -4.0
    tx["customer_id"] = tx["customer_id"].astype("float64")
    tx.loc[7, "customer_id"] = np.nan
    report = validate("transactions", tx)
    # Every fault is reported, not only the first one found.
    dup = _failed(report, "expect_column_values_to_be_unique", "transaction_id")
    neg = _failed(report, "expect_column_values_to_be_between", "amount")
    null = _failed(report, "expect_column_values_to_not_be_null", "customer_id")
    assert len(dup) == len(neg) == len(null) == 1
    assert all(r.severity == "fail" for r in dup + neg + null)
    assert "-4.0" in neg[0].details and "1 of 40" in null[0].details
    assert len(report.failures) == 3
    assert not report.ok


def test_empty_transactions_fail():
    report = validate("transactions", _tx().iloc[:0])
    assert _failed(report, "expect_table_row_count_to_be_between", None)


def test_label_outside_zero_one_fails():
    labels = _labels()
    labels.loc[4, "is_fraud"] = 2
    report = validate("labels", labels)
    bad = _failed(report, "expect_column_values_to_be_in_set", "is_fraud")
    assert len(bad) == 1 and bad[0].severity == "fail" and "[2]" in bad[0].details


def test_risk_above_one_fails():
    risk = _first(lambda f: f.agg == Agg.FRAUD_RATE)
    features = _features()
    features.loc[2, risk] = 1.5
    report = validate("features", features)
    bad = _failed(report, "expect_column_max_to_be_between", risk)
    assert len(bad) == 1 and bad[0].severity == "fail" and "1.5" in bad[0].details
    assert len(report.failures) == 1


def test_zero_count_fails_only_on_windows_that_include_the_request_time():
    current = _first(lambda f: f.agg == Agg.COUNT and f.includes_request_time)
    delayed = _first(lambda f: f.agg == Agg.COUNT and not f.includes_request_time)
    features = _features()
    features.loc[1, current] = 0
    features.loc[1, delayed] = 0  # a delayed window can be empty
    report = validate("features", features)
    assert [(r.check, r.column) for r in report.failures] == [
        ("expect_column_min_to_be_between", current)]
    assert report.failures[0].severity == "fail"


def test_missing_feature_column_fails():
    gone = feature_names()[-1]
    report = validate("features", _features().drop(columns=[gone]))
    table = _failed(report, "expect_table_columns_to_match_set", None)
    assert len(table) == 1 and gone in table[0].details
    assert all(r.details == "column is missing" for r in report.failures if r.column == gone)


def test_feature_row_faults_fail():
    mean = _first(lambda f: f.agg == Agg.MEAN)
    recency = RECENCY_FEATURES[0].name
    features = _features()
    features.loc[3, "transaction_id"] = 4
    features.loc[5, mean] = -1.0
    features.loc[6, recency] = -2.0
    features.loc[7, "tx_during_night"] = 2
    report = validate("features", features)
    assert {(r.check, r.column) for r in report.failures} == {
        ("expect_column_values_to_be_unique", "transaction_id"),
        ("expect_column_values_to_be_between", mean),
        ("expect_column_values_to_be_between", recency),
        ("expect_column_distinct_values_to_be_in_set", "tx_during_night"),
    }


def test_wrong_dtype_fails():
    count = _first(lambda f: f.agg == Agg.COUNT)
    features = _features()
    features[count] = features[count].astype("float64")
    report = validate("features", features)
    assert _failed(report, "expect_column_type_to_be", count)


def test_null_means_warn_and_do_not_fail_the_gate():
    mean = _first(lambda f: f.agg == Agg.MEAN)
    features = _features()
    features.loc[: N // 2, mean] = np.nan  # half the rows null: above the 10% tolerance
    report = validate("features", features)
    assert report.ok
    assert [(r.check, r.column) for r in report.warnings] == [
        ("expect_column_values_to_not_be_null", mean)]
    gate(report)  # does not raise


@pytest.mark.parametrize("agg", [Agg.COUNT, Agg.COUNT_DISTINCT, Agg.SUM, Agg.FRAUD_RATE])
def test_null_fails_where_an_empty_window_has_a_value(agg):
    name = _first(lambda f: f.agg == agg)
    features = _features()
    features[name] = features[name].astype("Float64")  # an int column cannot hold a null
    features.loc[0, name] = pd.NA
    report = validate("features", features)
    assert _failed(report, "expect_column_values_to_not_be_null", name)


def test_warnings_do_not_fail_the_gate():
    tx = _tx()
    tx.loc[0, "amount"] = 5e6
    labels = _labels()
    labels["is_fraud"] = 1
    for report in (validate("transactions", tx), validate("labels", labels)):
        assert report.ok and len(report.warnings) == 1
        assert report.warnings[0].severity == "warn"
        gate(report)
    assert "1 warning " in report.summary()


def test_gate_names_every_failed_check():
    tx = _tx()
    tx.loc[5, "amount"] = -4.0
    tx.loc[3, "transaction_id"] = 2
    report = validate("transactions", tx)
    with pytest.raises(ValidationFailed) as err:
        gate(report)
    assert len(err.value.failures) == 2
    text = str(err.value)
    assert "transactions batch" in text
    assert "expect_column_values_to_be_between on amount" in text
    assert "expect_column_values_to_be_unique on transaction_id" in text
    assert "2 failed" in report.summary()


def test_engine_output_passes():
    from ffs.transformations.engine import compute_features

    tx = _tx()
    labels = _labels()
    feats = compute_features(tx, labels, tx[["customer_id", "terminal_id", "event_timestamp",
                                             "amount"]])
    table = pd.concat([tx[["transaction_id", "customer_id", "terminal_id",
                           "event_timestamp"]], feats], axis=1)
    report = validate("features", table)
    assert report.ok, [r.line() for r in report.failures]


def test_data_docs_are_written(tmp_path):
    site = tmp_path / "docs"
    validate("transactions", _tx(), data_docs_dir=site)
    labels = _labels()
    labels.loc[0, "is_fraud"] = 2
    validate("labels", labels, data_docs_dir=site)
    index = site / "index.html"
    assert index.is_file()
    html = index.read_text()
    # One site lists every batch validated in the process.
    assert "transactions" in html and "labels" in html
    assert list((site / "validations" / "labels").rglob("*.html"))


def test_every_aggregation_has_a_value_rule():
    """A repo may declare any aggregation on any entity: each gets a rule (a std is null
    under 2 events and never negative)."""
    from datetime import timedelta

    from ffs.transformations.declarations import Entity, WindowFeature
    from ffs.validation.suites import _window_checks

    pair = Entity("card+shop", ("card_id", "shop_id"))
    for agg in Agg:
        f = WindowFeature(f"x_{agg.value}", pair, agg, timedelta(hours=1), "amount",
                          timedelta(hours=1))
        rules = {e.expectation_type for e in _window_checks(f)}
        assert rules & {"expect_column_values_to_be_between",
                        "expect_column_min_to_be_between"}, agg
    std = _window_checks(WindowFeature("s", pair, Agg.STD, timedelta(hours=1), "amount"))
    assert [(e.expectation_type, e.min_value) for e in std] == [
        ("expect_column_values_to_be_between", 0)]


@pytest.mark.parametrize("entry", ["run", "suites"])
def test_a_host_without_a_main_file_validates_instead_of_exiting(entry):
    """`python -c` has a main with neither spec nor file: importing GX there made pyspark
    exit the process with status 0 (pyspark.sql.connect takes it for a doctest run), which a
    caller of the gate would read as passed. Both ways the product imports GX must survive it."""
    code = {
        "run": "from tests.unit.test_validation import _tx\n"
               "from ffs.validation.run import validate\n"
               "print('ok' if validate('transactions', _tx()).ok else 'failed')",
        "suites": "from ffs.validation import suites\n"
                  "print('ok' if suites.transactions_suite().expectations else 'empty')",
    }[entry]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=180)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]
