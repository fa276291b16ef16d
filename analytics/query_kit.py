"""The kit analyst queries are written with: one text for Pinot and for DuckDB.

A feature repo's `queries.py` (the shipped one: feature_repo/queries.py) declares its queries
as `Query` objects whose `build(dialect, params)` returns SQL over the one upserted table,
`ffs_enriched` (one row per transaction_id: the transaction's features and, once known, its
label), anchored at the parameter now_ms (replayed data lives in the past, so now is the
newest event_time_ms in the table, `now_sql`, never the wall clock).

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

TABLE = "ffs_enriched"
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DIALECTS = ("duckdb", "pinot")
TX = "event_time_ms > 0"  # a transaction row has arrived (not only its label)
FRAUD = "CASE WHEN is_fraud = 1 THEN 1 ELSE 0 END"


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


def since(p: dict, span_ms: int) -> str:
    """The rows of the span_ms before now_ms."""
    return f"event_time_ms > {p['now_ms'] - span_ms} AND event_time_ms <= {p['now_ms']}"
