"""HTTP latency and throughput of the feature server, on loopback.

    .venv/bin/python -m benchmarks.http_load [--requests 3000] [--concurrency 1 4] [--workers 1]
                                             [--generator python|wrk] [--seconds 5]

`http_latency(url, body, n, concurrency)` sends `n` requests (after `warmup` more) over
`concurrency` keep-alive connections, one thread each (http.client), and returns p50/p99
latency in ms and requests/s. The load generator shares the machine with the server and
Redis: on a small machine its own CPU lowers the throughput measured.

`main()` starts a private redis-server and loads a synthetic state (2,000 customers, 4,000
terminals, 30 days), runs `ffs serve` (one uvicorn worker) in a subprocess on a free loopback
port, measures 1-row and 100-row requests, prints a table and writes
benchmarks/results/http-<date>.json. Besides latency it reports the server's and Redis' CPU
time per request (psutil): 1000 / server_cpu_ms is what one worker can serve on a free
core, a figure that holds when the machine is busy with other work and wall-clock
throughput does not. `--generator wrk` loads the server from wrk instead
(benchmarks/wrk_load.py), for `--seconds` per case after one untimed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def http_latency(url: str, body: bytes, n: int, concurrency: int = 1, warmup: int = 200,
                 headers: dict[str, str] | None = None) -> dict:
    """POST `body` to `url` (GET when body is empty) n times; latency percentiles and rate.

    Every response must be 200 (counted in "errors" otherwise). Loopback URLs only.
    """
    parts = urlsplit(url)
    return load(parts.hostname or "", parts.port or 80, parts.path or "/", [body], n,
                concurrency, max_s=600.0, warmup=warmup, headers=headers)


def load(host: str, port: int, path: str, bodies: list[bytes], n: int, concurrency: int,
         max_s: float, warmup: int = 0, bad_marker: bytes | None = None,
         headers: dict[str, str] | None = None) -> dict:
    """POST bodies (cycled; GET when a body is empty) over `concurrency` keep-alive
    connections, one thread each, until n requests in all or max_s seconds. Non-200 answers
    are errors; a 200 whose body holds `bad_marker` is counted as degraded. Loopback only."""
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only loads loopback servers, not {host!r}")
    if n < 1 or concurrency < 1 or not bodies:
        raise ValueError("n and concurrency must be >= 1, with at least one body")
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    per_thread = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    warm_per_thread = -(-warmup // concurrency) if warmup else 0
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors, degraded = [0] * concurrency, [0] * concurrency
    failures: list[BaseException] = []
    start = threading.Barrier(concurrency + 1, timeout=max_s + 60)
    deadline = [0.0]

    def one(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
        conn.request("POST" if body else "GET", path, body=body or None, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        j = k * 7919  # each thread starts at a different body
        try:
            try:
                warm_deadline = time.monotonic() + max_s
                for _ in range(warm_per_thread):
                    one(conn, bodies[j % len(bodies)])
                    j += 1
                    if time.monotonic() > warm_deadline:
                        break
            except BaseException as exc:  # noqa: BLE001 - reported after the barrier
                failures.append(exc)
            start.wait()
            if failures:
                return
            out = lat[k]
            clock = time.perf_counter
            for _ in range(per_thread[k]):
                body = bodies[j % len(bodies)]
                j += 1
                t0 = clock()
                status, data = one(conn, body)
                out.append(clock() - t0)
                if status != 200:
                    errors[k] += 1
                elif bad_marker is not None and bad_marker in data:
                    degraded[k] += 1
                if time.monotonic() > deadline[0]:
                    break
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    deadline[0] = time.monotonic() + max_s
    began = time.perf_counter()
    for t in threads:
        t.join(timeout=max_s + 60)
    wall = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"HTTP load on port {port} failed: {failures[0]!r}") from failures[0]
    done = sorted(x for per in lat for x in per)

    def pct(q: float) -> float:
        return round(done[min(len(done) - 1, int(q * len(done)))] * 1e3, 3)

    rate = round(len(done) / wall, 1)
    return {"n": len(done), "concurrency": concurrency, "p50_ms": pct(0.50),
            "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": round(done[-1] * 1e3, 3),
            "mean_ms": round(sum(done) / len(done) * 1e3, 3), "requests_per_s": rate,
            "per_s": rate, "seconds": round(wall, 2), "errors": sum(errors),
            "degraded": sum(degraded), "truncated_by_time": len(done) < n}


def request_body(rows: int, t: int, seed: int = 0, customers: int = 2000,
                 terminals: int = 4000) -> bytes:
    """A /get-online-features body: `rows` transactions of known customers and terminals."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return json.dumps({
        "feature_service": "fraud_detection_v1",
        "entities": {"customer_id": rng.integers(0, customers, rows).tolist(),
                     "terminal_id": rng.integers(0, terminals, rows).tolist()},
        "request_data": {"transaction_id": list(range(10**9, 10**9 + rows)),
                         "event_timestamp": [t] * rows,
                         "amount": np.round(rng.uniform(1, 200, rows), 2).tolist()},
    }).encode()


