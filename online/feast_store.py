"""Feast online store plugin: Feast's `get_online_features` served by our exact windows.

Feast's own Redis store returns the values written at each entity's last materialized event,
so a 1-day count read two days later still counts transactions that have left the window.
This plugin reads our online state instead (per-entity event records, online/layout.py) and
computes every window at the request time, with the same code as `OnlineClient`: the values
Feast returns are the ones `OnlineClient.get_features(rows, as_of)` gives.

Use it with one change to feature_store.yaml (feature_repo/feature_store_ffs.yaml is the
project's repo with it):

    online_store:
      type: ffs.online.feast_store.FFSOnlineStore
      # every setting is optional:
      url: redis://127.0.0.1:6379/0   # default: ffs config (FFS_REDIS_URL, ffs.yaml)
      password: ...                   # default: ffs config (FFS_REDIS_PASSWORD)
      prefix: ffs                     # default: ffs config (FFS_REDIS_PREFIX), "ffs"
      timeout_ms: 50                  # default: ffs config (FFS_REDIS_TIMEOUT_MS)
      as_of: "2024-02-10T12:00:00Z"   # read time, for replays and tests; default: now
      missing_entity: not_found       # or empty_windows, see below

then, as with any Feast store:

    store = FeatureStore(repo_path=...)
    # the shipped repo: its service, a row with each of its join keys
    store.get_online_features(features=store.get_feature_service("fraud_detection_v1"),
                              entity_rows=[{"customer_id": 42, "terminal_id": 7}]).to_dict()

The `online` package must be importable by the process running Feast (it is when the
project is installed: `make setup` / `pip install -e .`).

What Feast gets, per feature view and entity key:
- A view of the loaded repo (transformations/features.py) serves its entity's features:
  the compiled repo names each view's entity (`COMPILED.views`), and Feast's entity key
  holds that entity's join key, or every join key of a composite view (a view with several
  entities: one id per key, read as one composite id). A view the repo does not declare
  (a plain FeatureView over the same features, such as the Feast peer of the benchmarks)
  serves each feature from the entity the repo computes it for.
- Every window (and recency) feature is computed at the read time t: `as_of` if set, else
  now. One t is taken per `get_online_features` call, so every view of a call is read at
  the same second; the event timestamp Feast reports for each row is that t
  (`to_dict(include_event_timestamps=True)` shows it). Feast calls `online_read` once per
  feature view; when the entity rows carry every join key of the repo (KEY_COLUMNS) as
  plain integers or texts, the first view's read fetches every entity of every row in one
  Redis round trip (`OnlineClient.get_features`) and the other views are served from it.
  Otherwise (other row shapes, `online_read` called directly) each view reads its own
  entity (`OnlineClient.get_entity_features`).
- An entity with no state in Redis (never seen, or expired): by default (`missing_entity:
  not_found`) its features come back null with status NOT_FOUND, Feast's convention for a
  key the store does not hold (our client calls it MISSING_ENTITY). Feast's own Redis store
  would say PRESENT with null values instead. With `missing_entity: empty_windows` they come
  back PRESENT with the values of empty windows (counts 0, sums 0, risks 0, means and
  recency null), which is what `OnlineClient` returns for such a row (and what a model
  trained on our training set saw for an entity without history in the window).
- A null value of a known entity (the mean of an empty window, no previous transaction
  within the horizon) is PRESENT with an empty value, as Feast does for a stored null.
- Request features: with the repo's on-demand views, Feast runs their functions itself on
  the request data. Served from a plain view instead (the Feast peer of the benchmarks),
  Feast passes no request data to an online store, so the request functions' outputs that
  need it come back null with status NOT_FOUND, and those that need only the request time
  (the shipped repo's weekend and night flags) are computed at t (PRESENT), as
  `OnlineClient` does for a row without a transaction. A scoring service that has the
  transaction (timestamp, value columns, transaction id) should call `OnlineClient.get_features`
  or our HTTP server with that request data: they count the transaction in its own windows,
  which Feast cannot.

Failures:
- Redis down or slower than timeout_ms: `online_read` raises `FFSOnlineStoreUnavailable`
  (a TransientError) naming the Redis URL (without password) and the cause, after at most
  about timeout_ms. It does not return NOT_FOUND: a Feast caller would then score an outage
  as "every entity unknown". This is also what Feast's own Redis store does
  (it raises redis' ConnectionError). Our `OnlineClient` and HTTP server, which can report
  statuses, answer with status UNAVAILABLE instead of raising.
- Writes from Feast (`feast materialize`, `materialize-incremental`, push to online,
  `write_to_online_store`) raise `FFSWriteUnsupported` at the first batch: the state is
  loaded by `ffs materialize` (online/loader.py load_state) and kept current by the stream
  job, as events rather than feature values; a silent no-op would let Feast record
  materialization intervals for data it never wrote.
- `feast apply` (update) and `feast teardown` do nothing: the keys belong to
  `ffs materialize` and the stream, and are expired by their own TTLs.
- A feature view asking for a feature this store does not compute (a registry out of date
  with the feature repo) raises ConfigError naming it: run `ffs apply` again.

`online_read_async` runs `online_read` in a worker thread (redis-py sync client);
`async_supported` stays False, so `feast serve` takes its thread-pool path.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Any, Literal, Optional
from urllib.parse import urlparse, urlunparse

import numpy as np
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.value_type import ValueType
from pydantic import PositiveInt, SecretStr, StrictStr, field_validator

from ffs.config import RedisConfig, Secret, load_config
from ffs.errors import ConfigError, TerminalError, TransientError
from ffs.online.client import MISSING_ENTITY, OnlineClient, redis_client, time_features
from ffs.transformations import ids as _ids
from ffs.transformations.features import (
    COMPILED,
    ENTITIES,
    KEY_COLUMNS,
    REQUEST_FEATURES,
    Entity,
    entity_feature_names,
)
from ffs.transformations.features import entity as entity_named

TYPE: Literal["ffs.online.feast_store.FFSOnlineStore"] = "ffs.online.feast_store.FFSOnlineStore"
NOT_FOUND: Literal["not_found"] = "not_found"
EMPTY_WINDOWS: Literal["empty_windows"] = "empty_windows"

_ENTITY_OF = {name: e for e in ENTITIES for name in entity_feature_names(e)}
_TIME_FEATURES = set(time_features(0))
_NEEDS_REQUEST_DATA = {f.name for f in REQUEST_FEATURES} - _TIME_FEATURES
_ENTITY_NAMES = {e.name for e in ENTITIES}


def _id_of(entity: Entity, values: Mapping[str, Any]) -> Any:
    """An entity's id in `values` (by join key): the value of its key, or the tuple of its
    keys' values (entity.keys order) for a composite entity, as get_entity_features takes."""
    if entity.composite:
        return tuple(values[k] for k in entity.keys)
    return values[entity.keys[0]]


