"""Analytics benchmark on the handbook data: the analyst queries on the embedded DuckDB
store, and the ingestion lag from publish to queryable through the real (embedded) broker.

    .venv/bin/python -m benchmarks.analytics [--work DIR] [--runs 20] [--rate 5000]
                                             [--seconds 30] [--quick]

1. enrich: every feature at each of the 1.75M handbook transactions
   (transformations.engine.compute_features), labels from TX_FRAUD known 7 days after the
   transaction (the handbook's label delay); cached as Parquet in the work dir;
2. load: OlapStore.load_frame of the enriched rows into a DuckDB file (timed);
3. queries: each analyst query, `now` = newest event, 3 warm-up runs then --runs timed
   runs: p50/p95 (target <= 100 ms p95);
4. lag: a local Apache Kafka, the loaded store's ingestion loop in a thread, and a publisher at
   --rate messages/s for --seconds (new transactions with the handbook's features, and their
   labels a little later). Per message: commit time minus the Kafka timestamp (the
   producer's create time) = publish -> visible to queries (target <= 5 s p99). Also
   sampled from outside: every 100 ms a query reads the newest processed_at_ms visible.

Results: benchmarks/results/analytics.json (with date, machine and load average).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from benchmarks import workdir

ROOT = Path(__file__).resolve().parents[1]
HANDBOOK = Path(os.environ.get(
    "FFS_HANDBOOK", ROOT.parent / "shared" / "data" / "handbook" / "transactions.parquet"))
LABEL_DELAY = pd.Timedelta(days=7)
TARGET_QUERY_P95_MS, TARGET_LAG_P99_MS = 100.0, 5000.0


def log(msg: str) -> None:
    print(msg, flush=True)


def pcts(values_ms, qs=(50, 95, 99)) -> dict:
    a = np.asarray(values_ms, dtype=float)
    if not a.size:
        return {"n": 0}
    out = {"n": int(a.size)}
    out.update({f"p{q}_ms": round(float(np.percentile(a, q)), 2) for q in qs})
    out["max_ms"] = round(float(a.max()), 2)
    return out


def machine() -> dict:
    vm = psutil.virtual_memory()
    return {"cores": psutil.cpu_count(), "memory_gib": round(vm.total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


# --------------------------------------------------------------------------- 1. enrich


def enriched_frame(work: Path, limit: int | None) -> pd.DataFrame:
    cache = work / f"enriched{'-' + str(limit) if limit else ''}.parquet"
    if cache.exists():
        log(f"enriched rows from cache {cache}")
        return pd.read_parquet(cache)
    from ffs.transformations import schema
    from ffs.transformations.engine import compute_features
    from ffs.transformations.features import feature_names

    started = time.perf_counter()
    tx = schema.normalize_transactions(schema.read_table(HANDBOOK)).rows
    if limit:
        tx = tx.iloc[-limit:].reset_index(drop=True)
    labels = schema.labels_from_flags(tx, delay=LABEL_DELAY)
    feats = compute_features(tx, labels, tx[["customer_id", "terminal_id", "event_timestamp",
                                             "amount"]])
    log(f"features for {len(tx):,} transactions in {time.perf_counter() - started:.1f} s")
    ms = tx["event_timestamp"].astype("int64") // 1_000_000
    out = pd.DataFrame({"transaction_id": tx["transaction_id"].astype(str),
                        "customer_id": tx["customer_id"].astype(str),
                        "terminal_id": tx["terminal_id"].astype(str),
                        "event_time_ms": ms.to_numpy(), "amount": tx["amount"].to_numpy()})
    for name in feature_names():
        if name not in out.columns:
            out[name] = feats[name].to_numpy()
    out["is_fraud"] = tx["TX_FRAUD"].astype("int32").to_numpy()
    out["label_time_ms"] = (ms + LABEL_DELAY // pd.Timedelta(milliseconds=1)).to_numpy()
    out["processed_at_ms"] = ms.to_numpy()
    out["kind"] = "transaction"
    cache.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(cache, index=False)
    return out


# --------------------------------------------------------------------------- 3. queries


def time_queries(store, runs: int) -> dict:
    from ffs.analytics import queries

    now = store.now_ms()
    out = {}
    for name in queries.QUERIES:
        for _ in range(3):
            df = store.run_named(name, now_ms=now)
        lat = []
        for _ in range(runs):
            t = time.perf_counter()
            df = store.run_named(name, now_ms=now)
            lat.append((time.perf_counter() - t) * 1000)
        r = pcts(lat, (50, 95))
        r["rows"] = len(df)
        r["meets_target"] = r["p95_ms"] <= TARGET_QUERY_P95_MS
        out[name] = r
        log(f"  {name:<24} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
            f"({r['rows']} rows)")
    t = time.perf_counter()
    store.now_ms()
    out["_now"] = {"ms": round((time.perf_counter() - t) * 1000, 2)}
    return out


# --------------------------------------------------------------------------- 4. lag


def messages_for_lag(frame: pd.DataFrame, n: int, seed: int = 1):
    """n messages: new transactions (handbook features, fresh ids) and, for every fifth,
    its label a few hundred messages later. Yields (key, transaction row or None, label's
    is_fraud or None) in publish order."""
    rng = np.random.default_rng(seed)
    src = frame.iloc[rng.integers(0, len(frame), n)].to_dict("records")
    pending: list[tuple[int, str]] = []
    for i, row in enumerate(src):
        txid = f"lag-{i}"
        row = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
               for k, v in row.items()}
        row.update(transaction_id=txid, kind="transaction", is_fraud=None, label_time_ms=None)
        yield txid, row, None
        if i % 5 == 0:
            pending.append((i + 300, txid))
        while pending and pending[0][0] <= i:
            _, lid = pending.pop(0)
            yield lid, None, int(rng.random() < 0.1)


def publish_at_rate(bus, topic: str, frame: pd.DataFrame, rate: int, seconds: float,
                    prefix: str = "", tick_s: float = 0.05) -> tuple[int, float, list[int]]:
    """messages_for_lag at `rate`/s for `seconds`, each stamped processed_at_ms = when sent:
    (messages sent, seconds it took, the send time in ms of every transaction row)."""
    from ffs.bus.messages import Label, enriched_label

    total = int(rate * seconds)
    msgs = messages_for_lag(frame, total)  # more than enough: labels are extra
    published: list[int] = []
    sent, started = 0, time.monotonic()
    while sent < total:
        due = int((time.monotonic() - started) * rate)
        while sent < min(due, total):
            key, row, fraud = next(msgs)
            key = prefix + key
            now_ms = int(time.time() * 1000)
            if row is not None:
                row["transaction_id"] = key
                row["processed_at_ms"] = now_ms
                value = json.dumps(row, separators=(",", ":")).encode()
                published.append(now_ms)
            else:
                value = enriched_label(Label(key, fraud, now_ms // 1000), now_ms)
            bus.send_raw(topic, key.encode(), value)
            sent += 1
        bus._producer.poll(0)  # serve delivery callbacks without blocking
        time.sleep(tick_s)
    return sent, time.monotonic() - started, published


def measure_lag(store, frame: pd.DataFrame, rate: int, seconds: float) -> dict:
    from ffs.bus import kafka
    from ffs.bus.broker import LocalKafka
    from ffs.bus.producer import EventProducer
    from ffs.config import KafkaConfig

    with LocalKafka() as broker:
        cfg = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, partitions=4)
        kafka.ensure_topics(cfg, [cfg.enriched_topic])
        store.kafka, store.topic = cfg, cfg.enriched_topic
        store.lags_ms.clear()
        stop = threading.Event()
        ingest = threading.Thread(target=store.run, args=(stop,), daemon=True)
        ingest.start()
        staleness: list[float] = []

        def watch() -> None:  # outside view: how old is the newest row a query can see
            while not stop.is_set():
                v = store.query("SELECT MAX(processed_at_ms) FROM ffs_enriched "
                                "WHERE transaction_id LIKE 'lag-%'").iloc[0, 0]
                if v is not None and not pd.isna(v):
                    staleness.append(time.time() * 1000 - float(v))
                stop.wait(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        bus = EventProducer(cfg, validate=False)
        try:
            sent, publish_s, _ = publish_at_rate(bus, cfg.enriched_topic, frame, rate, seconds)
            bus.flush()
            deadline = time.monotonic() + 30
            while store.rows_ingested < sent and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            ingest.join(30)
            watcher.join(5)
    got = store.rows_ingested
    lag = pcts(store.lags_ms, (50, 95, 99))
    lag["meets_target"] = lag.get("p99_ms", 1e18) <= TARGET_LAG_P99_MS
    return {"rate_per_s": rate, "seconds": seconds, "published": sent,
            "achieved_rate_per_s": round(sent / publish_s), "ingested": got,
            "publish_to_queryable": lag, "newest_visible_staleness": pcts(staleness, (50, 99))}


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/ffs-bench/analytics",
                    help="work dir (enriched cache, DuckDB file)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rate", type=int, default=5000, help="messages/s for the lag test")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="last 200k transactions, 10 s lag")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if not HANDBOOK.exists():
        print(f"handbook data not found at {HANDBOOK} (set FFS_HANDBOOK)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from ffs.analytics.olap_store import OlapStore

    work = Path(args.work or workdir.temporary("ffs-analytics-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    limit = 200_000 if args.quick else None
    seconds = 10.0 if args.quick else args.seconds
    results: dict = {"date": dt.date.today().isoformat(), "quick": args.quick,
                     "machine": machine(),
                     "load_avg_start": [round(x, 2) for x in os.getloadavg()],
                     "settings": {"runs": args.runs, "rate": args.rate, "seconds": seconds,
                                  "label_delay_days": 7}}
    frame = enriched_frame(work, limit)
    results["rows"] = len(frame)

    db = work / "olap.duckdb"
    for p in (db, Path(str(db) + ".wal")):
        p.unlink(missing_ok=True)
    store = OlapStore(None, str(db))
    t = time.perf_counter()
    store.load_frame(frame)
    results["load"] = {"seconds": round(time.perf_counter() - t, 2), "rows": store.count(),
                       "file_mib": round(db.stat().st_size / 2**20, 1)}
    log(f"loaded {store.count():,} rows into {db} in {results['load']['seconds']} s")

    log(f"queries ({args.runs} runs each after 3 warm-up):")
    results["queries"] = time_queries(store, args.runs)
    log(f"lag: {args.rate}/s for {seconds:.0f} s through Kafka into the loaded store")
    results["lag"] = measure_lag(store, frame, args.rate, seconds)
    lag = results["lag"]["publish_to_queryable"]
    log(f"  publish -> queryable: p50 {lag.get('p50_ms')} ms, p99 {lag.get('p99_ms')} ms, "
        f"max {lag.get('max_ms')} ms over {lag.get('n')} messages "
        f"({results['lag']['achieved_rate_per_s']}/s achieved)")
    log(f"  newest visible row staleness: {results['lag']['newest_visible_staleness']}")
    results["queries_after_lag"] = {k: v for k, v in time_queries(store, args.runs).items()}
    store.close()
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.no_save:
        out = ROOT / "benchmarks" / "results" / "analytics.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
        log(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(workdir.run(main))
