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

from ffs.transformations.request import RequestFunction, RequestFunctionError
from ffs.transformations.schema import MAX_AMOUNT


class DerivedError(ValueError):
    """A udf that failed on events or did not return its columns."""


def derive(functions: Sequence[RequestFunction], t: Sequence[int],
           columns: Mapping[str, Sequence]) -> dict[str, list[float | None]]:
    """The derived columns of len(t) events: {column: values}, None where the udf gave
    something other than a finite number (the caller refuses that event, naming the
    column). columns: the events' kept columns (ids, values), as lists or arrays."""
    out: dict[str, list[float | None]] = {}
    for fn in functions:
        request = {c: list(columns[c]) for c in fn.request_inputs if c in columns}
        try:
            got = fn.apply(t, request, {})
        except RequestFunctionError as exc:
            raise DerivedError(str(exc)) from None
        for name, _dtype in fn.outputs:
            out[name] = [_number(v) for v in got[name]]
    return out


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return float(v)
    try:
        f = float(v)  # type: ignore[arg-type]  # ints, floats, NumPy scalars
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and 0 <= f <= MAX_AMOUNT else None
