"""Small synthetic traffic with engine-computed features, shared by the analytics tests
(the DuckDB dashboard and the live Pinot tests): transactions over some days (long enough
for the 7-day-delayed terminal risk to be defined at the end), a velocity burst of customer
99 near the end, and labels for half of them, 0-3 days late."""

from __future__ import annotations

import numpy as np
import pandas as pd


def small_traffic(seed: int, n: int, customers: int, terminals: int, days: int,
                  burst: int, burst_gap_s: int):
    """(transactions, labels, features at each transaction), normalized as batch does."""
    from ffs.transformations import schema
    from ffs.transformations.engine import compute_features

    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-05-01", tz="UTC")
    secs = np.sort(rng.integers(0, days * 86400, n))
    raw = pd.DataFrame({"transaction_id": np.arange(n),
                        "customer_id": rng.integers(0, customers, n),
                        "terminal_id": rng.integers(0, terminals, n),
                        "event_timestamp": t0 + pd.to_timedelta(secs, unit="s"),
                        "amount": np.round(rng.gamma(2.0, 30.0, n), 2)})
    spree = pd.DataFrame({"transaction_id": np.arange(n, n + burst), "customer_id": 99,
                          "terminal_id": rng.integers(0, terminals, burst),
                          "event_timestamp": t0 + pd.Timedelta(days=days - 1, hours=20)
                          + pd.to_timedelta(np.arange(burst) * burst_gap_s, unit="s"),
                          "amount": 75.0})
    tx = schema.normalize_transactions(pd.concat([raw, spree], ignore_index=True)).rows
    picked = tx.sample(frac=0.5, random_state=seed)
    labels = pd.DataFrame({"transaction_id": picked["transaction_id"].to_numpy(),
                           "is_fraud": (rng.random(len(picked)) < 0.3).astype(int),
                           "label_timestamp": picked["event_timestamp"].reset_index(drop=True)
                           + pd.to_timedelta(rng.integers(0, 3 * 86400, len(picked)), unit="s")})
    labels = schema.normalize_labels(labels, tx).rows
    feats = compute_features(tx, labels, tx[["customer_id", "terminal_id", "event_timestamp",
                                             "amount"]])
    return tx, labels, feats
