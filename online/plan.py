"""Compile the feature declarations into the lookups one online read performs.

The Redis script (online/scripts.py) is generic: it reads cumulative records at a list of
offsets back from t, counts members in a list of intervals, and so on. This module decides
those lists from the feature repo (transformations/features.py), and refuses at load time
(with the feature's name) anything the online layout cannot serve exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformations.features import (
    RECENCY_FEATURES,
    WINDOW_FEATURES,
    Agg,
    Entity,
    WindowFeature,
)

UNSUPPORTED = "the online store does not support"


class UnsupportedOnline(NotImplementedError):
    pass


@dataclass(frozen=True)
class ReadPlan:
    customer_edges: tuple[int, ...]  # seconds back from t where cumulative records are read
    distinct_window: int  # customer distinct terminals over (t - w, t]
    recency_horizon: int
    terminal_intervals: tuple[tuple[int, int], ...]  # (lo_back, hi_back): (t - lo, t - hi]
    fraud_intervals: tuple[tuple[int, int], ...]
    # (lo_back, hi_back, 1 = max / 0 = min) of the customers' amounts in (t - lo, t - hi]
    extremes: tuple[tuple[int, int, int], ...] = ()
    first_seen: tuple[int, ...] = ()  # windows (t - w, t] whose first event time is read
    last: tuple[int, ...] = ()  # windows (t - w, t) whose latest amount is read

    @property
    def width(self) -> int:
        """Numbers the script returns per row."""
        return (4 + 2 * len(self.customer_edges) + 2 + len(self.terminal_intervals)
                + len(self.fraud_intervals) + len(self.extremes) + len(self.first_seen)
                + len(self.last))

    def argv(self) -> list[int]:
        out = [len(self.customer_edges), *self.customer_edges, self.distinct_window,
               self.recency_horizon, len(self.terminal_intervals)]
        for lo, hi in self.terminal_intervals:
            out += [lo, hi]
        out.append(len(self.fraud_intervals))
        for lo, hi in self.fraud_intervals:
            out += [lo, hi]
        out.append(len(self.extremes))
        for lo, hi, kind in self.extremes:
            out += [lo, hi, kind]
        out += [len(self.first_seen), *self.first_seen]
        out += [len(self.last), *self.last]
        return out


def _interval(f: WindowFeature) -> tuple[int, int]:
    return f.delay_s + f.window_s, f.delay_s


def compile_plan(features: tuple[WindowFeature, ...] = WINDOW_FEATURES) -> ReadPlan:
    edges: set[int] = set()
    distinct: list[int] = []
    t_int: list[tuple[int, int]] = []
    f_int: list[tuple[int, int]] = []
    x_int: list[tuple[int, int, int]] = []
    seen: list[int] = []
    last: list[int] = []
    for f in features:
        if f.entity == Entity.CUSTOMER and f.agg in (Agg.COUNT, Agg.SUM, Agg.MEAN):
            if f.agg != Agg.COUNT and f.column != "amount":
                raise UnsupportedOnline(f"feature {f.name!r}: {UNSUPPORTED} sums of {f.column!r}")
            edges.update(_interval(f))
        elif f.entity == Entity.CUSTOMER and f.agg == Agg.FIRST_SEEN and not f.delay_s:
            seen.append(f.window_s)
        elif (f.entity == Entity.CUSTOMER and f.agg == Agg.LAST and not f.delay_s
              and f.column == "amount"):
            last.append(f.window_s)
        elif f.entity == Entity.CUSTOMER and f.agg in (Agg.MIN, Agg.MAX):
            if f.column != "amount":
                raise UnsupportedOnline(f"feature {f.name!r}: {UNSUPPORTED} {f.agg.value} of "
                                        f"{f.column!r}")
            x_int.append((*_interval(f), int(f.agg == Agg.MAX)))
        elif f.entity == Entity.CUSTOMER and f.agg == Agg.COUNT_DISTINCT:
            if f.column != "terminal_id" or f.delay_s:
                raise UnsupportedOnline(f"feature {f.name!r}: {UNSUPPORTED} distinct "
                                        f"{f.column!r} with a delay")
            distinct.append(f.window_s)
        elif f.entity == Entity.TERMINAL and f.agg == Agg.COUNT:
            t_int.append(_interval(f))
        elif f.entity == Entity.TERMINAL and f.agg == Agg.FRAUD_RATE:
            t_int.append(_interval(f))
            f_int.append(_interval(f))
        else:
            raise UnsupportedOnline(f"feature {f.name!r}: {UNSUPPORTED} {f.agg.value} on "
                                    f"{f.entity.value}")
    if len(set(distinct)) > 1:
        raise UnsupportedOnline(f"{UNSUPPORTED} more than one distinct-terminal window")
    recency = [r.horizon_s for r in RECENCY_FEATURES if r.entity == Entity.CUSTOMER]
    edges.add(0)
    return ReadPlan(
        customer_edges=tuple(sorted(edges)),
        distinct_window=distinct[0] if distinct else 0,
        recency_horizon=recency[0] if recency else 0,
        terminal_intervals=tuple(dict.fromkeys(t_int)),
        fraud_intervals=tuple(dict.fromkeys(f_int)),
        extremes=tuple(dict.fromkeys(x_int)),
        first_seen=tuple(dict.fromkeys(seen)),
        last=tuple(dict.fromkeys(last)),
    )
