"""Exact sliding-window features for any set of request points, vectorised with NumPy.

One formulation serves the backfill (request points = the transactions themselves), the
training set (request points = arbitrary label timestamps) and the online consistency checks:

* Events of one entity kind are sorted by (entity, time) and keyed by a composite int64
  `entity * span + (time - base)`, so one `searchsorted` over all entities at once finds
  "how many of this entity's events are at or before time x". A window (t - W, t] is the
  difference of two such prefix positions, and a sum is a difference of prefix sums of
  integer cents, so sums are exact and cannot drift (REFERENCE: sliding frames are 10x slower
  than prefix differences).
* What is not a plain window over event time becomes an interval of validity [start, end)
  per event, and its value at t is "#starts <= t minus #ends <= t":
  - a fraud label for a transaction at e, known from label time l, counts in the delayed
    window (t - D - W, t - D] for t in [max(e + D, l), e + D + W); a later revision of the
    label ends the interval of the earlier one;
  - a distinct terminal is present at t while one of its events lies in (t - W, t]: event i
    covers [e_i, min(e_i + W, e_next_same_terminal)), so coverage never double counts.

Everything is in whole seconds (see transformations.timestamps) and the functions never read
the clock: time is always an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from transformations import timestamps as T
from transformations.features import (
    RECENCY_FEATURES,
    REQUEST_FUNCTIONS,
    Agg,
    Entity,
    WindowFeature,
    feature_names,
    windows_for,
)
from transformations.request import TIME_FIELD

CENTS = 100  # amounts are summed as integer cents, so window sums are exact


@dataclass(frozen=True)
class Points:
    """Request points: entity codes and times (int64 seconds)."""

    code: np.ndarray
    t: np.ndarray


class _Timeline:
    """Sorted composite keys of one entity kind's events, plus prefix sums of weights.

    Lookups are by offset back from each point's own time and memoised, because several
    features share window edges (a count and a mean over the same W need the same two ranks).
    """

    def __init__(self, code: np.ndarray, t: np.ndarray, base: int, span: int,
                 weights: dict[str, np.ndarray] | None = None):
        key = code.astype(np.int64) * span + (t.astype(np.int64) - base)
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.span, self.base = span, base
        self.sorted = {name: w[order] for name, w in (weights or {}).items()}
        self.prefix = {
            name: np.concatenate(([0], np.cumsum(w, dtype=np.int64)))
            for name, w in self.sorted.items()
        }
        self._ranks: dict[tuple[int, int, str], np.ndarray] = {}
        self._tables: dict[tuple[str, str], list[np.ndarray]] = {}

    def rank(self, p: Points, back: int = 0, side: str = "right") -> np.ndarray:
        """Per point: position of the first event after (time - back) (side=right), or at or
        after it (side=left), in the sorted keys."""
        memo = (id(p), back, side)
        if memo not in self._ranks:
            q = p.code.astype(np.int64) * self.span + (p.t - back - self.base)
            self._ranks[memo] = np.searchsorted(self.key, q, side=side)  # type: ignore[call-overload]
        return self._ranks[memo]

    def window(self, p: Points, back_lo: int, back_hi: int, weight: str | None = None):
        """Count (or weighted sum) of events with time in (t - back_lo, t - back_hi]."""
        a, b = self.rank(p, back_lo), self.rank(p, back_hi)
        if weight is None:
            return b - a
        pre = self.prefix[weight]
        return pre[b] - pre[a]


    def extreme(self, p: Points, back_lo: int, back_hi: int, weight: str,
                op: np.ufunc) -> np.ndarray:
        """op (np.minimum or np.maximum) of the weights of events with time in
        (t - back_lo, t - back_hi]; NaN for an empty window. A sparse table: each query is
        two lookups at the level of its window's length, however many events it holds."""
        return self.range_op(self.rank(p, back_lo), self.rank(p, back_hi), weight, op)

    def range_op(self, a: np.ndarray, b: np.ndarray, weight: str, op: np.ufunc) -> np.ndarray:
        """op of the sorted weights at positions [a, b) per row; NaN where empty."""
        n = b - a
        out = np.full(len(a), np.nan)
        ok = n > 0
        if not ok.any():
            return out
        level = np.zeros(len(a), dtype=np.int64)
        level[ok] = np.floor(np.log2(n[ok])).astype(np.int64)
        table = self._table(weight, op, int(level[ok].max()))
        for k in np.unique(level[ok]):
            sel = ok & (level == k)
            rows = table[k]
            out[sel] = op(rows[a[sel]], rows[b[sel] - (1 << k)])
        return out

    def _table(self, weight: str, op: np.ufunc, top: int) -> list[np.ndarray]:
        levels = self._tables.setdefault((weight, op.__name__), [self.sorted[weight]])
        while len(levels) <= top:
            prev, half = levels[-1], 1 << (len(levels) - 1)
            levels.append(op(prev[:-half], prev[half:]))
        return levels


