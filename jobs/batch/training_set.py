"""Point-in-time-correct training sets: the exact windows at each entity row's own timestamp.

`training_set(entities)` is the Python API (returns pandas); `ffs training-set` wraps it.
Each row gets the features as they were at its event_timestamp, computed from the offline
store's transactions and labels (or files given explicitly), using only events with
event_timestamp <= t and labels with label_timestamp <= t. Timestamps need not coincide with
any transaction. Every other column of the entity table is carried through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ffs.config import Config, load_config
from ffs.errors import InputError
from ffs.jobs.batch.features_job import compute, point_columns
from ffs.jobs.batch.fits import check_fits
from ffs.jobs.batch.offline_store import OfflineStore
from ffs.transformations import ids as _ids
from ffs.transformations import schema
from ffs.transformations.ids import IdTypes
from ffs.transformations.timestamps import MIN_S, RANGE_TEXT, to_utc


def prepare_entities(entities: pd.DataFrame,
                     id_types: IdTypes = schema.DEFAULT_IDS) -> pd.DataFrame:
    """Entity rows with parsed times and canonical ids (the same id model as every other path:
    "124", 124 and 124.0 are one int id). An entity row names every join key of the repo's
    entities and a time."""
    required = point_columns()
    missing = [c for c in required if c not in entities.columns]
    if missing:
        raise InputError(f"entity table is missing column(s) {missing}; expected at least "
                         f"{required}, found {list(entities.columns)}")
    out = entities.reset_index(drop=True).copy()
    ts = to_utc(out["event_timestamp"])
    keys = required[:-1]
    bad = ts.isna() | out[keys].isna().any(axis=1)
    if bad.any():
        sample = out.loc[bad].head(3).to_dict("records")
        raise InputError(f"{int(bad.sum())} entity row(s) have a missing or unparseable "
                         f"{', '.join(keys)} or event_timestamp, e.g. {sample}")
    early = ts.notna() & (ts < pd.Timestamp(MIN_S, unit="s", tz="UTC"))
    if early.any():
        raise InputError(f"{int(early.sum())} entity row(s) have an event_timestamp out of "
                         f"range ({RANGE_TEXT}), e.g. {out.loc[early].head(3).to_dict('records')}")
    out["event_timestamp"] = ts
    return schema.canonical_ids(out, schema.id_columns(), id_types, "entity table")


def training_set(entities: pd.DataFrame, cfg: Config | None = None,
                 transactions: str | Path | pd.DataFrame | None = None,
                 labels: str | Path | pd.DataFrame | None = None,
                 engine: str = "local", log: Callable[[str], None] = lambda _: None,
                 spark=None, memory_check: bool = True) -> pd.DataFrame:
    """Entity rows with every feature as of their own timestamp (pandas in, pandas out).

    Event rows refused while reading files or frames given here (bad amount, duplicate id,
    label before its transaction, ...) are counted by reason in `result.attrs["rejected"]`
    and logged, never dropped silently."""
    cfg = cfg or load_config()
    points = prepare_entities(entities, _ids.types(cfg))
    if memory_check and not isinstance(transactions, pd.DataFrame):
        source = OfflineStore(cfg.offline.path).path("transactions") if transactions is None \
            else transactions
        check_fits(source, engine, "training set", log)
    tx, lab, rejected = read_events(cfg, transactions, labels)
    for kind, reasons in rejected.items():
        if reasons:
            log(f"  {sum(reasons.values()):,} {kind} row(s) set aside: {reasons}")
    feats = compute(cfg, tx, lab, points, engine, log, spark)
    # a column named like a feature (the shipped repo's amount) is the feature's, not carried
    carried = points.drop(columns=[c for c in feats.columns if c in points.columns])
    out = pd.concat([carried, feats], axis=1)
    out.attrs["rejected"] = rejected
    return out


def read_events(cfg: Config, transactions, labels):
    """(transactions, labels, {kind: {reason: rows}} set aside from the inputs given): the
    events a training set is computed over, given files or else the offline store (also what
    `ffs evaluate` reads)."""
    store = OfflineStore(cfg.offline.path)
    ids = _ids.types(cfg)
    rejected: dict[str, dict[str, int]] = {"transactions": {}, "labels": {}}
    if transactions is None:
        tx = schema.stored_ids(store.read("transactions", list(schema.tx_columns())), ids,
                               "the offline store's transactions")
    else:
        raw = (transactions if isinstance(transactions, pd.DataFrame)
               else schema.read_table(transactions))
        norm = schema.normalize_transactions(raw, ids)
        tx, rejected["transactions"] = norm.rows, norm.reject_summary()
    if labels is None:
        lab = schema.stored_ids(store.read("labels", list(schema.LABEL_COLUMNS)), ids,
                                "the offline store's labels") if store.exists("labels") \
            else schema.normalize_labels(pd.DataFrame(columns=list(schema.LABEL_COLUMNS))).rows
    else:
        raw = labels if isinstance(labels, pd.DataFrame) else schema.read_table(labels)
        norm = schema.normalize_labels(raw, tx, ids)
        lab, rejected["labels"] = norm.rows, norm.reject_summary()
    return tx, lab, rejected
