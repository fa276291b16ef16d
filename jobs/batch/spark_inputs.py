"""The backfill's inputs read and normalized on Spark: the data model's rules
(transformations/schema.py, the one owner of them) run per partition, so no process holds
the whole input and the driver only sees counts.

    raw transactions -- canonical transaction_id (a pandas udf on that one column)
        -- repartition by it: every copy of one payment lands in one partition
        -- per partition, in input order: schema.normalize_transactions
           (every per-row rule, then "the first valid copy wins", then the udfs)
    raw labels -- the same canonical key -- cogrouped by bucket with the accepted
        transactions' (id, time) -- per bucket: schema.normalize_labels
           (duplicates and conflicts, orphans, labels before their payment)

A partition returns its accepted rows to Spark and writes its rejects itself, as the local
engine keeps them (original values as text, and the reason), to one Parquet file named by
the partition, in a folder the caller gives: the normalization runs once, and a retried
task rewrites its own file rather than adding a second.

Input order is files by name, then rows in file order (what pandas reads): Spark numbers
the rows it reads, and a file's index breaks ties between files.
"""

from __future__ import annotations

import math
import re
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ffs.errors import InputError
from ffs.transformations import schema
from ffs.transformations.ids import INT, IdTypes, canonical_series

_FILE, _POS, _KEY = "_file", "_pos", "_key"
HELPERS = (_FILE, _POS, _KEY)
# rows per partition of the normalization: one pandas call each, so a Python worker's
# memory is bounded by this, not by the input (about 1 KiB a row while normalizing)
ROWS_PER_PARTITION = 250_000


