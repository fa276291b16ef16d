"""The data model: transactions and fraud labels as separate events, and how raw rows become them.

Transactions: transaction_id, event_timestamp (UTC), every join key of the feature repo's
entities (ids, by their declared type), every value column its windows read ("number": a
finite amount-like number, 0 <= x <= MAX_AMOUNT; "text": an id-like text, kept as a string),
and any extra columns (kept as they are). The shipped repo's are customer_id, terminal_id and
amount. Labels: transaction_id, is_fraud (0/1), label_timestamp (UTC): a chargeback arrives
days after the payment, so a label is its own event in time.

Normalising never drops a row silently: every rejected row comes back in a `rejects` frame
with the original values and a `reason`, and callers report or store it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ffs.errors import InputError
from ffs.transformations.declarations import from_cents, to_cents
from ffs.transformations.ids import STRING, IdTypes, canonical_series
from ffs.transformations.timestamps import MIN_S, RANGE_TEXT, to_seconds, to_utc

if TYPE_CHECKING:
    from ffs.transformations.compiler import Compiled

LABEL_COLUMNS = ("transaction_id", "is_fraud", "label_timestamp")
EVENT_COLUMNS = ("transaction_id", "event_timestamp")  # every event has them, whatever the repo
DEFAULT_IDS = IdTypes()
# The largest value of a number column (amount), on every path (batch, stream, producer,
# HTTP): values are summed as integer hundredths, exact in the engine's int64 and in Redis'
# Lua doubles (below 2**53) for every entity's retained history; 1e300 or 9e16 used to
# overflow to garbage.
MAX_AMOUNT = 1e9

# Handbook (Fraud-Detection-Handbook simulated data) column names, accepted as an input dialect.
HANDBOOK_RENAMES = {
    "TRANSACTION_ID": "transaction_id",
    "TX_DATETIME": "event_timestamp",
    "CUSTOMER_ID": "customer_id",
    "TERMINAL_ID": "terminal_id",
    "TX_AMOUNT": "amount",
}


def _compiled(repo: Compiled | None = None) -> Compiled:
    """The declarations the columns come from: `repo` (a Compiled), or the loaded repo
    (imported here, not at module import: reading MAX_AMOUNT needs no repo)."""
    if repo is not None:
        return repo
    from ffs.transformations.features import COMPILED

    return COMPILED


def key_columns(repo: Compiled | None = None) -> tuple[str, ...]:
    """Every join key of the repo's entities, in their order."""
    return tuple(dict.fromkeys(k for e in _compiled(repo).entities for k in e.keys))


def value_columns(repo: Compiled | None = None) -> dict[str, str]:
    """The event columns the windows read beyond the keys: column -> "number" | "text"."""
    return dict(_compiled(repo).values)


def tx_columns(repo: Compiled | None = None) -> tuple[str, ...]:
    """The columns every transaction carries (in this order in normalized frames)."""
    return (*EVENT_COLUMNS, *key_columns(repo), *value_columns(repo))


def id_columns(repo: Compiled | None = None) -> tuple[str, ...]:
    """The id columns of a transaction: its own id and every join key."""
    return ("transaction_id", *key_columns(repo))


def __getattr__(name: str):
    # TX_COLUMNS / ID_COLUMNS, the loaded repo's, computed on first use (PEP 562)
    if name == "TX_COLUMNS":
        return tx_columns()
    if name == "ID_COLUMNS":
        return id_columns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Normalized:
    rows: pd.DataFrame
    rejects: pd.DataFrame  # original columns as strings + "reason"

    @property
    def n_rejected(self) -> int:
        return len(self.rejects)

    def reject_summary(self) -> dict[str, int]:
        if self.rejects.empty:
            return {}
        return {str(k): int(v) for k, v in self.rejects["reason"].value_counts().items()}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read Parquet (file or directory) or CSV, by extension."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input not found: {p}")
    suffix = p.suffix.lower()
    try:
        if p.is_dir() or suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
        if suffix in (".csv", ".gz", ".txt"):
            return pd.read_csv(p, low_memory=False)
    except Exception as exc:  # the reader's own message says what is wrong with the file
        raise InputError(f"could not read {p}: {exc}") from exc
    raise InputError(f"unsupported input format for {p}: expected .parquet or .csv")


def require_columns(found, columns: tuple[str, ...], what: str) -> None:
    """InputError naming the `columns` missing from `found` (a frame's column names)."""
    missing = [c for c in columns if c not in found]
    if missing:
        raise InputError(
            f"{what} input is missing column(s) {missing}; expected {list(columns)}, "
            f"found {list(found)}"
        )


