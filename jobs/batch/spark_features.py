"""The batch engine distributed by Spark: entity buckets, each computed by the NumPy engine.

An entity's features need only that entity's transactions (and, for fraud_rate, their
labels). So each entity of the repo is one side: a cogroup by hash bucket of the entity's
key columns (all of them, for a composite entity), and inside a bucket
`transformations.engine.entity_features` computes exact windows for all its entities at once
(REFERENCE: growing prefixes, not Spark's sliding frames). The sides are joined back on the
request point's row id, on the driver.

Request functions may read features of any entity: they run inside the first side that
holds every feature they read (the shipped repo's read the customer's), which keeps them in
the workers, or on the driver after the join when no one side does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ffs.transformations import engine
from ffs.transformations.features import (
    ENTITIES,
    REQUEST_FEATURES,
    REQUEST_FUNCTIONS,
    Agg,
    Entity,
    entity_feature_names,
    feature_dtypes,
    windows_for,
)
from ffs.transformations.request import TIME_FIELD

ROW = "_row"  # request point id carried through the job
# transactions per entity bucket: one pandas call of the NumPy engine each, so a Python
# worker's memory stays bounded (about 1.5 KiB a row; 2.8 GiB at the most measured) whatever
# the input's size
ROWS_PER_BUCKET = 250_000
_SPARK_TYPES = {"int64": "bigint", "float64": "double"}
_LABEL = "_is_label"
_REQUEST = "_request"  # the request functions' struct of results, before it is unpacked
_NOT_READ = ("event_timestamp", "is_fraud")  # the time, and the labels' own column


@dataclass(frozen=True)
class Side:
    """One entity's share of the job: what its buckets read and what they return."""

    index: int
    entity: Entity
    values: tuple[str, ...]  # event columns its windows read beyond its keys and time
    labels: bool  # it has fraud_rate features, so its events carry their labels
    request: bool  # it also runs the request functions

    @property
    def name(self) -> str:
        """Its output folder (entity names may hold "+": keep paths plain)."""
        return f"side-{self.index}"

    def names(self) -> list[str]:
        req = [f.name for f in REQUEST_FEATURES] if self.request else []
        return req + entity_feature_names(self.entity)


def buckets_for(transactions: int | None, configured: int) -> int:
    """Entity buckets for this many transactions: `configured` (spark.buckets) or enough to
    keep each near ROWS_PER_BUCKET."""
    return max(configured, math.ceil((transactions or 0) / ROWS_PER_BUCKET))


def request_host() -> Entity | None:
    """The first entity holding every feature the request functions read, or None (then
    they run on the driver)."""
    if not REQUEST_FUNCTIONS:
        return None
    reads = {n for fn in REQUEST_FUNCTIONS for n in fn.feature_inputs}
    for e in ENTITIES:
        if reads <= set(entity_feature_names(e)):
            return e
    return None


def sides() -> list[Side]:
    host = request_host()
    out = []
    for i, e in enumerate(ENTITIES):
        windows = windows_for(e)
        # value columns, or another entity's key (the shipped customer's distinct terminals)
        values = tuple(dict.fromkeys(f.column for f in windows if f.column is not None
                                     and f.column not in (*e.keys, *_NOT_READ)))
        out.append(Side(i, e, values, any(f.agg == Agg.FRAUD_RATE for f in windows),
                        e == host))
    return out


def request_fields() -> list[str]:
    """The request functions' fields other than the time (amount, channel, ...)."""
    return list(dict.fromkeys(n for fn in REQUEST_FUNCTIONS for n in fn.request_inputs
                              if n != TIME_FIELD))


def _schema(names: list[str], row_type: str) -> str:
    dtypes = feature_dtypes()
    return ", ".join([f"{ROW} {row_type}"]
                     + [f"`{n}` {_SPARK_TYPES[dtypes[n]]}" for n in names])


def _empty(names: list[str]) -> pd.DataFrame:
    dtypes = feature_dtypes()
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "int64")) for c in names})


