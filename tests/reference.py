"""The obviously-correct reference: loops over every event for every request point.

It reads the window semantics straight from the README, with no cleverness, so that every
engine (batch NumPy, Spark, online Redis) can be checked against it on the same events.
Only for small inputs: it is O(points x events).
"""

from __future__ import annotations

import math

import pandas as pd

from transformations.features import RECENCY_FEATURES, WINDOW_FEATURES, Agg, feature_names


def _sec(ts) -> int:
    return int(pd.Timestamp(ts).timestamp())


def reference_features(tx: pd.DataFrame, labels: pd.DataFrame,
                       points: pd.DataFrame) -> pd.DataFrame:
    events = [
        dict(id=r.transaction_id, t=_sec(r.event_timestamp), customer=r.customer_id,
             terminal=r.terminal_id, amount=float(r.amount))
        for r in tx.itertuples()
    ]
    labs = [dict(id=r.transaction_id, lt=_sec(r.label_timestamp), fraud=int(r.is_fraud))
            for r in labels.itertuples()]
    rows = []
    for p in points.itertuples():
        t = _sec(p.event_timestamp)
        amount = float(getattr(p, "amount", math.nan))
        if amount is None:
            amount = math.nan
        row: dict[str, float] = {}
        for f in WINDOW_FEATURES:
            key = p.customer_id if f.entity.value == "customer" else p.terminal_id
            lo, hi = t - f.delay_s - f.window_s, t - f.delay_s
            inside = [e for e in events if e[f.entity.value] == key and lo < e["t"] <= hi]
            if f.agg == Agg.COUNT:
                row[f.name] = len(inside)
            elif f.agg == Agg.SUM:
                row[f.name] = sum(e["amount"] for e in inside)
            elif f.agg == Agg.MEAN:
                row[f.name] = (sum(e["amount"] for e in inside) / len(inside)
                               if inside else math.nan)
            elif f.agg == Agg.LAST:
                before = [e for e in events if e[f.entity.value] == key
                          and t - f.window_s < e["t"] < t]
                latest = max((e["t"] for e in before), default=None)
                row[f.name] = (max(e["amount"] for e in before if e["t"] == latest)
                               if before else math.nan)
            elif f.agg == Agg.FIRST_SEEN:
                row[f.name] = float(t - min(e["t"] for e in inside)) if inside else math.nan
            elif f.agg in (Agg.MIN, Agg.MAX):
                pick = min if f.agg == Agg.MIN else max
                row[f.name] = pick(e["amount"] for e in inside) if inside else math.nan
            elif f.agg == Agg.COUNT_DISTINCT:
                row[f.name] = len({e["terminal"] for e in inside})
            elif f.agg == Agg.FRAUD_RATE:
                frauds = 0
                for e in inside:
                    known = [lb for lb in labs if lb["id"] == e["id"] and lb["lt"] <= t]
                    if known and max(known, key=lambda lb: lb["lt"])["fraud"] == 1:
                        frauds += 1
                row[f.name] = frauds / len(inside) if inside else 0.0
        for r in RECENCY_FEATURES:
            before = [e["t"] for e in events if e["customer"] == p.customer_id and e["t"] < t
                      and t - e["t"] < r.horizon_s]
            row[r.name] = float(t - max(before)) if before else math.nan
        ts = pd.Timestamp(p.event_timestamp)
        ts = ts.tz_convert("UTC") if ts.tzinfo else ts
        row["amount"] = amount
        row["tx_during_weekend"] = int(ts.weekday() >= 5)
        row["tx_during_night"] = int(ts.hour <= 6)
        avg = row["customer_avg_amount_30d"]
        row["amount_over_customer_avg_30d"] = (
            amount / avg if not math.isnan(avg) and avg != 0 else math.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=feature_names())