def read_raw(spark, path: str | Path):
    """A Parquet file or directory, or a CSV (every column as text: the rules parse them,
    as they parse pandas' guesses)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    suffix = p.suffix.lower()
    try:
        if p.is_dir() or suffix in (".parquet", ".pq"):
            return _micro_timestamps(spark.read.parquet(str(p)), p)
        if suffix in (".csv", ".gz", ".txt"):
            return spark.read.option("header", True).csv(str(p))
    except Exception as exc:  # the reader's own message says what is wrong with the file
        raise InputError(f"could not read {p}: {exc}") from exc
    raise InputError(f"unsupported input format for {p}: expected .parquet or .csv")


def _micro_timestamps(raw, path: Path):
    """Nanosecond timestamps (pandas' default) as Spark's microsecond ones, naive or UTC as
    the file has them. Spark refuses them, so the session reads them as their raw longs
    (spark.sql.legacy.parquet.nanosAsLong); the file's own schema says which they are."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyspark.sql import functions as F

    nanos = {f.name: f.type.tz for f in ds.dataset(path, format="parquet").schema
             if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}
    if not nanos:
        return raw
    return raw.withColumns({
        c: F.expr(f"timestamp_micros(`{c}` div 1000)" if tz else
                  f"cast(timestamp_micros(`{c}` div 1000) as timestamp_ntz)")
        for c, tz in nanos.items()})


def as_read(raw):
    """A function giving a partition's frame the values pandas would have read: Spark hands
    its UTC timestamps to pandas without their zone."""
    from pyspark.sql.types import TimestampType

    aware = [f.name for f in raw.schema.fields if isinstance(f.dataType, TimestampType)]

    def fix(part: pd.DataFrame) -> pd.DataFrame:
        for c in aware:
            part[c] = part[c].dt.tz_localize("UTC")
        return part

    return fix


def partitions_for(spark, rows: int | None) -> int:
    """Enough partitions to keep each one's pandas call near ROWS_PER_PARTITION rows, and
    at least one per core."""
    cores = spark.sparkContext.defaultParallelism
    return max(cores, math.ceil((rows or 0) / ROWS_PER_PARTITION))


def normalize_transactions(raw, id_types: IdTypes, partitions: int, rejects: Path):
    """The accepted transactions (lazy: Spark runs them when they are written); the refused
    ones land in `rejects` as they are met."""
    from ffs.transformations.features import COMPILED

    raw = _renamed(raw, schema.HANDBOOK_RENAMES)
    schema.require_transaction_columns(raw.columns, COMPILED)
    out = _typed_schema(raw, id_types, COMPILED)
    keyed = _numbered(raw).withColumn(
        _KEY, _canonical_key(raw, "transaction_id", id_types.of("transaction_id")))
    where, readable = str(rejects), as_read(raw)

    def run(batches):
        from pyspark import TaskContext

        part = _whole(batches)
        if part is None:
            return
        part = part.sort_values([_FILE, _POS], kind="stable").drop(columns=list(HELPERS))
        norm = schema.normalize_transactions(readable(part), id_types, COMPILED)
        _write_rejects(norm.rejects, where, TaskContext.get().partitionId())
        yield norm.rows[out.fieldNames()]

    return keyed.repartition(partitions, _KEY).mapInPandas(run, schema=out)


def normalize_labels(raw, transactions, id_types: IdTypes, partitions: int, rejects: Path):
    """Labels checked against `transactions` (accepted, with transaction_id and
    event_timestamp), bucket by bucket of their canonical id; the refused ones land in
    `rejects`."""
    from pyspark.sql import functions as F

    raw = _renamed(raw, {"TX_FRAUD": "is_fraud"})
    schema.require_columns(raw.columns, schema.LABEL_COLUMNS, "labels")
    key = _canonical_key(raw, "transaction_id", id_types.of("transaction_id"))
    where, readable = str(rejects), as_read(raw)

    def bucket(col):
        return F.pmod(F.xxhash64(col), F.lit(partitions)).alias("_b")

    labels = raw.select(bucket(key), *raw.columns)
    known = transactions.select(bucket(F.col("transaction_id")), "transaction_id",
                                "event_timestamp")

    def run(part: pd.DataFrame, tx: pd.DataFrame) -> pd.DataFrame:
        if part.empty:  # a bucket of transactions no label names
            return pd.DataFrame({"transaction_id": pd.Series([], dtype="object"),
                                 "is_fraud": pd.Series([], dtype="int64"),
                                 "label_timestamp": pd.Series([], dtype="datetime64[ns, UTC]")})
        norm = schema.normalize_labels(readable(part.drop(columns="_b")),
                                       _as_read_utc(tx.drop(columns="_b")), id_types)
        _write_rejects(norm.rejects, where, int(part["_b"].iloc[0]))
        return norm.rows

    return labels.groupBy("_b").cogroup(known.groupBy("_b")).applyInPandas(
        run, schema=_label_schema(id_types))


def reject_counts(rejects: Path) -> dict[str, int]:
    """{reason: rows} over one input's rejects files, most common first."""
    import pyarrow.dataset as ds

    files = sorted(rejects.glob("part-*.parquet")) if rejects.exists() else []
    if not files:
        return {}
    reasons = ds.dataset([str(f) for f in files], format="parquet").to_table(
        columns=["reason"]).column("reason").value_counts()
    got = {str(v["values"]): int(v["counts"]) for v in reasons.to_pylist()}
    return dict(sorted(got.items(), key=lambda kv: -kv[1]))


def merge_rejects(rejects: Path, target: Path) -> None:
    """One input's rejects files as one Parquet file of text columns, batch by batch (they
    may be many rows)."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    files = [str(f) for f in sorted(rejects.glob("part-*.parquet"))]
    dataset = ds.dataset(files, format="parquet")
    # pandas' metadata kept: the columns read back as the local engine's file's do (text)
    text = pa.schema([pa.field(n, pa.string()) for n in dataset.schema.names],
                     metadata=dataset.schema.metadata)
    target.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(str(target), text) as out:
        for batch in dataset.to_batches():
            out.write_table(pa.Table.from_batches([batch]).cast(text))


def relevant_labels(labels):
    """engine.relevant_labels on Spark: only labels of transactions labelled fraud at some
    point can change a fraud count."""
    from pyspark.sql import functions as F

    ever = labels.where(F.col("is_fraud") == 1).select("transaction_id").distinct()
    return labels.join(ever, on="transaction_id", how="left_semi")


_WORKER_ERROR = re.compile(r"ffs\.errors\.InputError: (.+)")


@contextmanager
def worker_errors():
    """A task's InputError (a bad entity row, a udf refusing its input: found where the rows
    are) raised here as the InputError it is, not as Spark's trace of it."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        found = _WORKER_ERROR.search(str(exc))
        if found is None:
            raise
        raise InputError(found.group(1).strip()) from None


