"""Batch at scale: backfill and a training set over generated data of growing size, both
engines, through the real CLI in fresh processes.

    .venv/bin/python -m benchmarks.scale [--sizes 1.75,10,50] [--engines local,spark]

For each size (millions of transactions): `ffs generate` (183 days, customers scaled to the
size, 2 terminals per customer, one seed), then per engine `ffs backfill` into its own
offline store and `ffs training-set` over 10 % of the transactions (keys and times, as
a scoring team would sample them) from that store. Per run: wall time, the peak RSS of the
whole process tree and of its largest process (sampled every 100 ms), and seconds per
million rows. A size the machine cannot hold is not started: the jobs' own memory check
(jobs/batch/fits.py) says so, and that answer is recorded. Results:
benchmarks/results/scale-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from benchmarks import workdir

ROOT = Path(__file__).resolve().parents[1]
DAYS = 183


class Peaks:
    """Peak RSS of a process tree, and of its largest single process, sampled in a thread."""

    def __init__(self, pid: int):
        self.proc, self.tree, self.single = psutil.Process(pid), 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = [p.memory_info().rss for p in [self.proc, *self.proc.children(True)]]
                self.tree, self.single = max(self.tree, sum(rss)), max(self.single, max(rss))
            except psutil.Error:
                pass
            time.sleep(0.1)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        return self.tree / 2**30, self.single / 2**30


def ffs(args: list[str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "ffs"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = Peaks(proc.pid)
    out, _ = proc.communicate()
    tree, single = peaks.stop()
    result = {"wall_s": round(time.perf_counter() - started, 1),
              "peak_tree_gib": round(tree, 2), "peak_process_gib": round(single, 2),
              "exit": proc.returncode}
    if proc.returncode != 0:
        result["output_tail"] = out[-1500:]
    return result


def customers_for(millions: float, work: Path) -> int:
    """Customers that give about `millions` transactions over DAYS days (a calibration run
    of the same generator)."""
    probe = work / "probe"
    subprocess.run([str(ROOT / ".venv" / "bin" / "ffs"), "generate", "--out", str(probe),
                    "--customers", "200", "--terminals", "400", "--days", str(DAYS), "-q"],
                   cwd=ROOT, check=True, capture_output=True)
    rows = len(pd.read_parquet(next(probe.glob("transactions*"))))
    shutil.rmtree(probe)
    return max(10, round(millions * 1e6 / (rows / 200)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1.75,10,50", help="millions of transactions")
    ap.add_argument("--engines", default="local,spark")
    ap.add_argument("--work", default=None)
    ap.add_argument("--tag", default="", help="suffix of the results file (scale-<date><tag>)")
    args = ap.parse_args()
    work = Path(args.work or workdir.temporary("ffs-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"date": dt.date.today().isoformat(),
               "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
                          f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
               "load_avg_start": os.getloadavg(), "sizes": {}}
    for size in [float(s) for s in args.sizes.split(",")]:
        customers = customers_for(size, work)
        gen = work / f"gen-{size}"
        print(f"size {size} M: generating with {customers:,} customers", flush=True)
        g = ffs(["generate", "--out", str(gen), "--customers", str(customers), "--terminals",
                 str(2 * customers), "--days", str(DAYS), "-q"])
        tx_path = next(gen.glob("transactions*"))
        labels_path = next(gen.glob("labels*"))
        import pyarrow.dataset as ds

        rows = ds.dataset(tx_path, format="parquet").count_rows()
        entry = {"customers": customers, "transactions": rows, "generate": g}
        sample = work / f"entities-{size}.parquet"
        tx = pd.read_parquet(tx_path, columns=["customer_id", "terminal_id", "event_timestamp"])
        tx.sample(frac=0.1, random_state=1).to_parquet(sample)
        del tx
        for engine in args.engines.split(","):
            store = work / f"offline-{size}-{engine}"
            print(f"  backfill ({engine}) of {rows:,} transactions", flush=True)
            b = ffs(["backfill", "--transactions", str(tx_path), "--labels", str(labels_path),
                     "--engine", engine, "--offline", str(store)])
            if b["exit"] == 0:
                b["s_per_million"] = round(b["wall_s"] / (rows / 1e6), 1)
            print(f"    {b}", flush=True)
            entry[f"backfill_{engine}"] = b
            if b["exit"] == 0:
                print(f"  training set ({engine}), {rows // 10:,} rows", flush=True)
                t = ffs(["training-set", "--entities", str(sample), "--output",
                         str(work / f"ts-{size}-{engine}.parquet"), "--engine", engine,
                         "--offline", str(store)])
                t["s_per_million_rows_out"] = round(t["wall_s"] / (rows / 1e7), 1)
                print(f"    {t}", flush=True)
                entry[f"training_set_{engine}"] = t
            shutil.rmtree(store, ignore_errors=True)
        results["sizes"][str(size)] = entry
        shutil.rmtree(gen, ignore_errors=True)
    results["load_avg_end"] = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / f"scale-{results['date']}{args.tag}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(workdir.run(main))