class _Intervals:
    """Value at t = sum of weights of intervals [start, end) containing t."""

    def __init__(self, code, start, end, weight, base: int, span: int, t_max: int):
        ok = (end > start) & (weight != 0)
        code, start, end, weight = code[ok], start[ok], end[ok], weight[ok]
        # Ends past every request point can never be reached; clip so keys stay in range.
        end = np.minimum(end, t_max + 1)
        self.starts = _Timeline(code, start, base, span, {"w": weight})
        self.ends = _Timeline(code, end, base, span, {"w": weight})

    def at(self, p: Points) -> np.ndarray:
        s = self.starts.prefix["w"][self.starts.rank(p)]
        e = self.ends.prefix["w"][self.ends.rank(p)]
        return s - e


def _sorted_points(code: np.ndarray, t: np.ndarray, base: int, span: int):
    """Points ordered by (entity, time) and the permutation that restores the caller's order.

    searchsorted over sorted queries walks memory sequentially: 15x faster on 1.75M points
    than the same lookups in time order, where each one lands on a random entity.
    """
    order = np.argsort(code.astype(np.int64) * span + (t - base), kind="stable")
    return Points(code[order], t[order]), order


def _unsort(columns: dict[str, np.ndarray], order: np.ndarray, index: pd.Index) -> pd.DataFrame:
    out = {}
    for name, sorted_values in columns.items():
        values = np.empty_like(sorted_values)
        values[order] = sorted_values
        out[name] = values
    return pd.DataFrame(out, index=index)


def _frame(base_t: np.ndarray, more_t: list[np.ndarray], lookback: int) -> tuple[int, int, int]:
    """Common base and span so every composite key is non-negative and unique per entity."""
    all_t = [x for x in [base_t, *more_t] if len(x)]
    t_min = min(int(x.min()) for x in all_t) if all_t else 0
    t_max = max(int(x.max()) for x in all_t) if all_t else 0
    base = t_min - lookback - 1
    span = t_max + 2 - base
    return base, span, t_max


