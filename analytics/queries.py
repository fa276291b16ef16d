"""The analyst queries, each defined once and rendered for Pinot or DuckDB.

    render("riskiest_terminals", "pinot", now_ms=1533081599000)  -> SQL text

Every query reads one upserted table, `ffs_enriched` (one row per transaction_id: the
transaction's features and, once known, its label), and takes "now" as a parameter: replayed
data lives in the past, so now is the newest event_time_ms in the table (`now_sql`), never
the wall clock.

Portability rules, so one text runs on Pinot's single-stage engine and on DuckDB:
- no joins, subqueries, CTEs or window functions; one GROUP BY per query;
- an explicit LIMIT always (Pinot's single-stage engine silently adds LIMIT 10);
- ORDER BY repeats the expression instead of naming a SELECT alias;
- filters never rely on IS NULL: Pinot stores nulls as default values unless null handling
  is on (its defaults are Long.MIN_VALUE / -Infinity / 0), so "is known" is written as
  `event_time_ms > 0`, `label_time_ms > 0`, `is_fraud = 1`, which mean the same on both;
- aggregated features are ones that are never null (counts, sums, risk rates, amount);
- the few functions that differ (time buckets, integer division, quantiles, last value by
  time) come from `Dialect`, one small snippet each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ffs.errors import InputError

TABLE = "ffs_enriched"
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# Features compared day over day: never null (see the module docstring) and covering the
# customer side (volume, spend) and the terminal side (delayed fraud rate).
DRIFT_FEATURES = ("amount", "customer_nb_tx_1d", "customer_sum_amount_1h",
                  "terminal_risk_7d_delay7d")
DIALECTS = ("duckdb", "pinot")


@dataclass(frozen=True)
class Dialect:
    name: str

    def bucket(self, col: str, unit: str) -> str:
        """Start of the hour/day (epoch ms, UTC) holding `col` (epoch ms)."""
        size = {"HOUR": HOUR_MS, "DAY": DAY_MS}[unit]
        if self.name == "pinot":
            return f"DATETRUNC('{unit}', {col})"
        return f"(({col}) // {size}) * {size}"

    def idiv(self, expr: str, by: int) -> str:
        """floor(expr / by) for expr >= 0 (Pinot's `/` is always floating point)."""
        if self.name == "pinot":
            return f"FLOOR(({expr}) / {by})"
        return f"(({expr}) // {by})"

    def quantile(self, col: str, q: float) -> str:
        if self.name == "pinot":
            return f"PERCENTILE({col}, {q * 100:g})"
        # Pinot's PERCENTILE is the sorted values' element floor(n * p / 100), no
        # interpolation (read from its bytecode; the live comparison test checks): the same
        p = round(q * 100)
        return f"list_sort(list({col}))[(COUNT({col}) * {p}) // 100 + 1]"

    def last(self, col: str, time_col: str, pinot_type: str = "DOUBLE") -> str:
        """Value of `col` on the row with the newest `time_col` in the group."""
        if self.name == "pinot":
            return f"LASTWITHTIME({col}, {time_col}, '{pinot_type}')"
        return f"arg_max({col}, {time_col})"


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    description: str
    chart: str  # bar | line | table | drift: how the dashboard draws it
    columns: tuple[str, ...]  # result columns, in order
    build: Callable[[Dialect, dict], str]
    defaults: dict = field(default_factory=dict)  # parameters besides now_ms
    x: str | None = None  # bar/line: the category or time column
    y: tuple[str, ...] = ()  # bar/line: the plotted values

    def meta(self) -> dict:
        """What the dashboard needs to draw it (JSON-ready)."""
        return {"name": self.name, "title": self.title, "description": self.description,
                "chart": self.chart, "columns": list(self.columns), "x": self.x,
                "y": list(self.y), "defaults": dict(self.defaults)}


_TX = "event_time_ms > 0"  # a transaction row has arrived (not only its label)
_FRAUD = "CASE WHEN is_fraud = 1 THEN 1 ELSE 0 END"


def _since(p: dict, span_ms: int) -> str:
    return f"event_time_ms > {p['now_ms'] - span_ms} AND event_time_ms <= {p['now_ms']}"


def _fraud_by_terminal_hour(d: Dialect, p: dict) -> str:
    hour = d.bucket("event_time_ms", "HOUR")
    return f"""SELECT terminal_id, {hour} AS hour_start_ms, COUNT(*) AS n_tx,
  SUM({_FRAUD}) AS n_fraud, SUM({_FRAUD}) * 1.0 / COUNT(*) AS fraud_rate
FROM {TABLE}
WHERE {_since(p, p['hours'] * HOUR_MS)}
GROUP BY terminal_id, {hour}
HAVING SUM({_FRAUD}) >= {p['min_fraud']}
ORDER BY SUM({_FRAUD}) DESC, COUNT(*) DESC, terminal_id, {hour} DESC
LIMIT {p['limit']}"""


def _fraud_rate_by_hour(d: Dialect, p: dict) -> str:
    hour = d.bucket("event_time_ms", "HOUR")
    return f"""SELECT {hour} AS hour_start_ms, COUNT(*) AS n_tx, SUM({_FRAUD}) AS n_fraud,
  SUM({_FRAUD}) * 1.0 / COUNT(*) AS fraud_rate
FROM {TABLE}
WHERE {_since(p, p['hours'] * HOUR_MS)}
GROUP BY {hour}
ORDER BY {hour}
LIMIT {p['limit']}"""


def _riskiest_terminals(d: Dialect, p: dict) -> str:
    risk = d.last("terminal_risk_7d_delay7d", "event_time_ms")
    return f"""SELECT terminal_id, {risk} AS risk_7d_delay7d,
  COUNT(*) AS n_tx, SUM({_FRAUD}) AS n_fraud_labelled,
  MAX(terminal_nb_tx_1h) AS max_nb_tx_1h
FROM {TABLE}
WHERE {_since(p, p['hours'] * HOUR_MS)}
GROUP BY terminal_id
ORDER BY {risk} DESC, SUM({_FRAUD}) DESC, COUNT(*) DESC, terminal_id
LIMIT {p['limit']}"""


def _unusual_velocity(d: Dialect, p: dict) -> str:
    # customer_nb_tx_30d counts the transaction itself, so it is >= 1 on every row; the
    # 30-day daily average is nb_tx_30d / 30, and the spend average is mean * count / 30.
    tx_ratio = "customer_nb_tx_1h * 30.0 / customer_nb_tx_30d"
    amount_ratio = ("CASE WHEN customer_avg_amount_30d > 0 THEN customer_sum_amount_1h * 30.0"
                    " / (customer_avg_amount_30d * customer_nb_tx_30d) ELSE 0 END")
    daily = d.last("customer_nb_tx_30d", "event_time_ms", "LONG")
    return f"""SELECT customer_id, MAX({tx_ratio}) AS tx_1h_over_daily_avg,
  MAX(customer_nb_tx_1h) AS max_nb_tx_1h, MAX(customer_sum_amount_1h) AS max_sum_amount_1h,
  {daily} / 30.0 AS daily_avg_tx_30d, MAX({amount_ratio}) AS amount_1h_over_daily_avg,
  COUNT(*) AS n_tx
FROM {TABLE}
WHERE {_since(p, p['hours'] * HOUR_MS)} AND customer_nb_tx_30d > 0
  AND customer_nb_tx_1h >= {p['min_tx_1h']}
  AND customer_nb_tx_1h * 30.0 >= {p['min_ratio']} * customer_nb_tx_30d
GROUP BY customer_id
ORDER BY MAX({tx_ratio}) DESC, MAX(customer_sum_amount_1h) DESC, customer_id
LIMIT {p['limit']}"""


def _label_delay(d: Dialect, p: dict) -> str:
    bucket = d.idiv("label_time_ms - event_time_ms", p["bucket_ms"])
    return f"""SELECT {bucket} AS delay_bucket, COUNT(*) AS n_labels,
  SUM({_FRAUD}) AS n_fraud, MIN(label_time_ms - event_time_ms) AS min_delay_ms,
  MAX(label_time_ms - event_time_ms) AS max_delay_ms
FROM {TABLE}
WHERE {_TX} AND label_time_ms > {p['now_ms'] - p['days'] * DAY_MS}
  AND label_time_ms >= event_time_ms
GROUP BY {bucket}
ORDER BY {bucket}
LIMIT {p['limit']}"""


def _drift(d: Dialect, p: dict) -> str:
    # "today" is the 24 h ending at now, "yesterday" the 24 h before it: rolling days, so
    # the comparison is not distorted by a partial calendar day at the end of a replay.
    period = f"CASE WHEN event_time_ms > {p['now_ms'] - DAY_MS} THEN 'today' ELSE 'yesterday' END"
    stats = ",\n  ".join(
        f"AVG({f}) AS {f}__mean, {d.quantile(f, 0.5)} AS {f}__p50, "
        f"{d.quantile(f, 0.9)} AS {f}__p90" for f in DRIFT_FEATURES)
    return f"""SELECT {period} AS period, COUNT(*) AS n_tx,
  {stats}
FROM {TABLE}
WHERE {_since(p, 2 * DAY_MS)}
GROUP BY {period}
ORDER BY {period} DESC
LIMIT 2"""


def _drift_columns() -> tuple[str, ...]:
    cols = ["period", "n_tx"]
    for f in DRIFT_FEATURES:
        cols += [f"{f}__mean", f"{f}__p50", f"{f}__p90"]
    return tuple(cols)


_ALL = (
    Query("fraud_rate_by_hour", "Fraud rate by hour",
          "Transactions and labelled frauds per hour (UTC) over the last hours before now.",
          "line", ("hour_start_ms", "n_tx", "n_fraud", "fraud_rate"), _fraud_rate_by_hour,
          {"hours": 48, "limit": 1000}, x="hour_start_ms", y=("n_tx", "n_fraud")),
    Query("fraud_by_terminal_hour", "Fraud rate by terminal and hour",
          "Terminal-hours with labelled frauds over the last hours, most frauds first.",
          "table", ("terminal_id", "hour_start_ms", "n_tx", "n_fraud", "fraud_rate"),
          _fraud_by_terminal_hour, {"hours": 24, "min_fraud": 1, "limit": 50}),
    Query("riskiest_terminals", "Riskiest terminals right now",
          "Terminals seen in the last hours, by their latest 7-day delayed fraud rate "
          "(terminal_risk_7d_delay7d), then by frauds labelled in that span.",
          "bar", ("terminal_id", "risk_7d_delay7d", "n_tx", "n_fraud_labelled", "max_nb_tx_1h"),
          _riskiest_terminals, {"hours": 24, "limit": 20}, x="terminal_id",
          y=("risk_7d_delay7d",)),
    Query("unusual_velocity", "Customers with unusual velocity",
          "Customers whose transactions in one hour reach min_ratio times their own 30-day "
          "daily average (customer_nb_tx_1h vs customer_nb_tx_30d / 30), in the last hours.",
          "bar", ("customer_id", "tx_1h_over_daily_avg", "max_nb_tx_1h", "max_sum_amount_1h",
                  "daily_avg_tx_30d", "amount_1h_over_daily_avg", "n_tx"),
          _unusual_velocity, {"hours": 24, "min_tx_1h": 3, "min_ratio": 2.0, "limit": 20},
          x="customer_id", y=("tx_1h_over_daily_avg",)),
    Query("label_delay", "Label delay distribution",
          "Labels received in the last days, by delay from the transaction (buckets of "
          "bucket_ms, default one day).",
          "bar", ("delay_bucket", "n_labels", "n_fraud", "min_delay_ms", "max_delay_ms"),
          _label_delay, {"days": 30, "bucket_ms": DAY_MS, "limit": 100}, x="delay_bucket",
          y=("n_labels",)),
    Query("feature_drift", "Day-over-day feature drift",
          "Mean, median and p90 of key features over the 24 h ending at now vs the 24 h "
          "before.", "drift", _drift_columns(), _drift, {}),
)
QUERIES: dict[str, Query] = {q.name: q for q in _ALL}


def params_for(name: str, **params) -> dict:
    """Defaults merged with `params`, checked: every value is a number (they are pasted
    into SQL text, so nothing else may get through)."""
    q = _query(name)
    merged = {**q.defaults, **params}
    unknown = set(merged) - set(q.defaults) - {"now_ms"}
    if unknown:
        raise InputError(f"query {name!r}: unknown parameter(s) {sorted(unknown)}; "
                         f"known: now_ms, {sorted(q.defaults)}")
    if merged.get("now_ms") is None:
        raise InputError(f"query {name!r} needs now_ms (the newest event_time_ms: now_sql())")
    out = {}
    for key, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value) if "." in str(value) else int(str(value))
            except ValueError:
                raise InputError(f"query {name!r}: parameter {key} must be a number, "
                                 f"found {value!r}") from None
        out[key] = int(value) if key in ("now_ms", "limit", "hours", "days") else value
    if out.get("limit", 1) < 1:
        raise InputError(f"query {name!r}: limit must be >= 1, found {out['limit']}")
    return out


def render(name: str, dialect: str, **params) -> str:
    if dialect not in DIALECTS:
        raise InputError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    return _query(name).build(Dialect(dialect), params_for(name, **params))


def now_sql(dialect: str) -> str:
    """The newest transaction time in the table: the "now" every query is anchored to."""
    del dialect  # the same text on both; the argument keeps call sites uniform
    return f"SELECT MAX(event_time_ms) AS now_ms FROM {TABLE} WHERE {_TX} LIMIT 1"


def _query(name: str) -> Query:
    try:
        return QUERIES[name]
    except KeyError:
        raise InputError(f"unknown query {name!r}; known: {sorted(QUERIES)}") from None
