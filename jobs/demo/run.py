"""`ffs demo` (`make demo`): the whole product on embedded defaults, with a short report.

generate traffic -> validate -> backfill (Spark) -> training set at scoring time and a day
later -> compare with what an as-of join on the feature table (Feast's method) would return
-> load the online state into a private Redis and score a stream of requests, checking every
served value against the training set at the same instant -> run `ffs stream` live on Apache
Kafka, replay traffic with a fraud burst, watch its features move, check consistency -> feed
the enriched topic to the embedded analytics store and to a live Apache Pinot, run every
analyst query on both, and serve the dashboard, printing its link.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ffs.config import Config


def run_demo(cfg: Config, workdir: Path, engine: str = "spark",
             log: Callable[[str], None] = print, linger_s: float | None = None,
             with_pinot: bool = True) -> int:
    from ffs.jobs.batch.backfill import backfill
    from ffs.jobs.batch.offline_store import OfflineStore
    from ffs.jobs.batch.training_set import training_set
    from ffs.jobs.tools.generate import GenerateSpec, generate_to

    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg.offline.path = str(workdir / "offline")
    cfg.validation.data_docs_dir = str(workdir / "data_docs")

    log("1/7 generate synthetic traffic")
    spec = GenerateSpec(customers=1500, terminals=3000, days=45, start="2026-01-01", seed=7)
    gen = generate_to(workdir / "input", spec)
    log(f"  {gen.n_transactions:,} transactions, {gen.n_fraud:,} fraud "
        f"(by scenario {dict(sorted(gen.fraud_by_scenario.items()))}), {gen.n_labels:,} "
        f"delayed labels, {gen.start} .. {gen.end}")

    log(f"2/7 validate + backfill ({engine}) into {cfg.offline.path}")
    summary = backfill(cfg, gen.transactions_path, gen.labels_path, engine, log)
    for line in summary.validation:
        log(f"  validated {line}")
    log(f"  data docs: {Path(cfg.validation.data_docs_dir) / 'index.html'}")

    log("3/7 training set: the last 14 days' transactions, at scoring time and 1 day later")
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

    log("4/7 what an as-of join on the feature table (Feast's method) returns one day later")
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
    log("5/7 online: load Redis, score requests (one per call), check against the training set")
    score_online(cfg, store, log)

    log("6/7 streaming: ffs stream live on Apache Kafka, replay, a fraud burst")
    from ffs.analytics.demo import serve_dashboard, start_pinot
    from ffs.jobs.demo.stream import run_live

    pinot_future = start_pinot(log) if with_pinot else None
    pinot = None
    live = run_live(cfg, store.read("transactions"), store.read("labels"), log)
    try:
        log("7/7 analytics: the enriched topic into DuckDB" + (" and Apache Pinot" if
            with_pinot else "") + ", the analyst queries, the live dashboard")
        pinot = pinot_future.result() if pinot_future else None
        serve_dashboard(cfg, log, started, linger_s, pinot)
    finally:
        if pinot is not None:
            pinot.stop()
        live.stop()
    return 0


def score_online(cfg: Config, store, log: Callable[[str], None], n: int = 400) -> None:
    import redis

    from ffs.jobs.batch.training_set import training_set
    from ffs.online.client import OnlineClient
    from ffs.online.loader import load_state
    from ffs.online.redis_server import RedisServer

    tx, labels = store.read("transactions"), store.read("labels")
    with RedisServer() as server:  # private, on a free port; stopped on exit
        conn = redis.Redis.from_url(server.url)
        loaded = load_state(conn, tx, labels)
        log(f"  loaded {loaded.describe()} in {loaded.seconds:.1f} s "
            f"({_used_memory(conn)} in Redis)")
        client = OnlineClient(conn)
        rng = np.random.default_rng(3)
        t0 = pd.Timestamp(loaded.as_of, unit="s", tz="UTC")
        picked = tx.sample(n, random_state=3)
        # new payments arriving after the newest ingested event, each carried in its request
        requests = pd.DataFrame({
            "transaction_id": np.arange(n) + 10**12,
            "customer_id": picked["customer_id"].to_numpy(),
            "terminal_id": rng.permutation(picked["terminal_id"].to_numpy()),
            "event_timestamp": t0 + pd.to_timedelta(np.sort(rng.integers(1, 2 * 86400, n)),
                                                    unit="s"),
            "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
        })
        latencies, results = [], []
        for row in requests.to_dict("records"):
            began = time.perf_counter()
            results.append(client.get_features([row]))
            latencies.append((time.perf_counter() - began) * 1000)
    lat = np.array(latencies)
    log(f"  scored {n} requests: p50 {np.percentile(lat, 50):.2f} ms, "
        f"p99 {np.percentile(lat, 99):.2f} ms, max {lat.max():.2f} ms (in process)")
    # the truth: each request's features from the offline events plus that one payment
    equal = total = 0
    names = results[0].feature_names
    for i, row in enumerate(requests.to_dict("records")):
        events = pd.concat([tx[requests.columns], pd.DataFrame([row])], ignore_index=True)
        truth = training_set(pd.DataFrame([row]), cfg, transactions=events, labels=labels,
                             engine="local").iloc[0]
        for name in names:
            got, want = results[i].values[name][0], truth[name]
            total += 1
            equal += (got is None and pd.isna(want)) or (
                got is not None and not pd.isna(want) and np.isclose(got, want, rtol=1e-9))
        if i == 99:
            break
    log(f"  correctness: {equal:,} of {total:,} served values equal the training set's at the "
        f"same instant ({equal / total:.1%}); checked on the first 100 requests")


def _used_memory(conn) -> str:
    info: dict = conn.info("memory")  # redis-py's sync client: a dict, not an awaitable
    return str(info["used_memory_human"])
