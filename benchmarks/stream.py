"""Streaming benchmark on the handbook data: sustained events/s through `ffs stream` and
freshness (Kafka publish time to written in the online state, i.e. visible to an online read).

    .venv/bin/python -m benchmarks.stream [--days N] [--rates 1000,5000,10000]

1. throughput: the handbook's transactions and labels (labels from TX_FRAUD, known at the
   payment's time) are published first; the stream then drains the backlog from a fresh
   checkpoint. events/s = events / (end of the last batch - start of the first), so Spark's
   start is not counted (reported separately). Once with enrichment (the default job) and the
   consistency check after it, once with stream.enrich=false (the online state alone).
2. freshness: with the stream running and caught up (a few seconds of data sent first, not
   measured), a slice of the data is replayed at a fixed rate; per transaction, Kafka
   CreateTime to the end of its write (visible to online reads), p50/p99 per rate. The
   embedded analytics store (DuckDB) consumes the enriched topic at the same time; enriched
   rows carry their event's CreateTime, so its lag is event -> queryable through the whole
   pipeline. A live Apache Pinot consumes the same topic (--no-pinot: not): polled every
   100 ms for the rows it newly shows, its lag is the payment's publish time to the first
   poll that shows it. Spark's own account of each micro-batch
   (StreamingQueryProgress.durationMs) is kept beside it.
All real: Apache Kafka (local, KRaft), a private redis-server, Spark local[2] reading Kafka
with its own connector. The machine is shared: the load average is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks import workdir

ROOT = Path(__file__).resolve().parents[1]
HANDBOOK = Path(os.environ.get(
    "FFS_HANDBOOK", ROOT.parent / "shared" / "data" / "handbook" / "transactions.parquet"))


def _config(broker, redis_url: str, work: Path, enrich: bool, setup: str = "executors:2"):
    """setup: "driver" (each batch on the driver), "executors:N" (tasks per partition on
    Spark's local[N]) or "adaptive[:N]" (the driver, tasks after a batch of
    stream.tasks_after_events)."""
    from ffs.config import load_config

    cfg = load_config(env={})
    cfg.kafka.bootstrap_servers = broker.bootstrap_servers
    cfg.redis.url = redis_url
    cfg.stream.checkpoint = str(work / f"ckpt-{time.time_ns()}")
    cfg.stream.metrics_port = -1
    cfg.stream.enrich = enrich
    cfg.stream.allowed_lateness_s = 7 * 86400
    mode, _, cores = setup.partition(":")
    cfg.stream.batches_on = mode
    cfg.spark.master = f"local[{cores or 2}]"
    return cfg


def throughput(tx, labels, work: Path, enrich: bool, consistency: bool,
               setup: str = "executors:2") -> dict:
    from ffs.bus import kafka
    from ffs.bus.broker import LocalKafka
    from ffs.bus.replay import replay
    from ffs.jobs.stream.job import StreamJob
    from ffs.online.redis_server import RedisServer

    with LocalKafka() as broker, RedisServer() as rs:
        cfg = _config(broker, rs.url, work, enrich, setup)
        kafka.ensure_topics(cfg.kafka)
        rep = replay(cfg.kafka, tx, labels)
        print(f"  published {rep.transactions + rep.labels:,} events in {rep.seconds:.1f} s "
              f"({rep.rate:,.0f}/s)", flush=True)
        t0 = time.time()
        job = StreamJob(cfg, log=lambda line: None).start()
        started = time.time() - t0
        cpu_before = cpu_by_role()
        summary = job.run(until_idle_s=5, max_seconds=3600)
        cpu = {k: round(v - cpu_before.get(k, 0.0), 1) for k, v in cpu_by_role().items()}
        span = (job.last_batch_end or 0) - (job.first_batch_at or 0)
        out = {"events": summary.events, "batches": summary.batches,
               "seconds_first_to_last_batch": round(span, 1),
               "events_per_s": round(summary.events / span) if span > 0 else None,
               "spark_and_job_start_s": round(started, 1),
               "dead_letters": summary.dead_letters, "enriched": summary.enriched,
               "corrections": summary.corrections, "replay_events_per_s": round(rep.rate)}
        out["setup"] = setup
        # CPU seconds per process role over the run (idle tail included) and per event
        out["cpu_s"] = cpu
        out["cpu_us_per_event"] = {k: round(v / max(summary.events, 1) * 1e6, 1)
                                   for k, v in cpu.items()}
        out["redis_commandstats"] = _commandstats(rs.url)
        print(f"  stream ({setup}, enrich={enrich}): {summary.events:,} events in {span:.1f} s = "
              f"{out['events_per_s']:,} events/s, {summary.batches} batches", flush=True)
        if consistency:
            from ffs.jobs.tools.consistency import check

            report = check(cfg, samples=4000, enriched_samples=50_000,
                           log=lambda line: print(f"  {line}", flush=True))
            out["consistency"] = {
                "ok": report.ok, "online": vars(report.online),
                "enriched": vars(report.enriched) if report.enriched else None,
                "seconds": round(report.seconds, 1)}
        return out


def _batches(lines: list[tuple[float, str]], since: float) -> tuple[list[int], list[float]]:
    """Events and seconds of each batch the job logged after `since` (its report lines:
    "batch N: X tx (...), Y labels (...) ...; Z ms")."""
    import re

    sizes, took = [], []
    for at, line in lines:
        m = re.match(r"batch \d+: (\d+) tx .*?, (\d+) labels .*; (\d+) ms$", line)
        if m and at >= since:
            sizes.append(int(m.group(1)) + int(m.group(2)))
            took.append(int(m.group(3)) / 1000)
    return sizes, took


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) of every process on the machine by its role in the
    stream: Redis, the Kafka broker, Spark's JVM, Spark's Python workers, this driver; the
    rest is "other" (the machine is shared). A process that ended is not counted."""
    me = os.getpid()
    out: dict[str, float] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            t = proc.info["cpu_times"]
        except (psutil.Error, TypeError):
            continue
        if t is None:
            continue
        if proc.info["pid"] == me:
            role = "driver (python)"
        elif "redis-server" in cmd:
            role = "redis"
        elif "kafka.Kafka" in cmd:
            role = "kafka broker"
        elif "SparkSubmit" in cmd or "pyspark-shell" in cmd:
            role = "spark jvm"
        elif "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
            role = "spark python workers"
        else:
            role = "other"
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def _commandstats(url: str) -> dict:
    """Redis server time per command kind over the run (INFO commandstats): where the
    payments' Redis time goes, script bodies included."""
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return {k.removeprefix("cmdstat_"): {"calls": v["calls"], "usec": v["usec"],
                                        "usec_per_call": v["usec_per_call"]}
            for k, v in stats.items() if v["calls"] > 100}


