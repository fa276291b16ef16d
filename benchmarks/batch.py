"""Batch benchmark on the handbook data: backfill and training set, side by side with Feast.

    make bench            (or: .venv/bin/python -m benchmarks.batch [--skip-feast])

Ours runs through the real CLI in a fresh process, so imports and Spark's start count. Peak
memory is the whole process tree (driver, JVM, Python workers), sampled every 100 ms.
Results go to benchmarks/results/batch-<date>.json; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
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
WINDOW = ("2018-07-25", "2018-08-15")  # the handbook's train..test span, end exclusive


class PeakMemory:
    """Peak RSS of a process and all its children, sampled in a thread."""

    def __init__(self, pid: int):
        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**30


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    started = time.perf_counter()
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "ffs"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mem = PeakMemory(proc.pid)
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    peak = mem.stop()
    if proc.returncode != 0:
        raise SystemExit(f"ffs {' '.join(args)} failed:\n{out}")
    return wall, peak, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-feast", action="store_true", help="Feast takes minutes")
    ap.add_argument("--feast-only", action="store_true",
                    help="reuse --work from an earlier run; measure only Feast")
    ap.add_argument("--feast-chunk", type=int, default=20_000,
                    help="entity rows per Feast call (one call over 201k rows was killed by "
                         "the OOM killer at 23 GB on a 24 GB machine)")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    if not HANDBOOK.exists():
        print(f"skipped: handbook data not found at {HANDBOOK}")
        return 0

    sys.path.insert(0, str(ROOT))
    from ffs.jobs.batch.offline_store import write_parquet
    from ffs.transformations import schema

    work = Path(args.work or workdir.temporary("ffs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    tx = schema.normalize_transactions(pd.read_parquet(HANDBOOK)).rows
    labels_path = work / "labels.parquet"
    write_parquet(schema.labels_from_flags(tx), labels_path)
    in_window = (tx["event_timestamp"] >= pd.Timestamp(WINDOW[0], tz="UTC")) & (
        tx["event_timestamp"] < pd.Timestamp(WINDOW[1], tz="UTC"))
    entities = tx.loc[in_window, ["customer_id", "terminal_id", "event_timestamp", "TX_FRAUD"]]
    entities_path = work / "entities.parquet"
    write_parquet(entities, entities_path)
    results: dict[str, object] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
                   f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.python_version()}",
        "rows": len(tx), "training_rows": len(entities),
    }
    env = dict(os.environ, FFS_VALIDATION_DATA_DOCS_DIR=str(work / "docs"))
    print(f"handbook: {len(tx):,} transactions; training window {WINDOW}: {len(entities):,} rows")

    if args.feast_only:
        exact = pd.read_parquet(work / "training-local.parquet")
        results["feast"] = feast_side(work, entities, exact, args.feast_chunk)
        return _save(results)

    for engine in ("spark", "local"):
        env["FFS_OFFLINE_PATH"] = str(work / f"offline-{engine}")
        wall, peak, out = run_cli(["backfill", "--transactions", str(HANDBOOK),
                                   "--labels", str(labels_path), "--engine", engine], env)
        results[f"backfill_{engine}"] = {"seconds": round(wall, 1), "peak_gib": round(peak, 2),
                                         "log": out.splitlines()[-14:]}
        print(f"backfill ({engine}): {wall:.1f} s wall, peak {peak:.2f} GiB")

    env["FFS_OFFLINE_PATH"] = str(work / "offline-spark")
    a = pd.read_parquet(work / "offline-spark" / "features").sort_values("transaction_id")
    b = pd.read_parquet(work / "offline-local" / "features").sort_values("transaction_id")
    cols = [c for c in a.columns if c not in ("event_date",)]
    same = all(np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=a[c].dtype.kind == "f")
               for c in cols)
    results["spark_equals_local"] = bool(same)
    print(f"spark backfill identical to the in-process engine: {same}")

    ours = {}
    for engine in ("spark", "local"):
        out_path = work / f"training-{engine}.parquet"
        wall, peak, _ = run_cli(["training-set", "--entities", str(entities_path), "--output",
                                 str(out_path), "--engine", engine], env)
        results[f"training_set_{engine}"] = {"seconds": round(wall, 1), "peak_gib": round(peak, 2)}
        ours[engine] = pd.read_parquet(out_path)
        print(f"training set ({engine}): {wall:.1f} s wall, peak {peak:.2f} GiB")

    if not args.skip_feast:
        results["feast"] = feast_side(work, entities, ours["local"], args.feast_chunk)
    return _save(results)


def _save(results: dict) -> int:
    out = ROOT / "benchmarks" / "results" / f"batch-{results['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # a --feast-only run adds to the day's file
        results = {**json.loads(out.read_text()), **results}
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out}")
    return 0


def feast_side(work: Path, entities: pd.DataFrame, exact: pd.DataFrame,
               chunk: int) -> dict[str, object]:
    """Feast 0.67 get_historical_features over the same feature table, in chunks of entity
    rows, and the share of its values equal to the exact window at each row's time."""
    from benchmarks.feast_peer import feast_historical
    from ffs.config import load_config
    from ffs.jobs.batch.training_set import training_set
    from ffs.transformations.features import REQUEST_FEATURES, feature_names

    stamps = entities[["customer_id", "terminal_id", "event_timestamp"]].reset_index(drop=True)
    day_later = stamps.assign(event_timestamp=stamps["event_timestamp"] + pd.Timedelta(days=1))
    windowed = [f for f in feature_names() if f not in {r.name for r in REQUEST_FEATURES}]
    cfg = load_config()
    cfg.offline.path = str(work / "offline-spark")
    report: dict[str, object] = {"chunk_rows": chunk}
    for name, frame in (("at_transaction", stamps), ("one_day_later", day_later)):
        truth = exact if name == "at_transaction" else training_set(frame, cfg, engine="local")
        seconds, consolidate, dropped, parts = 0.0, 0.0, 0, []
        for lo in range(0, len(frame), chunk):
            part = frame.iloc[lo:lo + chunk].reset_index(drop=True)
            run = feast_historical(work / "offline-spark" / "features", part,
                                   work / f"feast-{name}-{lo}")
            seconds += run.seconds
            consolidate += run.consolidate_seconds
            dropped += int(run.extras.get("requests_dropped_by_feast", 0) or 0)
            parts.append(run.df[windowed])
        got = pd.concat(parts, ignore_index=True)
        equal = float(np.mean([
            np.isclose(got[c].to_numpy(float), truth[c].to_numpy(float), rtol=1e-9,
                       equal_nan=True).mean() for c in windowed]))
        report[name] = {"seconds": round(seconds, 1), "consolidate_seconds": round(consolidate, 1),
                        "share_equal_to_exact": round(equal, 4), "rows_dropped_by_feast": dropped}
        print(f"feast get_historical_features ({name}): {seconds:.1f} s in chunks of {chunk:,} "
              f"(+{consolidate:.1f} s to consolidate), values equal to the exact window: "
              f"{equal:.1%}")
    return report


if __name__ == "__main__":
    sys.exit(workdir.run(main))
