"""Every feature of the product, declared once as data.

Nothing here computes anything: `transformations.engine` compiles these declarations for
batch (NumPy, distributed by Spark) and the online read compiles the same list for Redis.
Feast objects are built from this list in `feature_repo/definitions.py`, so a feature added
here appears in the offline store, the training set, the online read and the Feast registry.

Window semantics (see README, "Window semantics"):
- a window W at request time t covers events with event_timestamp in (t - W, t];
- a delayed window covers (t - D - W, t - D];
- a label counts only if its label_timestamp <= t;
- an empty window gives count 0, distinct 0, sum 0, risk 0 and a null mean.
Timestamps are whole seconds (UTC); events in the same second as t are included ("ties are
included").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum


class Entity(str, Enum):
    CUSTOMER = "customer"
    TERMINAL = "terminal"

    @property
    def key(self) -> str:
        return f"{self.value}_id"


class Agg(str, Enum):
    COUNT = "count"  # number of transactions in the window
    SUM = "sum"  # sum of `column` over the window
    MEAN = "mean"  # mean of `column`; null on an empty window
    COUNT_DISTINCT = "count_distinct"  # distinct values of `column` in the window
    FRAUD_RATE = "fraud_rate"  # share of the window's transactions labelled fraud; 0 when empty


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


DAY = timedelta(days=1)
LABEL_DELAY = timedelta(days=7)

_windows: list[WindowFeature] = []
for _d in (1, 7, 30):
    _windows.append(
        WindowFeature(f"customer_nb_tx_{_d}d", Entity.CUSTOMER, Agg.COUNT, _d * DAY,
                      description=f"customer's transactions in the last {_d} day(s)")
    )
    _windows.append(
        WindowFeature(f"customer_avg_amount_{_d}d", Entity.CUSTOMER, Agg.MEAN, _d * DAY, "amount",
                      description=f"customer's mean amount over the last {_d} day(s)")
    )
for _d in (1, 7, 30):
    _windows.append(
        WindowFeature(f"terminal_nb_tx_{_d}d_delay7d", Entity.TERMINAL, Agg.COUNT, _d * DAY,
                      delay=LABEL_DELAY,
                      description=f"terminal's transactions in the {_d} day(s) "
                                  f"before the label delay")
    )
    _windows.append(
        WindowFeature(f"terminal_risk_{_d}d_delay7d", Entity.TERMINAL, Agg.FRAUD_RATE, _d * DAY,
                      "is_fraud", delay=LABEL_DELAY,
                      description=f"share of those {_d}-day delayed transactions known to be fraud")
    )
_windows += [
    WindowFeature("customer_nb_tx_10m", Entity.CUSTOMER, Agg.COUNT, timedelta(minutes=10),
                  description="card velocity: transactions in the last 10 minutes"),
    WindowFeature("customer_sum_amount_10m", Entity.CUSTOMER, Agg.SUM, timedelta(minutes=10),
                  "amount", description="amount spent in the last 10 minutes"),
    WindowFeature("customer_nb_tx_1h", Entity.CUSTOMER, Agg.COUNT, timedelta(hours=1),
                  description="transactions in the last hour"),
    WindowFeature("customer_sum_amount_1h", Entity.CUSTOMER, Agg.SUM, timedelta(hours=1),
                  "amount", description="amount spent in the last hour"),
    WindowFeature("customer_nb_terminals_1d", Entity.CUSTOMER, Agg.COUNT_DISTINCT, DAY,
                  "terminal_id", description="distinct terminals used in the last day"),
    WindowFeature("terminal_nb_tx_1h", Entity.TERMINAL, Agg.COUNT, timedelta(hours=1),
                  description="terminal velocity: transactions in the last hour"),
]

WINDOW_FEATURES: tuple[WindowFeature, ...] = tuple(_windows)

RECENCY_FEATURES: tuple[RecencyFeature, ...] = (
    RecencyFeature("customer_secs_since_prev_tx", Entity.CUSTOMER, horizon=30 * DAY,
                   description="seconds since the customer's previous transaction (<= 30 days)"),
)

REQUEST_FEATURES: tuple[RequestFeature, ...] = (
    RequestFeature("amount", "float64", "amount of the transaction being scored"),
    RequestFeature("tx_during_weekend", "int64", "1 if Saturday or Sunday (UTC)"),
    RequestFeature("tx_during_night", "int64", "1 if the hour (UTC) is <= 6"),
    RequestFeature("amount_over_customer_avg_30d", "float64",
                   "amount / customer_avg_amount_30d; null when the mean is null or 0"),
)

FEATURE_SERVICE = "fraud_detection_v1"


def human(span: timedelta) -> str:
    """10m, 1h, 7d: how windows are named in feature names and listings."""
    secs = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs and secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def feature_names() -> list[str]:
    """All feature columns, in the order every engine returns them."""
    return (
        [f.name for f in REQUEST_FEATURES]
        + [f.name for f in WINDOW_FEATURES]
        + [f.name for f in RECENCY_FEATURES]
    )


def feature_dtypes() -> dict[str, str]:
    out = {f.name: f.dtype for f in REQUEST_FEATURES}
    out.update({f.name: f.dtype for f in WINDOW_FEATURES})
    out.update({f.name: f.dtype for f in RECENCY_FEATURES})
    return out


def windows_for(entity: Entity) -> list[WindowFeature]:
    return [f for f in WINDOW_FEATURES if f.entity == entity]


def retention(entity: Entity) -> timedelta:
    """How long an event can still affect a feature of this entity: longest window + delay."""
    spans = [f.window + f.delay for f in windows_for(entity)]
    spans += [r.horizon for r in RECENCY_FEATURES if r.entity == entity]
    return max(spans)
