"""Message schemas on the bus, and the parsing that turns raw bytes into events or a
dead-letter reason. Every topic carries JSON objects (UTF-8), one per message.

The transaction's columns are the loaded feature repo's (transformations/features.py): its
join keys (KEY_COLUMNS) and the value columns its windows read (VALUE_COLUMNS). The shipped
repo (feature_repo/) is the example below: keys customer_id and terminal_id, one value
column, amount.

transactions topic (key: the first entity's key value, e.g. customer_id, so one entity's
payments keep their order on one partition; a composite first entity joins its key values
with KEY_SEPARATOR)
    transaction_id   string or integer, read by its declared type (config `ids`; the id model
                     of transformations/ids.py: 1-128 characters of [A-Za-z0-9_.:@/+=-]);
                     outgoing messages carry the canonical id as text
    <each join key>  same rules, by its own declared type (e.g. customer_id, terminal_id);
                     a bad one is bad_entity_id naming the column
    event_timestamp  ISO 8601 (naive means UTC) or epoch seconds / milliseconds / microseconds
    <each value column>
                     "number" (e.g. amount): a JSON number, finite, 0 <= x <= MAX_AMOUNT
                     (bad_amount naming the column); "text": an id-like text, the ids' rule
                     (bad_entity_id naming the column), kept as text; an optional column
                     (the source's ffs.optional tag) may be missing or null, otherwise a
                     finite number of either sign. Columns the views' udfs derive are not
                     sent: every path computes them (transformations/derived.py)
labels topic (key: transaction_id)
    transaction_id   as above; the transaction must be known (or arrive within the allowed
                     lateness)
    is_fraud         0/1 or true/false
    label_timestamp  when the label became known, as event_timestamp
enriched topic (key: transaction_id), two kinds of rows that upsert one record per key
    {"kind": "transaction", transaction_id, <each join key>, event_time_ms, <each value
     column>, <every feature of the repo's service, null when undefined>, processed_at_ms}
    (the shipped repo: transaction_id, customer_id, terminal_id, event_time_ms, amount, ...)
    {"kind": "label", transaction_id, is_fraud, label_time_ms, processed_at_ms}
    A transaction row may be published again with corrected features when an event of the
    same entity arrives late; the last row per key is the exact one (upsert semantics).
dead-letter topic (key: "<topic>/<partition>/<offset>" of the refused message)
    {reason, detail, source_topic, partition, offset, key, value | value_base64,
     kafka_timestamp_ms, dead_lettered_at_ms}

Unknown extra fields are ignored, so producers can add context without breaking the job.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from ffs.transformations import ids
from ffs.transformations.declarations import KEY_SEPARATOR, hundredth
from ffs.transformations.derived import DerivedError, derive, derive_event
from ffs.transformations.features import (
    DERIVED_FUNCTIONS,
    ENTITIES,
    INPUT_COLUMNS,
    KEY_COLUMNS,
    OPTIONAL_COLUMNS,
    VALUE_COLUMNS,
)
from ffs.transformations.schema import MAX_AMOUNT
from ffs.transformations.timestamps import RANGE_TEXT, in_range, parse_iso, per_second

# dead-letter reasons (stable codes: dashboards and alerts count by them)
NOT_JSON = "not_json"
NOT_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_ID = "bad_entity_id"
BAD_AMOUNT = "bad_amount"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE = "future_timestamp"
TOO_LATE = "too_late"
BEYOND_RETENTION = "beyond_retention"
UNKNOWN_TRANSACTION = "unknown_transaction"
CONFLICT = "conflicting_duplicate"
LABEL_BEFORE_TRANSACTION = "label_before_transaction"
TOO_LARGE = "too_large"
REASONS = (NOT_JSON, NOT_OBJECT, MISSING_FIELD, BAD_TYPE, BAD_ID, BAD_AMOUNT, BAD_TIMESTAMP,
           FUTURE, TOO_LATE, BEYOND_RETENTION, UNKNOWN_TRANSACTION, CONFLICT, TOO_LARGE,
           LABEL_BEFORE_TRANSACTION)

MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_IDS = ids.IdTypes()


class Refused(Exception):
    """A message that cannot become an event: reason is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# the columns a transaction carries besides its id and time, in the order they are stored,
# sent and compared: every join key, then every value column
COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, *VALUE_COLUMNS)
DERIVED: frozenset[str] = frozenset(c for c in VALUE_COLUMNS if c not in INPUT_COLUMNS)
NUMBER, TEXT = "number", "text"
# Kafka key of a transaction: the first entity's key value(s). One entity's events then stay
# in order on one partition (the stream judges lateness per partition); the first entity is
# the service's first, the shipped repo's customer_id.
PARTITION_KEYS: tuple[str, ...] = ENTITIES[0].keys if ENTITIES else ()


