"""In-process online client for scoring services.

    client = OnlineClient.from_config(load_config())
    result = client.get_features([{"customer_id": 42, "terminal_id": 7,
                                   "transaction_id": 991, "event_timestamp": ts, "amount": 12.5}])
    result.values[name], result.statuses[name]   # for each name in result.feature_names

A row that carries a transaction (event_timestamp and amount) is scored at its own timestamp
and the transaction is counted in its windows, exactly as the training set counts it, unless
it was already ingested (same transaction_id). Other rows are read at `as_of` (default: now).
Every value has a status: PRESENT, MISSING_ENTITY (nothing known about that customer or
terminal: windows are empty), MISSING_REQUEST_DATA (a request feature without its input) or
UNAVAILABLE (Redis did not answer within the timeout; the value is None). The client never
raises for a Redis failure: it answers within its timeout and recovers when Redis is back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ffs.config import Config, RedisConfig, Secret
from ffs.errors import InputError
from ffs.online import layout, state_format
from ffs.online.plan import EntityPlan, compile_plans
from ffs.online.row_assembly import RowAssembler, row_assembler
from ffs.online.script_call import direct
from ffs.online.scripts import read_script
from ffs.online.shards import Shards, is_cluster, slot_of
from ffs.transformations import ids
from ffs.transformations import timestamps as T
from ffs.transformations.declarations import CENTS, NULL_CENTS, Agg, Entity, hundredth
from ffs.transformations.derived import DerivedError, derive
from ffs.transformations.features import (
    COMPILED,
    DERIVED_FUNCTIONS,
    FEATURE_SERVICE,
    INPUT_COLUMNS,
    KEY_COLUMNS,
    OPTIONAL_COLUMNS,
    REQUEST_FUNCTIONS,
    VALUE_COLUMNS,
    entity_feature_names,
    feature_names,
    recency_for,
    windows_for,
)
from ffs.transformations.features import entity as entity_named
from ffs.transformations.ids import IdTypes
from ffs.transformations.request import TIME_FIELD
from ffs.transformations.schema import MAX_AMOUNT

_NULL = float(NULL_CENTS)  # how a reply says "no value" where values may be negative
PRESENT = "PRESENT"
MISSING_ENTITY = "MISSING_ENTITY"
MISSING_REQUEST_DATA = "MISSING_REQUEST_DATA"
UNAVAILABLE = "UNAVAILABLE"

# request fields the repo's functions read beyond the ones the client itself parses
_EXTRA_FIELDS = sorted({f for fn in REQUEST_FUNCTIONS for f in fn.request_inputs}
                       - {TIME_FIELD, "transaction_id", *VALUE_COLUMNS})
DEFAULT_IDS = IdTypes()
__all__ = ["OnlineClient", "OnlineResult", "entity_feature_names", "time_features",
           "redis_client", "PRESENT", "MISSING_ENTITY", "MISSING_REQUEST_DATA", "UNAVAILABLE"]


def time_features(t: int) -> dict[str, object]:
    """The request features a row without request data still gets at time t (epoch seconds,
    UTC): the request functions' outputs that are not null with every request field and
    every feature they read null (for the shipped repo, the weekend and night flags)."""
    out: dict[str, object] = {}
    for fn in REQUEST_FUNCTIONS:
        got = fn.apply([t], {}, {name: [None] for name in fn.feature_inputs})
        out.update({name: col[0] for name, col in got.items() if col[0] is not None})
    return out


@dataclass
class OnlineResult:
    feature_names: list[str]
    values: dict[str, list]
    statuses: dict[str, list[str]]
    as_of: list[int] = field(default_factory=list)  # the t each row was read at (epoch s)
    error: str | None = None  # why values are UNAVAILABLE, if they are
    # a Redis Cluster with a node down: why some values (those it serves) are UNAVAILABLE,
    # while the others are served; None when every value was read
    unavailable: str | None = None

    def row(self, i: int) -> dict[str, object]:
        return {name: self.values[name][i] for name in self.feature_names}

    def rows_between(self, start: int, stop: int) -> OnlineResult:
        """The result of rows start..stop-1 alone (`unavailable` only if some of its own
        values are)."""
        statuses = {n: v[start:stop] for n, v in self.statuses.items()}
        some = self.unavailable is not None and any(
            UNAVAILABLE in v for v in statuses.values())
        return OnlineResult(self.feature_names,
                            {n: v[start:stop] for n, v in self.values.items()}, statuses,
                            self.as_of[start:stop], self.error,
                            self.unavailable if some else None)

    def of_service(self, service: str) -> OnlineResult:
        """The result as another of the repo's services answers it: its features only."""
        if service == FEATURE_SERVICE:
            return self
        names = COMPILED.service_features(service)
        return OnlineResult(names, {n: self.values[n] for n in names},
                            {n: self.statuses[n] for n in names}, self.as_of, self.error,
                            self.unavailable)

    def to_feast_response(self, entities: Mapping[str, Sequence]) -> dict:
        """Feast's columnar /get-online-features response shape."""
        memo: dict[int, str] = {}  # rows share a few read times: format each once
        stamps = [memo[t] if t in memo else memo.setdefault(t, _iso(t)) for t in self.as_of]
        results = [{"values": list(col), "statuses": [PRESENT] * len(col),
                    "event_timestamps": ["1970-01-01T00:00:00Z"] * len(col)}
                   for col in entities.values()]
        results += [{"values": self.values[n], "statuses": self.statuses[n],
                     "event_timestamps": list(stamps)} for n in self.feature_names]
        return {"metadata": {"feature_names": list(entities) + self.feature_names},
                "results": results}


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def redis_client(cfg: RedisConfig, max_connections: int | None = None):
    import redis

    timeout = cfg.timeout_ms / 1000.0
    # No retries (redis-py's default for a pool built this way): one attempt, each socket
    # operation bounded by the timeout; the next call reconnects by itself.
    kwargs: dict[str, object] = dict(
        socket_timeout=timeout, socket_connect_timeout=timeout,
        max_connections=max_connections or cfg.max_connections, retry_on_timeout=False)
    if cfg.password is not None:
        # Through a credential provider, not `password=`: redis-py prints a pool's
        # connection kwargs in its repr, so repr(client.redis) would show the password.
        kwargs["credential_provider"] = _SecretCredentials(cfg.password)
    url = cfg.url
    if cfg.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://"):]
    if url.startswith("rediss://") and cfg.tls_ca_file:
        kwargs["ssl_ca_certs"] = cfg.tls_ca_file
    if cfg.cluster:
        return _cluster_client(url, kwargs)
    pool = redis.ConnectionPool.from_url(url, **kwargs)
    return redis.Redis(connection_pool=pool)