def synthetic_state(customers: int = 2000, terminals: int = 4000, days: int = 30,
                    per_day: int = 3000, seed: int = 7):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = days * per_day
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    tx = pd.DataFrame({
        "transaction_id": np.arange(n),
        "event_timestamp": t0 + pd.to_timedelta(np.sort(rng.integers(0, days * 86400, n)),
                                                unit="s"),
        "customer_id": rng.integers(0, customers, n),
        "terminal_id": rng.integers(0, terminals, n),
        "amount": np.round(rng.uniform(1, 300, n), 2),
    })
    fraud = tx.sample(n // 100, random_state=seed)
    labels = pd.DataFrame({"transaction_id": fraud["transaction_id"].to_numpy(),
                           "is_fraud": 1,
                           "label_timestamp": fraud["event_timestamp"] + pd.Timedelta(days=3)})
    return tx, labels, int((t0 + pd.Timedelta(days=days)).timestamp())


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=1)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready within {timeout} s")


def _cpu(proc) -> float:
    """CPU seconds of a process and its children (uvicorn's workers)."""
    import psutil

    total = 0.0
    for p in [proc] + proc.children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="timed requests per case")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 100])
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--generator", choices=["python", "wrk"], default="python",
                    help="the load generator: this module's threads, or wrk (compiled; "
                    "benchmarks/wrk_load.py)")
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per case (wrk)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if args.generator == "wrk":
        from benchmarks.wrk_load import available, wrk_load
        if not available():
            ap.error("wrk is not installed: bash infra/install_bench_tools.sh")

    sys.path.insert(0, str(ROOT))
    import psutil
    import redis

    from ffs.config import Config
    from ffs.online.loader import load_state
    from ffs.online.redis_server import RedisServer, free_port

    results = []
    with RedisServer() as rs:
        cfg = Config()
        cfg.redis.url = rs.url
        tx, labels, t_end = synthetic_state()
        r = redis.Redis.from_url(rs.url, socket_timeout=60)  # a bulk load, not a read
        summary = load_state(r, tx, labels)
        r.close()
        print(f"state: {summary.describe()} ({summary.seconds:.1f} s to load)")
        port = free_port()
        env = {**os.environ, "FFS_REDIS_URL": rs.url}
        env.pop("FFS_SERVE_API_KEY", None)
        proc = subprocess.Popen([sys.executable, "-m", "ffs.cli", "serve", "--host",
                                 "127.0.0.1", "--port", str(port), "--workers", str(args.workers)],
                                cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}/get-online-features"
        try:
            _wait_http(url, proc)
            server, redis_proc = psutil.Process(proc.pid), psutil.Process(rs.proc.pid)
            for rows in args.rows:
                body = request_body(rows, t_end)
                for c in args.concurrency:
                    n = args.requests if rows == 1 else max(200, args.requests // 10)
                    if args.generator == "wrk":
                        wrk_load("127.0.0.1", port, "/get-online-features", [body], c, 1.0, 0)
                        cpu0 = _cpu(server), _cpu(redis_proc)
                        res = {"rows": rows, **wrk_load("127.0.0.1", port,
                                                        "/get-online-features", [body], c,
                                                        args.seconds, 0)}
                        done = res["n"]
                    else:
                        cpu0 = _cpu(server), _cpu(redis_proc)
                        res = {"rows": rows, **http_latency(url, body, n, concurrency=c)}
                        # the warmup requests are counted in the CPU too
                        done = res["n"] + max(1, 200 // c) * c
                    # CPU per request: what a core can serve, whatever else the machine is
                    # doing while we measure.
                    res["server_cpu_ms"] = round((_cpu(server) - cpu0[0]) / done * 1e3, 3)
                    res["redis_cpu_ms"] = round((_cpu(redis_proc) - cpu0[1]) / done * 1e3, 3)
                    results.append(res)
                    print(f"rows={rows:<4} concurrency={c:<2} p50 {res['p50_ms']:.2f} ms  "
                          f"p99 {res['p99_ms']:.2f} ms  {res['requests_per_s']:,.0f} req/s  "
                          f"server CPU {res['server_cpu_ms']:.3f} ms/req  "
                          f"redis CPU {res['redis_cpu_ms']:.3f} ms/req  "
                          f"errors {res['errors']}", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if not args.no_save:
        out = ROOT / "benchmarks" / "results" / f"http-{dt.date.today().isoformat()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(),
                                               "python": platform.python_version(),
                                               "load_average": os.getloadavg()},
                                   "workers": args.workers, "results": results}, indent=2))
        print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
