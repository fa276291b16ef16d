"""Redis Cluster overhead: the writer's throughput and 100-row reads on one Redis (the
one-call path) and on local clusters of 1, 2 and 3 primaries (and 3 primaries + 3 replicas,
where every write round waits for a replica).

    .venv/bin/python -m benchmarks.cluster [--events 20000] [--reads 300]

Everything runs on this machine (2 cores): the primaries share the cores with each other and
with the client, so these figures show what splitting per slot and per node costs, not the
scale-out a cluster gives on separate machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from ffs.config import Config
from ffs.online.client import OnlineClient, redis_client
from ffs.online.redis_cluster import RedisCluster
from ffs.online.redis_server import RedisServer
from ffs.online.writer import OnlineWriter

T0 = 1_704_067_200
BATCH = 1000  # events per write_transactions call, as a stream micro-batch slice


def events(n: int, customers: int, terminals: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    t = np.sort(T0 + rng.integers(0, 20 * 86400, n))
    c = rng.integers(0, customers, n)
    k = rng.integers(0, terminals, n)
    a = np.round(rng.gamma(2.0, 30.0, n), 2)
    return [{"transaction_id": i, "t": int(t[i]), "customer_id": int(c[i]),
             "terminal_id": int(k[i]), "amount": float(a[i])} for i in range(n)]


def measure(conn, evs: list[dict], reads: int, customers: int, terminals: int) -> dict:
    writer = OnlineWriter(conn)
    started = time.perf_counter()
    for i in range(0, len(evs), BATCH):
        writer.write_transactions(evs[i:i + BATCH], trim=False)
    write_s = time.perf_counter() - started
    client = OnlineClient(conn)
    rng = np.random.default_rng(2)
    as_of = T0 + 20 * 86400
    lat = []
    for _ in range(reads):
        rows = [{"customer_id": int(c), "terminal_id": int(k)} for c, k in
                zip(rng.integers(0, customers, 100), rng.integers(0, terminals, 100),
                    strict=True)]
        s = time.perf_counter()
        res = client.get_features(rows, as_of=as_of)
        lat.append(time.perf_counter() - s)
        if res.error or res.unavailable:
            raise RuntimeError(res.error or res.unavailable)
    lat_ms = np.array(lat) * 1000
    return {"write_events_per_s": round(len(evs) / write_s),
            "read_100_rows_p50_ms": round(float(np.percentile(lat_ms, 50)), 2),
            "read_100_rows_p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
            "read_rows_per_s": round(100 * reads / float(lat_ms.sum() / 1000))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--reads", type=int, default=300)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--terminals", type=int, default=4000)
    ap.add_argument("--out", default=f"benchmarks/results/cluster-{date.today()}.json")
    args = ap.parse_args()
    evs = events(args.events, args.customers, args.terminals)
    runs = []
    with RedisServer() as s:
        cfg = Config()
        cfg.redis.url, cfg.redis.timeout_ms = s.url, 10_000
        runs.append({"setup": "one Redis (no cluster)", **measure(
            redis_client(cfg.redis), evs, args.reads, args.customers, args.terminals)})
        print(runs[-1], flush=True)
    for primaries, replicas in ((1, 0), (2, 0), (3, 0), (3, 1)):
        with RedisCluster(primaries=primaries, replicas=replicas) as cl:
            cfg = Config()
            cfg.redis.url, cfg.redis.cluster, cfg.redis.timeout_ms = cl.url, True, 10_000
            runs.append({"setup": f"cluster, {primaries} primaries, {replicas} replica each",
                         **measure(redis_client(cfg.redis), evs, args.reads, args.customers,
                                   args.terminals)})
            print(runs[-1], flush=True)
    out = {"date": str(date.today()), "machine": f"{platform.machine()}, "
           f"{__import__('os').cpu_count()} cores, shared with other benchmarks",
           "events": args.events, "write_batch": BATCH, "reads": args.reads,
           "customers": args.customers, "terminals": args.terminals,
           "note": "all nodes and the client on one 2-core machine: overhead, not scale-out",
           "runs": runs}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
