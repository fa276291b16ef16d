"""`ffs training-set --engine spark`: a training set from file to file, every step in Spark
tasks, so neither the events nor the entity rows pass through the driver.

    entity rows ── prepared per partition (training_set.prepare_entities) ──┐
    events (the offline store, or files normalized per partition) ──────────┴─ entity
        buckets (spark_features) ── joined back on each row's id ── written in input order

The Python API (`training_set(...)`, pandas in and out) keeps its own path: its caller
already holds the rows in memory.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ffs.config import Config
from ffs.errors import InputError
from ffs.jobs.batch import spark_inputs as inputs
from ffs.jobs.batch.fits import count_rows
from ffs.jobs.batch.offline_store import TABLES, OfflineStore
from ffs.transformations import ids as _ids
from ffs.transformations import schema
from ffs.transformations.features import KEY_COLUMNS, VALUE_COLUMNS, feature_names
from ffs.transformations.ids import INT


@dataclass
class TrainingSummary:
    rows: int = 0
    columns: int = 0
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)


def training_set_files(cfg: Config, spark, entities_path: str | Path, output: str | Path,
                       transactions: str | Path | None = None,
                       labels: str | Path | None = None,
                       log: Callable[[str], None] = lambda _: None) -> TrainingSummary:
    """Write the entity rows of `entities_path` with every feature as of their own time to
    `output` (one Parquet file, or CSV by its suffix), rows in input order."""
    from pyspark.sql import functions as F

    from ffs.jobs.batch.spark_features import (
        ROW,
        buckets_for,
        request_fields,
        request_host,
        spark_features,
        with_request_features,
    )
    from ffs.transformations.features import REQUEST_FUNCTIONS

    store = OfflineStore(cfg.offline.path)
    work = store.staging("training-set")
    summary = TrainingSummary()
    try:
        with inputs.worker_errors():
            entities = _prepared(cfg, spark, entities_path)
            tx, lab, summary.rejected = _events(cfg, spark, store, work, transactions, labels)
            rows = count_rows(store.path("transactions")) if transactions is None \
                else count_rows(transactions)
            buckets = buckets_for(rows, cfg.spark.buckets)
            fields = [c for c in request_fields() if c in entities.columns
                      and c not in (*KEY_COLUMNS, "event_timestamp")]
            points = entities.select(ROW, *KEY_COLUMNS, "event_timestamp", *[
                F.col(c).cast("double").alias(c) if VALUE_COLUMNS.get(c) == "number"
                else F.col(c) for c in fields])
            names = feature_names()
            # a column named like a feature (the shipped repo's amount) is the feature's
            table = entities.drop(*[c for c in names if c in entities.columns])
            for frame in spark_features(tx, inputs.relevant_labels(lab), points, buckets):
                table = table.join(frame, on=ROW, how="inner")
            if REQUEST_FUNCTIONS and request_host() is None:
                lacking = [c for c in fields if c not in table.columns]
                if lacking:  # the functions read the points' values of feature-named fields
                    table = table.join(points.select(ROW, *lacking), on=ROW)
                table = with_request_features(table, lacking)
            carried = [c for c in entities.columns if c not in names]
            table = table.select(*carried, *[F.col(f"`{n}`") for n in names])
            summary.rows = _write_one_file(table, ROW, Path(output), work)
            summary.columns = len(carried) - 1 + len(names)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _prepared(cfg: Config, spark, path: str | Path):
    """The entity rows with their row id (input order), ids canonical and times parsed by
    `prepare_entities`, partition by partition; any other column as it came."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

    from ffs.jobs.batch.features_job import point_columns
    from ffs.jobs.batch.spark_features import ROW
    from ffs.jobs.batch.training_set import prepare_entities

    raw = inputs.read_raw(spark, path)
    required = point_columns()
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise InputError(f"entity table is missing column(s) {missing}; expected at least "
                         f"{required}, found {list(raw.columns)}")
    id_types = _ids.types(cfg)
    ids = set(schema.id_columns())
    out = StructType([StructField(ROW, LongType())] + [
        StructField(f.name, TimestampType() if f.name == "event_timestamp" else
                    (LongType() if id_types.of(f.name) == INT else StringType())
                    if f.name in ids else f.dataType)
        for f in raw.schema.fields])
    as_read = inputs.as_read(raw)

    def run(batches):
        for part in batches:
            rows = part.pop(ROW)
            ready = prepare_entities(as_read(part), id_types)
            ready.insert(0, ROW, rows.to_numpy())
            yield ready

    numbered = raw.select(F.monotonically_increasing_id().alias(ROW), "*")
    return numbered.mapInPandas(run, schema=out)