@dataclass(frozen=True)
class Transaction:
    """One accepted transaction event (hashable: the stream keeps sets of them).

    columns: (name, value) of every join key (canonical id text) and every value column
    (float for "number", str for "text"), in COLUMNS order."""

    transaction_id: str
    t: int  # epoch seconds (the store's resolution)
    columns: tuple[tuple[str, object], ...]

    @classmethod
    def of(cls, transaction_id: object, t: int, values: Mapping[str, object]) -> Transaction:
        """From any mapping holding every key and value column (a writer event, a stored
        record, a test's dict); other entries are ignored. Ids become text, numbers float."""
        if DERIVED and not DERIVED <= values.keys():  # as sent: computed as on every path
            values = {**values, **_derived(int(t), values)}
        return cls(str(transaction_id), int(t),
                   tuple((c, _plain(c, values.get(c))) for c in COLUMNS))

    @classmethod
    def from_event(cls, event: Mapping[str, object]) -> Transaction:
        """From a writer event dict (transaction_id, t, keys, values): the inverse of event()."""
        return cls.of(event["transaction_id"], int(event["t"]), event)  # type: ignore[call-overload]

    def get(self, name: str) -> object:
        for column, value in self.columns:
            if column == name:
                return value
        raise KeyError(f"a transaction has no column {name!r}; it has {list(COLUMNS)}")

    def event(self) -> dict[str, object]:
        """The OnlineWriter.write_transactions event: transaction_id, t, keys, values."""
        return {"transaction_id": self.transaction_id, "t": self.t, **dict(self.columns)}

    def row(self) -> dict[str, object]:
        """The OnlineClient.get_features row that scores this transaction at its own time."""
        return {"transaction_id": self.transaction_id, "event_timestamp": self.t,
                **dict(self.columns)}

    def key(self) -> str:
        """The Kafka message key (PARTITION_KEYS)."""
        return message_key(dict(self.columns))


def _plain(column: str, value: object) -> object:
    if value is None and column in OPTIONAL_COLUMNS:
        return None
    if VALUE_COLUMNS.get(column) == NUMBER:
        return float(value)  # type: ignore[arg-type]
    return str(value)


def message_key(values: Mapping[str, object]) -> str:
    """The Kafka key of a transaction given as a mapping: its first entity's key value(s)
    as text, joined by KEY_SEPARATOR when that entity is composite ("" for a missing one:
    an unvalidated send keeps its message, the stream dead-letters it)."""
    return KEY_SEPARATOR.join(str(values.get(k, "")) for k in PARTITION_KEYS)


@dataclass(frozen=True)
class Label:
    transaction_id: str
    is_fraud: int
    label_t: int


