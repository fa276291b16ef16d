"""Online serving benchmark on the handbook data: ours side by side with Feast 0.67.

    .venv/bin/python -m benchmarks.online [--work DIR] [--offline DIR] [--quick] [--workers 1,2]

One run, one private redis-server (online.redis_server.RedisServer) for both stores: ours
under the key prefix "ffs" in db 0, Feast's Redis online store in db 1. Measured:

1. load: our `materialize` (offline store -> Redis, whole handbook) and Feast's
   `FeatureStore.materialize(start, end)` over the whole period (its file source is first
   written as one parquet file, as benchmarks/feast_peer.py does; timed separately);
2. in-process reads, 1 row (customer + terminal) and 100 rows, every feature of the service:
   `OnlineClient.get_features(rows, as_of=T0)` vs `get_online_features(features=<service>,
   entity_rows=...).to_dict()`, random real ids, p50/p99 after warm-up; beside them the same
   Feast call over a second Feast repo (same project and registry) whose online_store is our
   plugin (online/feast_store.py FFSOnlineStore, as_of = T0, prefix "ffs", db 0): Feast's API
   over our exact windows. Over `pairs` random rows the plugin's values are compared with the
   client's at T0 (a MISSING_ENTITY row of the client is a null, NOT_FOUND, from the
   plugin): the share equal should be 1.0. Plus the raw floor (redis-py pipeline of the 2
   HGETALL a Feast row needs); then a hot terminal (HOT_PAYMENTS payments in its window,
   HOT_FRAUD of them fraud) against a quiet one, ours only, p50/p99 read alternately in the
   same run;
3. HTTP with N workers for each N of --workers (default 1,2): `ffs serve --workers N` vs
   `feast serve --workers N` (gunicorn, access log off, worker recycling off) in
   subprocesses, p50/p99 for 1 and 100 rows over one keep-alive connection (so one worker
   answers them), then requests/s with CONCURRENCY keep-alive clients for a fixed duration;
   then, when wrk is installed, the same two loads from wrk (`latency_wrk`, `throughput_wrk`:
   a compiled generator, a check that the Python one's own CPU is not the limit,
   benchmarks/wrk_load.py);
   results under http.workers["N"], and the one-worker case also under http.ours and
   http.feast (the keys of earlier results);
4. correctness at T0 (newest event of the state), T0 + 12 h and T0 + 2 days: the share of
   served values equal to the exact training-set value at that instant (jobs.batch.training_set,
   rtol 1e-9, NaN == NaN) for random customer/terminal pairs, every feature except amount
   and amount_over_customer_avg_30d (they need the scored transaction);
5. memory: Redis MEMORY USAGE (SAMPLES 0, exact) of sampled keys of both layouts, and
   used_memory after each load.

--no-feast measures ours alone (no Feast load, reads, server or values), e.g. to compare two
feature repos (FFS_FEATURES_REPO, which the server is given too) run alternately; --out names
the results file. Every loop is bounded in count and in time. Results:
benchmarks/results/online-<date>.json. The table at the end sets ours beside Feast with the
ratio ours / Feast of each row (below 1: ours is faster, smaller or fewer wrong).
The machine is shared: the load average at start and end is recorded; compare ratios.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from benchmarks import workdir
from benchmarks.http_load import load
from benchmarks.wrk_load import available as wrk_available
from benchmarks.wrk_load import wrk_load

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OFFLINE = Path("/tmp/ffs-bench/offline-local")
HANDBOOK = Path(os.environ.get(
    "FFS_HANDBOOK", ROOT.parent / "shared" / "data" / "handbook" / "transactions.parquet"))
FEAST_PROJECT = "ffs_online_bench"
FEAST_DB = 1
PREFIX = "ffs"
CONCURRENCY = 4
NEEDS_REQUEST = ("amount", "amount_over_customer_avg_30d")
HOT_PAYMENTS = 100_000  # the hot terminal's payments within its window (+ delay)
HOT_FRAUD = 0.10  # of them, the share labelled fraud
REQUEST_TIMES = (("T0", pd.Timedelta(0)), ("T0+12h", pd.Timedelta(hours=12)),
                 ("T0+2d", pd.Timedelta(days=2)))

FULL = dict(inproc_1=2000, inproc_100=300, http_1=2000, http_100=300, warm_1=200, warm_100=30,
            tput_seconds=5.0, pairs=500, memory_sample=300, case_max_s=120.0)
QUICK = dict(inproc_1=200, inproc_100=30, http_1=200, http_100=30, warm_1=30, warm_100=5,
             tput_seconds=2.0, pairs=100, memory_sample=50, case_max_s=30.0)


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- measuring


def summarize(lat_s: list[float], wall_s: float | None = None) -> dict:
    if not lat_s:
        return {"n": 0}
    a = np.sort(np.asarray(lat_s)) * 1e3
    out = {"n": int(len(a)), "p50_ms": round(float(np.percentile(a, 50)), 3),
           "p99_ms": round(float(np.percentile(a, 99)), 3),
           "mean_ms": round(float(a.mean()), 3), "max_ms": round(float(a[-1]), 3)}
    if wall_s:
        out["per_s"] = round(len(a) / wall_s, 1)
    return out


def time_calls(fn, args: list, warmup: int, n: int, max_s: float) -> dict:
    """fn(args[i % len(args)]) `warmup` times, then up to n timed calls within max_s."""
    k = 0
    deadline = time.monotonic() + max_s
    for _ in range(warmup):
        fn(args[k % len(args)])
        k += 1
        if time.monotonic() > deadline:
            break
    lat: list[float] = []
    clock = time.perf_counter
    began = clock()
    deadline = time.monotonic() + max_s
    for _ in range(n):
        a = args[k % len(args)]
        k += 1
        t0 = clock()
        fn(a)
        lat.append(clock() - t0)
        if time.monotonic() > deadline:
            break
    out = summarize(lat, clock() - began)
    out["truncated_by_time"] = len(lat) < n
    return out


def http_load(port: int, path: str, bodies: list[bytes], n: int, concurrency: int,
              max_s: float, warmup: int = 0, bad_marker: bytes | None = None) -> dict:
    return load("127.0.0.1", port, path, bodies, n, concurrency, max_s, warmup, bad_marker)


# ------------------------------------------------------------------------ processes


class Procs:
    """Subprocesses started here, each in its own session; stopped by their group id."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict, log_path: Path, cwd: Path = ROOT):
        f = open(log_path, "ab")
        try:
            proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            f.close()  # the child holds its own descriptor
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the group this process leads
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=15)
        # gunicorn's worker may outlive a master killed hard: clear the group in any case
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