def _codes(event_keys: pd.Series, point_keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    both = pd.concat([event_keys.reset_index(drop=True), point_keys.reset_index(drop=True)],
                     ignore_index=True)
    codes, _ = pd.factorize(both, sort=False)
    n = len(event_keys)
    return codes[:n].astype(np.int64), codes[n:].astype(np.int64)


def _lookback(entity: Entity) -> int:
    spans = [f.window_s + f.delay_s for f in windows_for(entity)]
    spans += [r.horizon_s for r in RECENCY_FEATURES if r.entity == entity]
    return max(spans)


def customer_features(tx: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Customer windows and recency at each point.

    tx: customer_id, terminal_id, event_timestamp, amount (normalized, any order).
    points: customer_id, event_timestamp (the request times).
    """
    ent = Entity.CUSTOMER
    ev_code, q_code = _codes(tx[ent.key], points[ent.key])
    ev_t = T.to_seconds(tx["event_timestamp"]) if len(tx) else np.zeros(0, np.int64)
    q_t = T.to_seconds(points["event_timestamp"]) if len(points) else np.zeros(0, np.int64)
    base, span, t_max = _frame(ev_t, [q_t], _lookback(ent))
    cents = np.rint(tx["amount"].to_numpy(dtype=np.float64) * CENTS).astype(np.int64)
    line = _Timeline(ev_code, ev_t, base, span, {"amount": cents})
    p, order = _sorted_points(q_code, q_t, base, span)
    q_code, q_t = p.code, p.t

    out: dict[str, np.ndarray] = {}
    for f in windows_for(ent):
        hi = f.delay_s
        lo = hi + f.window_s
        if f.agg == Agg.COUNT:
            out[f.name] = line.window(p, lo, hi)
        elif f.agg in (Agg.SUM, Agg.MEAN):
            _check_column(f, "amount")
            total = line.window(p, lo, hi, "amount") / CENTS
            if f.agg == Agg.SUM:
                out[f.name] = total.astype(np.float64)
            else:
                n = line.window(p, lo, hi)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[f.name] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        elif f.agg == Agg.FIRST_SEEN:
            # the window's first event: the first key after t - W, if it is at or before t
            a, b = line.rank(p, lo), line.rank(p, hi)
            first = line.key[np.minimum(a, max(len(line.key) - 1, 0))] % span + base \
                if len(line.key) else np.zeros(len(a), np.int64)
            out[f.name] = np.where(b > a, (p.t - first).astype(np.float64), np.nan)
        elif f.agg == Agg.LAST:
            _check_column(f, "amount")
            # the latest event strictly before t, within (t - W, t); among the events of
            # that second, the largest amount (the same on every engine, whatever the order)
            idx = line.rank(p, 0, side="left") - 1
            safe = np.maximum(idx, 0)
            ok = (idx >= 0) & (line.key[safe] // span == p.code if len(line.key)
                               else np.zeros(len(idx), bool))
            if len(line.key):
                ev_t = line.key[safe] % span + base
                ok &= ev_t > p.t - f.window_s
                start = np.searchsorted(line.key, line.key[safe], side="left")
            else:
                start = safe
            got = line.range_op(np.where(ok, start, 0), np.where(ok, idx + 1, 0), "amount",
                                np.maximum)
            out[f.name] = got / CENTS
        elif f.agg in (Agg.MIN, Agg.MAX):
            _check_column(f, "amount")
            op = np.minimum if f.agg == Agg.MIN else np.maximum
            out[f.name] = line.extreme(p, lo, hi, "amount", op) / CENTS
        elif f.agg == Agg.COUNT_DISTINCT:
            out[f.name] = _distinct(tx, f, ev_code, ev_t, base, span, t_max).at(p)
        else:
            raise _unsupported(f)

    for r in RECENCY_FEATURES:
        if r.entity != ent:
            continue
        # latest event strictly before t: the position just left of t's first tie
        idx = line.rank(p, 0, side="left") - 1
        valid = idx >= 0
        if not len(line.key):  # no events at all: nothing came before
            out[r.name] = np.full(len(q_t), np.nan)
            continue
        prev_key = line.key[np.maximum(idx, 0)]
        same = valid & (prev_key // span == q_code)
        gap = (q_t - (prev_key % span + base)).astype(np.float64)
        out[r.name] = np.where(same & (gap < r.horizon_s), gap, np.nan)
    return _unsort(out, order, points.index)


def _distinct(tx, f: WindowFeature, ev_code, ev_t, base, span, t_max) -> _Intervals:
    _check_column(f, "terminal_id")
    val_code, _ = pd.factorize(tx[f.column].reset_index(drop=True))
    order = np.lexsort((ev_t, val_code, ev_code))
    c, v, t = ev_code[order], val_code[order], ev_t[order]
    same_next = np.zeros(len(c), dtype=bool)
    same_next[:-1] = (c[1:] == c[:-1]) & (v[1:] == v[:-1])
    nxt = np.full(len(c), np.iinfo(np.int64).max // 4, dtype=np.int64)
    nxt[:-1] = np.where(same_next[:-1], t[1:], nxt[:-1])
    end = np.minimum(t + f.window_s, nxt)
    return _Intervals(c, t, end, np.ones(len(c), np.int64), base, span, t_max)


def terminal_features(tx: pd.DataFrame, labels: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Terminal windows at each point.

    tx: terminal_id, event_timestamp. labels: transaction_id, is_fraud, label_timestamp plus
    the labelled transaction's terminal_id and event_timestamp (see `attach_labels`).
    points: terminal_id, event_timestamp.
    """
    ent = Entity.TERMINAL
    # events, points and labels share one factorization of the entity key
    all_keys = pd.concat([tx[ent.key], points[ent.key], labels[ent.key]], ignore_index=True)
    codes, _ = pd.factorize(all_keys)
    n_tx, n_q = len(tx), len(points)
    ev_code = codes[:n_tx].astype(np.int64)
    q_code = codes[n_tx:n_tx + n_q].astype(np.int64)
    lab_code = codes[n_tx + n_q:].astype(np.int64)

    ev_t = T.to_seconds(tx["event_timestamp"]) if n_tx else np.zeros(0, np.int64)
    q_t = T.to_seconds(points["event_timestamp"]) if n_q else np.zeros(0, np.int64)
    base, span, t_max = _frame(ev_t, [q_t], _lookback(ent))
    line = _Timeline(ev_code, ev_t, base, span)
    p, order = _sorted_points(q_code, q_t, base, span)
    q_t = p.t

    lab_code, lab_e, lab_l, lab_end, lab_w = _label_intervals(labels, lab_code)

    out: dict[str, np.ndarray] = {}
    for f in windows_for(ent):
        n = line.window(p, f.delay_s + f.window_s, f.delay_s)
        if f.agg == Agg.COUNT:
            out[f.name] = n
        elif f.agg == Agg.FRAUD_RATE:
            _check_column(f, "is_fraud")
            start = np.maximum(lab_e + f.delay_s, lab_l)
            end = np.minimum(lab_e + f.delay_s + f.window_s, lab_end)
            frauds = _Intervals(lab_code, start, end, lab_w, base, span, t_max).at(p)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f.name] = np.where(n > 0, frauds / np.maximum(n, 1), 0.0)
        else:
            raise _unsupported(f)
    return _unsort(out, order, points.index)


def _label_intervals(labels: pd.DataFrame, code: np.ndarray):
    """Per label: entity code, transaction time, label time, time the next revision of the
    same transaction's label replaces it, and weight (is_fraud)."""
    if labels.empty:
        z = np.zeros(0, np.int64)
        return z, z, z, z, z
    e_t = T.to_seconds(labels["event_timestamp"])
    l_t = T.to_seconds(labels["label_timestamp"])
    tid, _ = pd.factorize(labels["transaction_id"])
    order = np.lexsort((l_t, tid))
    tid, e_t, l_t, code = tid[order], e_t[order], l_t[order], code[order]
    w = labels["is_fraud"].to_numpy(dtype=np.int64)[order]
    l_end = np.full(len(tid), np.iinfo(np.int64).max // 4, dtype=np.int64)
    same_next = np.zeros(len(tid), dtype=bool)
    same_next[:-1] = tid[1:] == tid[:-1]
    l_end[:-1] = np.where(same_next[:-1], l_t[1:], l_end[:-1])
    return code, e_t, l_t, l_end, w


def relevant_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Only labels that can change a fraud count: those of transactions labelled fraud at
    some point. A transaction whose every label says "genuine" adds 0 to every window, so its
    labels are dropped before any work (in the handbook that is 99% of them)."""
    if labels.empty:
        return labels
    ever = labels.loc[labels["is_fraud"].to_numpy() == 1, "transaction_id"].unique()
    return labels[labels["transaction_id"].isin(ever)]


def attach_labels(labels: pd.DataFrame, tx: pd.DataFrame) -> pd.DataFrame:
    """Labels with their transaction's terminal_id and event_timestamp (inner join)."""
    cols = ["transaction_id", "terminal_id", "event_timestamp"]
    return labels.merge(tx[cols], on="transaction_id", how="inner")


def request_features(points: pd.DataFrame, computed: pd.DataFrame) -> pd.DataFrame:
    """The repo's request functions (transformations/request.py) over the points: their
    request fields (the points' columns of those names) and the features they read."""
    q_t = T.to_seconds(points["event_timestamp"]) if len(points) else np.zeros(0, np.int64)
    out: dict[str, np.ndarray] = {}
    for fn in REQUEST_FUNCTIONS:
        request = {n: _request_column(points[n]) for n in fn.request_inputs
                   if n in points.columns and n != TIME_FIELD}
        features = {n: computed[n].tolist() for n in fn.feature_inputs}
        values = fn.apply(q_t.tolist(), request, features)
        for name, dtype in fn.outputs:
            col = np.array([np.nan if v is None else v for v in values[name]], dtype=np.float64)
            out[name] = col.astype(np.int64) if dtype == "int64" and not np.isnan(col).any() \
                else col
    return pd.DataFrame(out, index=points.index)


def _request_column(values: pd.Series) -> list:
    """A request field as the function gets it: numbers as floats, missing as None."""
    if pd.api.types.is_numeric_dtype(values):
        return [None if v != v else v for v in values.astype("float64").tolist()]
    return values.where(values.notna(), None).tolist()


def compute_features(tx: pd.DataFrame, labels: pd.DataFrame | None,
                     points: pd.DataFrame) -> pd.DataFrame:
    """All features at each request point, using only events known at the point's time.

    tx and labels are normalized (transformations.schema); points need customer_id,
    terminal_id, event_timestamp and optionally amount. Events after a point's time cannot
    leak into it: every window ends at t and a label counts only from its label_timestamp.
    """
    if labels is None:
        labels = pd.DataFrame({"transaction_id": pd.Series([], dtype=tx["transaction_id"].dtype),
                               "is_fraud": pd.Series([], dtype="int64"),
                               "label_timestamp": pd.Series([], dtype="datetime64[ns, UTC]")})
    points = points.reset_index(drop=True)
    cust = customer_features(tx, points)
    term = terminal_features(tx, attach_labels(relevant_labels(labels), tx), points)
    req = request_features(points, pd.concat([cust, term], axis=1))
    return pd.concat([req, cust, term], axis=1)[feature_names()]


def _check_column(f: WindowFeature, expected: str) -> None:
    if f.column != expected:
        raise _unsupported(f, f"column {f.column!r} (the engine supports {expected!r} here)")


def _unsupported(f: WindowFeature, what: str | None = None) -> NotImplementedError:
    detail = what or f"aggregation {f.agg.value!r} on entity {f.entity.value!r}"
    return NotImplementedError(f"feature {f.name!r}: the batch engine does not support {detail}")
