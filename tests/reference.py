"""The obviously-correct reference: loops over every event for every request point.

It reads the window semantics straight from the README ("Window semantics"), with no
cleverness, for whatever the repo declares (any entity, one key or a composite key compared
as a tuple, every aggregation, any delay), so that every engine (batch NumPy, Spark, online
Redis) can be checked against it on the same events. Value columns are read to the
hundredth, as every engine keeps them. Only for small inputs: it is O(points x events).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pandas as pd

from ffs.transformations import features
from ffs.transformations.declarations import CENTS, Agg


def _sec(ts) -> int:
    return int(pd.Timestamp(ts).timestamp())


def _cents(x) -> int:
    return int(round(float(x) * CENTS))  # round half to even, like np.rint


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _window(f, t: int, events: list[dict], labs: dict, value_kinds: dict):
    """One window feature at request time t over the events of the point's entity."""
    lo, hi = t - f.delay_s - f.window_s, t - f.delay_s
    inside = [e for e in events if lo < e["t"] <= hi]
    col = f.column
    if f.agg == Agg.COUNT:
        return len(inside)
    if f.agg == Agg.SUM:
        return sum(_cents(e[col]) for e in inside) / CENTS
    if f.agg == Agg.MEAN:
        return sum(_cents(e[col]) for e in inside) / CENTS / len(inside) if inside else math.nan
    if f.agg == Agg.STD:
        if len(inside) < 2:
            return math.nan
        c = [_cents(e[col]) for e in inside]
        n, s, q = len(c), sum(c), sum(x * x for x in c)
        return math.sqrt(float(Fraction(n * q - s * s, n * (n - 1)))) / CENTS
    if f.agg in (Agg.MIN, Agg.MAX):
        pick = min if f.agg == Agg.MIN else max
        return pick(_cents(e[col]) for e in inside) / CENTS if inside else math.nan
    if f.agg == Agg.LAST:
        before = [e for e in events if lo < e["t"] < hi]  # strictly before t - D
        if not before:
            return math.nan
        latest = max(e["t"] for e in before)
        kept = [_cents(e[col]) for e in before if e["t"] == latest and not _missing(e[col])]
        return max(kept) / CENTS if kept else math.nan  # an optional column's null
    if f.agg == Agg.FIRST_SEEN:
        return float(t - min(e["t"] for e in inside)) if inside else math.nan
    if f.agg == Agg.COUNT_DISTINCT:
        number = value_kinds.get(col) == "number"
        return len({_cents(e[col]) if number else e[col] for e in inside})
    if f.agg == Agg.FRAUD_RATE:
        frauds = 0
        for e in inside:
            known = [lb for lb in labs.get(e["id"], []) if lb["lt"] <= t]
            if known and max(known, key=lambda lb: lb["lt"])["fraud"] == 1:
                frauds += 1
        return frauds / len(inside) if inside else 0.0
    raise NotImplementedError(f.agg)


def _request_value(v):
    """A request field as a function gets it: numbers as floats, missing as None."""
    if _missing(v):
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return v


def reference_features(tx: pd.DataFrame, labels: pd.DataFrame, points: pd.DataFrame,
                       repo=None) -> pd.DataFrame:
    """Every feature of the repo (`repo`, a Compiled; by default the loaded one) at each
    point, in the engines' column order."""
    repo = repo if repo is not None else features.COMPILED
    events = [dict(r, id=r["transaction_id"], t=_sec(r["event_timestamp"]))
              for r in tx.to_dict("records")]
    labs: dict = {}
    for r in labels.to_dict("records") if labels is not None else []:
        labs.setdefault(r["transaction_id"], []).append(
            dict(lt=_sec(r["label_timestamp"]), fraud=int(r["is_fraud"])))
    names = ([f.name for f in repo.request] + [f.name for f in repo.windows]
             + [r.name for r in repo.recency])
    rows = []
    for p in points.to_dict("records"):
        t = _sec(p["event_timestamp"])

        def of(entity, p=p):
            key = tuple(p[k] for k in entity.keys)
            return [e for e in events if tuple(e[k] for k in entity.keys) == key]

        row: dict = {}
        for f in repo.windows:
            row[f.name] = _window(f, t, of(f.entity), labs, repo.values)
        for r in repo.recency:
            before = [e["t"] for e in of(r.entity) if e["t"] < t and t - e["t"] < r.horizon_s]
            row[r.name] = float(t - max(before)) if before else math.nan
        for fn in repo.functions:
            request = {n: [_request_value(p[n])] for n in fn.request_inputs
                       if n in p and n != "event_timestamp"}
            feats = {n: [None if _missing(row[n]) else row[n]] for n in fn.feature_inputs}
            out = fn.apply([t], request, feats)
            for name, _dtype in fn.outputs:
                v = out[name][0]
                row[name] = math.nan if v is None else v
        rows.append(row)
    return pd.DataFrame(rows, columns=names)
