"""Great Expectations suites for the three tables the pipeline publishes.

The feature suite is compiled from `transformations.features`, like every other consumer of the
declarations: a feature added there is checked here without editing this file.

Severity lives in each expectation's `meta` ("fail" blocks publication, "warn" is reported);
it is mirrored into GX's own `severity` field so Data Docs show it too.
"""

from __future__ import annotations

from ffs.transformations.features import (
    INPUT_COLUMNS,
    KEY_COLUMNS,
    OPTIONAL_COLUMNS,
    RECENCY_FEATURES,
    REQUEST_FEATURES,
    VALUE_COLUMNS,
    WINDOW_FEATURES,
    Agg,
    feature_dtypes,
    feature_names,
)
from ffs.transformations.schema import LABEL_COLUMNS, MAX_AMOUNT, tx_columns
from ffs.validation import gx_import

gx_import.load()  # before GX's own modules are named below: see gx_import
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations import ExpectationSuite  # noqa: E402
from great_expectations.expectations.metadata_types import FailureSeverity  # noqa: E402

FAIL, WARN = "fail", "warn"

MAX_SANE_AMOUNT = 1e6  # above this a payment is more likely a unit or parsing error
MAX_FRAUD_SHARE = 0.5  # the handbook has ~1%; half the labels being fraud means a bad feed
MIN_NON_NULL_MEAN = 0.9  # means are null only on empty windows, which should be rare


def feature_keys() -> tuple[str, ...]:
    """The feature table's row keys: the transaction, every join key, its time."""
    return ("transaction_id", *KEY_COLUMNS, "event_timestamp")


_FINITE = 1.7976931348623157e308  # the largest double
_DERIVED = frozenset(c for c in VALUE_COLUMNS if c not in INPUT_COLUMNS)


def _numbers() -> list[str]:
    """The transactions' number columns (amount): each has the limits amount has. Optional
    ones (coordinates) may be null and of either sign, as the data model reads them."""
    return [c for c, kind in VALUE_COLUMNS.items()
            if kind == "number" and c not in OPTIONAL_COLUMNS and c not in _DERIVED]


def _sev(exp: gxe.Expectation, severity: str, why: str) -> gxe.Expectation:
    exp.meta = {"severity": severity, "why": why}
    exp.severity = FailureSeverity.CRITICAL if severity == FAIL else FailureSeverity.WARNING
    return exp


def _suite(name: str, expectations: list[gxe.Expectation]) -> ExpectationSuite:
    return ExpectationSuite(name=name, expectations=expectations)


def _exist(columns) -> list[gxe.Expectation]:
    # One table-level check lists every missing column at once (extra columns are allowed).
    return [_sev(gxe.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=False),
                 FAIL, "required columns")]


def _not_null(columns, severity: str = FAIL, mostly: float = 1.0) -> list[gxe.Expectation]:
    return [_sev(gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=mostly), severity,
                 "must be present" if mostly == 1.0 else "mostly present")
            for c in columns]


def _number_checks(col: str) -> list[gxe.Expectation]:
    return [
        _sev(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0), FAIL,
             "refunds are not payments"),
        _sev(gxe.ExpectColumnValuesToBeBetween(column=col, max_value=MAX_AMOUNT), FAIL,
             f"the limit on every path is {MAX_AMOUNT:g}"),
        _sev(gxe.ExpectColumnValuesToBeBetween(column=col, max_value=MAX_SANE_AMOUNT), WARN,
             f"implausibly large {col}"),
    ]


def transactions_suite() -> ExpectationSuite:
    # what events arrive with: the derived columns are computed from these (and an optional
    # column may be absent)
    columns = [c for c in tx_columns() if c not in _DERIVED]
    return _suite("transactions", [
        *_exist(c for c in columns if c not in OPTIONAL_COLUMNS),
        _sev(gxe.ExpectTableRowCountToBeBetween(min_value=1), FAIL, "empty batch"),
        *_not_null(c for c in columns if c not in OPTIONAL_COLUMNS),
        _sev(gxe.ExpectColumnValuesToBeUnique(column="transaction_id"), FAIL,
             "a payment is one row"),
        *[e for col in _numbers() for e in _number_checks(col)],
    ])


def labels_suite() -> ExpectationSuite:
    return _suite("labels", [
        *_exist(LABEL_COLUMNS),
        *_not_null(("transaction_id", "label_timestamp")),
        # Map expectations skip nulls, so a null is_fraud would pass the set check below.
        *_not_null(("is_fraud",)),
        _sev(gxe.ExpectColumnValuesToBeInSet(column="is_fraud", value_set=[0, 1]), FAIL,
             "a label is 0 or 1"),
        _sev(gxe.ExpectColumnMeanToBeBetween(column="is_fraud", max_value=MAX_FRAUD_SHARE), WARN,
             "fraud share implausibly high"),
    ])


# The feature table is wide (1.75M rows x ~30 columns in the backfill), and GX's pandas engine
# copies the whole frame for every row-level range or set check (it drops the column's nulls
# from all columns at once): ~50-80 ms per check, twice with result details. Column min/max
# and distinct-value checks read only their column, and for a column that must not be null
# (checked separately) "min >= 0" is "every value >= 0". For a column that may be null they
# are not: GX fails min/max on an all-null column, so those keep the row-level check, which
# skips nulls.
def _range(col: str, low: float | None = None, high: float | None = None, *,
           nullable: bool = False, why: str = "") -> list[gxe.Expectation]:
    if nullable:
        return [_sev(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=low,
                                                       max_value=high), FAIL, why)]
    out = []
    if low is not None:
        out.append(_sev(gxe.ExpectColumnMinToBeBetween(column=col, min_value=low), FAIL, why))
    if high is not None:
        out.append(_sev(gxe.ExpectColumnMaxToBeBetween(column=col, max_value=high), FAIL, why))
    return out


