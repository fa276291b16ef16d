"""Whether a batch job's input fits this machine, said before the job starts rather than by
the kernel's OOM killer an hour in.

The local engine holds every event in this process, and so does the Spark engine's driver
today: it reads, normalizes and validates the input in pandas before Spark computes the
features (issue 13, item 7). The peak grows with the rows; the bytes per row below are this
repo's measured peaks on the handbook (BENCHMARKS.md, "Batch at scale"), with headroom.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ffs.errors import InputError

# peak resident bytes per transaction read, the whole process tree (driver, JVM, workers):
# a backfill normalizes and validates its input and writes a feature table of every row; a
# training set reads the offline store's (normalized) events and computes at its points
BYTES_PER_ROW = {("backfill", "local"): 1_900, ("backfill", "spark"): 2_600,
                 ("training set", "local"): 700, ("training set", "spark"): 1_000}
FIXED_BYTES = 1_500_000_000  # imports, Great Expectations, a Spark JVM's heap
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
    where = ("the local engine holds every event in this process" if engine == "local" else
             "the Spark engine distributes the feature computation, but its driver still "
             "reads, normalizes and validates every event in pandas")
    raise InputError(
        f"this {what} does not fit: {rows:,} transactions need about {need / 2**30:.1f} GiB, "
        f"this machine has {free / 2**30:.1f} GiB available (about {fits:,} rows fit): {where}. "
        f"Run it with --engine spark where the driver has that memory (a cluster's driver "
        f"pod: spark.driver_memory and the pod's limit), or pass --no-memory-check to try "
        f"anyway")