@dataclass
class _Call:
    """The get_online_features call in progress: its read time (every feature view of one
    call is read at the same second) and, when its rows carry every join key as a plain id,
    the distinct rows (KEY_COLUMNS tuples), read in one round trip by the first view."""

    t: int
    rows: Optional[list[tuple]]
    cache: Optional[dict[Entity, dict[Any, tuple[str, dict[str, Any]]]]] = None
    ids: dict[Entity, set] = field(init=False)

    def __post_init__(self) -> None:
        rows = [dict(zip(KEY_COLUMNS, r, strict=True)) for r in self.rows or []]
        self.ids = {e: {_id_of(e, r) for r in rows} for e in ENTITIES}


_CALL: contextvars.ContextVar[Optional[_Call]] = contextvars.ContextVar("ffs_feast_call",
                                                                         default=None)


def _is_id(value: Any) -> bool:
    """A plain id, as Feast hands it back in an entity key (int64_val or string_val)."""
    return isinstance(value, (int, np.integer, str)) and not isinstance(value, bool)


def _plain_id(value: Any) -> Any:
    return value if isinstance(value, str) else int(value)


def _key_rows(entity_rows: Any) -> Optional[list[tuple]]:
    """Distinct KEY_COLUMNS tuples of get_online_features' entity rows (a list of dicts or
    a columnar mapping of plain ids); None for any other shape. A cached answer is found
    only under the very value Feast's entity key holds, so a row whose id Feast converts
    (text for an integer key) just misses the cache and is read on its own."""
    if isinstance(entity_rows, list):
        if not all(isinstance(r, Mapping) and all(k in r for k in KEY_COLUMNS)
                   for r in entity_rows):
            return None
        columns = [[r[k] for r in entity_rows] for k in KEY_COLUMNS]
    elif isinstance(entity_rows, Mapping) and all(k in entity_rows for k in KEY_COLUMNS):
        columns = [entity_rows[k] for k in KEY_COLUMNS]
        if not all(isinstance(c, (list, tuple)) for c in columns) or \
                len({len(c) for c in columns}) > 1:
            return None
    else:
        return None
    if not all(_is_id(v) for c in columns for v in c):
        return None
    rows = zip(*[[_plain_id(v) for v in c] for c in columns], strict=True)
    return list(dict.fromkeys(rows)) or None