def wait_http(port: int, path: str, proc: subprocess.Popen, log_path: Path,
              timeout: float = 120.0) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready within {timeout} s (log: {log_path})")


def post_json(port: int, path: str, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, {"raw": data[:500].decode(errors="replace")}
    finally:
        conn.close()


# ------------------------------------------------------------------------------ data


def offline_current(root: Path) -> bool:
    """The offline store at root has every table, with the columns the loaded repo reads
    (a store written before the repo gained an event column or a feature is not used)."""
    import pyarrow.dataset as ds

    from ffs.jobs.batch.offline_store import OfflineStore
    from ffs.transformations import schema
    from ffs.transformations.features import feature_names

    store = OfflineStore(root)
    if not all(store.exists(t) for t in ("transactions", "labels", "features")):
        return False
    need = {"transactions": set(schema.TX_COLUMNS), "features": set(feature_names())}
    for table, columns in need.items():
        names = set(ds.dataset(store.path(table), format="parquet",
                               partitioning="hive").schema.names)
        if not columns <= names:
            log(f"offline store {root}: table {table} lacks {sorted(columns - names)[:5]} "
                f"(written by an older repo): not used")
            return False
    return True


def ensure_offline(offline: Path, work: Path) -> Path:
    """The offline store to read; built with `ffs backfill --engine local` in work when
    missing or out of date with the loaded repo."""
    if offline_current(offline):
        return offline
    built = work / "offline-local"
    if built.resolve() != offline.resolve() and offline_current(built):
        return built
    if not HANDBOOK.exists():
        raise SystemExit(f"no offline store at {offline} and no handbook at {HANDBOOK}")
    from ffs.jobs.batch.offline_store import write_parquet
    from ffs.transformations import schema

    if built.exists() and any(built.iterdir()):  # out of date: a fresh store beside it
        built = Path(tempfile.mkdtemp(prefix="offline-local-", dir=work))
    log(f"no current offline store at {offline}: building it in {built} (ffs backfill)")
    tx = schema.normalize_transactions(pd.read_parquet(HANDBOOK)).rows
    labels_path = work / "labels.parquet"
    write_parquet(schema.labels_from_flags(tx), labels_path)
    env = dict(os.environ, FFS_OFFLINE_PATH=str(built),
               FFS_VALIDATION_DATA_DOCS_DIR=str(work / "docs"))
    subprocess.run([str(ROOT / ".venv" / "bin" / "ffs"), "backfill", "--transactions",
                    str(HANDBOOK), "--labels", str(labels_path), "--engine", "local"],
                   cwd=ROOT, env=env, check=True, timeout=3600)
    return built


def feast_repo(repo: Path, source: Path, redis_port: int):
    from feast import FeatureStore

    from benchmarks.feast_baseline import build, objects

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {FEAST_PROJECT}\n"
        "provider: local\n"
        "registry:\n"
        "  registry_type: file\n"
        f"  path: {repo / 'registry.db'}\n"
        "  cache_ttl_seconds: 0\n"
        "offline_store:\n"
        "  type: file\n"
        "online_store:\n"
        "  type: redis\n"
        f"  connection_string: \"127.0.0.1:{redis_port},db={FEAST_DB}\"\n"
        "entity_key_serialization_version: 3\n")
    store = FeatureStore(repo_path=str(repo))
    store.apply(objects(build(source)))
    return store


def plugin_repo(repo: Path, registry: Path, redis_port: int, as_of: int, timeout_ms: int):
    """A Feast repo over the same project and registry as feast_repo (applied there), whose
    online_store is our plugin reading our state (db 0, PREFIX) at `as_of`: only
    online_store differs, as feature_repo/feature_store_ffs.yaml does for the shipped repo.
    Nothing is applied or materialized through it (the plugin refuses Feast's writes)."""
    from feast import FeatureStore

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {FEAST_PROJECT}\n"
        "provider: local\n"
        "registry:\n"
        "  registry_type: file\n"
        f"  path: {registry}\n"
        "  cache_ttl_seconds: 0\n"
        "offline_store:\n"
        "  type: file\n"
        "online_store:\n"
        "  type: ffs.online.feast_store.FFSOnlineStore\n"
        f"  url: redis://127.0.0.1:{redis_port}/0\n"
        f"  prefix: {PREFIX}\n"
        f"  timeout_ms: {int(timeout_ms)}\n"
        f"  as_of: {int(as_of)}\n"
        "entity_key_serialization_version: 3\n")
    return FeatureStore(repo_path=str(repo))


