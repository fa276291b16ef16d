"""The batch engine distributed by Spark: entity buckets, each computed by the NumPy engine.

Customer features need only the customer's transactions; terminal features need only the
terminal's transactions and their labels. So each side is a cogroup by hash bucket of the
entity key, and inside a bucket `transformations.engine` computes exact windows for all its
entities at once (REFERENCE: growing prefixes, not Spark's sliding frames). The two halves
are joined back on the request point's row id.
"""

from __future__ import annotations

import pandas as pd

from transformations import engine
from transformations.features import (
    RECENCY_FEATURES,
    REQUEST_FEATURES,
    Entity,
    feature_dtypes,
    windows_for,
)

ROW = "_row"  # request point id carried through the job
_SPARK_TYPES = {"int64": "bigint", "float64": "double"}


def _schema(names: list[str], carried: str = "") -> str:
    dtypes = feature_dtypes()
    cols = [f"{ROW} bigint"] + ([carried] if carried else [])
    return ", ".join(cols + [f"`{n}` {_SPARK_TYPES[dtypes[n]]}" for n in names])


def _empty(schema_names: list[str]) -> pd.DataFrame:
    dtypes = feature_dtypes()
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "int64")) for c in schema_names})


def _customer_names() -> list[str]:
    return ([f.name for f in REQUEST_FEATURES] + [f.name for f in windows_for(Entity.CUSTOMER)]
            + [r.name for r in RECENCY_FEATURES if r.entity == Entity.CUSTOMER])


def _terminal_names() -> list[str]:
    return [f.name for f in windows_for(Entity.TERMINAL)]


CARRIED = ["customer_id", "terminal_id", "event_timestamp"]


def _customer_bucket(events: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Customer side of one bucket; also carries the point's keys and time to the output."""
    names = _customer_names()
    if points.empty:
        return points[[ROW, *CARRIED]].join(_empty(names))
    points = points.reset_index(drop=True)
    cust = engine.customer_features(events, points)
    req = engine.request_features(points, cust)
    out = pd.concat([points[[ROW, *CARRIED]], req, cust], axis=1)
    return out[[ROW, *CARRIED, *names]]


def _terminal_bucket(events: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    names = _terminal_names()
    if points.empty:
        return _empty([ROW, *names])
    points = points.reset_index(drop=True)
    is_label = events["is_label"].astype(bool)
    tx = events.loc[~is_label, ["terminal_id", "event_timestamp"]]
    labels = events.loc[is_label, ["transaction_id", "terminal_id", "event_timestamp",
                                   "is_fraud", "label_timestamp"]]
    labels = labels.assign(is_fraud=labels["is_fraud"].astype("int64"))
    term = engine.terminal_features(tx, labels, points)
    out = pd.concat([points[[ROW]], term], axis=1)
    return out[[ROW, *names]]


def spark_features(tx, labels, points, buckets: int):
    """Two Spark DataFrames, one row per request point each, keyed by ROW:
    (ROW, customer_id, terminal_id, event_timestamp, request and customer features) and
    (ROW, terminal features). They are joined by the caller, on the driver: a Spark join
    would shuffle every feature column once more.

    tx: transaction_id, customer_id, terminal_id, event_timestamp, amount.
    labels: transaction_id, is_fraud, label_timestamp.
    points: ROW, customer_id, terminal_id, event_timestamp, amount (amount may be null);
    None means "the transactions themselves" (the backfill), with ROW = transaction_id,
    which saves shuffling the same rows twice.
    """
    from pyspark.sql import functions as F

    def bucket(col: str):
        return F.pmod(F.xxhash64(F.col(col)), F.lit(buckets)).alias("_b")

    types = dict(tx.dtypes)
    carried = ", ".join(f"{c} {types[c]}" for c in CARRIED)
    cust_schema = _schema(_customer_names(), carried)
    term_schema = _schema(_terminal_names())

    cust_events = tx.select(bucket("customer_id"), "customer_id", "terminal_id",
                            "event_timestamp", "amount")
    tx_side = tx.select("transaction_id", "terminal_id", "event_timestamp")
    # Renamed copies give the label side its own column lineage (no ambiguous self-join).
    labelled = labels.join(
        tx.select(F.col("transaction_id"), F.col("terminal_id").alias("_term"),
                  F.col("event_timestamp").alias("_ts")),
        on="transaction_id", how="inner")
    term_events = tx_side.select(
        bucket("terminal_id"), "transaction_id", "terminal_id", "event_timestamp",
        F.lit(None).cast("bigint").alias("is_fraud"),
        F.lit(None).cast("timestamp").alias("label_timestamp"), F.lit(False).alias("is_label"),
    ).unionByName(labelled.select(
        bucket("_term"), "transaction_id", F.col("_term").alias("terminal_id"),
        F.col("_ts").alias("event_timestamp"), F.col("is_fraud").cast("bigint").alias("is_fraud"),
        "label_timestamp", F.lit(True).alias("is_label"),
    ))

    if points is None:
        def cust_self(e: pd.DataFrame) -> pd.DataFrame:
            e = e.drop(columns="_b").reset_index(drop=True)
            return _customer_bucket(e, e.rename(columns={"transaction_id": ROW}))

        def term_self(e: pd.DataFrame) -> pd.DataFrame:
            e = e.drop(columns="_b").reset_index(drop=True)
            pts = e.loc[~e["is_label"].astype(bool), [ "transaction_id", "terminal_id",
                                                       "event_timestamp"]]
            return _terminal_bucket(e, pts.rename(columns={"transaction_id": ROW}))

        cust_events = tx.select(bucket("customer_id"), "transaction_id", "customer_id",
                                "terminal_id", "event_timestamp", "amount")
        # the driver already has each transaction's keys and time: do not carry them back
        customer = (cust_events.groupBy("_b").applyInPandas(cust_self, schema=cust_schema)
                    .drop(*CARRIED))
        terminal = term_events.groupBy("_b").applyInPandas(term_self, schema=term_schema)
        return customer, terminal

    cust_points = points.select(bucket("customer_id"), ROW, *CARRIED, "amount")
    customer = (
        cust_events.groupBy("_b").cogroup(cust_points.groupBy("_b"))
        .applyInPandas(lambda e, p: _customer_bucket(e.drop(columns="_b"), p.drop(columns="_b")),
                       schema=cust_schema)
    )
    term_points = points.select(bucket("terminal_id"), ROW, "terminal_id", "event_timestamp")
    terminal = (
        term_events.groupBy("_b").cogroup(term_points.groupBy("_b"))
        .applyInPandas(lambda e, p: _terminal_bucket(e.drop(columns="_b"), p.drop(columns="_b")),
                       schema=term_schema)
    )
    return customer, terminal