def empty_labels(spark):
    return spark.createDataFrame([], "transaction_id string, is_fraud string, "
                                     "label_timestamp string")


# --- helpers ---------------------------------------------------------------------------

def _renamed(raw, renames: dict[str, str]):
    for old, new in renames.items():
        if old in raw.columns and new not in raw.columns:
            raw = raw.withColumnRenamed(old, new)
    return raw


def _numbered(raw):
    """raw with its input position: the file's index among the input files by name, and
    Spark's row number (increasing in file order within a file)."""
    from pyspark.sql import functions as F

    files = sorted(raw.inputFiles())
    index = F.create_map(*[x for i, f in enumerate(files) for x in (F.lit(f), F.lit(i))]) \
        if files else None
    file_col = index[F.input_file_name()] if index is not None else F.lit(0)
    return raw.select("*", file_col.cast("int").alias(_FILE),
                      F.monotonically_increasing_id().alias(_POS))


def _canonical_key(raw, column: str, kind: str):
    """The canonical form of an id column (null where refused), typed as the normalized
    column is, so its hash is the accepted rows' hash. Integer columns are their own
    canonical form (as text for text ids), and so are text columns of text ids (a refused
    one is refused wherever it lands); anything else goes through the data model's rule, a
    pandas udf on that one column."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegralType, StringType

    given = raw.schema[column].dataType
    if isinstance(given, IntegralType):
        return F.col(column).cast("bigint" if kind == INT else "string")
    if isinstance(given, StringType) and kind != INT:
        return F.col(column)

    def canonical(values: pd.Series) -> pd.Series:
        return canonical_series(values, kind)[0]

    udf = F.pandas_udf(canonical, "bigint" if kind == INT else "string")  # type: ignore[call-overload]
    return udf(F.col(column))


def _whole(batches) -> pd.DataFrame | None:
    frames = list(batches)
    if not frames:
        return None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

def _as_read_utc(tx: pd.DataFrame) -> pd.DataFrame:
    """Accepted transactions (their times are UTC) as a partition receives them."""
    return tx.assign(event_timestamp=tx["event_timestamp"].dt.tz_localize("UTC"))


def _write_rejects(rejects: pd.DataFrame, folder: str, part: int) -> None:
    """One partition's rejects (text columns and the reason) as folder/part-N.parquet,
    written whole under a temporary name, so a retried task replaces it."""
    if rejects.empty:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".part-{part:05d}-{uuid.uuid4().hex[:8]}.parquet"
    pq.write_table(pa.Table.from_pandas(rejects.astype("string"), preserve_index=False), tmp)
    tmp.replace(out / f"part-{part:05d}.parquet")


def _typed_schema(raw, id_types: IdTypes, compiled):
    """The normalized transactions' Spark schema: the repo's columns typed as the data model
    types them, then the extra columns as they came."""
    from pyspark.sql.types import (
        DataType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    ids = set(schema.id_columns(compiled))
    fields = []
    kind: DataType
    for c in schema.tx_columns(compiled):
        if c == "event_timestamp":
            kind = TimestampType()
        elif c in ids:
            kind = LongType() if id_types.of(c) == INT else StringType()
        elif compiled.values.get(c) == "number":
            kind = DoubleType()
        else:
            kind = StringType()
        fields.append(StructField(c, kind))
    named = {f.name for f in fields}
    fields += [f for f in raw.schema.fields if f.name not in named]
    return StructType(fields)


def _label_schema(id_types: IdTypes):
    from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

    tid = LongType() if id_types.of("transaction_id") == INT else StringType()
    return StructType([StructField("transaction_id", tid), StructField("is_fraud", LongType()),
                       StructField("label_timestamp", TimestampType())])