def _cluster_client(url: str, kwargs: dict[str, object]):
    """A redis-py RedisCluster from one node's URL, with the same bounded, retry-free
    connections as one node: the online paths route by slot themselves (online/shards.py)
    and refresh the slot map after a failure instead of retrying with backoff."""
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    kwargs = {k: v for k, v in kwargs.items() if k != "retry_on_timeout"}
    # one retry, at once, for the few plain commands (the stream's progress hash): redis-py
    # re-reads the slot map after a connection error, so the retry finds a promoted replica
    return RedisCluster.from_url(url, retry=Retry(NoBackoff(), 1), **kwargs)


class _SecretCredentials:
    """redis-py CredentialProvider holding a Secret; its repr shows nothing of it."""

    def __init__(self, password: Secret):
        self._password = password

    def get_credentials(self) -> tuple[str]:
        return (self._password.reveal(),)

    async def get_credentials_async(self) -> tuple[str]:
        return self.get_credentials()

    def __repr__(self) -> str:
        return "_SecretCredentials('***')"


class OnlineClient:
    def __init__(self, redis_conn, prefix: str = "ffs", plans: tuple[EntityPlan, ...] | None = None,
                 max_batch: int = 1000, id_types: IdTypes = DEFAULT_IDS):
        """id_types: the config's `ids`, so a request's "007" is the id the stream and the
        backfill stored (transformations/ids.py)."""
        self.redis = redis_conn
        self.id_types = id_types
        self.prefix = prefix
        self.plans = plans or compile_plans()
        self.max_batch = max_batch
        # one script per set of plans read together, generated from them (online/scripts.py)
        self._scripts: dict[tuple[str, ...], Any] = {}
        # a cluster: one call per (entity, slot), pipelined per node (online/shards.py)
        self._shards = Shards(redis_conn) if is_cluster(redis_conn) else None
        self._script = self._script_for(self.plans)
        self._ops = {p.entity.name: _compile_ops(p) for p in self.plans}
        self._names = feature_names()

    def check_format(self) -> OnlineClient:
        """Refuses (StateFormatError) a state written in another record format, which every
        read would misread (online/state_format.py); a Redis that does not answer now is left
        to the reads, which say so within their timeout. Returns the client."""
        try:
            state_format.check(self.redis, self.prefix, writing=False)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
        return self

    @classmethod
    def from_config(cls, cfg: Config, **kwargs) -> OnlineClient:
        return cls(redis_client(cfg.redis), prefix=cfg.redis.prefix,
                   id_types=ids.types(cfg), **kwargs).check_format()

    def get_features(self, rows: Iterable[Mapping[str, object]], as_of: object = None,
                     feature_service: str = FEATURE_SERVICE) -> OnlineResult:
        rows = list(rows)
        if feature_service != FEATURE_SERVICE and feature_service not in COMPILED.services:
            raise InputError(f"unknown feature service {feature_service!r}; this store serves "
                             f"{', '.join(dict.fromkeys([FEATURE_SERVICE, *COMPILED.services]))}")
        if feature_service != FEATURE_SERVICE:  # another of the repo's: its features only
            return self.get_features(rows, as_of).of_service(feature_service)
        if len(rows) > self.max_batch:
            raise InputError(f"batch of {len(rows)} rows is over the limit of {self.max_batch}")
        default_t = _seconds(as_of) if as_of is not None else int(time.time())
        return self._get(rows, default_t)

    def get_features_many(self, batches: Sequence[tuple[Sequence[Mapping[str, object]], object]]
                          ) -> list[OnlineResult]:
        """Several requests, each (rows, as_of) as get_features takes them, in one read: one
        round trip and one assembly for all their rows (the HTTP server coalesces the
        requests that arrive while a read is under way). Each result is the one get_features
        gives that request alone, for the repo's default service; the rows together within
        max_batch. An InputError names the row's place in the rows of all batches."""
        rows, starts = self._merged(batches)
        return _per_batch(batches, self._get(rows, starts))

    def send_many(self, batches: Sequence[tuple[Sequence[Mapping[str, object]], object]]
                  ) -> PendingRead:
        """get_features_many in two halves, for a caller with other work while Redis runs
        the read (the HTTP server's event loop): this sends the read and returns at once;
        `receive_many` gives the results once `PendingRead.fileno` is readable, or
        `abandon_many` gives up on them (UNAVAILABLE) when it is not within the caller's
        timeout. Where a read cannot be split (a cluster's shards, a client that retries, no
        rows) it is done here, and the PendingRead holds its results (fileno None). Raises
        InputError as get_features_many does, before anything is sent."""
        rows, starts = self._merged(batches)
        script = self._script
        if not rows or not hasattr(script, "send"):
            return PendingRead(batches, results=_per_batch(batches, self._get(rows, starts)))
        req = _requests(rows, starts, self.id_types, KEY_COLUMNS)
        keys, argv, asked = self._call_args(req, self.plans)
        try:
            conn = script.send(keys, argv)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            return PendingRead(batches, results=_per_batch(
                batches, self._unavailable(req, _describe(exc))))
        sock = getattr(conn, "_sock", None)
        if sock is None:  # not a socket of its own to wait on: the reply now
            return PendingRead(batches, results=self._received(batches, req, keys, argv,
                                                               asked, conn))
        return PendingRead(batches, sock.fileno(), (req, keys, argv, asked, conn))

    def receive_many(self, pending: PendingRead) -> list[OnlineResult]:
        """The results of `send_many`'s read (blocks for the rest of a partial reply, within
        the client's socket timeout)."""
        if pending.results is not None:
            return pending.results
        call, pending._call = pending._call, None
        assert call is not None, "a PendingRead is received or abandoned once"
        req, keys, argv, asked, conn = call
        return self._received(pending.batches, req, keys, argv, asked, conn)

    def abandon_many(self, pending: PendingRead, why: str) -> list[OnlineResult]:
        """Gives up on `send_many`'s read: every value of it UNAVAILABLE, for `why`."""
        if pending.results is not None:
            return pending.results
        call, pending._call = pending._call, None
        assert call is not None, "a PendingRead is received or abandoned once"
        req, _keys, _argv, _asked, conn = call
        self._script.abandon(conn)
        return _per_batch(pending.batches, self._unavailable(req, why))

    def _received(self, batches, req: _Requests, keys: list, argv: list, asked: list[int],
                  conn) -> list[OnlineResult]:
        try:
            reply = self._script.receive(conn, keys, argv)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            return _per_batch(batches, self._unavailable(req, _describe(exc)))
        raws, seen = self._split(reply, req, self.plans, asked)
        return _per_batch(batches, self._assembled(req, raws, seen, None))

    def _merged(self, batches) -> tuple[list, np.ndarray]:
        """The batches' rows as one list, and each row's default read time."""
        now = int(time.time())
        rows = [r for rows_, _ in batches for r in rows_]
        if len(rows) > self.max_batch:
            raise InputError(f"batch of {len(rows)} rows is over the limit of {self.max_batch}")
        starts = np.full(len(rows), now, dtype=np.int64)
        at = 0
        for rows_, as_of in batches:
            if as_of is not None:
                starts[at:at + len(rows_)] = _seconds(as_of)
            at += len(rows_)
        return rows, starts

    def _get(self, rows: list, default_t: int | np.ndarray) -> OnlineResult:
        """The default service's features of these rows; default_t: the read time of rows
        without an event_timestamp (one for all, or one per row)."""
        req = _requests(rows, default_t, self.id_types, KEY_COLUMNS)
        if not rows:
            return OnlineResult(self._names, {n: [] for n in self._names},
                                {n: [] for n in self._names}, [])
        try:
            raws, seen, failed = self._read(req, self.plans)
        except Exception as exc:  # redis ConnectionError, TimeoutError, BusyLoadingError, ...
            if not _is_redis_error(exc):
                raise
            return self._unavailable(req, _describe(exc))
        return self._assembled(req, raws, seen, failed)

    def _assembled(self, req: _Requests, raws: dict[str, np.ndarray], seen: np.ndarray,
                   failed: _Failed | None) -> OnlineResult:
        """The default service's features from a read's replies."""
        add = req.carries_tx & (seen == 0)
        values: dict[str, list] = {}
        statuses: dict[str, list[str]] = {}
        for plan in self.plans:
            assemble(plan, self._ops[plan.entity.name], req, raws[plan.entity.name], add,
                     values, statuses)
        if failed is not None:
            _mark_unavailable(self.plans, self._ops, failed.rows, values, statuses)
        for name, (vals, stats) in _request_features(req, values, statuses).items():
            values[name], statuses[name] = vals, stats
        return OnlineResult(self._names, values, statuses, req.t.tolist(),
                            unavailable=None if failed is None else failed.why)

    def get_entity_features(self, entity: Entity | str, ids: Sequence[object],
                            as_of: object = None) -> OnlineResult:
        """One entity's features (entity_feature_names) for each id (a tuple in the entity's
        key order for a composite entity), all read at `as_of` (default now), with the values
        and statuses get_features gives a row with that id. For callers keyed by a single
        entity, such as the Feast plugin (online/feast_store.py)."""
        ent = entity_named(entity if isinstance(entity, str) else entity.name)
        plan = next(p for p in self.plans if p.entity == ent)
        rows = [dict(zip(ent.keys, i if isinstance(i, (tuple, list)) else (i,), strict=True))
                for i in ids]
        default_t = _seconds(as_of) if as_of is not None else int(time.time())
        req = _requests(rows, default_t, self.id_types, ent.keys)
        names = entity_feature_names(ent)
        try:
            raws, _seen, failed = self._read(req, (plan,)) if rows else ({}, None, None)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            n = len(rows)
            return OnlineResult(names, {k: [None] * n for k in names},
                                {k: [UNAVAILABLE] * n for k in names}, req.t.tolist(),
                                _describe(exc))
        values: dict[str, list] = {}
        statuses: dict[str, list[str]] = {}
        if rows:
            assemble(plan, self._ops[ent.name], req, raws[ent.name],
                     np.zeros(len(rows), bool), values, statuses)
            if failed is not None:
                _mark_unavailable((plan,), self._ops, failed.rows, values, statuses)
        else:
            values = {k: [] for k in names}
            statuses = {k: [] for k in names}
        return OnlineResult(names, {n: values[n] for n in names},
                            {n: statuses[n] for n in names}, req.t.tolist(),
                            unavailable=None if failed is None else failed.why)

    def warm(self) -> None:
        """Loads the read scripts now (every primary of a cluster), so a first request does
        not pay for it. Raises a Redis error when Redis is not reachable."""
        if self._shards is None:
            self.redis.script_load(self._script.script)
            return
        for node in self.redis.get_primaries():
            conn = self.redis.get_redis_connection(node)
            for key, sha in self._scripts.items():
                if len(key) == 1:
                    conn.script_load(self._shards._scripts[sha])

    def ping(self) -> None:
        """Raises unless Redis answers: one node, or (a cluster) at least one primary, so a
        replica taking over one shard does not take the whole server out of service."""
        if self._shards is None:
            self.redis.ping()
            return
        slots = sorted({next(iter(v)) for v in _slot_ranges(self.redis)})
        replies = self._shards.run([(slot, ("PING",)) for slot in slots])
        if replies and all(isinstance(r, BaseException) for r in replies):
            raise replies[0]

    def _script_for(self, plans: tuple[EntityPlan, ...]):
        names = tuple(p.entity.name for p in plans)
        if names not in self._scripts:
            if self._shards is not None:  # a sha for the shards (the entity's own script)
                for p in plans:
                    if (p.entity.name,) not in self._scripts:
                        self._scripts[(p.entity.name,)] = self._shards.script(read_script((p,)))
                self._scripts[names] = self._scripts[(plans[0].entity.name,)]
            else:
                self._scripts[names] = direct(self.redis,
                                              self.redis.register_script(read_script(plans)))
        return self._scripts[names]

    def _read(self, req: _Requests, plans
              ) -> tuple[dict[str, np.ndarray], np.ndarray, _Failed | None]:
        """One script call, one round trip: every entity's windows over all rows, and which
        rows' transactions are already stored. A cluster: see _read_shards."""
        if self._shards is not None:
            return self._read_shards(req, plans)
        keys, argv, asked = self._call_args(req, plans)
        raws, seen = self._split(self._script_for(plans)(keys=keys, args=argv), req, plans,
                                 asked)
        return raws, seen, None

    def _call_args(self, req: _Requests, plans) -> tuple[list[str], list[object], list[int]]:
        """The read script's keys and arguments for these rows (online/scripts.py), and the
        rows whose transaction it asks about."""
        n = len(req.t)
        p = self.prefix
        keys: list[str] = []
        for plan in plans:
            ent = plan.entity
            for value in _values(req, ent):
                keys += [layout.entity_key(p, ent, value), layout.fraud_key(p, ent, value)]
        argv: list[object] = [n]
        texts = [c for plan in plans for c in plan.fmt.texts]
        if texts:
            carries = req.carries_tx.tolist()
            for i, t in enumerate(req.t.tolist()):
                argv.append(t)
                argv += [_scored_text(req, c, i) if carries[i] else "" for c in texts]
        else:
            argv += req.t.tolist()
        asked = [i for i in range(n) if req.carries_tx[i] and req.txid[i] is not None]
        keys += [layout.tx_key(p, req.txid[i]) for i in asked]
        return keys, argv, asked

    def _split(self, reply, req: _Requests, plans, asked: list[int]
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The script's reply: each entity's integers per row, and which rows' transactions
        are already stored."""
        n = len(req.t)
        reply = np.asarray(reply, dtype=np.int64)
        raws, at = {}, 0
        for plan in plans:
            raws[plan.entity.name] = reply[at:at + n * plan.width].reshape(n, plan.width)
            at += n * plan.width
        seen = np.zeros(n, dtype=np.int64)
        if asked:
            seen[asked] = reply[at:]
        return raws, seen

    def _read_shards(self, req: _Requests, plans
                     ) -> tuple[dict[str, np.ndarray], np.ndarray, _Failed | None]:
        """A Redis Cluster: the rows of each entity grouped by the slot of their entity value,
        one call of the entity's own read script per slot (its keys share that slot), and one
        EXISTS per scored transaction's index key; all sent as one pipeline per node
        (online/shards.py). A call that fails makes its rows' values of that entity
        UNAVAILABLE (a failed EXISTS: the whole row, since it decides whether the row's own
        transaction joins its windows); the others are served."""
        n = len(req.t)
        p = self.prefix
        calls: list[tuple[int, tuple]] = []
        where: list[tuple[EntityPlan | None, list[int]]] = []
        carries = req.carries_tx.tolist()
        ts = req.t.tolist()
        for plan in plans:
            ent = plan.entity
            sha = self._script_for((plan,))
            groups: dict[int, list[int]] = {}
            names = []
            for i, value in enumerate(_values(req, ent)):
                key = layout.entity_key(p, ent, value)
                names.append((key, layout.fraud_key(p, ent, value)))
                groups.setdefault(slot_of(key), []).append(i)
            texts = plan.fmt.texts
            for slot, rows in groups.items():
                keys = [k for i in rows for k in names[i]]
                argv: list[object] = [len(rows)]
                for i in rows:
                    argv.append(ts[i])
                    argv += [_scored_text(req, c, i) if carries[i] else "" for c in texts]
                calls.append((slot, self._shards.evalsha(sha, keys, argv)))  # type: ignore[union-attr]
                where.append((plan, rows))
        asked = [i for i in range(n) if carries[i] and req.txid[i] is not None]
        for i in asked:
            key = layout.tx_key(p, req.txid[i])
            calls.append((slot_of(key), ("EXISTS", key)))
            where.append((None, [i]))
        replies = self._shards.run(calls)  # type: ignore[union-attr]
        raws = {plan.entity.name: np.zeros((n, plan.width), dtype=np.int64) for plan in plans}
        for plan in plans:  # an absent row reads as "nothing known" until filled
            raws[plan.entity.name][:, 1] = -1
        seen = np.zeros(n, dtype=np.int64)
        bad = {plan.entity.name: np.zeros(n, dtype=bool) for plan in plans}
        whole_row = np.zeros(n, dtype=bool)
        why: BaseException | None = None
        for (plan, rows), reply in zip(where, replies, strict=True):
            if isinstance(reply, BaseException):
                why = why or reply
                if plan is None:
                    whole_row[rows] = True
                else:
                    bad[plan.entity.name][rows] = True
                continue
            if plan is None:
                seen[rows[0]] = int(reply)
            else:
                raws[plan.entity.name][rows] = np.asarray(reply, dtype=np.int64).reshape(
                    len(rows), plan.width)
        if why is None:
            return raws, seen, None
        for name in bad:
            bad[name] |= whole_row
        if all(b.all() for b in bad.values()):
            raise why  # nothing read: the whole answer is UNAVAILABLE (get_features)
        return raws, seen, _Failed(bad, _describe(why))  # type: ignore[arg-type]

    def _unavailable(self, req: _Requests, why: str) -> OnlineResult:
        n = len(req.t)
        values: dict[str, list] = {}
        statuses: dict[str, list[str]] = {}
        nothing = {name: [None] * n for name in self._names}
        request = _request_features(req, nothing)
        for fn in REQUEST_FUNCTIONS:  # outputs made of the features Redis did not give
            for name in fn.feature_outputs():
                request[name] = ([None] * n, [UNAVAILABLE] * n)
        for name in self._names:
            if name in request:
                values[name], statuses[name] = request[name]
            else:
                values[name], statuses[name] = [None] * n, [UNAVAILABLE] * n
        return OnlineResult(self._names, values, statuses, req.t.tolist(), why)


def _per_batch(batches, whole: OnlineResult) -> list[OnlineResult]:
    """One read's result split back into its requests' own."""
    if len(batches) == 1 and whole.unavailable is None:  # the whole is its one result
        return [whole]
    out, at = [], 0
    for rows_, _ in batches:
        out.append(whole.rows_between(at, at + len(rows_)))
        at += len(rows_)
    return out


class PendingRead:
    """A read `OnlineClient.send_many` sent: wait for `fileno` to be readable, then
    `receive_many`; fileno None: the results are already here."""

    __slots__ = ("batches", "fileno", "_call", "results")

    def __init__(self, batches, fileno: int | None = None, call: tuple | None = None,
                 results: list[OnlineResult] | None = None):
        self.batches, self.fileno, self._call, self.results = batches, fileno, call, results


def _scored_text(req: _Requests, column: str, i: int) -> str:
    """The scored event's value of a distinct-counted column (a key or a value column)."""
    if column in req.keys:
        return str(req.keys[column][i])
    return layout.text_of(column, req.values[column][i])


def _values(req: _Requests, ent: Entity):
    """Each row's value of the entity (layout.entity_value)."""
    if len(ent.keys) > 1:
        return [layout.entity_value(row)
                for row in zip(*(req.keys[k] for k in ent.keys), strict=True)]
    return [layout.entity_value((v,)) for v in req.keys[ent.keys[0]]]


def _slot_ranges(cluster_conn) -> list[range]:
    """The slot ranges of the cluster's primaries, as the client's slot map has them."""
    out: dict[str, range] = {}
    for slot, nodes in sorted(cluster_conn.nodes_manager.slots_cache.items()):
        if nodes and nodes[0].name not in out:
            out[nodes[0].name] = range(slot, slot + 1)
    return list(out.values())


@dataclass
class _Failed:
    """A cluster read of which some calls failed: per entity, the rows not read."""

    rows: dict[str, np.ndarray]
    why: str


def _mark_unavailable(plans, ops: Mapping[str, list[_Op]], rows: dict[str, np.ndarray],
                      values: dict[str, list], statuses: dict[str, list[str]]) -> None:
    """The features of the entity values not read: None, UNAVAILABLE."""
    for plan in plans:
        lost = np.flatnonzero(rows[plan.entity.name]).tolist()
        if not lost:
            continue
        for op in ops[plan.entity.name]:
            vals, stats = list(values[op.name]), list(statuses[op.name])
            for i in lost:
                vals[i], stats[i] = None, UNAVAILABLE
            values[op.name], statuses[op.name] = vals, stats


@dataclass(frozen=True)
class _Op:
    """How one feature is made from its entity's reply: compiled once per client."""

    name: str
    agg: Agg | None  # None: recency
    at_t: bool  # the window ends at t: a scored transaction not yet stored joins it
    n: tuple[str, int, int] = ("", 0, 0)  # count source: ("edges", lo, hi) | ("interval", k, 0)
    cols: tuple[int, ...] = ()  # reply positions the feature reads
    column: str | None = None
    is_max: bool = False
    horizon: int = 0


class _Ops(list):
    """An entity's `_Op`s, in the reply's feature order, and the generated small-read
    assembly of them (online/row_assembly.py), made on first use and kept with them."""

    rows_fn: RowAssembler | None = None


def _compile_ops(plan: EntityPlan) -> _Ops:
    ops = _Ops()
    for f in windows_for(plan.entity):
        lo, hi = f.delay_s + f.window_s, f.delay_s
        at_t, column = f.delay_s == 0, f.column or ""
        kw: dict[str, Any] = {}
        if f.agg in (Agg.COUNT, Agg.SUM, Agg.MEAN, Agg.STD, Agg.FRAUD_RATE):
            kw["n"] = plan.count_source(f)
        if f.agg in (Agg.SUM, Agg.MEAN):
            kw["cols"] = (plan.cum_at(lo, column), plan.cum_at(hi, column))
        elif f.agg is Agg.STD:
            kw["cols"] = (plan.cum_at(lo, column), plan.cum_at(hi, column),
                          plan.cum_at(lo, column, True), plan.cum_at(hi, column, True))
        elif f.agg is Agg.FRAUD_RATE:
            kw["cols"] = (plan.fraud_at((lo, hi)),)
        elif f.agg is Agg.COUNT_DISTINCT:
            kw["cols"] = (plan.distinct_at((lo, hi, plan.fmt.texts.index(column) + 1)),)
        elif f.agg in (Agg.MIN, Agg.MAX):
            kw["is_max"] = f.agg is Agg.MAX
            kw["cols"] = (plan.extreme_at((lo, hi, plan.fmt.numbers.index(column) + 1,
                                           int(f.agg is Agg.MAX))),)
        elif f.agg is Agg.FIRST_SEEN:
            kw["cols"] = (plan.first_at((lo, hi)),)
        elif f.agg is Agg.LAST:
            kw["cols"] = (plan.last_at((lo, hi, plan.fmt.numbers.index(column) + 1)),)
        ops.append(_Op(f.name, f.agg, at_t, column=column, **kw))
    ops += [_Op(r.name, None, False, horizon=r.horizon_s) for r in recency_for(plan.entity)]
    return ops


_ADDS_CENTS = (Agg.SUM, Agg.MEAN, Agg.STD, Agg.MIN, Agg.MAX)


def cents_read(ops: list[_Op]) -> set[str]:
    """The value columns whose scored hundredths these features add to their windows."""
    return {op.column for op in ops if op.agg in _ADDS_CENTS and op.at_t and op.column}


# Up to this many rows, a reply is assembled in plain Python: numpy's cost per call, paid per
# feature whatever the rows, is most of a small read (1 row: ~100 of ~190 us of Python).
# With the generated assembly (online/row_assembly.py) the shipped repo's three entities
# took 29 against 250 us for 1 row, 129 against 177 us for 24, and crossed near 32-40 rows.
SMALL_BATCH = 24


def assemble(plan: EntityPlan, ops: list[_Op], req: _Requests, raw: np.ndarray,
             add: np.ndarray, values: dict[str, list], statuses: dict[str, list[str]]) -> None:
    """One entity's features from its part of the reply, into values and statuses. `add`:
    rows whose scored transaction is not stored yet, so it joins the windows that end at t,
    as the training set counts it. Two ways, one result (tests/unit/test_assemble.py):
    arrays for batches, plain Python for a few rows."""
    if len(raw) <= SMALL_BATCH and not req.null_in(cents_read(ops)):  # int64's sums
        assemble_rows(plan, ops, req, raw, add, values, statuses)
    else:
        assemble_arrays(plan, ops, req, raw, add, values, statuses)


def assemble_arrays(plan: EntityPlan, ops: list[_Op], req: _Requests, raw: np.ndarray,
                    add: np.ndarray, values: dict[str, list],
                    statuses: dict[str, list[str]]) -> None:
    """`assemble` over numpy arrays, a few calls per feature for all rows."""
    t = req.t
    add_i = add.astype(np.int64)
    status = np.where(raw[:, 0].astype(bool) | add, PRESENT, MISSING_ENTITY).tolist()
    # one errstate for all: entering one costs more than a 1-row feature
    with np.errstate(invalid="ignore", divide="ignore"):  # empty windows: masked
        for op in ops:
            if op.n[0]:
                kind, a, b = op.n
                n = raw[:, b] - raw[:, a] if kind == "edges" else raw[:, a]
                if op.at_t:
                    n = n + add_i
            agg = op.agg
            if agg is Agg.COUNT:
                col = n.tolist()
            elif agg in (Agg.SUM, Agg.MEAN, Agg.STD):
                mine = np.where(add, req.cents[op.column or ""], 0) if op.at_t else 0
                s = raw[:, op.cols[1]] - raw[:, op.cols[0]] + mine
                if agg is Agg.SUM:
                    col = (s / CENTS).tolist()
                elif agg is Agg.MEAN:
                    col = _plain(np.where(n > 0, s / np.maximum(n, 1) / CENTS, np.nan))
                else:
                    v = np.asarray(mine, dtype=np.float64)
                    q = (raw[:, op.cols[3]] - raw[:, op.cols[2]]) + v * v
                    col = _plain(std_of(n, s, q))
            elif agg is Agg.FRAUD_RATE:
                col = np.where(n > 0, raw[:, op.cols[0]] / np.maximum(n, 1), 0.0).tolist()
            elif agg is Agg.COUNT_DISTINCT:
                k = op.cols[0]
                got = raw[:, k] + ((add & (raw[:, k + 1] == 0)) if op.at_t else 0)
                col = got.tolist()
            elif agg in (Agg.MIN, Agg.MAX):
                best = raw[:, op.cols[0]].astype(np.float64)
                best[best < 0] = np.nan  # an empty window
                if op.at_t:  # the scored transaction is in it; fmax/fmin skip an empty one's NaN
                    joined = (np.fmax if op.is_max else np.fmin)(
                        best, req.cents[op.column or ""].astype(np.float64))
                    best = np.where(add, joined, best)
                col = _plain(best / CENTS)
            elif agg is Agg.FIRST_SEEN:
                first = raw[:, op.cols[0]]
                if op.at_t:  # first seen with the scored transaction itself: 0 seconds
                    first = np.where((first < 0) & add, t, first)
                col = _plain(np.where(first >= 0, (t - first).astype(np.float64), np.nan))
            elif agg is Agg.LAST:
                # strictly before t - D: the scored transaction (at t) is never its own previous
                prev = raw[:, op.cols[0]].astype(np.float64)  # NULL_CENTS: none, or a null
                col = _plain(np.where(prev > _NULL, prev / CENTS, np.nan))
            else:  # recency: the previous event strictly before t, within the horizon
                prev_t = raw[:, 1]
                gap = (t - prev_t).astype(np.float64)
                col = _plain(np.where((prev_t >= 0) & (gap < op.horizon), gap, np.nan))
            values[op.name], statuses[op.name] = col, status


def assemble_rows(plan: EntityPlan, ops: list[_Op], req: _Requests, raw: np.ndarray,
                  add: np.ndarray, values: dict[str, list],
                  statuses: dict[str, list[str]]) -> None:
    """`assemble` row by row in Python numbers, by a function generated for the entity's
    features (online/row_assembly.py): the same operations in the same order as
    assemble_arrays, so the same floats (IEEE doubles either way; sums of hundredths are exact
    integers below 2**53)."""
    fn = getattr(ops, "rows_fn", None)
    if fn is None:  # (generating costs a few ms: once per entity and client)
        fn = row_assembler(tuple(ops), PRESENT, MISSING_ENTITY)
        if isinstance(ops, _Ops):
            ops.rows_fn = fn
    cols, status = fn(raw.tolist(), add.tolist(), req.t.tolist(),
                      {c: v.tolist() for c, v in req.cents.items()})
    for op, col in zip(ops, cols, strict=True):
        values[op.name], statuses[op.name] = col, status


def std_of(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Sample standard deviation from the count, the sum of hundredths and the sum of their
    squares (exact integers), in the one formula every engine uses; NaN under 2 events."""
    nf, sf, qf = n.astype(np.float64), s.astype(np.float64), q.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (qf - sf * sf / nf) / (nf - 1)
    return np.where(n >= 2, np.sqrt(np.maximum(var, 0.0)) / CENTS, np.nan)


@dataclass
class _Requests:
    keys: dict[str, list]  # key column -> canonical ids
    txid: list
    t: np.ndarray
    values: dict[str, list]  # value column -> as sent (numbers as floats, NaN when missing)
    cents: dict[str, np.ndarray]  # numeric value column -> hundredths (0 where not carried)
    carries_tx: np.ndarray
    extra: dict[str, list] = field(default_factory=dict)  # other request fields, as sent

    def null_in(self, columns: Iterable[str]) -> bool:
        """Whether a carried value of these columns is a null (NULL_CENTS): an optional
        column (a coordinate) the request leaves out."""
        return any((self.cents[c] == NULL_CENTS).any() for c in columns if c in self.cents)


def _requests(rows: Sequence[Mapping[str, object]], default_t: int | np.ndarray,
              id_types: IdTypes, key_columns: Sequence[str] = KEY_COLUMNS) -> _Requests:
    """default_t: the read time of rows without an event_timestamp, one or one per row.

    In Python lists until the end, then an array per column: a NumPy call costs a few us
    whatever the rows, and one row's request was ~15 of them (70 of a 1-row read's ~450 us
    of client CPU)."""
    n = len(rows)
    keys: dict[str, list] = {k: [] for k in key_columns}
    txid: list[object] = []
    t = np.full(n, default_t, dtype=np.int64).tolist() if isinstance(
        default_t, np.ndarray) else [default_t] * n
    # what a request may carry of its transaction (a derived column is computed below)
    nan = math.nan
    numbers = {c: [nan] * n for c, kind in INPUT_COLUMNS.items() if kind == "number"}
    texts: dict[str, list] = {c: [None] * n for c, kind in INPUT_COLUMNS.items()
                              if kind == "text"}
    kinds = [(name, column, id_types.of(name)) for name, column in keys.items()]
    tx_kind = id_types.transaction_id
    carries = [True] * n
    isfinite = math.isfinite
    for i, row in enumerate(rows):
        for name, column, kind in kinds:
            value = _id(row.get(name), kind, (i, name))
            if value is None:
                raise InputError(f"row {i}: missing {name!r}; every row needs "
                                 f"{' and '.join(key_columns)}")
            column.append(value)
        txid.append(_id(row.get("transaction_id"), tx_kind, (i, "transaction_id")))
        ts = row.get("event_timestamp")
        if ts is not None:
            t[i] = _seconds(ts, f"row {i}: event_timestamp")
        else:
            carries[i] = False
        for c, col in numbers.items():
            a = row.get(c)
            if a is None:
                if c not in OPTIONAL_COLUMNS:  # an optional column's null is a value it carries
                    carries[i] = False
                continue
            try:
                x = float(a)  # type: ignore[arg-type]  # bad values: except below
            except (TypeError, ValueError):
                raise InputError(f"row {i}: {c} must be a number, got {a!r}") from None
            # the data model's limits (transformations/schema.py), which the stream and the
            # batch apply to every event: within them a hundredth fits an int64 many times
            if c in OPTIONAL_COLUMNS:  # a coordinate: any sign, kept to the hundredth
                if not isfinite(x) or abs(x) > MAX_AMOUNT:
                    raise InputError(f"row {i}: {c} must be finite and within "
                                     f"+-{MAX_AMOUNT:,.0f}, or null, got {a!r}")
                x = hundredth(x)
            elif not isfinite(x) or x < 0 or x > MAX_AMOUNT:
                raise InputError(f"row {i}: {c} must be a finite number from 0 to "
                                 f"{MAX_AMOUNT:,.0f}, got {a!r}")
            col[i] = x
        for c, text in texts.items():
            v = _id(row.get(c), ids.STRING, (i, c))  # (NaN is missing too)
            text[i] = v
            if v is None:
                carries[i] = False
    if DERIVED_FUNCTIONS:  # the udfs' columns of the carried transactions, as every path
        got = {name: [nan] * n for fn in DERIVED_FUNCTIONS for name, _ in fn.outputs}
        if any(carries):  # (a read of ids alone runs no udf)
            try:
                got = {c: col.tolist() for c, col in derive(
                    DERIVED_FUNCTIONS, t, {**keys, **texts, **{
                        c: [None if v != v else v for v in col]
                        for c, col in numbers.items()}}).items()}
            except DerivedError:  # a udf that cannot run on these rows: no carrying
                pass
        for c, derived in got.items():
            numbers[c] = derived
            carries = [k and v == v for k, v in zip(carries, derived, strict=True)]
    if any(carries) and n <= SMALL_BATCH:
        # to_cents in Python numbers, without NumPy's cost per call (~10 us a column): the
        # same doubles, rounded half to even by round() as by np.rint, and within the limits
        # above no int64 to wrap
        cents = {c: np.array([(NULL_CENTS if v != v else round(v * CENTS)) if k else 0
                              for v, k in zip(col, carries, strict=True)], dtype=np.int64)
                 for c, col in numbers.items()}
    elif any(carries):
        flags = np.array(carries, dtype=bool)
        cents = {c: layout.to_cents(np.where(flags, np.array(col, dtype=np.float64), 0.0))
                 for c, col in numbers.items()}
    else:  # a read of ids alone: what to_cents gives for zeros, without its cost per call
        cents = {c: np.zeros(n, dtype=np.int64) for c in numbers}
    extra = {name: [row.get(name) for row in rows] for name in _EXTRA_FIELDS}
    values: dict[str, list] = {**numbers, **texts}
    return _Requests(keys, txid, np.array(t, dtype=np.int64), values, cents,
                     np.array(carries, dtype=bool), extra)


def _request_features(req: _Requests, values: Mapping[str, list],
                      statuses: Mapping[str, list[str]] | None = None,
                      ) -> dict[str, tuple[list, list[str]]]:
    """The repo's request functions over the rows (transformations/request.py), each output
    with a status: a null where the row lacks a request field the function reads is
    MISSING_REQUEST_DATA; any other value or null is PRESENT."""
    n = len(req.t)
    t = req.t.tolist()
    request = {**{c: [None if x != x else x for x in v] if VALUE_COLUMNS[c] == "number"
                  else v for c, v in req.values.items()}, **req.extra}
    out: dict[str, tuple[list, list[str]]] = {}
    for fn in REQUEST_FUNCTIONS:
        fields = [f for f in fn.request_inputs if f != TIME_FIELD]
        cols = [request.get(f) for f in fields]  # None: a field no row carries
        lacking = [any(col is None or col[i] is None for col in cols) for i in range(n)]
        got = fn.apply(t, request, {name: values[name] for name in fn.feature_inputs})
        # an input feature UNAVAILABLE (a cluster node down): its outputs are too
        lost = None
        if statuses is not None:
            for name in fn.feature_inputs:
                if UNAVAILABLE in statuses[name]:
                    lost = [a or s == UNAVAILABLE for a, s in
                            zip(lost or [False] * n, statuses[name], strict=True)]
        for name, _dtype in fn.outputs:
            col = got[name]
            outs = [MISSING_REQUEST_DATA if v is None and lacking[i] else PRESENT
                    for i, v in enumerate(col)]
            if lost is not None and name in fn.feature_outputs():
                col = [None if lost[i] else v for i, v in enumerate(col)]
                outs = [UNAVAILABLE if lost[i] else st for i, st in enumerate(outs)]
            out[name] = (col, outs)
    return out


def _plain(values: np.ndarray) -> list:
    """numpy -> JSON-ready Python values, NaN -> None."""
    if values.dtype.kind == "f":
        return [None if v != v else v for v in values.tolist()]
    return values.tolist()


def _id(value: object, kind: str, what: str | tuple[int, str]) -> object:
    """The id's canonical form (transformations/ids.py); None or NaN is missing (None). what:
    the id's description, or (row, column) for "row i: column", made only for a refused id
    (the request loop's hot path)."""
    if value is None:
        return None
    try:
        return ids.canonical(value, kind)
    except ids.BadId as exc:
        if exc.rule == "missing":
            return None
        where = what if isinstance(what, str) else f"row {what[0]}: {what[1]}"
        raise InputError(f"{where} = {exc}") from None


def _epoch_number(value: int | float, what: str) -> int:
    """An epoch number as offline reads it (timestamps.per_second), floored to the second."""
    if value != value or abs(value) == float("inf"):
        raise InputError(f"{what}: cannot read {value!r} as a timestamp")
    per = T.per_second(value)
    if isinstance(value, int):
        return value // per
    return math.floor(value / per)


def _to_epoch(value: object, what: str = "as_of") -> int | None:
    """Fast path for the common timestamp types; None when pandas has to parse it."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)):
        return _epoch_number(int(value) if isinstance(value, (int, np.integer))
                             else float(value), what)
    if isinstance(value, datetime):
        if value != value:  # pd.NaT is a datetime too
            raise InputError(f"{what}: missing timestamp")
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return math.floor(value.timestamp())
    return None


def _seconds(value: object, what: str = "as_of") -> int:
    """Epoch seconds of a request time, within the one supported range (timestamps.MIN_S..
    MAX_S) or an InputError."""
    seconds = _parse_seconds(value, what)
    if not T.in_range(seconds):
        raise InputError(f"{what}: {value!r} is out of range ({T.RANGE_TEXT})")
    return seconds


def _parse_seconds(value: object, what: str) -> int:
    fast = _to_epoch(value, what)
    if fast is not None:
        return fast
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: cannot read {value!r} as a timestamp") from None
    if ts is pd.NaT:
        raise InputError(f"{what}: missing timestamp")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.timestamp())


def redis_refusal(exc: BaseException) -> str | None:
    """The fix, when Redis refused the connection for a setting of ours (not an outage)."""
    text = str(exc)
    if "DB index is out of range" in text:
        return ("redis.url selects a database this Redis server does not have (a default "
                "server has 0-15, its `databases` setting; Redis Cluster only 0)")
    if "NOAUTH" in text or "unauthenticated" in text or "Authentication required" in text:
        return "Redis requires a password: set redis.password or FFS_REDIS_PASSWORD"
    if "WRONGPASS" in text or "invalid username-password" in text:
        return "Redis refused the password: check redis.password / FFS_REDIS_PASSWORD"
    return None


def _describe(exc: Exception) -> str:
    why = f"{type(exc).__name__}: {exc}"
    fix = redis_refusal(exc)
    return f"{why} ({fix})" if fix else why


def _is_redis_error(exc: Exception) -> bool:
    import redis

    # Any error that comes from Redis or the connection to it: refused, timed out, loading,
    # BUSY (a long script), NOAUTH/WRONGPASS, "unauthenticated multibulk length", OOM, ...
    # all are ResponseErrors or ConnectionErrors, and all are RedisErrors.
    return isinstance(exc, (redis.exceptions.RedisError, OSError))