def require_transaction_columns(columns, repo: Compiled | None = None) -> None:
    """InputError unless `columns` (a frame's, after the handbook renames) hold every
    column a transaction must arrive with."""
    compiled = _compiled(repo)
    need = (*EVENT_COLUMNS, *key_columns(repo), *compiled.input_values)
    require_columns(columns, tuple(c for c in need if c not in set(compiled.optional)),
                    "transactions")


def _id_checks(raw: pd.DataFrame, column: str, ids: IdTypes, out: dict[str, pd.Series],
               kind: str | None = None) -> list[tuple[pd.Series, str | pd.Series]]:
    """Canonical ids of `column` (under its declared type, or `kind`) into out[column]; the
    checks that refuse the rest."""
    canon, why = canonical_series(raw[column], kind or ids.of(column))
    out[column] = canon
    return [(raw[column].isna() | (canon.isna() & why.isna()), f"missing {column}"),
            (why.notna(), f"bad {column}: " + why.fillna(""))]


def _number_checks(raw: pd.DataFrame, column: str,
                   out: dict[str, pd.Series]) -> list[tuple[pd.Series, str]]:
    """A number column (amount) parsed into out[column]; the checks that refuse the rest."""
    value = pd.to_numeric(raw[column], errors="coerce")
    out[column] = value
    return [
        (value.isna() & raw[column].notna(), f"{column} is not a number"),
        (raw[column].isna(), f"missing {column}"),
        (~np.isfinite(value.fillna(0.0)), f"{column} is not finite"),
        (value < 0, f"{column} is negative"),
        (value > MAX_AMOUNT, f"{column} above the limit of {MAX_AMOUNT:g}"),
    ]


def canonical_ids(df: pd.DataFrame, columns: tuple[str, ...], id_types: IdTypes,
                  what: str) -> pd.DataFrame:
    """`df` with its id columns in canonical form, or one InputError naming the refused ids
    (no row is set aside: entity rows and stored events are all or nothing)."""
    out = df.copy()
    for c in columns:
        if c not in df.columns:
            continue
        canon, why = canonical_series(df[c], id_types.of(c))
        bad = why.notna()
        if bad.any():
            sample = df.loc[bad, c].head(3).tolist()
            raise InputError(f"{what}: {int(bad.sum())} {c} value(s) refused, e.g. {sample}: "
                             f"{why[bad].iloc[0]} (ids.{c} is {id_types.of(c)})")
        out[c] = canon.astype("int64") if str(canon.dtype) == "Int64" and not canon.hasnans \
            else canon
    return out


def stored_ids(df: pd.DataFrame, id_types: IdTypes, what: str,
               repo: Compiled | None = None) -> pd.DataFrame:
    """Events read back from the offline store, their ids under today's declared types (the
    store keeps the types of its backfill; changing `ids` after it is an error here)."""
    return canonical_ids(df, id_columns(repo), id_types, what)


def _reject(df: pd.DataFrame, mask: pd.Series, reason: str | pd.Series,
            out: list[pd.DataFrame]) -> pd.Series:
    """Move rows under `mask` (and not already rejected) to `out` with a reason (one text, or
    one per row)."""
    if mask.any():
        bad = df.loc[mask].astype("string")
        bad["reason"] = reason if isinstance(reason, str) else reason[mask].to_numpy()
        out.append(bad)
    return ~mask


def _time_checks(raw: pd.Series, parsed: pd.Series, name: str) -> list[tuple[pd.Series, str]]:
    """Why a timestamp was refused, said by rule: missing, out of the one supported range
    (timestamps.MIN_S..MAX_S, as on every path), or not a timestamp."""
    failed = parsed.isna() & raw.notna()
    out_of_range = parsed.notna() & (parsed < pd.Timestamp(MIN_S, unit="s", tz="UTC"))
    for i in raw.index[failed]:
        out_of_range[i] = _is_valid_date(raw[i])
    return [(raw.isna(), f"{name} missing"),
            (out_of_range, f"{name} out of range ({RANGE_TEXT})"),
            (failed & ~out_of_range, f"{name} unparseable")]


def _is_valid_date(value) -> bool:
    from ffs.transformations.timestamps import parse_iso

    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return bool(np.isfinite(value))  # an epoch number pandas could not hold
    try:
        parse_iso(str(value).strip())
        return True
    except ValueError:
        return False


