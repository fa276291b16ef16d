"""`ffs replay`: publish a transactions file (and its labels) to the bus in event-time order,
as fast as possible or at N times real time. Transactions and labels are merged into one
timeline (a label at its label_timestamp, after its transaction on ties), so the stream sees
what production would: payments, and chargebacks days later.

The transactions are the normalized frame the offline store keeps (transformations/schema.py):
transaction_id, the loaded repo's join keys, event_timestamp and its value columns; each
becomes the message bus/messages.py describes, keyed as the producer keys it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ffs.bus.messages import NUMBER, PARTITION_KEYS
from ffs.bus.producer import EventProducer
from ffs.config import KafkaConfig
from ffs.transformations import schema
from ffs.transformations.declarations import KEY_SEPARATOR
from ffs.transformations.features import INPUT_COLUMNS, KEY_COLUMNS
from ffs.transformations.ids import TEXT, IdTypes
from ffs.transformations.timestamps import to_seconds


@dataclass
class ReplaySummary:
    transactions: int
    labels: int
    rejected: int
    seconds: float

    @property
    def rate(self) -> float:
        return (self.transactions + self.labels) / max(self.seconds, 1e-9)


def _text(values: pd.Series) -> pd.Series:
    """JSON string literals; a fast path when every id is plain (the common case)."""
    s = values.astype(str)
    if s.str.fullmatch(TEXT.pattern).all():
        return '"' + s + '"'
    return s.map(json.dumps)


def _iso(seconds: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s"), "Z")


def transaction_values(tx: pd.DataFrame) -> np.ndarray:
    """The messages' JSON text, built column-wise in the field order of
    bus/messages.transaction_message (ids as text, numbers as Python's repr)."""
    ts = to_seconds(tx["event_timestamp"])
    body = '{"transaction_id":' + _text(tx["transaction_id"])
    for key in KEY_COLUMNS:
        body = body + f',"{key}":' + _text(tx[key])
    body = body + ',"event_timestamp":"' + _iso(ts) + '"'
    for column, kind in INPUT_COLUMNS.items():  # a derived column is never sent
        if column not in tx.columns:  # an optional column the feed lacks
            value = "null"
        elif kind != NUMBER:
            value = _text(tx[column])
        else:  # an optional column's null is JSON's
            numbers = tx[column].astype(float)
            value = numbers.map(repr).where(numbers.notna(), "null")
        body = body + f',"{column}":' + value
    return (body + "}").to_numpy()


def transaction_keys(tx: pd.DataFrame) -> np.ndarray:
    """Each transaction's Kafka key (bus/messages.message_key): its first entity's key."""
    parts = [tx[k].astype(str) for k in PARTITION_KEYS]
    keys = parts[0]
    for part in parts[1:]:
        keys = keys + KEY_SEPARATOR + part
    return keys.to_numpy()


def label_values(labels: pd.DataFrame) -> np.ndarray:
    ts = to_seconds(labels["label_timestamp"])
    body = ('{"transaction_id":' + _text(labels["transaction_id"]) + ',"is_fraud":'
            + labels["is_fraud"].astype(int).astype(str) + ',"label_timestamp":"'
            + _iso(ts) + '"}')
    return body.to_numpy()


def load_events(transactions: str | Path, labels: str | Path | None = None,
                label_delay_s: int | None = None, id_types: IdTypes = schema.DEFAULT_IDS,
                ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Normalized transactions and labels. Without a labels file, labels come from the
    transactions' TX_FRAUD flag (the handbook's shape) `label_delay_s` after each payment."""
    raw = schema.read_table(transactions)
    norm = schema.normalize_transactions(raw, id_types)
    rejected = norm.n_rejected
    if labels is not None:
        nl = schema.normalize_labels(schema.read_table(labels), norm.rows, id_types)
        lab, rejected = nl.rows, rejected + nl.n_rejected
    elif label_delay_s is not None and "TX_FRAUD" in norm.rows.columns:
        lab = schema.labels_from_flags(norm.rows, delay=pd.Timedelta(seconds=label_delay_s))
    else:
        lab = pd.DataFrame({c: [] for c in schema.LABEL_COLUMNS})
    return norm.rows, lab, rejected


def replay(cfg: KafkaConfig, tx: pd.DataFrame, labels: pd.DataFrame, speed: float | None = None,
           progress: Callable[[str], None] | None = None, every_s: float = 2.0,
           shift_to_now: bool = False) -> ReplaySummary:
    """Publish in event-time order. speed None: as fast as the producer goes; speed N: N
    seconds of event time per wall second. shift_to_now moves the timeline so that its first
    event is now (for live demos; the data keeps its spacing)."""
    t0 = time.monotonic()
    tx_t = to_seconds(tx["event_timestamp"]) if len(tx) else np.zeros(0, np.int64)
    lab_t = to_seconds(labels["label_timestamp"]) if len(labels) else np.zeros(0, np.int64)
    shift = 0
    if shift_to_now and (len(tx_t) or len(lab_t)):
        shift = int(time.time()) - int(min(tx_t.min(initial=2**62), lab_t.min(initial=2**62)))
    if shift:
        tx = tx.assign(event_timestamp=tx["event_timestamp"] + pd.Timedelta(seconds=shift))
        labels = labels.assign(
            label_timestamp=labels["label_timestamp"] + pd.Timedelta(seconds=shift))
        tx_t, lab_t = tx_t + shift, lab_t + shift
    values = np.concatenate([transaction_values(tx) if len(tx) else np.zeros(0, object),
                             label_values(labels) if len(labels) else np.zeros(0, object)])
    keys = np.concatenate([transaction_keys(tx) if len(tx) else np.zeros(0, object),
                           labels["transaction_id"].astype(str).to_numpy()])
    times = np.concatenate([tx_t, lab_t])
    is_tx = np.arange(len(times)) < len(tx_t)
    order = np.argsort(times, kind="stable")  # transactions first on ties: labels follow
    bus = EventProducer(cfg, validate=False)
    topic = {True: cfg.transactions_topic, False: cfg.labels_topic}
    start_t = int(times[order[0]]) if len(order) else 0
    wall0, last_report, last_t = time.monotonic(), time.monotonic(), None
    for n, i in enumerate(order):
        t = int(times[i])
        if speed and t != last_t:
            wait = wall0 + (t - start_t) / speed - time.monotonic()
            if wait > 0:
                bus._producer.poll(0)
                time.sleep(wait)
            last_t = t
        bus.send_raw(topic[bool(is_tx[i])], keys[i].encode(), values[i].encode())
        if progress and n % 5000 == 0 and time.monotonic() - last_report >= every_s:
            last_report = time.monotonic()
            progress(f"{n:,}/{len(order):,} events published "
                     f"({n / (last_report - wall0):,.0f}/s), event time {_iso(np.array([t]))[0]}")
    bus.flush()
    return ReplaySummary(len(tx), len(labels), 0, time.monotonic() - t0)