class PinotWatcher:
    """Polls Pinot every 100 ms for the transactions it can newly see (a window of
    processed_at_ms behind the newest seen, since partitions are consumed side by side) and
    records when each first became queryable."""

    MARGIN_MS = 30_000  # a partition whose consumer pauses to build a segment falls behind

    def __init__(self, client):
        self.client, self.visible_ms = client, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="pinot-watch")

    def _run(self) -> None:
        newest = 0
        while not self.stop.is_set():
            try:
                df = self.client.query(
                    "SELECT transaction_id, processed_at_ms FROM ffs_enriched WHERE "
                    f"processed_at_ms >= {newest - self.MARGIN_MS} AND kind = 'transaction'",
                    limit=500_000)
            except Exception as exc:  # noqa: BLE001 - a missed poll is a gap, reported
                print(f"  pinot poll failed: {exc}", flush=True)
                self.stop.wait(0.5)
                continue
            now = time.time() * 1000
            if len(df):  # an empty answer has no columns
                for txid in df["transaction_id"]:
                    self.visible_ms.setdefault(txid, now)
                newest = max(newest, int(df["processed_at_ms"].max()))
            self.stop.wait(0.1)


def _pinot_lags(cfg, watcher: PinotWatcher, phases: dict) -> dict:
    """Per phase: the payment's publish time (its Kafka CreateTime on the transactions
    topic) to the first poll in which Pinot showed it."""
    import orjson

    from ffs.bus import kafka

    published = {}
    for rec in kafka.read_all(cfg.kafka, cfg.kafka.transactions_topic):
        try:
            published[str(orjson.loads(rec.value)["transaction_id"])] = rec.timestamp_ms
        except (ValueError, KeyError, TypeError):
            continue
    out = {}
    for rate, (a, b) in phases.items():
        ids = [t for t, ms in published.items() if a <= ms <= b]
        lag = np.array([watcher.visible_ms[t] - published[t] for t in ids
                        if t in watcher.visible_ms])
        out[rate] = {"rows": len(ids), "never_seen": len(ids) - int(len(lag)),
                     "p50": round(float(np.percentile(lag, 50)) / 1000, 3) if len(lag) else None,
                     "p99": round(float(np.percentile(lag, 99)) / 1000, 3) if len(lag) else None}
    return out


WARM_UP_S = 3.0  # wall seconds of data the freshness run sends before it measures