def _split(side: Side, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A bucket's events: (transactions, their labels or None)."""
    if not side.labels:
        return events, None
    is_label = events[_LABEL].to_numpy(dtype=bool)
    tx = events.loc[~is_label].reset_index(drop=True)
    labels = events.loc[is_label, ["transaction_id", *side.entity.keys, "event_timestamp",
                                   "is_fraud", "label_timestamp"]]
    return tx, labels.assign(is_fraud=labels["is_fraud"].astype("int64"))


def side_bucket(side: Side, events: pd.DataFrame, points: pd.DataFrame | None) -> pd.DataFrame:
    """One bucket of one side: ROW and the side's features per point. points=None: the
    bucket's transactions themselves, ROW being their transaction_id."""
    names = side.names()
    tx, labels = _split(side, events.drop(columns="_b"))
    if points is None:
        tx = tx.assign(**{ROW: tx["transaction_id"]})
        points = tx  # the same frame: the engine's shortcut for the events themselves
    else:
        points = points.drop(columns="_b").reset_index(drop=True)
    if points.empty:
        return pd.concat([points[[ROW]], _empty(names)], axis=1)
    cols = engine.entity_features(side.entity, tx, labels, points)
    parts = [points[[ROW]], cols]
    if side.request:
        parts.insert(1, engine.request_frame(points, cols))
    return pd.concat(parts, axis=1)[[ROW, *names]]


def spark_features(tx, labels, points, buckets: int) -> list:
    """One Spark DataFrame per side (see `sides()`), one row per request point each, keyed
    by ROW. They are joined by the caller, on the driver: a Spark join would shuffle every
    feature column once more.

    tx: transaction_id, event_timestamp, every join key, the value columns (and the request
    fields it has). labels: transaction_id, is_fraud, label_timestamp.
    points: ROW, every join key, event_timestamp, the request fields it has; None means
    "the transactions themselves" (the backfill), with ROW = transaction_id, which saves
    shuffling the same rows twice.
    """
    from pyspark.sql import functions as F

    types = dict(tx.dtypes)
    fields = [c for c in request_fields()
              if c in (tx.columns if points is None else points.columns)]
    row_type = types["transaction_id"] if points is None else "bigint"
    def bucket(*cols: str):
        return F.pmod(F.xxhash64(*[F.col(c) for c in cols]), F.lit(buckets)).alias("_b")

    out = []
    for side in sides():
        keys = list(side.entity.keys)
        carried = list(dict.fromkeys([*side.values,
                                      *(fields if side.request and points is None else [])]))
        carried = [c for c in carried if c not in keys]
        events = tx.select(bucket(*keys), "transaction_id", *keys, "event_timestamp", *carried)
        if side.labels:
            events = _with_labels(F, events, tx, labels, keys, carried, types, buckets)
        schema = _schema(side.names(), row_type)
        if points is None:
            out.append(events.groupBy("_b").applyInPandas(_own_points(side), schema=schema))
            continue
        extra = [c for c in fields if c not in keys] if side.request else []
        side_points = points.select(bucket(*keys), ROW, *keys, "event_timestamp", *extra)
        out.append(events.groupBy("_b").cogroup(side_points.groupBy("_b"))
                   .applyInPandas(_with_points(side), schema=schema))
    return out


# Spark passes the group key too to a function of one more argument than it expects: these
# take exactly the frames.
def _own_points(side: Side):
    def run(events: pd.DataFrame) -> pd.DataFrame:
        return side_bucket(side, events, None)
    return run


def _with_points(side: Side):
    def run(events: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
        return side_bucket(side, events, points)
    return run


def _with_labels(F, events, tx, labels, keys: list[str], carried: list[str], types: dict,
                 buckets: int):
    """The side's transactions and, flagged, each label with its transaction's keys and
    time, in the same buckets."""
    renamed = {k: f"_k{i}" for i, k in enumerate(keys)}
    # Renamed copies give the label side its own column lineage (no ambiguous self-join).
    labelled = labels.join(
        tx.select(F.col("transaction_id"), *[F.col(k).alias(renamed[k]) for k in keys],
                  F.col("event_timestamp").alias("_ts")),
        on="transaction_id", how="inner")
    hashed = F.pmod(F.xxhash64(*[F.col(renamed[k]) for k in keys]), F.lit(buckets)).alias("_b")
    tx_rows = events.select(
        "*", F.lit(None).cast("bigint").alias("is_fraud"),
        F.lit(None).cast("timestamp").alias("label_timestamp"), F.lit(False).alias(_LABEL))
    label_rows = labelled.select(
        hashed, "transaction_id", *[F.col(renamed[k]).alias(k) for k in keys],
        F.col("_ts").alias("event_timestamp"),
        *[F.lit(None).cast(types[c]).alias(c) for c in carried],
        F.col("is_fraud").cast("bigint").alias("is_fraud"), "label_timestamp",
        F.lit(True).alias(_LABEL))
    return tx_rows.unionByName(label_rows)


def with_request_features(table, drop: list[str]):
    """The request functions no one entity hosts, over a table of every feature and the
    request fields; the fields in `drop` are left out of the result, and the request
    features come last. A scalar pandas udf sends Python only the columns the functions
    read and gets back only what they return (10 columns out and 8 back for the shipped
    repo, where a mapInPandas moved all 40 both ways)."""
    from pyspark.sql import functions as F

    from ffs.transformations.features import REQUEST_FEATURES

    dtypes = feature_dtypes()
    names = [f.name for f in REQUEST_FEATURES]
    # a request field the rows lack is absent to the functions too, as in process
    reads = [c for c in dict.fromkeys(n for fn in REQUEST_FUNCTIONS
                                      for n in (*fn.request_inputs, *fn.feature_inputs))
             if c in table.columns]
    returns = ", ".join(f"`{n}` {_SPARK_TYPES[dtypes[n]]}" for n in names)

    def run(*columns: pd.Series) -> pd.DataFrame:
        part = pd.DataFrame(dict(zip(reads, columns, strict=True)))
        got = engine.request_features(part, part)
        return pd.DataFrame({n: got[n] for n in names})

    udf = F.pandas_udf(run, returns)  # type: ignore[call-overload]
    kept = [c for c in table.columns if c not in drop and c not in names]
    return table.withColumn(_REQUEST, udf(*[F.col(f"`{c}`") for c in reads])).select(
        *[F.col(f"`{c}`") for c in kept],
        *[F.col(f"{_REQUEST}.`{n}`").alias(n) for n in names])