def _flag(col: str) -> list[gxe.Expectation]:
    return [*_not_null([col]),
            _sev(gxe.ExpectColumnDistinctValuesToBeInSet(column=col, value_set=[0, 1]), FAIL,
                 "a flag is 0 or 1")]


def _window_checks(f) -> list[gxe.Expectation]:
    col = f.name
    if f.agg in (Agg.COUNT, Agg.COUNT_DISTINCT):
        # A window ending at t holds the transaction being scored, so it is never empty.
        if f.includes_request_time:
            return [*_not_null([col]), *_range(col, 1, why="window includes the transaction")]
        return [*_not_null([col]), *_range(col, 0, why="a count")]
    if f.agg == Agg.FRAUD_RATE:
        return [*_not_null([col]), *_range(col, 0, 1, why="a share")]
    if f.agg == Agg.SUM:
        # An empty window sums to 0, so a null sum is a bug, unlike a null mean.
        return [*_not_null([col]),
                *_range(col, 0, why=f"sum of non-negative {f.column} values")]
    if f.agg == Agg.FIRST_SEEN:
        return [*_range(col, 0, nullable=True, why="seconds since the first event")]
    if f.column in OPTIONAL_COLUMNS:  # last of a coordinate: any sign, often null
        return _range(col, -MAX_AMOUNT, MAX_AMOUNT, nullable=True,
                      why=f"{f.agg.value} of {f.column}, within the limit either side of 0")
    if f.agg in (Agg.MEAN, Agg.MIN, Agg.MAX, Agg.LAST):
        return [*_not_null([col], WARN, MIN_NON_NULL_MEAN),
                *_range(col, 0, nullable=True,
                        why=f"{f.agg.value} of non-negative {f.column} values")]
    if f.agg == Agg.STD:
        # null under 2 events, which a window of one transaction often is: no presence rule
        return [*_range(col, 0, nullable=True, why="a standard deviation")]
    raise NotImplementedError(f"no validation rule for aggregation {f.agg!r} ({col})")


def _request_checks(f) -> list[gxe.Expectation]:
    col = f.name
    if col in tx_columns():  # copied from the transaction itself (amount)
        return [*_not_null([col]), *_range(col, 0, why="refunds are not payments")]
    if f.dtype == "int64":  # request-row flags ("1 if Saturday or Sunday", ...)
        return _flag(col)
    if col.startswith("amount_over_"):
        # A ratio of non-negative values; null wherever the mean it divides by is null or 0.
        return [*_not_null([col], WARN, MIN_NON_NULL_MEAN),
                *_range(col, 0, nullable=True, why="ratio of non-negative values")]
    # a function's number: finite (a division by zero gives null, never infinity)
    return _range(col, -_FINITE, _FINITE, nullable=True, why="a finite number")


def _recency_checks(f) -> list[gxe.Expectation]:
    # Null when there is no previous transaction within the horizon, else within [0, horizon].
    return _range(f.name, 0, f.horizon_s, nullable=True, why="seconds within the horizon")


def features_suite() -> ExpectationSuite:
    names = feature_names()
    keys = feature_keys()
    exps = [*_exist([*keys, *names]),
            _sev(gxe.ExpectTableRowCountToBeBetween(min_value=1), FAIL, "empty feature table")]
    # The dtype is part of the contract with Feast and the online store (schema-only check).
    exps += [_sev(gxe.ExpectColumnTypeToBe(column=c, type_=t), FAIL, "declared dtype")
             for c, t in feature_dtypes().items()]
    exps += _not_null(keys)
    exps.append(_sev(gxe.ExpectColumnValuesToBeUnique(column="transaction_id"), FAIL,
                     "one feature row per transaction"))
    for rf in REQUEST_FEATURES:
        exps += _request_checks(rf)
    for wf in WINDOW_FEATURES:
        exps += _window_checks(wf)
    for cf in RECENCY_FEATURES:
        exps += _recency_checks(cf)
    return _suite("features", exps)


BUILDERS = {"transactions": transactions_suite, "labels": labels_suite,
            "features": features_suite}


# The declarations name column types as pandas does; GX's Spark engine compares a column with
# the pyspark.sql.types class of that name instead (isinstance), and rejects any other name.
SPARK_TYPES = {"int64": "LongType", "Int64": "LongType", "int32": "IntegerType",
               "Int32": "IntegerType", "float64": "DoubleType", "Float64": "DoubleType",
               "float32": "FloatType", "bool": "BooleanType", "boolean": "BooleanType",
               "string": "StringType", "object": "StringType"}


def for_spark(suite: ExpectationSuite) -> ExpectationSuite:
    """`suite` as GX's Spark engine must read it: the same checks, each column type named the
    way Spark names it (the declared dtype kept in the check's meta, for the report). `suite`
    itself when it names no column type (the transactions and labels suites)."""
    if not any(isinstance(e, gxe.ExpectColumnTypeToBe) for e in suite.expectations):
        return suite
    return _suite(f"{suite.name}_spark", [_spark_type(e) for e in suite.expectations])


def _spark_type(exp: gxe.Expectation) -> gxe.Expectation:
    # a copy without the id, which the context gives each suite's expectations on adding it
    if not isinstance(exp, gxe.ExpectColumnTypeToBe):
        return exp.copy(update={"id": None}, deep=True)
    if exp.type_ not in SPARK_TYPES:
        raise NotImplementedError(f"no Spark type for dtype {exp.type_!r} ({exp.column})")
    return exp.copy(update={"id": None, "type_": SPARK_TYPES[exp.type_],
                            "meta": {**(exp.meta or {}), "dtype": exp.type_}}, deep=True)
