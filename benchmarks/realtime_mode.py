"""Spark's real-time mode (trigger(realTime=...)) against micro-batches, for `ffs stream`.

    python -m benchmarks.realtime_mode [--messages 100] [--partitions 1]

What it checks, on a local Apache Kafka and Spark local[2]:
1. which of the stream's building blocks real-time mode accepts: foreachBatch (what
   `ffs stream` uses), a Python UDF, a Python `foreach` writer;
2. publish -> processed latency of a Python `foreach` writer under real-time mode and under a
   micro-batch trigger of 0, messages published one at a time every 50 ms.

Results go to benchmarks/results/realtime-mode-<date>.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def _accepts(spark, src, name: str, make) -> str:
    ckpt = tempfile.mkdtemp(prefix=f"ffs-rtm-{name}-")
    try:
        q = make(src).outputMode("update").option("checkpointLocation", ckpt)
        q = q.trigger(realTime="5 seconds").start()
        time.sleep(6)
        err = q.exception()
        q.stop()
        return "accepted" if err is None else f"refused: {str(err).splitlines()[0][:300]}"
    except Exception as exc:  # noqa: BLE001 - the refusal is the finding
        return f"refused: {str(exc).splitlines()[0][:300]}"


class _LatencyWriter:
    """A Python foreach writer that appends (now - publish time) per row to a file."""

    def __init__(self, path: str):
        self.path = path

    def open(self, partition_id, epoch_id):
        self.f = open(self.path, "a")  # noqa: SIM115 - closed in close()
        return True

    def process(self, row):
        sent = json.loads(row.value)["t"]
        self.f.write(f"{time.time() - sent}\n")
        self.f.flush()

    def close(self, error):
        self.f.close()


def _latency(spark, servers: str, topic: str, mode: str, n: int) -> dict:
    from confluent_kafka import Producer

    out = tempfile.mktemp(prefix=f"ffs-rtm-lat-{mode}-")
    src = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", servers)
           .option("subscribe", topic).option("startingOffsets", "latest").load())
    w = src.writeStream.foreach(_LatencyWriter(out)).option(
        "checkpointLocation", tempfile.mkdtemp(prefix=f"ffs-rtm-ck-{mode}-"))
    w = (w.outputMode("update").trigger(realTime="5 seconds") if mode == "realtime"
         else w.trigger(processingTime="0 seconds"))
    q = w.start()
    time.sleep(10)  # the query is running and has read its start offsets
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 0})
    for _ in range(n):
        producer.produce(topic, value=json.dumps({"t": time.time()}).encode())
        producer.flush()
        time.sleep(0.05)
    time.sleep(8)
    err = q.exception()
    q.stop()
    lat = sorted(float(x) for x in open(out)) if os.path.exists(out) else []
    if not lat:
        return {"mode": mode, "rows": 0, "error": str(err)[:300] if err else None}
    pick = lambda q_: round(lat[min(len(lat) - 1, int(len(lat) * q_))] * 1000, 1)  # noqa: E731
    return {"mode": mode, "rows": len(lat), "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": round(lat[-1] * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    from pyspark.sql import functions as F

    from ffs.bus import kafka
    from ffs.bus.broker import LocalKafka
    from ffs.config import load_config
    from ffs.jobs.batch.spark import spark_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=1,
                    help="real-time mode runs one long task per partition: keep <= cores")
    args = ap.parse_args(argv)
    with LocalKafka(log=print) as broker:
        cfg = load_config(env={})
        cfg.kafka.bootstrap_servers = broker.bootstrap_servers
        cfg.kafka.partitions = args.partitions
        kafka.ensure_topics(cfg.kafka, ["rtm.in"])
        spark = spark_session(cfg.spark, "ffs-rtm", print)
        src = (spark.readStream.format("kafka")
               .option("kafka.bootstrap.servers", broker.bootstrap_servers)
               .option("subscribe", "rtm.in").option("startingOffsets", "latest").load())
        ident = F.udf(lambda b: b, "binary")
        accepts = {
            "foreachBatch": _accepts(spark, src, "fb", lambda s: s.writeStream.foreachBatch(
                lambda df, i: None)),
            "python_udf": _accepts(spark, src, "udf", lambda s: s.select(
                ident("value").alias("value")).writeStream.format("console")),
            "python_foreach": _accepts(spark, src, "fe", lambda s: s.writeStream.foreach(
                _LatencyWriter(tempfile.mktemp()))),
        }
        for k, v in accepts.items():
            print(f"real-time mode, {k}: {v}")
        runs = [_latency(spark, broker.bootstrap_servers, "rtm.in", mode, args.messages)
                for mode in ("realtime", "microbatch")]
        for r in runs:
            print(f"python foreach, {r['mode']}: {r}")
        spark.stop()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"realtime-mode-{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
                                "partitions": args.partitions, "accepts": accepts,
                                "latency": runs}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
