"""The Parquet offline store: layout, staging and atomic-per-partition publishing.

    {root}/transactions/event_date=YYYY-MM-DD/   validated transactions (source of truth)
    {root}/labels/label_date=YYYY-MM-DD/         validated fraud labels
    {root}/features/event_date=YYYY-MM-DD/       every feature at every transaction
    {root}/rejects/{transactions,labels}.parquet rows refused by the last published backfill
    {root}/rejects/history/{run}-{name}.parquet  rows refused by every run, published or not

Training sets are computed from transactions and labels, not from the feature table: the
feature table holds values at each transaction's instant, and a label timestamp in between
needs the window at its own instant (Feast's as-of join returns the stale value instead).

A batch is written to `{root}/_staging/...`, validated, and only then published: each
partition directory of the batch replaces the one of the same name. Re-running the same
input therefore rewrites the same partitions with the same rows, never adds duplicates.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ffs.errors import InputError
from ffs.transformations.timestamps import to_seconds

TABLES = {"transactions": "event_date", "labels": "label_date", "features": "event_date"}


# Spark refuses nanosecond Parquet timestamps; our timestamps are whole seconds anyway.
PARQUET_OPTIONS = {"coerce_timestamps": "us", "allow_truncated_timestamps": True}


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), str(path), **PARQUET_OPTIONS)


class OfflineStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, table: str) -> Path:
        return self.root / table

    def staging(self, table: str) -> Path:
        p = self.root / "_staging" / f"{table}-{uuid.uuid4().hex[:12]}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def exists(self, table: str) -> bool:
        p = self.path(table)
        return p.exists() and any(p.glob("*/*.parquet"))

    def read(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        if not self.exists(table):
            raise InputError(f"offline table '{table}' not found under {self.root}; "
                             f"run `ffs backfill` first (or pass the input files explicitly)")
        # The partition column is derived from the timestamp; the data carries it anyway.
        dataset = ds.dataset(self.path(table), format="parquet", partitioning="hive")
        cols = columns or [c for c in dataset.schema.names if c != TABLES[table]]
        frame = dataset.to_table(columns=cols).to_pandas()
        # Parquet holds microseconds (Spark's limit); the rest of the code works in ns UTC.
        for col in frame.columns:
            if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
                frame[col] = frame[col].astype("datetime64[ns, UTC]")
        return frame

    def write_staged_pandas(self, table: str, df: pd.DataFrame, time_column: str) -> Path:
        """Write a pandas frame partitioned by the UTC date of `time_column` into staging.

        One sort by day and one file per day: pyarrow's generic partitioned writer spends
        most of its time formatting and grouping a string key per row.
        """
        part = TABLES[table]
        out = self.staging(table)
        out.mkdir(parents=True, exist_ok=True)
        days = to_seconds(df[time_column]) // 86400 if len(df) else np.zeros(0, np.int64)
        order = np.argsort(days, kind="stable")
        arrow = pa.Table.from_pandas(df, preserve_index=False).take(order)
        sorted_days = days[order]
        bounds = np.flatnonzero(np.diff(sorted_days)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(sorted_days)], strict=False):
            if hi <= lo:
                continue
            day = str(np.datetime64(int(sorted_days[lo]), "D"))
            folder = out / f"{part}={day}"
            folder.mkdir()
            pq.write_table(arrow.slice(lo, hi - lo), folder / "part-0.parquet", **PARQUET_OPTIONS)
        return out

    def publish(self, table: str, staged: Path) -> list[str]:
        """Move each staged partition into place, replacing the partition of the same name."""
        target = self.path(table)
        target.mkdir(parents=True, exist_ok=True)
        published = []
        for part in sorted(p for p in staged.iterdir() if p.is_dir() and "=" in p.name):
            dest = target / part.name
            if dest.exists():
                old = target / f".old-{part.name}-{uuid.uuid4().hex[:8]}"
                dest.rename(old)
                part.rename(dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                part.rename(dest)
            published.append(part.name)
        shutil.rmtree(staged, ignore_errors=True)
        return published

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def write_rejects(self, run: str, name: str, rejects: pd.DataFrame) -> Path | None:
        """The audit trail: every run's refused rows, kept (a refused batch must not erase
        what an earlier one refused). The latest file follows only published runs:
        publish_rejects."""
        if rejects.empty:
            return None
        out = self.root / "rejects" / "history" / f"{run}-{name}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(rejects.astype("string"), out)
        return out

    def publish_rejects(self, run: str, name: str) -> None:
        """rejects/{name}.parquet := this (published) run's rejects, or none."""
        latest = self.root / "rejects" / f"{name}.parquet"
        mine = self.root / "rejects" / "history" / f"{run}-{name}.parquet"
        latest.parent.mkdir(parents=True, exist_ok=True)
        if mine.exists():
            shutil.copyfile(mine, latest)
        else:
            latest.unlink(missing_ok=True)