def normalize_transactions(raw: pd.DataFrame, id_types: IdTypes = DEFAULT_IDS,
                           repo: Compiled | None = None) -> Normalized:
    """Typed, checked transactions; ids in their canonical form (transformations/ids.py).
    The columns are the repo's (`repo`, a Compiled; by default the loaded one)."""
    compiled = _compiled(repo)
    keys, values = key_columns(repo), value_columns(repo)
    inputs, optional = compiled.input_values, set(compiled.optional)
    columns = (*EVENT_COLUMNS, *keys, *values)
    df = raw.rename(columns={k: v for k, v in HANDBOOK_RENAMES.items() if k in raw.columns})
    require_transaction_columns(df.columns, repo)
    df = df.reset_index(drop=True)
    for c in optional:  # a feed without them (the handbook's files have no coordinates)
        if c not in df.columns:
            df[c] = np.nan
    rejects: list[pd.DataFrame] = []
    keep = pd.Series(True, index=df.index)

    ts = to_utc(df["event_timestamp"])
    parsed: dict[str, pd.Series] = {}
    checks = [*_id_checks(df, "transaction_id", id_types, parsed),
              *_time_checks(df["event_timestamp"], ts, "event_timestamp")]
    for k in keys:
        checks += _id_checks(df, k, id_types, parsed)
    for c, kind in inputs.items():
        # a text value follows the ids' validity rule, kept as text whatever the id types
        if c in optional:
            checks += _optional_checks(df, c, parsed)
        else:
            checks += _number_checks(df, c, parsed) if kind == "number" else \
                _id_checks(df, c, id_types, parsed, STRING)
    for mask, reason in checks:
        keep &= _reject(df, mask.fillna(False) & keep, reason, rejects)

    # A repeated transaction_id is the same payment delivered twice: the first valid one wins.
    dup = parsed["transaction_id"].where(keep).duplicated(keep="first") & keep
    keep &= _reject(df, dup, "duplicate transaction_id", rejects)

    rows = df.loc[keep].copy()
    rows["event_timestamp"] = ts[keep]
    for c in ("transaction_id", *keys, *inputs):
        col = parsed[c][keep]
        if c in optional:  # kept to the hundredth, as the online state keeps it
            col = pd.Series(from_cents(to_cents(col.astype("float64"))), index=col.index)
        elif values.get(c) == "number":
            col = col.astype("float64")
        elif str(col.dtype) == "Int64":
            col = col.astype("int64")
        rows[c] = col
    if compiled.derived:
        rows = _derive(rows, compiled, df, rejects)
    ordered = list(columns) + [c for c in rows.columns if c not in columns]
    return Normalized(rows[ordered].reset_index(drop=True), _concat(rejects, df.columns))


def with_event_columns(tx: pd.DataFrame, repo: Compiled | None = None) -> pd.DataFrame:
    """`tx` (accepted events) with every column the engines read: an optional column it
    lacks as nulls, a derived one it lacks computed by its udf. The same frame when nothing
    is missing (normalize_transactions' output has them all)."""
    compiled = _compiled(repo)
    lacking = [c for c in compiled.optional if c not in tx.columns]
    derived = [fn for fn in compiled.derived
               if any(name not in tx.columns for name, _ in fn.outputs)]
    if not lacking and not derived:
        return tx
    from ffs.transformations.derived import DerivedError, derive

    out = tx.copy()
    for c in lacking:
        out[c] = np.nan
    if derived and len(out):
        t = to_seconds(out["event_timestamp"]).tolist()
        try:
            got = derive(derived, t, _udf_inputs(out, compiled))
        except DerivedError as exc:
            raise InputError(f"transactions: {exc}") from None
        for name, col in got.items():
            out[name] = pd.Series(col, index=out.index)
    elif derived:
        for fn in derived:
            for name, _ in fn.outputs:
                out[name] = pd.Series([], dtype="float64")
    return out


def _udf_inputs(rows: pd.DataFrame, compiled: Compiled) -> dict[str, list]:
    """The columns the udfs read, as lists (the time goes as the events' seconds)."""
    read = {c for fn in compiled.derived for c in fn.request_inputs} - {"event_timestamp"}
    return {c: rows[c].tolist() for c in read if c in rows.columns}


def _optional_checks(raw: pd.DataFrame, column: str,
                     out: dict[str, pd.Series]) -> list[tuple[pd.Series, str]]:
    """An optional number (a coordinate): null is a value; otherwise a finite number of any
    sign within the limit."""
    value = pd.to_numeric(raw[column], errors="coerce")
    out[column] = value
    return [
        (value.isna() & raw[column].notna(), f"{column} is not a number"),
        (raw[column].notna() & ~np.isfinite(value.fillna(0.0)), f"{column} is not finite"),
        (value.abs() > MAX_AMOUNT, f"{column} beyond the limit of {MAX_AMOUNT:g}"),
    ]


