"""`ffs backfill --engine spark`: every step distributed, the driver's memory independent of
the data (it sees only counts, reasons and check results).

    read ── normalize transactions (per partition) ── stage ──┬── normalize labels ── stage
                                                             ├── validate (GX on Spark)
                                                             └── features (entity buckets)
                                                                 ── join ── stage ── validate

Each stage is a Spark write partitioned by day into the store's private staging folders;
the caller publishes them (a rename per partition) only after every fail-severity check has
passed. Later steps read the staged Parquet back rather than keeping Spark's plans, so no
step is computed twice.

On a cluster the offline store must be a filesystem the driver and the executors share (a
ReadWriteMany volume): executors write the staged partitions, the driver renames them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffs.config import Config
from ffs.jobs.batch import spark_inputs as inputs
from ffs.jobs.batch.fits import count_rows
from ffs.jobs.batch.offline_store import TABLES, OfflineStore
from ffs.transformations import ids as _ids
from ffs.transformations.features import KEY_COLUMNS, REQUEST_FUNCTIONS, feature_names


@dataclass
class SparkBackfill:
    """What the steps share: the session, the store and where this run stages."""

    cfg: Config
    spark: Any  # a SparkSession (pyspark is imported only when Spark runs)
    store: OfflineStore
    run: str
    staged: dict[str, Path]
    log: Callable[[str], None]
    schemas: dict[str, object] = field(default_factory=dict)  # table -> its Spark schema

    def normalize_transactions(self, path: str | Path) -> tuple[int, dict[str, int]]:
        """Stage the accepted transactions; (their count, {reason: refused rows})."""
        raw = inputs.read_raw(self.spark, path)
        partitions = inputs.partitions_for(self.spark, count_rows(path))
        return self._stage("transactions", "event_timestamp", lambda rejects: (
            inputs.normalize_transactions(raw, _ids.types(self.cfg), partitions, rejects)))

    def normalize_labels(self, path: str | Path | None) -> tuple[int, dict[str, int]]:
        """Stage the accepted labels, checked against the staged transactions."""
        raw = inputs.empty_labels(self.spark) if path is None \
            else inputs.read_raw(self.spark, path)
        partitions = inputs.partitions_for(self.spark, count_rows(path) if path else 0)
        tx = self.read("transactions")
        return self._stage("labels", "label_timestamp", lambda rejects: (
            inputs.normalize_labels(raw, tx, _ids.types(self.cfg), partitions, rejects)))

    def features(self, transactions: int) -> None:
        """Every feature at every staged transaction, staged by day."""
        from pyspark.sql import functions as F

        from ffs.jobs.batch.spark_features import (
            ROW,
            buckets_for,
            request_fields,
            request_host,
            with_request_features,
        )
        from ffs.jobs.batch.spark_features import spark_features as side_frames

        tx = self.read("transactions")
        labels = inputs.relevant_labels(self.read("labels"))
        buckets = buckets_for(transactions, self.cfg.spark.buckets)
        base_cols = ["transaction_id", *KEY_COLUMNS, "event_timestamp"]
        later = bool(REQUEST_FUNCTIONS) and request_host() is None
        fields = [c for c in request_fields() if c in tx.columns and c not in base_cols] \
            if later else []
        table = tx.select(*base_cols, *fields)
        for frame in side_frames(tx, labels, None, buckets):  # one per entity
            table = table.join(frame.withColumnRenamed(ROW, "transaction_id"),
                               on="transaction_id", how="inner")
        if later:
            table = with_request_features(table, fields)
        table = table.select(*base_cols, *[F.col(f"`{n}`") for n in feature_names()])
        self._write(table, "features", "event_timestamp")

    def read(self, table: str):
        """A staged table as Spark reads it (without the day it is partitioned by), with the
        schema it was written with: an empty table has no file to infer it from."""
        return self.spark.read.schema(self.schemas[table]).parquet(str(self.staged[table])) \
            .drop(TABLES[table])

    def _stage(self, table: str, time_column: str, normalized) -> tuple[int, dict[str, int]]:
        """Write `normalized(rejects folder)`'s rows to staging and the run's refused rows to
        the audit trail; (rows staged, {reason: rows refused})."""
        rejects = self.store.staging(f"{table}-rejects")
        try:
            self._write(normalized(rejects), table, time_column)
            reasons = inputs.reject_counts(rejects)
            if reasons:
                where = self.store.root / "rejects" / "history" / f"{self.run}-{table}.parquet"
                inputs.merge_rejects(rejects, where)
                self.log(f"  {sum(reasons.values()):,} {table} row(s) rejected -> {where}: "
                         f"{reasons}")
        finally:
            self.store.discard(rejects)
        return count_rows(self.staged[table]) or 0, reasons

    def _write(self, frame, table: str, time_column: str) -> None:
        """`frame` into a new staging folder (staged[table], known before the write so a
        failed one is discarded too), one folder per UTC day and one file per day, rows in
        time order. A task's InputError (a udf refusing its input) is raised as itself."""
        from pyspark.sql import functions as F

        day = TABLES[table]
        self.schemas[table] = frame.schema
        out = self.staged[table] = self.store.staging(table)
        dated = frame.withColumn(day, F.date_format(time_column, "yyyy-MM-dd"))
        order = [day, time_column, "transaction_id"]
        with inputs.worker_errors():
            dated.repartition(day).sortWithinPartitions(*order).write.partitionBy(day) \
                .mode("overwrite").parquet(str(out))
