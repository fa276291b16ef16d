"""`ffs materialize`: the online state from the offline store (or given files), idempotently."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ffs.config import Config
from ffs.errors import TransientError
from ffs.jobs.batch.offline_store import OfflineStore
from ffs.online.loader import LoadSummary, load_state
from ffs.transformations import ids as _ids
from ffs.transformations import schema


def materialize(cfg: Config, transactions: str | Path | None = None,
                labels: str | Path | None = None, log: Callable[[str], None] = print,
                redis_conn=None) -> LoadSummary:
    import redis

    from ffs.online.client import redis_client

    store = OfflineStore(cfg.offline.path)
    ids = _ids.types(cfg)
    if transactions is None:
        tx = schema.stored_ids(store.read("transactions", list(schema.TX_COLUMNS)), ids,
                               "the offline store's transactions")
        lab = (store.read("labels", list(schema.LABEL_COLUMNS)) if store.exists("labels")
               else pd.DataFrame(columns=list(schema.LABEL_COLUMNS)))
        lab = schema.stored_ids(lab, ids, "the offline store's labels")
    else:
        tx = schema.normalize_transactions(schema.read_table(transactions), ids).rows
        raw = (schema.read_table(labels) if labels is not None
               else pd.DataFrame(columns=list(schema.LABEL_COLUMNS)))
        lab = schema.normalize_labels(raw, tx, ids).rows
    if redis_conn is None:
        # bulk loading: give each command more time than a low-latency read gets (on a copy:
        # the caller's config keeps its read timeout)
        bulk = dataclasses.replace(cfg.redis, timeout_ms=max(cfg.redis.timeout_ms, 30_000))
        redis_conn = redis_client(bulk)
    try:
        redis_conn.ping()
        return load_state(redis_conn, tx, lab, cfg.redis.prefix, log)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise TransientError(f"Redis at {cfg.redis.url} is not reachable: {exc}") from exc