def plugin_agreement(client, plugin_read, row_sets: list[list[dict]], as_of: int) -> dict:
    """The plugin's values against the client's at the same as_of, over every row of
    row_sets and every feature of the service: equal when both are null or the same number
    (a row the client calls MISSING_ENTITY is expected null, Feast's NOT_FOUND)."""
    from ffs.online.client import MISSING_ENTITY

    compared = equal = missing = 0
    wrong: dict[str, int] = {}
    examples: list[dict] = []
    for rows in row_sets:
        ours = client.get_features(rows, as_of=as_of)
        if ours.error is not None:
            return {"error": f"client: {ours.error}"}
        got = plugin_read(rows)
        if got is None:
            return {"error": "plugin: Redis unavailable"}
        for name in ours.feature_names:
            theirs = got.get(name)
            if theirs is None:
                wrong[name] = wrong.get(name, 0) + len(rows)
                compared += len(rows)
                continue
            for i, status in enumerate(ours.statuses[name]):
                want = None if status == MISSING_ENTITY else ours.values[name][i]
                have = theirs[i]
                missing += status == MISSING_ENTITY
                compared += 1
                same = (want is None and have is None) or (
                    want is not None and have is not None
                    and (want == have or (want != want and have != have)))  # NaN == NaN
                if same:
                    equal += 1
                else:
                    wrong[name] = wrong.get(name, 0) + 1
                    if len(examples) < 5:
                        examples.append({"feature": name, "row": rows[i], "client": want,
                                         "plugin": have})
    return {"rows": sum(len(r) for r in row_sets), "values_compared": compared,
            "share_equal": round(equal / compared, 6) if compared else float("nan"),
            "client_missing_entity_values": missing,
            "wrong_by_feature": dict(sorted(wrong.items())), "examples": examples}


def feast_key(entity_key: str, value: int) -> bytes:
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return _redis_key(FEAST_PROJECT, EntityKey(join_keys=[entity_key],
                                               entity_values=[Value(int64_val=int(value))]), 3)


def used_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


def memory_usage(r, keys: list) -> dict:
    sizes = []
    for k in keys:
        v = r.execute_command("MEMORY", "USAGE", k, "SAMPLES", "0")
        if v is not None:
            sizes.append(int(v))
    return {"keys_sampled": len(keys), "keys_found": len(sizes),
            "mean_bytes": round(float(np.mean(sizes)), 1) if sizes else None,
            "p50_bytes": int(np.median(sizes)) if sizes else None,
            "max_bytes": int(max(sizes)) if sizes else None}


