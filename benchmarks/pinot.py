"""Apache Pinot and the embedded DuckDB store side by side, in one run, on the handbook data.

    .venv/bin/python -m benchmarks.pinot [--rows N] [--runs 50] [--rates 1000,5000]
                                         [--seconds 20] [--pinot-heap 4g]

1. start: a local Apache Kafka and a local Apache Pinot (analytics/pinot_cluster.py): start
   times and memory (RSS) of each;
2. load: the handbook's 1.75M transactions with every feature (benchmarks.analytics'
   enriched frame), published to the enriched topic; Pinot's REALTIME upsert table consumes
   it (time from the first publish to all rows queryable = Pinot's ingestion rate); DuckDB
   loads the same rows in bulk (OlapStore.load_frame);
3. queries: after --settle seconds (Pinot finishes building the segments that filled),
   every analyst query on both stores at the same `now`, 3 warm-up then --runs timed runs,
   p50/p95 (target: Pinot p95 <= 100 ms), and whether the two answers are the
   same rows (analytics.compare);
4. event -> queryable at each rate: new enriched rows published at a fixed rate while both
   stores consume the topic (DuckDB's ingestion loop in a thread). Every 100 ms a sampler asks
   each store for the newest processed_at_ms it can see; a message published at p is
   queryable at the first sample that sees a stamp >= p. p99 over all messages (target:
   Pinot <= 5 s at 5,000 events/s). Resolution: the 100 ms sampling plus one query.

Results: benchmarks/results/pinot-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import workdir
from benchmarks.analytics import HANDBOOK, enriched_frame, log, machine, pcts

ROOT = Path(__file__).resolve().parents[1]
TARGET_QUERY_P95_MS, TARGET_LAG_P99_MS = 100.0, 5000.0


def _rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def _messages(frame: pd.DataFrame, chunk: int = 100_000):
    """(key, enriched JSON) of every row, chunk by chunk (1.75M dicts at once would be GBs)."""
    import orjson

    for start in range(0, len(frame), chunk):
        part = frame.iloc[start:start + chunk]
        for row in part.to_dict("records"):
            clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                     for k, v in row.items()}
            yield clean["transaction_id"], orjson.dumps(clean)


def publish_frame(cfg, frame: pd.DataFrame) -> float:
    from ffs.bus.producer import EventProducer

    t = time.perf_counter()
    with EventProducer(cfg.kafka, validate=False) as bus:
        for key, value in _messages(frame):
            bus.send_raw(cfg.kafka.enriched_topic, key.encode(), value)
    return time.perf_counter() - t


def pinot_count(client) -> int:
    df = client.query("SELECT COUNT(*) AS n FROM ffs_enriched")
    return int(df["n"].iloc[0]) if len(df) else 0


def time_both(duck, pinot_client, runs: int) -> dict:
    from ffs.analytics import queries
    from ffs.analytics.compare import differences

    now = duck.now_ms()
    out: dict = {"now_ms": now}
    for name in queries.QUERIES:
        sqls = {"pinot": queries.render(name, "pinot", now_ms=now)}
        result: dict = {}
        answers = {}
        for store in ("duckdb", "pinot"):
            run = ((lambda n=name: duck.run_named(n, now_ms=now)) if store == "duckdb"
                   else (lambda s=sqls["pinot"]: pinot_client.query(s)))
            for _ in range(3):
                answers[store] = run()
            lat = []
            for _ in range(runs):
                t = time.perf_counter()
                run()
                lat.append((time.perf_counter() - t) * 1000)
            r = pcts(lat, (50, 95))
            r["rows"] = len(answers[store])
            result[store] = r
        diff = differences(answers["duckdb"], answers["pinot"])
        result["same_rows"] = not diff
        if diff:
            result["differences"] = diff[:3]
        result["pinot_meets_target"] = result["pinot"]["p95_ms"] <= TARGET_QUERY_P95_MS
        out[name] = result
        log(f"  {name:<24} DuckDB p50 {result['duckdb']['p50_ms']:6.1f} / p95 "
            f"{result['duckdb']['p95_ms']:6.1f} ms   Pinot p50 {result['pinot']['p50_ms']:6.1f}"
            f" / p95 {result['pinot']['p95_ms']:6.1f} ms   {result['pinot']['rows']} rows, "
            + ("same rows" if not diff else f"DIFFERENT: {diff[0]}"))
    return out


def lag_run(cfg, duck, pinot_client, frame: pd.DataFrame, rate: int, seconds: float) -> dict:
    """Publish new rows at `rate`/s for `seconds` while both stores consume; per message,
    publish -> first sample in which each store sees it."""
    from benchmarks.analytics import publish_at_rate
    from ffs.bus.producer import EventProducer

    prefix = f"lag{rate}-"
    samples: dict[str, list[tuple[float, float]]] = {"duckdb": [], "pinot": []}
    stop = threading.Event()

    def sample(store: str) -> None:
        sql = ("SELECT MAX(processed_at_ms) AS m FROM ffs_enriched "
               f"WHERE transaction_id LIKE '{prefix}%'")
        while not stop.is_set():
            try:
                df = duck.query(sql) if store == "duckdb" else pinot_client.query(sql)
                v = df.iloc[0, 0] if len(df) else None
                if v is not None and not pd.isna(v) and float(v) > 0:
                    samples[store].append((time.time() * 1000, float(v)))
            except Exception as exc:  # noqa: BLE001 - a failed sample is a gap, reported
                log(f"  sample from {store} failed: {exc}")
            stop.wait(0.1)

    ingest_stop = threading.Event()
    ingest = threading.Thread(target=duck.run, args=(ingest_stop,), daemon=True)
    ingest.start()
    samplers = [threading.Thread(target=sample, args=(s,), daemon=True) for s in samples]
    for t in samplers:
        t.start()
    bus = EventProducer(cfg.kafka, validate=False)
    try:
        sent, took, published = publish_at_rate(bus, cfg.kafka.enriched_topic, frame, rate,
                                                seconds, prefix=prefix, tick_s=0.02)
        achieved = sent / took
        bus.close()
        deadline = time.time() + 30
        newest = max(published)
        while time.time() < deadline and not all(
                s and s[-1][1] >= newest for s in samples.values()):
            time.sleep(0.2)
    finally:
        stop.set()
        ingest_stop.set()
        ingest.join(30)
        for t in samplers:
            t.join(10)
    out = {"rate_per_s": rate, "seconds": seconds, "published": sent,
           "achieved_rate_per_s": round(achieved)}
    pub = np.asarray(published, dtype=float)
    for store, seen in samples.items():
        if not seen:
            out[store] = {"n": 0}
            continue
        at = np.asarray([s[0] for s in seen])
        stamp = np.maximum.accumulate(np.asarray([s[1] for s in seen]))
        idx = np.searchsorted(stamp, pub, side="left")  # first sample that sees the stamp
        ok = idx < len(at)
        lag = at[idx[ok]] - pub[ok]
        r = pcts(lag, (50, 95, 99))
        r["never_seen"] = int((~ok).sum())
        r["meets_target"] = bool(ok.all()) and r.get("p99_ms", 1e18) <= TARGET_LAG_P99_MS
        out[store] = r
        log(f"  {rate}/s ({out['achieved_rate_per_s']}/s achieved), {store:<6}: event -> "
            f"queryable p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, "
            f"never seen {r['never_seen']}")
    return out


def main() -> int:
    from ffs.analytics.olap_store import OlapStore
    from ffs.analytics.pinot_apply import apply
    from ffs.analytics.pinot_client import PinotClient
    from ffs.analytics.pinot_cluster import LocalPinot
    from ffs.analytics.pinot_config import write_artifacts
    from ffs.bus import kafka
    from ffs.bus.broker import LocalKafka
    from ffs.config import load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/ffs-bench/analytics")
    ap.add_argument("--rows", type=int, help="only the last N transactions (default: all)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--settle", type=float, default=30.0,
                    help="seconds between the last row queryable and the timed queries")
    ap.add_argument("--rates", default="1000,5000")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pinot-heap", default="4g")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if not HANDBOOK.exists():
        print(f"handbook data not found at {HANDBOOK} (set FFS_HANDBOOK)", file=sys.stderr)
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": dt.date.today().isoformat(), "machine": machine(),
                     "load_avg_start": [round(x, 2) for x in os.getloadavg()],
                     "settings": vars(args)}
    frame = enriched_frame(work, args.rows)
    results["rows"] = len(frame)

    with LocalKafka(log=log) as broker, LocalPinot(heap=args.pinot_heap, log=log) as pinot:
        results["start"] = {
            "kafka_s": round(broker.start_seconds, 1),
            "kafka_rss_mib": round(_rss(broker.process.proc.pid) / 2**20),
            "pinot_s": round(pinot.start_seconds, 1),
            "pinot_rss_mib": {k: round(v / 2**20) for k, v in pinot.memory().items()},
            "pinot_heap": args.pinot_heap}
        cfg = load_config(env={})
        cfg.kafka.bootstrap_servers = broker.bootstrap_servers
        cfg.pinot.controller_url, cfg.pinot.broker_url = pinot.controller_url, pinot.broker_url
        kafka.ensure_topics(cfg.kafka, [cfg.kafka.enriched_topic])
        artifacts = Path(workdir.temporary("ffs-bench-pinot-"))
        write_artifacts(artifacts, cfg)
        apply(cfg, artifacts, lambda _line: None)
        client = PinotClient(cfg.pinot)

        log(f"publishing {len(frame):,} enriched rows to {cfg.kafka.enriched_topic} ...")
        t0 = time.perf_counter()
        publish_s = publish_frame(cfg, frame)
        while pinot_count(client) < len(frame) and time.perf_counter() - t0 < 1800:
            time.sleep(1.0)
        pinot_s = time.perf_counter() - t0
        have = pinot_count(client)
        results["load"] = {"published_s": round(publish_s, 1),
                           "pinot_all_queryable_s": round(pinot_s, 1), "pinot_rows": have,
                           "pinot_rows_per_s": round(have / pinot_s),
                           "pinot_rss_mib": {k: round(v / 2**20)
                                             for k, v in pinot.memory().items()}}
        log(f"  published in {publish_s:.1f} s; Pinot has {have:,} rows {pinot_s:.1f} s after "
            f"the first was sent; RSS {results['load']['pinot_rss_mib']} MiB")
        duck = OlapStore(cfg.kafka, ":memory:")
        t = time.perf_counter()
        duck.load_frame(frame)
        results["load"]["duckdb_bulk_s"] = round(time.perf_counter() - t, 1)
        # DuckDB holds what the topic holds: it consumes from the topic's end on
        marks = kafka.watermarks(cfg.kafka, [cfg.kafka.enriched_topic])
        duck._apply(duck_batch_empty(), {int(k.rsplit(":", 1)[1]): hi
                                         for k, (_, hi) in marks.items()})

        # Pinot commits (builds) the segments that just filled for a while after the last row
        # is queryable; timing queries during that measures the build, not the queries
        log(f"settling {args.settle:.0f} s ...")
        time.sleep(args.settle)
        log(f"queries ({args.runs} runs each after 3 warm-up), same `now` on both:")
        results["queries"] = time_both(duck, client, args.runs)
        results["lag"] = [lag_run(cfg, duck, client, frame, int(r), args.seconds)
                          for r in args.rates.split(",")]
        results["pinot_rss_end_mib"] = {k: round(v / 2**20) for k, v in pinot.memory().items()}
        duck.close()
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.no_save:
        out = ROOT / "benchmarks" / "results" / f"pinot-{results['date']}.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        log(f"results: {out}")
    return 0


def duck_batch_empty():
    import pyarrow as pa

    from ffs.analytics.olap_store import ARROW_SCHEMA

    t = pa.Table.from_pylist([], schema=ARROW_SCHEMA)
    return t.append_column("seq", pa.array([], type=pa.int64()))


if __name__ == "__main__":
    sys.exit(workdir.run(main))
