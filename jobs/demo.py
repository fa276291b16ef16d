"""`ffs demo` (`make demo`): the whole batch path on embedded defaults, with a short report.

generate traffic -> validate -> backfill (Spark) -> training set at scoring time and a day
later -> compare with what an as-of join on the feature table (Feast's method) would return.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ffs.config import Config


def run_demo(cfg: Config, workdir: Path, engine: str = "spark",
             log: Callable[[str], None] = print) -> int:
    from jobs.backfill import backfill
    from jobs.generate import GenerateSpec, generate_to
    from jobs.offline_store import OfflineStore
    from jobs.training_set import training_set

    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg.offline.path = str(workdir / "offline")
    cfg.validation.data_docs_dir = str(workdir / "data_docs")

    log("1/4 generate synthetic traffic")
    spec = GenerateSpec(customers=1500, terminals=3000, days=45, start="2026-01-01", seed=7)
    gen = generate_to(workdir / "input", spec)
    log(f"  {gen.n_transactions:,} transactions, {gen.n_fraud:,} fraud "
        f"(by scenario {dict(sorted(gen.fraud_by_scenario.items()))}), {gen.n_labels:,} "
        f"delayed labels, {gen.start} .. {gen.end}")

    log(f"2/4 validate + backfill ({engine}) into {cfg.offline.path}")
    summary = backfill(cfg, gen.transactions_path, gen.labels_path, engine, log)
    for line in summary.validation:
        log(f"  validated {line}")
    log(f"  data docs: {Path(cfg.validation.data_docs_dir) / 'index.html'}")

    log("3/4 training set: the last 14 days' transactions, at scoring time and 1 day later")
    store = OfflineStore(cfg.offline.path)
    tx = store.read("transactions")
    cutoff = tx["event_timestamp"].max() - pd.Timedelta(days=14)
    rows = tx.loc[tx["event_timestamp"] > cutoff,
                  ["transaction_id", "customer_id", "terminal_id", "event_timestamp", "amount",
                   "tx_fraud"]]
    later = rows.assign(event_timestamp=rows["event_timestamp"] + pd.Timedelta(days=1),
                        amount=np.nan)
    t0 = time.perf_counter()
    ts = training_set(pd.concat([rows, later], ignore_index=True), cfg, engine="local")
    at_score, day_after = ts.iloc[: len(rows)], ts.iloc[len(rows):]
    log(f"  {len(ts):,} rows x {ts.shape[1]} columns in {time.perf_counter() - t0:.1f} s; "
        f"fraud share {at_score['tx_fraud'].mean():.2%}")
    log(f"  mean customer_nb_tx_1d at scoring time {at_score['customer_nb_tx_1d'].mean():.2f}, "
        f"one day later {day_after['customer_nb_tx_1d'].mean():.2f}")

    log("4/4 what an as-of join on the feature table (Feast's method) returns one day later")
    feats = store.read("features", ["customer_id", "event_timestamp", "customer_nb_tx_1d"])
    stale = pd.merge_asof(
        day_after[["customer_id", "event_timestamp"]].reset_index()
        .sort_values("event_timestamp"),
        feats.sort_values("event_timestamp"), on="event_timestamp", by="customer_id",
        direction="backward").set_index("index").sort_index()
    exact = day_after["customer_nb_tx_1d"].to_numpy()
    wrong = (stale["customer_nb_tx_1d"].fillna(0).to_numpy() != exact).mean()
    log(f"  as-of join wrong on {wrong:.1%} of rows for customer_nb_tx_1d; ours is exact by "
        f"construction (checked against a reference in the tests)")
    log(f"demo done in {time.perf_counter() - started:.0f} s. Try: "
        f"ffs training-set --offline {cfg.offline.path} --entities <file> --output out.parquet")
    return 0