def _object(raw: bytes | str | None) -> dict:
    if raw is None:
        raise Refused(NOT_JSON, "empty message (null value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Refused(TOO_LARGE, f"{len(raw)} bytes, over the {MAX_MESSAGE_BYTES} limit")
    try:
        obj = orjson.loads(raw)
    except (orjson.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise Refused(NOT_JSON, str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise Refused(NOT_OBJECT, f"expected a JSON object, found {type(obj).__name__}")
    return obj


def _field(obj: dict, name: str):
    value = obj.get(name)
    if value is None:
        raise Refused(MISSING_FIELD, f"{name!r} is missing or null")
    return value


def parse_id(obj: dict, name: str, kind: str = ids.INT) -> str:
    """The id's canonical text under its declared type (transformations/ids.py)."""
    value = _field(obj, name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Refused(BAD_TYPE, f"{name!r} must be a string or an integer, "
                                f"found {type(value).__name__}")
    try:
        return ids.key_text(ids.canonical(value, kind))
    except ids.BadId as exc:
        raise Refused(BAD_ID, f"{name!r} = {exc}") from None


def parse_time(obj: dict, name: str) -> int:
    """Epoch seconds from ISO 8601 or an epoch number (unit guessed from its magnitude)."""
    value = _field(obj, name)
    if isinstance(value, bool):
        raise Refused(BAD_TYPE, f"{name!r} must be a timestamp, found a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise Refused(BAD_TIMESTAMP, f"{name!r} = {value!r} is not a valid epoch time")
        return _in_range(int(value // per_second(value)), name, value)
    if not isinstance(value, str):
        raise Refused(BAD_TYPE, f"{name!r} must be ISO 8601 text or epoch number, "
                                f"found {type(value).__name__}")
    try:
        d = parse_iso(value)
    except ValueError:
        raise Refused(BAD_TIMESTAMP, f"{name!r} = {value[:40]!r} is not ISO 8601") from None
    return _in_range(int(d.timestamp() // 1), name, value)


def _in_range(t: int, name: str, value: object) -> int:
    if not in_range(t):
        raise Refused(BAD_TIMESTAMP, f"{name!r} = {str(value)[:40]!r} is out of range "
                                     f"({RANGE_TEXT})")
    return t


def parse_number(obj: dict, name: str) -> float:
    """A "number" value column (the amount rule): a JSON number, finite, 0 <= x <= MAX_AMOUNT."""
    value = _field(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):  # "NaN", "12.5": text is a producer bug, say so
            raise Refused(BAD_TYPE, f"{name!r} must be a JSON number, found text {value[:20]!r}")
        raise Refused(BAD_TYPE, f"{name!r} must be a number, found {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise Refused(BAD_AMOUNT, f"{name!r} = {value!r}: must be finite and >= 0")
    if number > MAX_AMOUNT:
        raise Refused(BAD_AMOUNT, f"{name!r} = {value!r} is above the limit of {MAX_AMOUNT:g}")
    return number


def parse_value(obj: dict, name: str, kind: str) -> float | str:
    """A value column by its kind: "number" as parse_number, "text" by the ids' rule (an
    id-like text, kept as text: the same value on every path and in Redis keys)."""
    if kind == NUMBER:
        return parse_number(obj, name)
    return parse_id(obj, name, ids.STRING)


def parse_transaction(raw: bytes | str | None, id_types: ids.IdTypes = DEFAULT_IDS) -> Transaction:
    """Fields checked in order: transaction_id, every join key, event_timestamp, every value
    column; the first bad one is the reason."""
    txid, t, got = _sent_fields(raw, id_types)
    if DERIVED:
        got.update(_derived(t, got))
    return _transaction(txid, t, got)


def parse_transactions(raws: Sequence[bytes | str | None], id_types: ids.IdTypes = DEFAULT_IDS
                       ) -> list[Transaction | Refused]:
    """Many messages, each as parse_transaction gives it (or the Refused it raises), with the
    views' udfs run once over all of them: per message, a udf costs more than the parse."""
    parsed: list[tuple[str, int, dict] | Refused] = []
    for raw in raws:
        try:
            parsed.append(_sent_fields(raw, id_types))
        except Refused as exc:
            parsed.append(exc)
    good = [p for p in parsed if not isinstance(p, Refused)]
    if DERIVED and good:
        try:
            cols = derive(DERIVED_FUNCTIONS, [p[1] for p in good],
                          {c: [p[2][c] for p in good] for c in INPUT_COLUMNS})
        except DerivedError:  # the udf failed on the whole: find which events, one by one
            return [p if isinstance(p, Refused) else _with_derived(*p) for p in parsed]
        for i, (_txid, _t, got) in enumerate(good):
            got.update((c, float(col[i])) for c, col in cols.items())
    out: list[Transaction | Refused] = []
    for p in parsed:
        if isinstance(p, Refused):
            out.append(p)
            continue
        txid, t, got = p
        bad = [c for c in DERIVED if got[c] != got[c]]  # NaN: no number under the rule
        out.append(Refused(BAD_TYPE, str(DerivedError(
            f"derived column(s) {bad}: the udf gave no number under the number rule")))
            if bad else _transaction(txid, t, got))
    return out


def _with_derived(txid: str, t: int, got: dict) -> Transaction | Refused:
    try:
        got.update(_derived(t, got))
    except Refused as exc:
        return exc
    return _transaction(txid, t, got)


def _transaction(txid: str, t: int, got: Mapping[str, object]) -> Transaction:
    return Transaction(txid, t, tuple((c, got[c]) for c in COLUMNS))


def _sent_fields(raw: bytes | str | None, id_types: ids.IdTypes) -> tuple[str, int, dict]:
    """(transaction_id, time, the columns sent) of a transaction message, checked."""
    obj = _object(raw)
    txid = parse_id(obj, "transaction_id", id_types.transaction_id)
    got: dict[str, object] = {k: parse_id(obj, k, id_types.of(k)) for k in KEY_COLUMNS}
    t = parse_time(obj, "event_timestamp")
    got.update((c, parse_optional(obj, c) if c in OPTIONAL_COLUMNS else parse_value(obj, c, kind))
               for c, kind in INPUT_COLUMNS.items())
    return txid, t, got


def _derived(t: int, values: Mapping[str, object]) -> dict[str, float]:
    """The udfs' columns of one event; an event a udf gives no number is refused."""
    try:
        return derive_event(DERIVED_FUNCTIONS, t, values)
    except DerivedError as exc:
        raise Refused(BAD_TYPE, str(exc)) from None


def parse_optional(obj: dict, name: str) -> float | None:
    """An optional number (a coordinate): missing or null is None; otherwise a finite JSON
    number of either sign within the limit."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refused(BAD_TYPE, f"{name!r} must be a number or null, "
                                f"found {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_AMOUNT:
        raise Refused(BAD_AMOUNT, f"{name!r} = {value!r}: must be finite, within "
                                  f"{MAX_AMOUNT:g} either side of 0")
    return hundredth(number)  # kept to the hundredth, as on every path


def parse_label(raw: bytes | str | None, id_types: ids.IdTypes = DEFAULT_IDS) -> Label:
    obj = _object(raw)
    txid = parse_id(obj, "transaction_id", id_types.transaction_id)
    flag = _field(obj, "is_fraud")
    if flag not in (0, 1) or isinstance(flag, float):  # True/False compare equal to 1/0
        raise Refused(BAD_TYPE, f"'is_fraud' must be 0, 1, true or false, found {flag!r}")
    return Label(txid, int(flag), parse_time(obj, "label_timestamp"))


# ---- outgoing messages --------------------------------------------------------------------

def transaction_message(tx: Transaction | dict) -> bytes:
    """What a producer sends for a transaction (ISO 8601 UTC timestamps)."""
    d = tx if isinstance(tx, dict) else _fields(tx, "event_timestamp", iso(tx.t))
    return json.dumps(d, separators=(",", ":"), default=str).encode()


def _fields(tx: Transaction, time_name: str, time_value: object,
            derived: bool = False) -> dict:
    """transaction_id, the keys, the time, the values: the field order of every message."""
    out: dict[str, object] = {"transaction_id": tx.transaction_id}
    out.update((c, v) for c, v in tx.columns if c not in VALUE_COLUMNS)
    out[time_name] = time_value
    out.update((c, v) for c, v in tx.columns
               if c in VALUE_COLUMNS and (derived or c not in DERIVED))
    return out


def label_message(label: Label | dict) -> bytes:
    d = label if isinstance(label, dict) else {
        "transaction_id": label.transaction_id, "is_fraud": label.is_fraud,
        "label_timestamp": iso(label.label_t)}
    return json.dumps(d, separators=(",", ":"), default=str).encode()


def iso(t: int) -> str:
    return dt.datetime.fromtimestamp(int(t), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def enriched_transaction(tx: Transaction, features: dict, processed_at_ms: int) -> bytes:
    """Undefined values (NaN: a mean over an empty window) are written as null."""
    row = {"kind": "transaction", **_fields(tx, "event_time_ms", tx.t * 1000, derived=True)}
    for name, value in features.items():
        if name not in row:
            row[name] = value
    row["processed_at_ms"] = processed_at_ms
    return orjson.dumps(row)  # NaN and infinities become null


def enriched_label(label: Label, processed_at_ms: int) -> bytes:
    return json.dumps({"kind": "label", "transaction_id": label.transaction_id,
                       "is_fraud": label.is_fraud, "label_time_ms": label.label_t * 1000,
                       "processed_at_ms": processed_at_ms}, separators=(",", ":")).encode()


def dead_letter(reason: str, detail: str, topic: str, partition: int, offset: int,
                key: bytes | None, value: bytes | None, kafka_timestamp_ms: int | None,
                now_ms: int) -> tuple[bytes, bytes]:
    """(key, value) of the dead-letter message for one refused input message."""
    record = {"reason": reason, "detail": detail, "source_topic": topic,
              "partition": partition, "offset": offset,
              "key": None if key is None else key.decode("utf-8", "replace"),
              "kafka_timestamp_ms": kafka_timestamp_ms, "dead_lettered_at_ms": now_ms}
    raw = value or b""
    try:
        record["value"] = raw[:MAX_MESSAGE_BYTES].decode("utf-8")
    except UnicodeDecodeError:
        record["value_base64"] = base64.b64encode(raw[:MAX_MESSAGE_BYTES]).decode()
    return (f"{topic}/{partition}/{offset}".encode(),
            json.dumps(record, separators=(",", ":")).encode())
