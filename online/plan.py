"""Compile an entity's feature declarations into the lookups one online read performs.

This module decides, for each entity of the repo (transformations/features.py), which
cumulative records to read at which offsets back from t, which intervals to count, which
windows to scan for distinct values and extremes, and so on, and where each feature's
numbers sit in the reply. online/scripts.py writes the Redis script from these plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ffs.online.layout import RecordFormat, record_format
from ffs.transformations.declarations import Agg, Entity, WindowFeature
from ffs.transformations.features import ENTITIES, recency_for, windows_for


def _interval(f: WindowFeature) -> tuple[int, int]:
    """(lo, hi) backs from t: the window (t - lo, t - hi]."""
    return f.delay_s + f.window_s, f.delay_s


@dataclass(frozen=True)
class EntityPlan:
    entity: Entity
    fmt: RecordFormat
    edges: tuple[int, ...]  # backs from t where cumulative records are read (ascending)
    intervals: tuple[tuple[int, int], ...]  # counted by ZCOUNT (no cumulative records)
    frauds: tuple[tuple[int, int], ...]
    distinct: tuple[tuple[int, int, int], ...]  # (lo, hi, text column, 1-based)
    extremes: tuple[tuple[int, int, int, int], ...]  # (lo, hi, number column, 1 = max)
    firsts: tuple[tuple[int, int], ...]
    lasts: tuple[tuple[int, int, int], ...]  # (lo, hi, number column)
    recency: bool

    @cached_property  # read on every row batch
    def edge_width(self) -> int:
        """Numbers per edge: the count, then per cumulative column its sum (and squares)."""
        return 1 + sum(2 if sq else 1 for sq in self.fmt.squares)

    @cached_property
    def width(self) -> int:
        return (2 + len(self.edges) * self.edge_width + len(self.intervals) + len(self.frauds)
                + 2 * len(self.distinct) + len(self.extremes) + len(self.firsts)
                + len(self.lasts))

    # where things sit in one row's reply
    def edge_at(self, back: int) -> int:
        return 2 + self.edges.index(back) * self.edge_width

    def cum_at(self, back: int, column: str, square: bool = False) -> int:
        k = self.edge_at(back) + 1
        for col, sq in zip(self.fmt.cumulative, self.fmt.squares, strict=True):
            if col == column:
                return k + (1 if square else 0)
            k += 2 if sq else 1
        raise KeyError(column)

    def interval_at(self, iv: tuple[int, int]) -> int:
        return 2 + len(self.edges) * self.edge_width + self.intervals.index(iv)

    def fraud_at(self, iv: tuple[int, int]) -> int:
        return 2 + len(self.edges) * self.edge_width + len(self.intervals) + \
            self.frauds.index(iv)

    def _after_frauds(self) -> int:
        return 2 + len(self.edges) * self.edge_width + len(self.intervals) + len(self.frauds)

    def distinct_at(self, item: tuple[int, int, int]) -> int:
        return self._after_frauds() + 2 * self.distinct.index(item)

    def extreme_at(self, item: tuple[int, int, int, int]) -> int:
        return self._after_frauds() + 2 * len(self.distinct) + self.extremes.index(item)

    def first_at(self, iv: tuple[int, int]) -> int:
        return (self._after_frauds() + 2 * len(self.distinct) + len(self.extremes)
                + self.firsts.index(iv))

    def last_at(self, item: tuple[int, int, int]) -> int:
        return (self._after_frauds() + 2 * len(self.distinct) + len(self.extremes)
                + len(self.firsts) + self.lasts.index(item))

    def count_source(self, f: WindowFeature) -> tuple[str, int, int]:
        """Where a window's event count comes from: ("edges", lo index, hi index) or
        ("interval", position, 0)."""
        lo, hi = _interval(f)
        if self.fmt.has_count:
            return "edges", self.edge_at(lo), self.edge_at(hi)
        return "interval", self.interval_at((lo, hi)), 0


def compile_plan(entity: Entity) -> EntityPlan:
    fmt = record_format(entity)
    edges: set[int] = set()
    intervals: list[tuple[int, int]] = []
    frauds: list[tuple[int, int]] = []
    distinct: list[tuple[int, int, int]] = []
    extremes: list[tuple[int, int, int, int]] = []
    firsts: list[tuple[int, int]] = []
    lasts: list[tuple[int, int, int]] = []
    for f in windows_for(entity):
        lo, hi = _interval(f)
        counted = f.agg in (Agg.COUNT, Agg.SUM, Agg.MEAN, Agg.STD, Agg.FRAUD_RATE)
        if counted and fmt.has_count:
            edges.update((lo, hi))
        elif counted:
            intervals.append((lo, hi))
        if f.agg is Agg.FRAUD_RATE:
            frauds.append((lo, hi))
        elif f.agg is Agg.COUNT_DISTINCT:
            distinct.append((lo, hi, fmt.texts.index(f.column) + 1))
        elif f.agg in (Agg.MIN, Agg.MAX):
            extremes.append((lo, hi, fmt.numbers.index(f.column) + 1, int(f.agg is Agg.MAX)))
        elif f.agg is Agg.FIRST_SEEN:
            firsts.append((lo, hi))
        elif f.agg is Agg.LAST:
            lasts.append((lo, hi, fmt.numbers.index(f.column) + 1))
    return EntityPlan(entity, fmt, tuple(sorted(edges)), tuple(dict.fromkeys(intervals)),
                      tuple(dict.fromkeys(frauds)), tuple(dict.fromkeys(distinct)),
                      tuple(dict.fromkeys(extremes)), tuple(dict.fromkeys(firsts)),
                      tuple(dict.fromkeys(lasts)), bool(recency_for(entity)))


def compile_plans() -> tuple[EntityPlan, ...]:
    """One plan per entity of the repo, in the service's order."""
    return tuple(compile_plan(e) for e in ENTITIES)