def _derive(rows: pd.DataFrame, compiled: Compiled, df: pd.DataFrame,
            rejects: list[pd.DataFrame]) -> pd.DataFrame:
    """The udfs' columns (transformations/derived.py) on the accepted rows; a row a udf gives
    no finite number is set aside with the column's name."""
    from ffs.transformations.derived import DerivedError, derive

    t = to_seconds(rows["event_timestamp"]).tolist()
    try:
        got = derive(compiled.derived, t, _udf_inputs(rows, compiled))
    except DerivedError as exc:
        raise InputError(f"transactions: {exc}") from None
    keep = pd.Series(True, index=rows.index)
    for name, col in got.items():
        value = pd.Series(col, index=rows.index)
        rows[name] = value
        keep &= _reject(df.loc[rows.index], value.isna() & keep,
                        f"derived {name} is not a number", rejects)
    return rows.loc[keep]


def normalize_labels(raw: pd.DataFrame, transactions: pd.DataFrame | None = None,
                     id_types: IdTypes = DEFAULT_IDS) -> Normalized:
    """Check labels; with `transactions` (normalized), also reject orphans and time travel."""
    df = raw.rename(columns={"TX_FRAUD": "is_fraud"}).reset_index(drop=True)
    require_columns(df.columns, LABEL_COLUMNS, "labels")
    rejects: list[pd.DataFrame] = []
    keep = pd.Series(True, index=df.index)

    ids: dict[str, pd.Series] = {}
    id_checks = _id_checks(df, "transaction_id", id_types, ids)
    tid = ids["transaction_id"]
    lts = to_utc(df["label_timestamp"])
    fraud = pd.to_numeric(df["is_fraud"], errors="coerce")
    checks = [
        *id_checks,
        *_time_checks(df["label_timestamp"], lts, "label_timestamp"),
        (~fraud.isin([0, 1]), "is_fraud must be 0 or 1"),
    ]
    for mask, reason in checks:
        keep &= _reject(df, mask.fillna(False) & keep, reason, rejects)

    rows = pd.DataFrame({
        "transaction_id": tid,
        "is_fraud": fraud.fillna(0).astype("int64"),
        "label_timestamp": lts,
    })
    # The same label delivered twice (same transaction, same time, same value) counts once.
    dup = rows.duplicated(["transaction_id", "label_timestamp", "is_fraud"]) & keep
    keep &= _reject(df, dup, "duplicate label", rejects)
    conflict = rows.duplicated(["transaction_id", "label_timestamp"], keep=False) & keep
    keep &= _reject(df, conflict, "conflicting labels for one transaction at one time", rejects)

    if transactions is not None:
        # compare in epoch seconds: an index lookup on int64 is fast and has no tz pitfalls
        tx_secs = pd.Series(to_seconds(transactions["event_timestamp"]),
                            index=pd.Index(transactions["transaction_id"]), dtype="int64")
        pos = tx_secs.index.get_indexer(rows["transaction_id"])
        unknown = pd.Series(pos < 0, index=df.index)
        keep &= _reject(df, unknown & keep, "label for unknown transaction_id", rejects)
        label_secs = np.where(lts.notna(), to_seconds(lts.fillna(pd.Timestamp(0, tz="UTC"))), 0)
        tx_at = (tx_secs.to_numpy()[np.maximum(pos, 0)] if len(tx_secs)
                 else np.zeros(len(pos), np.int64))
        early = pd.Series((label_secs < tx_at) & (pos >= 0), index=df.index) & keep
        keep &= _reject(df, early, "label_timestamp before the transaction", rejects)

    rows = rows.loc[keep].reset_index(drop=True)
    if str(rows["transaction_id"].dtype) == "Int64":
        rows["transaction_id"] = rows["transaction_id"].astype("int64")
    return Normalized(rows, _concat(rejects, df.columns))


def _concat(parts: list[pd.DataFrame], columns: pd.Index) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame({**{c: pd.Series(dtype="string") for c in columns},
                             "reason": pd.Series(dtype="string")})
    return pd.concat(parts, ignore_index=True)


def labels_from_flags(transactions: pd.DataFrame, flag: str = "TX_FRAUD",
                      delay: pd.Timedelta = pd.Timedelta(0)) -> pd.DataFrame:  # noqa: B008 (immutable)
    """Labels for data that carries the fraud flag on the transaction (the handbook's shape)."""
    if flag not in transactions.columns:
        raise InputError(f"column {flag!r} not found; cannot derive labels from it")
    return pd.DataFrame({
        "transaction_id": transactions["transaction_id"],
        "is_fraud": transactions[flag].astype("int64"),
        "label_timestamp": transactions["event_timestamp"] + delay,
    }).reset_index(drop=True)