def _split(result, names: list[str], rows) -> list[tuple[str, dict[str, Any]]]:
    """Per row of an OnlineResult: (status of the entity, {feature: value}) over `names`."""
    first = result.statuses[names[0]]
    return [(first[i], {n: result.values[n][i] for n in names}) for i in rows]


class FFSOnlineStoreUnavailable(TransientError):
    """Redis did not answer: no feature was served."""


class FFSWriteUnsupported(TerminalError):
    """Feast tried to write feature values into the FFS online state."""


def _unavailable(redis_cfg: RedisConfig, error: str) -> FFSOnlineStoreUnavailable:
    return FFSOnlineStoreUnavailable(
        f"FFS online store: Redis at {_safe_url(redis_cfg.url)} did not answer (timeout "
        f"{redis_cfg.timeout_ms} ms): {error}. No features were served; check that Redis is "
        f"up, then retry.")


def _epoch(value: Any) -> int:
    """Epoch seconds from an int/float (seconds), an ISO string or a datetime (naive = UTC)."""
    if isinstance(value, bool):
        raise ValueError(f"as_of: expected epoch seconds or an ISO timestamp, got {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(value.timestamp())
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        import pandas as pd

        try:
            ts = pd.Timestamp(text)
        except (TypeError, ValueError):
            ts = None
        if ts is None or ts is pd.NaT:
            raise ValueError(f"as_of: cannot read {value!r} as a timestamp "
                             f"(epoch seconds or ISO 8601, e.g. 2024-02-10T12:00:00Z)")
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return int(ts.timestamp())
    raise ValueError(f"as_of: expected epoch seconds or an ISO timestamp, got {value!r}")


class FFSOnlineStoreConfig(FeastConfigBaseModel):
    """`online_store:` settings of feature_store.yaml for FFSOnlineStore. Unset connection
    settings come from ffs config (FFS_REDIS_* environment variables, ffs.yaml, defaults),
    so one setting drives `ffs materialize`, our client and Feast alike."""

    type: Literal["ffs.online.feast_store.FFSOnlineStore"] = TYPE
    url: Optional[StrictStr] = None  # redis://host:port/db or rediss://...
    password: Optional[SecretStr] = None
    prefix: Optional[StrictStr] = None
    timeout_ms: Optional[PositiveInt] = None
    as_of: Optional[int] = None  # read time (epoch s); None: now, taken per call
    missing_entity: Literal["not_found", "empty_windows"] = NOT_FOUND

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of(cls, value: Any) -> Optional[int]:
        return None if value is None else _epoch(value)


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunparse(parts._replace(netloc=netloc))


def _setter(value_type: ValueType, view: str, feature: str) -> Callable[[Any], ValueProto]:
    if value_type == ValueType.INT64:
        return lambda v: ValueProto(int64_val=int(v))
    if value_type == ValueType.INT32:
        return lambda v: ValueProto(int32_val=int(v))
    if value_type == ValueType.DOUBLE:
        return lambda v: ValueProto(double_val=float(v))
    if value_type == ValueType.FLOAT:
        return lambda v: ValueProto(float_val=float(v))
    raise ConfigError(f"feature view {view!r}: feature {feature!r} has Feast type "
                      f"{value_type.name}; FFSOnlineStore serves int64/int32/double/float")


def _key_values(key: EntityKeyProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(key.join_keys, key.entity_values, strict=False):
        kind = value.WhichOneof("val")
        out[name] = None if kind in (None, "null_val") else getattr(value, kind)
    return out


class FFSOnlineStore(OnlineStore):
    """Feast OnlineStore over the FFS online state; see the module docstring."""

    def __init__(self) -> None:
        self._clients: dict[tuple, tuple[OnlineClient, RedisConfig]] = {}
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------------------

    @staticmethod
    def _redis_settings(cfg: FFSOnlineStoreConfig) -> RedisConfig:
        redis_cfg = load_config().redis
        changes: dict[str, Any] = {}
        if cfg.url is not None:
            changes["url"] = cfg.url
        if cfg.password is not None:
            changes["password"] = Secret(cfg.password.get_secret_value())
        if cfg.prefix is not None:
            changes["prefix"] = cfg.prefix
        if cfg.timeout_ms is not None:
            changes["timeout_ms"] = cfg.timeout_ms
        return replace(redis_cfg, **changes)

    def client(self, config: RepoConfig) -> OnlineClient:
        """The OnlineClient this store reads with (one per connection setting, reused)."""
        return self._connection(config)[0]

    def _connection(self, config: RepoConfig) -> tuple[OnlineClient, RedisConfig]:
        cfg = config.online_store
        if not isinstance(cfg, FFSOnlineStoreConfig):
            raise ConfigError(f"FFSOnlineStore needs online_store.type {TYPE!r}, "
                              f"found {type(cfg).__name__}")
        ident = (cfg.url, cfg.password.get_secret_value() if cfg.password else None,
                 cfg.prefix, cfg.timeout_ms)
        found = self._clients.get(ident)
        if found is not None:
            return found
        with self._lock:
            if ident not in self._clients:
                redis_cfg = self._redis_settings(cfg)
                # ids are read by the types of the ffs config, as `ffs materialize` wrote them
                client = OnlineClient(redis_client(redis_cfg), prefix=redis_cfg.prefix,
                                      id_types=_ids.types(load_config())).check_format()
                self._clients[ident] = (client, redis_cfg)
            return self._clients[ident]

    @staticmethod
    def read_time(config: RepoConfig) -> int:
        """The t features are computed at: the call's pinned t, else as_of, else now."""
        call = _CALL.get()
        if call is not None:
            return call.t
        as_of = config.online_store.as_of
        return _epoch(as_of) if as_of is not None else int(time.time())

    # -- reads ------------------------------------------------------------------------------

    def get_online_features(self, config, features, entity_rows, registry, project,
                            full_feature_names=False,
                            include_feature_view_version_metadata=False):
        token = _CALL.set(_Call(self.read_time(config), _key_rows(entity_rows)))
        try:
            return super().get_online_features(
                config, features, entity_rows, registry, project,
                full_feature_names=full_feature_names,
                include_feature_view_version_metadata=include_feature_view_version_metadata)
        finally:
            _CALL.reset(token)

    async def get_online_features_async(self, config, features, entity_rows, registry,
                                        project, full_feature_names=False,
                                        include_feature_view_version_metadata=False):
        token = _CALL.set(_Call(self.read_time(config), _key_rows(entity_rows)))
        try:
            return await super().get_online_features_async(
                config, features, entity_rows, registry, project,
                full_feature_names=full_feature_names,
                include_feature_view_version_metadata=include_feature_view_version_metadata)
        finally:
            _CALL.reset(token)

    def online_read(self, config: RepoConfig, table, entity_keys: list[EntityKeyProto],
                    requested_features: Optional[list[str]] = None
                    ) -> list[tuple[Optional[datetime], Optional[dict[str, ValueProto]]]]:
        t = self.read_time(config)
        ts = datetime.fromtimestamp(t, tz=timezone.utc)
        types = {f.name: f.dtype.to_value_type() for f in table.features}
        requested = list(types) if requested_features is None else list(requested_features)
        by_entity: dict[Entity, list[str]] = {}
        timed: list[str] = []
        view_entity = self._view_entity(table)
        for name in requested:
            if name in _ENTITY_OF:
                entity = _ENTITY_OF[name]
                if view_entity is not None and entity != view_entity:
                    raise ConfigError(f"feature view {table.name!r} serves {view_entity} "
                                      f"features, but {name!r} is a feature of {entity}: the "
                                      f"registry may be out of date: run `ffs apply`")
                by_entity.setdefault(entity, []).append(name)
            elif name in _TIME_FEATURES:
                timed.append(name)
            elif name not in _NEEDS_REQUEST_DATA:
                raise ConfigError(f"feature view {table.name!r}: feature {name!r} is not one "
                                  f"FFSOnlineStore computes (the feature repo's); the registry "
                                  f"may be out of date: run `ffs apply`")
            elif name not in types:
                raise ConfigError(f"feature view {table.name!r} has no feature {name!r}")
        setters = {name: _setter(types[name], table.name, name)
                   for name in [*timed, *(n for ns in by_entity.values() for n in ns)]}

        n = len(entity_keys)
        rows: list[dict[str, ValueProto]] = [{} for _ in range(n)]
        if timed and n:
            flags = time_features(t)
            for name in timed:
                proto = setters[name](flags[name])
                for row in rows:
                    row[name] = proto

        keys = [_key_values(k) for k in entity_keys]
        missing = [False] * n
        empty_ok = config.online_store.missing_entity == EMPTY_WINDOWS
        for entity, names in by_entity.items():
            ids = []
            for kv in keys:
                lacking = [k for k in entity.keys if k not in kv]
                if lacking:
                    raise ConfigError(f"feature view {table.name!r} serves {entity} "
                                      f"features but is keyed by {sorted(kv)}; it needs "
                                      f"{', '.join(repr(k) for k in lacking)}")
                key_values = {k: kv[k] for k in entity.keys}
                # a null in any key: nothing to look up
                ids.append(None if any(v is None for v in key_values.values())
                           else _id_of(entity, key_values))
            asked = [i for i, v in enumerate(ids) if v is not None]
            for i, v in enumerate(ids):
                if v is None:
                    missing[i] = True
            if not asked:
                continue
            found = self._entity_rows(config, entity, [ids[i] for i in asked], t)
            for i, (status, values) in zip(asked, found, strict=False):
                if status == MISSING_ENTITY and not empty_ok:
                    missing[i] = True
                    continue
                row = rows[i]
                for name in names:
                    v = values[name]
                    row[name] = ValueProto() if v is None else setters[name](v)
        out: list[tuple[Optional[datetime], Optional[dict[str, ValueProto]]]] = []
        for i in range(n):
            if missing[i] and not timed:
                out.append((None, None))
            elif missing[i]:  # the time flags do not depend on the entity
                out.append((ts, {name: rows[i][name] for name in timed}))
            else:
                out.append((ts, rows[i]))
        return out

    @staticmethod
    def _view_entity(table) -> Optional[Entity]:
        """The entity a view of the loaded repo is keyed by (COMPILED.views); None for a
        view the repo does not declare, whose features each name their own entity."""
        name = COMPILED.views.get(table.name)
        return entity_named(name) if name in _ENTITY_NAMES else None

    def _entity_rows(self, config: RepoConfig, entity: Entity, ids: list, t: int
                     ) -> list[tuple[str, dict[str, Any]]]:
        """(status, {feature: value}) of one entity's features for each id (a tuple for a
        composite entity), at t. Inside a get_online_features call whose rows carry every
        join key, the first view read fetches every entity of every row in one Redis round
        trip and the other views are served from it; otherwise each view reads its own
        entity."""
        call = _CALL.get()
        if call is not None and call.t == t:
            if call.rows and call.cache is None and all(
                    i in call.ids[entity] for i in ids):
                call.cache = self._read_rows(config, call.rows, t)
            if call.cache is not None:
                cache = call.cache[entity]
                if all(i in cache for i in ids):
                    return [cache[i] for i in ids]
        client, redis_cfg = self._connection(config)
        out: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(ids), client.max_batch):
            result = client.get_entity_features(entity, ids[start:start + client.max_batch],
                                                as_of=t)
            # Feast has no per-value status: a value a cluster node did not give is refused
            # with the rest rather than served as "not found"
            if (result.error or result.unavailable) is not None:
                raise _unavailable(redis_cfg, result.error or result.unavailable or "")
            out += _split(result, result.feature_names, range(len(result.as_of)))
        return out

    def _read_rows(self, config: RepoConfig, rows: list[tuple], t: int
                   ) -> dict[Entity, dict[Any, tuple[str, dict[str, Any]]]]:
        """Every entity's features for each distinct row of join keys, in one Redis round
        trip per max_batch rows, by entity and id."""
        client, redis_cfg = self._connection(config)
        cache: dict[Entity, dict[Any, tuple[str, dict[str, Any]]]] = {e: {} for e in ENTITIES}
        names = {e: entity_feature_names(e) for e in ENTITIES}
        for start in range(0, len(rows), client.max_batch):
            chunk = [dict(zip(KEY_COLUMNS, r, strict=True))
                     for r in rows[start:start + client.max_batch]]
            result = client.get_features(chunk, as_of=t)
            # Feast has no per-value status: a value a cluster node did not give is refused
            # with the rest rather than served as "not found"
            if (result.error or result.unavailable) is not None:
                raise _unavailable(redis_cfg, result.error or result.unavailable or "")
            for e in ENTITIES:
                if not names[e]:
                    continue
                found_all = _split(result, names[e], range(len(chunk)))
                for row, found in zip(chunk, found_all, strict=True):
                    cache[e][_id_of(e, row)] = found
        return cache

    async def online_read_async(self, config: RepoConfig, table,
                                entity_keys: list[EntityKeyProto],
                                requested_features: Optional[list[str]] = None):
        return await asyncio.to_thread(self.online_read, config, table, entity_keys,
                                       requested_features)

    # -- writes and infrastructure ----------------------------------------------------------

    def online_write_batch(self, config: RepoConfig, table, data, progress) -> None:
        raise FFSWriteUnsupported(
            f"FFSOnlineStore does not take feature values from Feast (feature view "
            f"{table.name!r}, {len(data)} rows): its Redis state holds per-entity events, "
            f"from which windows are computed at request time. Load it with `ffs materialize` "
            f"(online/loader.py load_state) and keep it current with the stream job; do not "
            f"run `feast materialize` or push to the online store with this store.")

    async def online_write_batch_async(self, config: RepoConfig, table, data,
                                       progress) -> None:
        self.online_write_batch(config, table, data, progress)

    def update(self, config: RepoConfig, tables_to_delete, tables_to_keep,
               entities_to_delete, entities_to_keep, partial: bool) -> None:
        """Nothing to create or drop: the keys belong to `ffs materialize` and the stream."""

    def teardown(self, config: RepoConfig, tables, entities) -> None:
        """Deletes nothing: the state is shared with our client and expires by its TTLs."""


__all__ = ["FFSOnlineStore", "FFSOnlineStoreConfig", "FFSOnlineStoreUnavailable",
           "FFSWriteUnsupported"]
