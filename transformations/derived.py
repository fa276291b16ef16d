"""Event columns derived by the repo's stream feature views (`udf`, python mode): the one
place every path computes them, so a batch backfill, the stream and an online request that
carries its transaction get the same value for the same event.

A udf is a function of a dict of the event's kept columns (lists; `event_timestamp` as UTC
datetimes) returning new columns. Its outputs follow the number rule of every value column
(finite, 0 <= x <= MAX_AMOUNT) on every event: a derived column is aggregated like any other
(sum, mean, ...), so anything else there is a bad event, said with the column's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ffs.transformations.request import TIME_FIELD, RequestFunction, RequestFunctionError
from ffs.transformations.schema import MAX_AMOUNT


class DerivedError(ValueError):
    """A udf that failed on events or did not return its columns."""


def derive(functions: Sequence[RequestFunction], t: Sequence[int],
           columns: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """The derived columns of len(t) events: {column: float64 values}, NaN where the udf gave
    something other than a number under the rule (the caller refuses that event, naming
    the column). columns: the events' columns the udfs read, as lists or arrays."""
    out: dict[str, np.ndarray] = {}
    for fn in functions:
        request = {c: list(columns[c]) for c in fn.request_inputs
                   if c in columns and c != TIME_FIELD}  # the time is `t`
        try:
            got = fn.apply(t, request, {})
        except RequestFunctionError as exc:
            raise DerivedError(str(exc)) from None
        for name, _dtype in fn.outputs:
            out[name] = _numbers(got[name])
    return out


def _numbers(values: list) -> np.ndarray:
    """values as float64 under the number rule, NaN for anything else (None, text that is not
    a number, infinities, out of range)."""
    if len(values) <= 32:  # a request's few rows: NumPy's cost per call would be most of it
        ok = math.isfinite
        return np.array([x if ok(x) and 0 <= x <= MAX_AMOUNT else math.nan
                         for x in map(_number, values)], dtype=np.float64)
    try:
        x = np.asarray(values, dtype=np.float64)  # None -> NaN; ints, bools, NumPy scalars
    except (TypeError, ValueError):  # something that is no number: value by value
        x = np.array([_number(v) for v in values], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x) & (x >= 0) & (x <= MAX_AMOUNT), x, np.nan)


def _number(v: object) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def derive_event(functions: Sequence[RequestFunction], t: int,
                 values: Mapping[str, object]) -> dict[str, float]:
    """The derived columns of one event (its time, its columns); DerivedError naming the
    columns a udf gave no number under the rule."""
    got = derive(functions, [t], {c: [v] for c, v in values.items()})
    bad = [c for c, col in got.items() if math.isnan(col[0])]
    if bad:
        raise DerivedError(f"derived column(s) {bad}: the udf gave no number under the "
                           f"number rule")
    return {c: float(col[0]) for c, col in got.items()}