def as_float(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


# ------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--offline", default=str(DEFAULT_OFFLINE),
                    help="offline store of the whole handbook (built in --work when "
                    "missing or out of date)")
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer calls and rows")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--no-feast", action="store_true", help="ours alone: no Feast at all")
    ap.add_argument("--out", default=None, help="results file (default: "
                    "benchmarks/results/online-<date>.json)")
    ap.add_argument("--workers", default="1,2",
                    help="HTTP server worker counts to measure, comma-separated (default 1,2)")
    args = ap.parse_args()
    try:
        args.workers = sorted({int(w) for w in str(args.workers).split(",") if w.strip()})
    except ValueError:
        ap.error(f"--workers: comma-separated integers, found {args.workers!r}")
    if not args.workers or args.workers[0] < 1 or args.workers[-1] > 16:
        ap.error("--workers: between 1 and 16 workers each, at least one count")
    os.environ.setdefault("FEAST_USAGE", "False")
    sys.path.insert(0, str(ROOT))
    # SIGTERM -> SystemExit, so the finally below stops servers and Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    s = QUICK if args.quick else FULL
    work = Path(args.work or workdir.temporary("ffs-online-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    vm = psutil.virtual_memory()
    results: dict[str, object] = {
        "date": dt.date.today().isoformat(),
        "quick": args.quick, "feast": not args.no_feast,
        "features_repo": os.environ.get("FFS_FEATURES_REPO", "(default)"),
        "machine": {"cores": psutil.cpu_count(), "memory_gib": round(vm.total / 2**30, 1),
                    "python": platform.python_version(), "platform": platform.platform()},
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {**s, "concurrency": CONCURRENCY, "seed": args.seed,
                     "workers": args.workers},
    }
    log(f"work dir {work}; load average {results['load_avg_start']}")

    from ffs.online.redis_server import RedisServer

    procs = Procs()
    rs = RedisServer(directory=work / "redis")
    began = time.monotonic()
    try:
        rs.start()
        run(args, s, work, rng, rs, procs, results)
    finally:
        procs.stop_all()
        rs.stop()
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_seconds"] = round(time.monotonic() - began, 1)
    if args.no_feast:  # the table sets ours beside Feast: the figures alone
        log(json.dumps({k: results.get(k) for k in ("load", "in_process", "http")},
                       default=str))
    else:
        print_table(results)
    if not args.no_save:
        name = f"online-{results['date']}{'-quick' if args.quick else ''}.json"
        out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
        log(f"results: {out}")
    return 0


def run(args, s: dict, work: Path, rng, rs, procs: Procs, results: dict) -> None:
    import redis

    from benchmarks.feast_peer import consolidate
    from ffs.config import Config
    from ffs.jobs.batch.offline_store import OfflineStore
    from ffs.jobs.batch.training_set import training_set
    from ffs.online import layout
    from ffs.online.client import OnlineClient
    from ffs.online.materialize import materialize
    from ffs.online.redis_server import free_port
    from ffs.transformations.features import FEATURE_SERVICE, feature_names

    offline = ensure_offline(Path(args.offline), work)
    r0 = redis.Redis(host="127.0.0.1", port=rs.port, db=0, socket_timeout=120)
    r1 = redis.Redis(host="127.0.0.1", port=rs.port, db=FEAST_DB, socket_timeout=120)
    info = r0.info("server")
    results["machine"]["redis"] = info.get("redis_version")
    results["offline_store"] = str(offline)

    cfg = Config()
    cfg.offline.path = str(offline)
    cfg.redis.url = f"redis://127.0.0.1:{rs.port}/0"
    cfg.redis.prefix = PREFIX

    # ---------------------------------------------------------------- 1. load
    mem_empty = used_memory(r0)
    log("1. load: ours (ffs materialize, whole handbook)")
    t0 = time.perf_counter()
    # materialize() raises the Redis timeout on the cfg it is given (bulk load): pass a copy
    summary = materialize(copy.deepcopy(cfg), log=log)
    ours_load = time.perf_counter() - t0
    mem_ours = used_memory(r0)
    T0 = pd.Timestamp(summary.as_of, unit="s", tz="UTC")
    t0_epoch = int(summary.as_of)
    log(f"   {ours_load:.1f} s (load_state {summary.seconds:.1f} s); state as of {T0}")

    log("1. load: Feast (FeatureStore.materialize, whole period)")
    tx = OfflineStore(offline).read("transactions", ["transaction_id", "event_timestamp",
                                                     "customer_id", "terminal_id"])
    feast = not args.no_feast
    store = repo = None
    mem_both = used_memory(r0)
    if feast:
        repo = work / "feast_repo"
        repo.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        source = consolidate(offline / "features", repo / "features.parquet")
        consolidate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store = feast_repo(repo, source, rs.port)
        apply_s = time.perf_counter() - t0
        start = (tx["event_timestamp"].min() - pd.Timedelta(seconds=1)).to_pydatetime()
        end = (tx["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime()
        proc = psutil.Process()
        rss_before = proc.memory_info().rss
        t0 = time.perf_counter()
        store.materialize(start_date=start, end_date=end)
        feast_load = time.perf_counter() - t0
        rss_after = proc.memory_info().rss
        mem_both = used_memory(r0)
        log(f"   {feast_load:.1f} s (+ consolidate {consolidate_s:.1f} s, apply {apply_s:.1f} s)")
    results["load"] = {
        "ours": {"seconds": round(ours_load, 2), "load_state_seconds": round(summary.seconds, 2),
                 "customers": summary.entities.get("customer"),
                 "terminals": summary.entities.get("terminal"),
                 "customer_events": summary.events.get("customer"),
                 "terminal_events": summary.events.get("terminal"), "frauds": summary.frauds,
                 "transactions_indexed": summary.transactions_indexed,
                 "as_of": T0.isoformat(), "keys": int(r0.dbsize()),
                 "redis_used_memory_bytes": mem_ours - mem_empty},
        "feast": None if not feast else {"materialize_seconds": round(feast_load, 2),
                  "consolidate_seconds": round(consolidate_s, 2),
                  "apply_seconds": round(apply_s, 2), "source_rows": len(tx),
                  "views": [v.name for v in store.list_feature_views()],
                  "keys": int(r1.dbsize()), "redis_used_memory_bytes": mem_both - mem_ours,
                  "process_rss_growth_mib": round((rss_after - rss_before) / 2**20, 1),
                  "start": start.isoformat(), "end": end.isoformat()},
    }

    # ---------------------------------------------------------------- 5. memory
    customers = np.unique(tx["customer_id"].to_numpy())
    terminals = np.unique(tx["terminal_id"].to_numpy())
    m = s["memory_sample"]
    c_s = rng.choice(customers, min(m, len(customers)), replace=False).tolist()
    t_s = rng.choice(terminals, min(m, len(terminals)), replace=False).tolist()
    recent = tx.loc[tx["event_timestamp"] > T0 - pd.Timedelta(days=7), "transaction_id"]
    x_s = rng.choice(recent.to_numpy(), min(m, len(recent)), replace=False).tolist()
    from ffs.transformations.features import entity as entity_named
    cust_e, term_e = entity_named("customer"), entity_named("terminal")
    term_ev = memory_usage(r0, [layout.entity_key(PREFIX, term_e, str(t)) for t in t_s])
    term_fraud = memory_usage(r0, [layout.fraud_key(PREFIX, term_e, str(t)) for t in t_s])
    fraud_bytes_per_terminal = ((term_fraud["mean_bytes"] or 0) * term_fraud["keys_found"]
                                / max(1, term_fraud["keys_sampled"]))
    ours_mem = {
        "customer_ev": memory_usage(r0, [layout.entity_key(PREFIX, cust_e, str(c))
                                           for c in c_s]),
        "terminal_ev": term_ev, "terminal_fraud": term_fraud,
        "tx_index": memory_usage(r0, [layout.tx_key(PREFIX, x) for x in x_s]),
    }
    ours_mem["bytes_per_customer"] = ours_mem["customer_ev"]["mean_bytes"]
    ours_mem["bytes_per_terminal"] = round((term_ev["mean_bytes"] or 0)
                                           + fraud_bytes_per_terminal, 1)
    ours_mem["tx_index_total_bytes_est"] = round(
        (ours_mem["tx_index"]["mean_bytes"] or 0) * summary.transactions_indexed)
    feast_mem = {} if not feast else {
        "customer_key": memory_usage(r1, [feast_key("customer_id", c) for c in c_s]),
        "terminal_key": memory_usage(r1, [feast_key("terminal_id", t) for t in t_s]),
    }
    results["memory"] = {"ours": ours_mem, "feast": feast_mem,
                         "used_memory_empty": mem_empty, "used_memory_after_ours": mem_ours,
                         "used_memory_after_feast": mem_both}

    # ---------------------------------------------------------------- 2. in process
    log("2. in-process reads")
    client = OnlineClient.from_config(cfg)
    service = store.get_feature_service(FEATURE_SERVICE) if feast else None
    # Feast's API over our plugin: same registry, our state in db 0, read at T0
    plugin = (plugin_repo(work / "feast_plugin_repo", repo / "registry.db", rs.port, t0_epoch,
                          cfg.redis.timeout_ms) if feast else None)
    plugin_service = plugin.get_feature_service(FEATURE_SERVICE) if feast else None

    def id_rows(n: int, count: int) -> list[list[dict]]:
        cs = rng.choice(customers, (count, n)).tolist()
        ts = rng.choice(terminals, (count, n)).tolist()
        return [[{"customer_id": c, "terminal_id": t} for c, t in zip(cr, tr, strict=False)]
                for cr, tr in zip(cs, ts, strict=False)]

    ours_errors = [0]

    def ours_read(rows):
        res = client.get_features(rows, as_of=t0_epoch)
        if res.error is not None:
            ours_errors[0] += 1
        return res

    def feast_read(rows):
        return store.get_online_features(features=service, entity_rows=rows).to_dict()

    from ffs.online.feast_store import FFSOnlineStoreUnavailable

    plugin_errors = [0]

    def plugin_read(rows):
        try:
            return plugin.get_online_features(features=plugin_service,
                                              entity_rows=rows).to_dict()
        except FFSOnlineStoreUnavailable:  # Redis slower than timeout_ms: counted, not fatal
            plugin_errors[0] += 1
            return None

    # the raw floor: what one Feast row needs from Redis (2 HGETALL in one pipeline)
    def raw_read(keys):
        pipe = r1.pipeline(transaction=False)
        for k in keys:
            pipe.hgetall(k)
        return pipe.execute()

    inproc: dict[str, dict] = {}
    for n_rows, calls, warm in ((1, s["inproc_1"], s["warm_1"]),
                                (100, s["inproc_100"], s["warm_100"])):
        pool = id_rows(n_rows, 256 if n_rows == 1 else 64)
        ours_errors[0] = plugin_errors[0] = 0
        o = time_calls(ours_read, pool, warm, calls, s["case_max_s"])
        o["unavailable_results"] = ours_errors[0]
        g = {"n": 0}
        if feast:
            g = time_calls(plugin_read, pool, warm, calls, s["case_max_s"])
            g["unavailable_results"] = plugin_errors[0]
        f = time_calls(feast_read, pool, warm, calls, s["case_max_s"]) if feast else {"n": 0}
        inproc[f"{n_rows}_row"] = {"ours": o, "feast": f, "feast_plugin": g}
        log(f"   {n_rows:>3} rows: ours p50 {o['p50_ms']} p99 {o['p99_ms']} ms | "
            f"feast+plugin p50 {g.get('p50_ms')} p99 {g.get('p99_ms')} ms | "
            f"feast p50 {f.get('p50_ms')} p99 {f.get('p99_ms')} ms")
        if n_rows == 1 and feast:
            keys = [[feast_key("customer_id", p[0]["customer_id"]),
                     feast_key("terminal_id", p[0]["terminal_id"])] for p in pool]
            inproc["1_row"]["raw_floor_2_hgetall"] = time_calls(raw_read, keys, warm, calls,
                                                                s["case_max_s"])
    # a sanity check that both return the whole service
    sample = id_rows(1, 1)[0]
    o_names = client.get_features(sample, as_of=t0_epoch).feature_names
    f_names = [k for k in (feast_read(sample) if feast else {})
               if k not in ("customer_id", "terminal_id")]
    g_doc = (plugin_read(sample) if feast else None) or {}
    g_names = [k for k in g_doc if k not in ("customer_id", "terminal_id")]
    inproc["features_returned"] = {"ours": len(o_names), "feast": len(f_names),
                                   "same_names": sorted(o_names) == sorted(f_names),
                                   "feast_plugin": len(g_names),
                                   "plugin_same_names": sorted(o_names) == sorted(g_names)}
    if feast:  # the plugin's timing is of a correct path: its values are the client's
        n_sets = max(1, s["pairs"] // 100)
        agree = plugin_agreement(client, plugin_read, id_rows(100, n_sets) + id_rows(1, 20),
                                 t0_epoch)
        inproc["feast_plugin_vs_client"] = agree
        log(f"   plugin vs client at T0: {agree.get('share_equal')} of "
            f"{agree.get('values_compared')} values equal over {agree.get('rows')} rows"
            + f" ({agree.get('client_missing_entity_values')} MISSING_ENTITY values)"
            + (f" (wrong: {agree['wrong_by_feature']})" if agree.get("wrong_by_feature")
               else "") + (f" ERROR {agree['error']}" if "error" in agree else ""))
    results["in_process"] = inproc
    results["hot_entity"] = hot_entity(r0, client, cfg, tx, customers, terminals, rng, s,
                                       t0_epoch)

    # ---------------------------------------------------------------- 3. HTTP
    log(f"3. HTTP, {', '.join(map(str, args.workers))} worker(s)")
    path = "/get-online-features"

    def bodies(n_rows: int, count: int, ours: bool) -> list[bytes]:
        out = []
        for rows in id_rows(n_rows, count):
            doc = {"feature_service": FEATURE_SERVICE,
                   "entities": {"customer_id": [r["customer_id"] for r in rows],
                                "terminal_id": [r["terminal_id"] for r in rows]}}
            if ours:
                doc["as_of"] = t0_epoch
            out.append(json.dumps(doc).encode())
        return out

    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("FFS_") or k == "FFS_FEATURES_REPO")
           and k != "FEAST_FS_YAML_FILE_PATH"}
    env["FEAST_USAGE"] = "False"
    servers = {
        "ours": (lambda port, n: [sys.executable, "-m", "ffs.cli", "serve", "--host",
                                  "127.0.0.1", "--port", str(port), "--workers", str(n)],
                 {**env, "FFS_REDIS_URL": cfg.redis.url, "FFS_REDIS_PREFIX": PREFIX},
                 "/ready", True, b'"UNAVAILABLE"'),
        "feast": (lambda port, n: [str(ROOT / ".venv" / "bin" / "feast"), "-c", str(repo),
                                   "serve", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", str(n), "--no-access-log",
                                   "--max-requests", "0"],
                  env, "/health", False, None),
    }

    compiled = wrk_available()
    if not compiled:
        log("   wrk is not installed (bash infra/install_bench_tools.sh): the Python load "
            "generator alone")

    def serve_case(who: str, n_workers: int) -> dict:
        argv, senv, ready_path, ours_fmt, marker = servers[who]
        port = free_port()
        log_path = work / f"{who}-serve-{n_workers}w.log"
        p = procs.start(argv(port, n_workers), senv, log_path)
        try:
            startup = wait_http(port, ready_path, p, log_path)
            status, doc = post_json(port, path, bodies(1, 1, ours_fmt)[0])
            check = {"status": status, "startup_seconds": round(startup, 1)}
            if status == 200 and "results" in doc:
                names = doc["metadata"]["feature_names"]
                vals = [col["values"][0] for col in doc["results"]]
                check["columns"] = len(names)
                check["null_values"] = sum(v is None for v in vals)
                stats = [st for col in doc["results"] for st in col.get("statuses", [])]
                check["statuses"] = {k: stats.count(k) for k in sorted(set(stats))}
            else:
                check["body"] = str(doc)[:300]
            res = {"workers": n_workers, "check": check}
            if status != 200:
                raise RuntimeError(f"{who} server answered {status}: {str(doc)[:300]}")
            for n_rows, calls, warm in ((1, s["http_1"], s["warm_1"]),
                                        (100, s["http_100"], s["warm_100"])):
                b = bodies(n_rows, 64, ours_fmt)
                lat = http_load(port, path, b, calls, 1, s["case_max_s"], warm, marker)
                # warm-up of every worker: each connection may land on another one
                tput = http_load(port, path, b, 10**7, CONCURRENCY, s["tput_seconds"],
                                 5 * max(CONCURRENCY, n_workers), marker)
                case = {"latency": lat, "throughput": tput}
                if compiled:
                    # the same two loads from wrk, a compiled generator: a check that the
                    # Python one's CPU is not the limit (benchmarks/wrk_load.py); its
                    # warm-up is a second untimed
                    case["latency_wrk"] = wrk_load("127.0.0.1", port, path, b, 1,
                                                   s["tput_seconds"], 1.0, marker)
                    case["throughput_wrk"] = wrk_load("127.0.0.1", port, path, b,
                                                      CONCURRENCY, s["tput_seconds"], 1.0,
                                                      marker)
                for load_case in (case.get("throughput"), case.get("throughput_wrk")):
                    if load_case is None:
                        continue
                    # a degraded answer (UNAVAILABLE, e.g. our breaker open after a Redis
                    # timeout) comes back fast: the rate of full answers is the one to compare
                    load_case["good_per_s"] = round(
                        (load_case["n"] - load_case["errors"] - load_case["degraded"])
                        / max(load_case["seconds"], 1e-9), 1)
                res[f"{n_rows}_row"] = case
                log(f"   {who:5} {n_workers}w {n_rows:>3} rows: p50 {lat['p50_ms']} p99 "
                    f"{lat['p99_ms']} ms, {tput.get('per_s')} req/s at {CONCURRENCY} clients "
                    f"(errors {lat['errors'] + tput['errors']}, "
                    f"degraded {lat['degraded'] + tput['degraded']})")
                if compiled:
                    lw, tw = case["latency_wrk"], case["throughput_wrk"]
                    log(f"   {who:5} {n_workers}w {n_rows:>3} rows, wrk: p50 {lw['p50_ms']} "
                        f"p99 {lw['p99_ms']} ms, {tw['per_s']} req/s at {CONCURRENCY} "
                        f"connections (errors {lw['errors'] + tw['errors']}, degraded "
                        f"{lw['degraded'] + tw['degraded']})")
            procs_now = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
            res["processes"] = len(procs_now)
            res["rss_mib"] = round(sum(q.memory_info().rss for q in procs_now) / 2**20, 1)
            return res
        finally:
            procs.stop(p)

    http_res: dict[str, object] = {"workers": {}, "generators": ["python"] + (
        ["wrk"] if compiled else [])}
    for n_workers in args.workers:
        per: dict[str, dict] = {}
        for who in ("ours", "feast"):
            if who == "feast" and not feast:
                continue
            per[who] = serve_case(who, n_workers)
        http_res["workers"][str(n_workers)] = per
        if n_workers == 1:  # the keys of earlier results: the one-worker case
            http_res.update(per)
    http_res["feast_flags"] = ("--workers N --no-access-log --max-requests 0 (no worker "
                               "recycling); N in " + ",".join(map(str, args.workers)))
    http_res["ours_flags"] = "--workers N (uvicorn); N as for Feast"
    results["http"] = http_res

    # ---------------------------------------------------------------- 4. correctness
    log("4. correctness against training_set at T0, T0+12h, T0+2d")
    n_pairs = s["pairs"]
    pc = rng.choice(customers, n_pairs).tolist()
    pt = rng.choice(terminals, n_pairs).tolist()
    rows = [{"customer_id": c, "terminal_id": t} for c, t in zip(pc, pt, strict=False)]
    compared = [n for n in feature_names() if n not in NEEDS_REQUEST]
    ents = pd.concat([pd.DataFrame({"customer_id": pc, "terminal_id": pt,
                                    "event_timestamp": T0 + delta, "at": label})
                      for label, delta in REQUEST_TIMES], ignore_index=True)
    t0 = time.perf_counter()
    truth = training_set(ents, cfg, engine="local")
    truth_s = time.perf_counter() - t0
    feast_vals = (store.get_online_features(features=service, entity_rows=rows).to_dict()
                  if feast else None)
    corr: dict[str, object] = {"pairs": n_pairs, "features_compared": compared,
                               "training_set_seconds": round(truth_s, 1)}
    for label, delta in REQUEST_TIMES:
        t = T0 + delta
        exp = truth[truth["at"] == label].reset_index(drop=True)
        ours_res = client.get_features(rows, as_of=int(t.timestamp()))
        entry = {}
        for who, values in (("ours", ours_res.values), ("feast", feast_vals)):
            if values is None:  # --no-feast
                entry[who] = {"share_equal": float("nan"), "wrong_customer_nb_tx_1d": float("nan")}
                continue
            per = {}
            equal_rows = np.ones(n_pairs, dtype=bool)
            for name in compared:
                got = as_float(values[name])
                ok = np.isclose(got, exp[name].to_numpy(np.float64), rtol=1e-9, atol=0.0,
                                equal_nan=True)
                equal_rows &= ok
                per[name] = round(float(ok.mean()), 4)
            entry[who] = {"share_equal": round(float(np.mean(list(per.values()))), 4),
                          "rows_all_equal": round(float(equal_rows.mean()), 4),
                          "wrong_customer_nb_tx_1d": round(1 - per["customer_nb_tx_1d"], 4),
                          "wrong_customer_nb_tx_7d": round(1 - per["customer_nb_tx_7d"], 4),
                          "per_feature": per}
        entry["ours"]["unavailable"] = ours_res.error
        corr[label] = entry
        log(f"   {label:7}: ours {entry['ours']['share_equal']:.1%} equal | feast "
            f"{entry['feast']['share_equal']:.1%} equal (1-day count wrong: "
            f"{entry['feast']['wrong_customer_nb_tx_1d']:.1%})")
    results["correctness"] = corr
    client.redis.close()
    r0.close()
    r1.close()


def hot_entity(r, client, cfg, tx, customers, terminals, rng, s: dict, t0: int) -> dict:
    """A hot terminal beside a quiet one, in the same run: HOT_PAYMENTS payments over the
    terminal's longest window + delay before T0 (new ids: a terminal and customers the
    handbook does not have), HOT_FRAUD of them labelled fraud at their own time; then 1-row
    reads of (a real customer, the hot terminal) and (the same customer, a real quiet
    terminal), alternately, p50/p99 of each."""
    from ffs.online.loader import load_state
    from ffs.transformations.features import entity as entity_named
    from ffs.transformations.features import windows_for

    log(f"2b. hot entity: a terminal with {HOT_PAYMENTS:,} payments, "
        f"{HOT_FRAUD:.0%} fraud, against a quiet one")
    span = max(w.window_s + w.delay_s for w in windows_for(entity_named("terminal")))
    n = HOT_PAYMENTS
    hot_id = int(terminals.max()) + 1
    times = np.sort(rng.integers(t0 - span + 1, t0 + 1, n))
    hot = pd.DataFrame({
        "transaction_id": np.arange(n, dtype=np.int64) + int(tx["transaction_id"].max()) + 1,
        "event_timestamp": pd.to_datetime(times, unit="s", utc=True),
        "customer_id": int(customers.max()) + 1 + rng.integers(0, 5000, n),
        "terminal_id": hot_id, "amount": np.round(rng.uniform(1, 200, n), 2)})
    labels = pd.DataFrame({"transaction_id": hot["transaction_id"],
                           "is_fraud": (rng.random(n) < HOT_FRAUD).astype(np.int64),
                           "label_timestamp": hot["event_timestamp"]})
    load_state(r, hot, labels, cfg.redis.prefix, index_transactions=False)
    customer = int(rng.choice(customers))
    quiet_id = int(rng.choice(terminals))
    rows = {"hot": [{"customer_id": customer, "terminal_id": hot_id}],
            "quiet": [{"customer_id": customer, "terminal_id": quiet_id}]}
    lat: dict[str, list[float]] = {"hot": [], "quiet": []}
    clock = time.perf_counter
    deadline = time.monotonic() + s["case_max_s"]
    for k in range(s["warm_1"] + s["inproc_1"]):
        for who in ("hot", "quiet"):
            began = clock()
            client.get_features(rows[who], as_of=t0)
            if k >= s["warm_1"]:
                lat[who].append(clock() - began)
        if time.monotonic() > deadline:
            break
    got = client.get_features(rows["hot"], as_of=t0).row(0)
    out = {"payments": n, "fraud_share": HOT_FRAUD, "window_s": span,
           "terminal_values": {k: v for k, v in got.items() if k.startswith("terminal_")},
           "hot": summarize(lat["hot"]), "quiet": summarize(lat["quiet"])}
    log(f"   hot p50 {out['hot']['p50_ms']} p99 {out['hot']['p99_ms']} ms | quiet p50 "
        f"{out['quiet']['p50_ms']} p99 {out['quiet']['p99_ms']} ms")
    return out


def print_table(res: dict) -> None:
    """Ours beside Feast, one row per figure, with the ratio ours / Feast (p50 / p99 for
    latencies; below 1: ours is faster, smaller, or less often wrong)."""
    def ms(d: dict | None) -> str:
        if not d or not d.get("n"):
            return "-"
        return f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f}"

    def ratio(a, b) -> str:
        if a is None or b is None or not b or a != a or b != b:
            return "-"
        return f"{a / b:.2f}"

    def ms_ratio(a: dict | None, b: dict | None) -> str:
        if not a or not b or not a.get("n") or not b.get("n"):
            return "-"
        return f"{ratio(a['p50_ms'], b['p50_ms'])} / {ratio(a['p99_ms'], b['p99_ms'])}"

    def unavailable(d: dict) -> str:
        k = d.get("unavailable_results") or 0
        return f" [{k} unavail.]" if k else ""

    def per_s(t: dict) -> tuple[float, str]:
        """req/s of full answers, and the cell: with the raw rate when some were degraded."""
        good = t.get("good_per_s", t.get("per_s", 0))
        if t.get("degraded") or t.get("errors"):
            return good, f"{good:,.0f} ok of {t.get('per_s', 0):,.0f}"
        return good, f"{good:,.0f}"

    lines = [f"\nonline benchmark {res['date']}{' (quick)' if res.get('quick') else ''}: "
             f"{res['machine']['cores']} cores, {res['machine']['memory_gib']} GiB, "
             f"Python {res['machine']['python']}, Redis {res['machine'].get('redis')}; "
             f"load avg {res['load_avg_start']} -> {res.get('load_avg_end')}",
             f"{'':50}{'ours':>20}{'Feast 0.67':>20}{'ours / Feast':>18}"]

    def row(label: str, a: str, b: str, r: str = "") -> None:
        lines.append(f"{label:50}{a:>20}{b:>20}{r:>18}")

    ld = res.get("load", {})
    if ld:
        fl = ld["feast"]
        row("load whole handbook into Redis (s)", f"{ld['ours']['seconds']:.1f}",
            f"{fl['materialize_seconds']:.1f} (+{fl['consolidate_seconds']:.1f})",
            ratio(ld["ours"]["seconds"], fl["materialize_seconds"]))
    ip = res.get("in_process", {})
    for n in ("1_row", "100_row"):
        if n in ip:
            label = n.replace("_", " ") + ("s" if n != "1_row" else "")
            o = ip[n]["ours"]
            row(f"in process, {label}, p50 / p99 (ms){unavailable(o)}", ms(o),
                ms(ip[n]["feast"]), ms_ratio(o, ip[n]["feast"]))
            g = ip[n].get("feast_plugin")
            if g and g.get("n"):
                row(f"  Feast API + our plugin, {label} (ms){unavailable(g)}", ms(g),
                    ms(ip[n]["feast"]), ms_ratio(g, ip[n]["feast"]))
                row("  plugin / our client, p50 / p99", "", "", ms_ratio(g, ip[n]["ours"]))
    agree = ip.get("feast_plugin_vs_client")
    if agree:
        share = agree.get("share_equal")
        row(f"  plugin values equal to our client's ({agree.get('values_compared', 0):,})",
            "error" if "error" in agree else f"{share:.1%}", "")
    hot = res.get("hot_entity")
    if hot:
        row(f"  hot terminal ({hot['payments']:,} payments) p50 / p99", ms(hot["hot"]), "")
        row("  quiet terminal, same run, p50 / p99", ms(hot["quiet"]), "")
    if "1_row" in ip and "raw_floor_2_hgetall" in ip["1_row"]:
        row("  raw floor: pipeline of 2 HGETALL (ms)", "", ms(ip["1_row"]["raw_floor_2_hgetall"]))
    hp = res.get("http", {})
    by_workers = hp.get("workers") or ({"1": {"ours": hp["ours"], "feast": hp["feast"]}}
                                       if "ours" in hp and "feast" in hp else {})
    for w, per in by_workers.items():
        if "ours" not in per or "feast" not in per:
            continue
        o, f = per["ours"], per["feast"]
        for n in ("1_row", "100_row"):
            label = n.replace("_", " ") + ("s" if n != "1_row" else "")
            row(f"HTTP {w} worker{'s' if w != '1' else ''}, {label}, p50 / p99 (ms)",
                ms(o[n]["latency"]), ms(f[n]["latency"]),
                ms_ratio(o[n]["latency"], f[n]["latency"]))
            (a, a_cell), (b, b_cell) = per_s(o[n]["throughput"]), per_s(f[n]["throughput"])
            row(f"  req/s, {CONCURRENCY} clients", a_cell, b_cell, ratio(a, b))
            if "latency_wrk" in o[n] and "latency_wrk" in f[n]:
                row("  from wrk: p50 / p99 (ms)", ms(o[n]["latency_wrk"]),
                    ms(f[n]["latency_wrk"]), ms_ratio(o[n]["latency_wrk"], f[n]["latency_wrk"]))
                (a, a_cell), (b, b_cell) = (per_s(o[n]["throughput_wrk"]),
                                            per_s(f[n]["throughput_wrk"]))
                row(f"  from wrk: req/s, {CONCURRENCY} connections", a_cell, b_cell,
                    ratio(a, b))
    corr = res.get("correctness", {})
    for label, _ in REQUEST_TIMES:
        if label in corr:
            e = corr[label]
            o, f = e["ours"], e["feast"]
            row(f"values equal to exact at {label}", f"{o['share_equal']:.1%}",
                f"{f['share_equal']:.1%}", ratio(o["share_equal"], f["share_equal"]))
            row(f"  customer 1-day count wrong at {label}",
                f"{o['wrong_customer_nb_tx_1d']:.1%}", f"{f['wrong_customer_nb_tx_1d']:.1%}",
                ratio(o["wrong_customer_nb_tx_1d"], f["wrong_customer_nb_tx_1d"]))
    mem = res.get("memory", {})
    if mem:
        o, f = mem["ours"], mem["feast"]
        fc = f["customer_key"]["mean_bytes"] or 0
        ft = f["terminal_key"]["mean_bytes"] or 0
        row("bytes per customer (MEMORY USAGE)", f"{o['bytes_per_customer']:,.0f}",
            f"{fc:,.0f}", ratio(o["bytes_per_customer"], fc))
        row("bytes per terminal (ev + fraud)", f"{o['bytes_per_terminal']:,.0f}",
            f"{ft:,.0f}", ratio(o["bytes_per_terminal"], ft))
        row("bytes per tx index key", f"{o['tx_index']['mean_bytes'] or 0:,.0f}", "-")
        a = ld["ours"]["redis_used_memory_bytes"] / 2**20
        b = ld["feast"]["redis_used_memory_bytes"] / 2**20
        row("Redis used_memory after load (MiB)", f"{a:,.1f}", f"{b:,.1f}", ratio(a, b))
    lines.append("ours / Feast: below 1 is better for times, bytes and wrong shares, above 1 "
                 "for req/s and equal shares; \"ok of\": req/s of full answers of all answers "
                 "(the rest UNAVAILABLE or errors)")
    print("\n".join(lines), flush=True)

if __name__ == "__main__":
    sys.exit(workdir.run(main))
