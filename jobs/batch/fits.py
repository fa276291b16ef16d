"""Whether a batch job's input fits this machine, said before the job starts rather than by
the kernel's OOM killer an hour in.

The local engine holds every event in this process, and so does a Spark training set's
driver (it reads the offline store's events in pandas). The peak grows with the rows; the
bytes per row below are this repo's measured peaks (BENCHMARKS.md, "Batch at scale"), with
headroom. A Spark backfill is not checked: every step runs in tasks of bounded size
(jobs/batch/spark_backfill.py), so its driver's memory does not grow with the input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ffs.errors import InputError

# peak resident bytes per transaction read, the whole process tree (driver, JVM, workers):
# a backfill normalizes and validates its input and writes a feature table of every row; a
# training set reads the offline store's (normalized) events and computes at its points
# (measured on 1.8 M, 5.3 M and 10.6 M generated rows, BENCHMARKS.md "Batch at scale": the
# peaks grow by 1,675 / 2,756 / 455 / 785 bytes a row over about 1.7 GiB; these add headroom)
BYTES_PER_ROW = {("backfill", "local"): 1_750,
                 ("training set", "local"): 700, ("training set", "spark"): 1_000}
FIXED_BYTES = 2_000_000_000  # imports, Great Expectations, a Spark JVM's heap
_CSV_SAMPLE = 1 << 20


def count_rows(path: str | Path) -> int | None:
    """Rows of a Parquet file or directory from its footers (no data read); a CSV's from its
    size and first megabyte's lines; None for what cannot be told."""
    p = Path(path)
    try:
        if p.is_dir() or p.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.dataset as ds

            return ds.dataset(p, format="parquet").count_rows()
        if p.suffix.lower() in (".csv", ".txt"):
            size = p.stat().st_size
            with p.open("rb") as f:
                head = f.read(_CSV_SAMPLE)
            lines = head.count(b"\n")
            if size <= len(head) or lines == 0:
                return max(lines - 1, 0)  # all of it read: its lines, less the header
            return int(size / (len(head) / lines))
    except Exception:  # noqa: BLE001 - unreadable: the reader reports it, with its reason
        return None
    return None


def available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(path: str | Path, engine: str, what: str = "backfill",
               log: Callable[[str], None] = lambda _: None,
               available: int | None = None) -> None:
    """InputError when `path`'s transactions would need more memory than is available."""
    rows = count_rows(path)
    if rows is None:
        return
    per_row = BYTES_PER_ROW[(what, engine)]
    need = FIXED_BYTES + rows * per_row
    free = available_bytes() if available is None else available
    log(f"  input: about {rows:,} transactions, needing about {need / 2**30:.1f} GiB at peak "
        f"({free / 2**30:.1f} GiB available)")
    if need <= free:
        return
    fits = int((free - FIXED_BYTES) / per_row) if free > FIXED_BYTES else 0
    if engine == "local":
        why = ("the local engine holds every event in this process. Run it with --engine "
               "spark on a cluster whose driver has that memory")
    else:
        why = ("the Spark engine distributes the feature computation, but a training set's "
               "driver still reads the events in pandas. Run it on a cluster whose driver "
               "has that memory (spark.driver_memory and the driver pod's limit)")
    raise InputError(
        f"this {what} does not fit: {rows:,} transactions need about {need / 2**30:.1f} GiB, "
        f"this machine has {free / 2**30:.1f} GiB available (about {fits:,} rows fit): {why}, "
        f"or pass --no-memory-check to try anyway")