def _events(cfg: Config, spark, store: OfflineStore, work: Path, transactions, labels):
    """(transactions, labels, {kind: {reason: rows}}): the offline store's, or the files'
    normalized here (their refused rows counted, as the in-process path does)."""
    id_types = _ids.types(cfg)
    rejected: dict[str, dict[str, int]] = {"transactions": {}, "labels": {}}
    if transactions is None:
        tx = _stored(spark, store, "transactions", id_types)
    else:
        raw = inputs.read_raw(spark, transactions)
        parts = inputs.partitions_for(spark, count_rows(transactions))
        folder = work / "transactions"
        inputs.normalize_transactions(raw, id_types, parts, work / "tx-rejects") \
            .write.parquet(str(folder))
        tx = spark.read.parquet(str(folder))
        rejected["transactions"] = inputs.reject_counts(work / "tx-rejects")
    if labels is None:
        lab = _stored(spark, store, "labels", id_types) if store.exists("labels") \
            else spark.createDataFrame([], _label_type(id_types))
    else:
        raw = inputs.read_raw(spark, labels)
        parts = inputs.partitions_for(spark, count_rows(labels))
        folder = work / "labels"
        inputs.normalize_labels(raw, tx, id_types, parts, work / "label-rejects") \
            .write.parquet(str(folder))
        lab = spark.read.parquet(str(folder))
        rejected["labels"] = inputs.reject_counts(work / "label-rejects")
    return tx, lab, rejected


def _stored(spark, store: OfflineStore, table: str, id_types):
    """A table of the offline store, its ids checked against today's declared types (the
    store keeps its backfill's; `stored_ids` says the same on the in-process path)."""
    from pyspark.sql.types import LongType, StringType

    if not store.exists(table):
        raise InputError(f"offline table '{table}' not found under {store.root}; "
                         f"run `ffs backfill` first (or pass the input files explicitly)")
    frame = spark.read.parquet(str(store.path(table))).drop(TABLES[table])
    for c in schema.id_columns():
        if c not in frame.columns:
            continue
        want = LongType if id_types.of(c) == INT else StringType
        if not isinstance(frame.schema[c].dataType, want):
            raise InputError(f"the offline store's {table}: {c} is stored as "
                             f"{frame.schema[c].dataType.simpleString()}, but ids.{c} is "
                             f"{id_types.of(c)}; backfill again after changing id types")
    return frame


def _label_type(id_types) -> str:
    tid = "bigint" if id_types.of("transaction_id") == INT else "string"
    return f"transaction_id {tid}, is_fraud bigint, label_timestamp timestamp"


def _write_one_file(table, order: str, dest: Path, work: Path) -> int:
    """`table` in `order`, without it, as one file at `dest` (one task writes it, the
    stages before it stay parallel); its row count."""
    tmp = work / f"out-{uuid.uuid4().hex[:8]}"
    ordered = table.repartition(1).sortWithinPartitions(order).drop(order)
    if dest.suffix.lower() == ".csv":
        ordered.write.option("header", True).csv(str(tmp))
        part = next(tmp.glob("part-*.csv"))
    else:
        ordered.write.parquet(str(tmp))
        part = next(tmp.glob("part-*.parquet"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(part), str(dest))
    return (count_rows(dest) or 0) if dest.suffix.lower() != ".csv" else _csv_rows(dest)


def _csv_rows(path: Path) -> int:
    with path.open("rb") as f:
        return max(sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1,
                   0)
