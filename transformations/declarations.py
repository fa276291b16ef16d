"""The product's model of feature declarations: what the engines compute, whatever repo
declared it. `transformations.compiler` builds these from a Feast repo's objects; every engine
(NumPy and Spark batch, the Redis read plan and writer, the stream) reads them.

Window semantics (README, "Window semantics"):
- a window W at request time t covers events with event_timestamp in (t - W, t];
- a delayed window covers (t - D - W, t - D];
- a label counts only if its label_timestamp <= t;
- an empty window gives count 0, distinct 0, sum 0, risk 0 and a null mean.
Timestamps are whole seconds (UTC); events in the same second as t are included ("ties are
included").

Entities are the repo's own: any name, one join key or several (a composite key such as
(customer_id, terminal_id) aggregates the events of that pair). Value columns are numbers kept
to the hundredth (`CENTS`): sums, means and standard deviations are computed from exact
integer hundredths, so every engine gives the same value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

import numpy as np

CENTS = 100  # value columns are kept to the hundredth, as integers: sums cannot drift
KEY_SEPARATOR = ","  # joins a composite key's ids; ids cannot contain it (transformations/ids)


# An optional column's null, in hundredths: below every value, so "the largest of a
# second's values" picks a value whenever one of them has one.
NULL_CENTS = int(np.iinfo(np.int64).min)


def to_cents(values) -> np.ndarray:
    """Numbers in hundredths (CENTS), rounded half to even: how every engine keeps a value
    column, so sums agree to the last cent. A null (NaN) is NULL_CENTS."""
    x = np.asarray(values, dtype=np.float64)
    nulls = np.isnan(x)
    out = np.rint(np.where(nulls, 0.0, x) * CENTS).astype(np.int64)
    if nulls.any():
        out[nulls] = NULL_CENTS
    return out


def hundredth(value: float) -> float:
    """One number as every engine keeps it: to_cents, then back (the scalar form, without
    NumPy's per-call cost, for the bus and the client)."""
    return round(value * CENTS) / CENTS  # round half to even, as np.rint


def from_cents(cents) -> np.ndarray:
    """to_cents' inverse: floats, NaN for NULL_CENTS."""
    c = np.asarray(cents)
    return np.where(c == NULL_CENTS, np.nan, c / CENTS)


@dataclass(frozen=True)
class Entity:
    """What features are keyed by: a name and its join keys (several for a composite key)."""

    name: str
    keys: tuple[str, ...]

    @property
    def value(self) -> str:
        return self.name

    @property
    def composite(self) -> bool:
        return len(self.keys) > 1

    def __str__(self) -> str:
        return self.name


class Agg(str, Enum):
    COUNT = "count"  # number of transactions in the window
    SUM = "sum"  # sum of `column` over the window
    MEAN = "mean"  # mean of `column`; null on an empty window
    COUNT_DISTINCT = "count_distinct"  # distinct values of `column` in the window
    FRAUD_RATE = "fraud_rate"  # share of the window's transactions labelled fraud; 0 when empty
    MIN = "min"  # smallest `column` value in the window; null on an empty window
    MAX = "max"  # largest `column` value in the window; null on an empty window
    FIRST_SEEN = "first_seen"  # seconds from the entity's first event in the window to t
    LAST = "last"  # `column` of the latest event strictly before t (ties: the largest; an
    #                optional column's null when none of that second's events has a value)
    STD = "std"  # sample standard deviation of `column` (n - 1); null under 2 events


NUMERIC_AGGS = frozenset({Agg.SUM, Agg.MEAN, Agg.MIN, Agg.MAX, Agg.LAST, Agg.STD})


@dataclass(frozen=True)
class WindowFeature:
    """A sliding-window aggregation over one entity's transactions."""

    name: str
    entity: Entity
    agg: Agg
    window: timedelta
    column: str | None = None
    delay: timedelta = timedelta(0)
    description: str = ""

    @property
    def window_s(self) -> int:
        return int(self.window.total_seconds())

    @property
    def delay_s(self) -> int:
        return int(self.delay.total_seconds())

    @property
    def includes_request_time(self) -> bool:
        """True when the window ends at t, so a transaction at t is always inside it."""
        return self.delay_s == 0

    @property
    def dtype(self) -> str:
        return "int64" if self.agg in (Agg.COUNT, Agg.COUNT_DISTINCT) else "float64"

    @property
    def numeric(self) -> bool:
        """True when the aggregation reads `column` as a number (not counts or distincts)."""
        return self.agg in NUMERIC_AGGS


@dataclass(frozen=True)
class RecencyFeature:
    """Seconds from the entity's latest transaction strictly before t to t.

    "Strictly before" makes a transaction in the same second as t count as simultaneous,
    not as previous, which is the same tie rule the windows use. Null when there is none
    within `horizon`: online state keeps only that much history, and offline must agree.
    """

    name: str
    entity: Entity
    horizon: timedelta
    description: str = ""
    dtype: str = "float64"

    @property
    def horizon_s(self) -> int:
        return int(self.horizon.total_seconds())


@dataclass(frozen=True)
class RequestFeature:
    """Computed from the request row itself (timestamp, amount) and window features."""

    name: str
    dtype: str
    description: str = ""


def human(span: timedelta) -> str:
    """10m, 1h, 7d: how windows are named in feature names and listings."""
    secs = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs and secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"