def _cycle(progress, since_ms: float) -> tuple[dict, list]:
    """Spark's own account of its micro-batches with data since `since_ms` (durationMs of
    each StreamingQueryProgress): ({part: [p50, p99] ms}, [(ms since, rows, addBatch ms)]).
    addBatch is the job's batch function, reading the batch from Kafka included; the rest
    is Spark's cycle (offsets, planning, the offset and commit logs)."""
    parts: dict[str, list[float]] = {}
    seq = []
    for p in progress or []:
        when = dt.datetime.fromisoformat(p.timestamp.replace("Z", "+00:00")).timestamp() * 1000
        if when < since_ms or not p.numInputRows:
            continue
        seq.append((round(when - since_ms), p.numInputRows, (p.durationMs or {}).get("addBatch")))
        for k, v in (p.durationMs or {}).items():
            parts.setdefault(k, []).append(v)
    return ({k: [round(float(np.percentile(v, 50))), round(float(np.percentile(v, 99)))]
             for k, v in sorted(parts.items())}, seq)


def freshness(tx, labels, work: Path, rates: list[int], seconds: float,
              with_pinot: bool = True, setup: str = "executors:2") -> dict:
    from ffs.bus import kafka
    from ffs.bus.broker import LocalKafka
    from ffs.bus.replay import replay
    from ffs.jobs.stream.job import StreamJob
    from ffs.online.redis_server import RedisServer
    from ffs.transformations.timestamps import to_seconds

    # events per second of event time in the data, to turn a target rate into a speed
    span = int(to_seconds(tx["event_timestamp"]).max() - to_seconds(tx["event_timestamp"]).min())
    density = (len(tx) + len(labels)) / max(span, 1)
    results = {}
    with LocalKafka() as broker, RedisServer() as rs, contextlib.ExitStack() as extra:
        cfg = _config(broker, rs.url, work, True, setup)
        kafka.ensure_topics(cfg.kafka)
        watcher = None
        if with_pinot:  # Pinot consumes the enriched topic too, as analysts would query it
            from ffs.analytics.pinot_apply import apply
            from ffs.analytics.pinot_client import PinotClient
            from ffs.analytics.pinot_cluster import LocalPinot
            from ffs.analytics.pinot_config import write_artifacts

            pinot = extra.enter_context(LocalPinot(log=lambda line: print(f"  {line}")))
            cfg.pinot.controller_url = pinot.controller_url
            cfg.pinot.broker_url = pinot.broker_url
            write_artifacts(work / "pinot", cfg)
            apply(cfg, work / "pinot", lambda _line: None)
            watcher = PinotWatcher(PinotClient(cfg.pinot))
            watcher.thread.start()
        batch_lines: list[tuple[float, str]] = []
        job = StreamJob(cfg, log=lambda line: batch_lines.append((time.time(), line))).start()
        stop = threading.Event()
        runner = threading.Thread(target=job.run, kwargs={"stop": stop}, daemon=True)
        runner.start()
        import subprocess
        import sys

        probe_out = work / "olap-probe.json"
        probe = subprocess.Popen([sys.executable, "-m", "benchmarks.olap_probe",
                                  broker.bootstrap_servers, str(probe_out)], cwd=ROOT)
        phases = {}
        start = tx["event_timestamp"].min()

        def phase_events(rate: int, wall_s: float):
            nonlocal start
            end = start + dt.timedelta(seconds=rate * wall_s / density)  # its event time
            part_tx = tx[(tx["event_timestamp"] >= start) & (tx["event_timestamp"] < end)]
            part_lab = labels[(labels["label_timestamp"] >= start)
                              & (labels["label_timestamp"] < end)]
            start = end
            return part_tx, part_lab

        # A stream in service has run batches before: its first batch with data pays the
        # Kafka consumers' and the JVM's start (1.2-2.2 s here), which is not freshness with
        # the stream caught up. So a few seconds of the data go first, not measured.
        replay(cfg.kafka, *phase_events(rates[0], WARM_UP_S), speed=rates[0] / density)
        for rate in rates:
            part_tx, part_lab = phase_events(rate, seconds)
            time.sleep(3)
            job.freshness.clear()
            job.keep_freshness = True
            phase_start = time.time() * 1000
            t0 = time.monotonic()
            replay(cfg.kafka, part_tx, part_lab, speed=rate / density)
            sent_s = time.monotonic() - t0
            time.sleep(4)
            job.keep_freshness = False
            phases[str(rate)] = (phase_start, time.time() * 1000)
            f = np.array(job.freshness)
            sizes, took = _batches(batch_lines, phase_start / 1000)
            cycle, each = _cycle(job.query.recentProgress, phase_start)
            results[str(rate)] = {
                "batches": len(took),
                "events_per_batch_p50": int(np.median(sizes)) if sizes else None,
                "batch_seconds_p50_p99_max": [round(float(np.percentile(took, q)), 3)
                                              for q in (50, 99, 100)] if took else None,
                "target_events_per_s": rate,
                "achieved_publish_rate": round((len(part_tx) + len(part_lab)) / sent_s),
                "transactions_measured": int(len(f)),
                "p50_s": round(float(np.percentile(f, 50)), 3) if len(f) else None,
                "p99_s": round(float(np.percentile(f, 99)), 3) if len(f) else None,
                "max_s": round(float(f.max()), 3) if len(f) else None,
                "spark_cycle_ms_p50_p99": cycle}
            print(f"  freshness at {rate:,} events/s: {results[str(rate)]}", flush=True)
            # every batch of the phase, kept in the results file but not printed
            results[str(rate)]["batches_ms_since_rows_add_batch_ms"] = each
        stop.set()
        runner.join(60)
        probe.send_signal(15)
        probe.wait(60)
        if watcher is not None:
            time.sleep(2)
            watcher.stop.set()
            watcher.thread.join(10)
            for rate, r in _pinot_lags(cfg, watcher, phases).items():
                results[rate]["event_to_queryable_in_pinot_s"] = r
                print(f"  event -> queryable in Pinot at {rate} events/s: {r}", flush=True)
        seen = json.loads(probe_out.read_text())
        vis, lag = np.array(seen["visible_ms"]), np.array(seen["lag_ms"])
        for rate, (a, b) in phases.items():
            sel = lag[(vis >= a) & (vis <= b)]
            results[rate]["event_to_queryable_in_duckdb_s"] = {
                "rows": int(len(sel)),
                "p50": round(float(np.percentile(sel, 50)) / 1000, 3) if len(sel) else None,
                "p99": round(float(np.percentile(sel, 99)) / 1000, 3) if len(sel) else None}
            print(f"  event -> queryable in DuckDB at {rate} events/s: "
                  f"{results[rate]['event_to_queryable_in_duckdb_s']}", flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, help="only the first N days of the handbook")
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--seconds", type=float, default=20.0, help="per freshness rate")
    ap.add_argument("--skip-no-enrich", action="store_true")
    ap.add_argument("--setups", default="executors:2,driver,executors:1",
                    help="throughput with enrichment, side by side: driver (each batch on "
                         "the driver), executors:N (tasks per Kafka partition, local[N]) "
                         "and adaptive[:N] (the driver, tasks after a large batch); "
                         "the first is checked for consistency and measured without "
                         "enrichment too")
    ap.add_argument("--skip-freshness", action="store_true")
    ap.add_argument("--freshness-setups", default="driver,executors:2",
                    help="the setups whose freshness is measured, one after the other; "
                         "the first is what `stream.batches_on: auto` runs on a local master")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--no-pinot", action="store_true",
                    help="freshness without a live Pinot consuming the enriched topic")
    ap.add_argument("--tag", default="", help="suffix of the results file name "
                    "(stream-<date><tag>.json; --tag=-quiet for one that starts with a dash)")
    args = ap.parse_args()
    if not HANDBOOK.exists():
        print(f"handbook data not found at {HANDBOOK}: nothing to measure")
        return 1
    import pandas as pd

    from ffs.bus.replay import load_events

    tx, labels, _ = load_events(HANDBOOK, None, label_delay_s=0)
    if args.days:
        end = tx["event_timestamp"].min() + pd.Timedelta(days=args.days)
        tx = tx[tx["event_timestamp"] < end]
        labels = labels[labels["label_timestamp"] < end]
    work = Path(workdir.temporary("ffs-bench-stream-"))
    results = {"date": dt.date.today().isoformat(),
               "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
                          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, "
                          f"{platform.python_version()}",
               "load_avg_start": os.getloadavg(), "transactions": len(tx),
               "labels": len(labels)}
    print(f"handbook: {len(tx):,} transactions, {len(labels):,} labels", flush=True)
    setups = args.setups.split(",")
    if not args.skip_throughput:
        results["throughput_enriched"] = throughput(tx, labels, work, True, True, setups[0])
    for setup in setups[1:] if not args.skip_throughput else []:
        results[f"throughput_enriched_{setup}"] = throughput(tx, labels, work, True, False,
                                                             setup)
    if not args.skip_no_enrich and not args.skip_throughput:
        results["throughput_state_only"] = throughput(tx, labels, work, False, False,
                                                      setups[0])
    if not args.skip_freshness:
        results["freshness_setups"] = args.freshness_setups  # "freshness" is the first's
    for i, setup in enumerate(args.freshness_setups.split(",") if not args.skip_freshness
                              else []):
        results["freshness" if i == 0 else f"freshness_{setup}"] = freshness(
            tx, labels, work, [int(r) for r in args.rates.split(",")], args.seconds,
            with_pinot=not args.no_pinot, setup=setup)
    results["load_avg_end"] = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / f"stream-{results['date']}{args.tag}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(workdir.run(main))
