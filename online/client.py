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

import numpy as np

from ffs.config import Config, RedisConfig, Secret
from ffs.errors import InputError
from online import layout
from online.plan import ReadPlan, compile_plan
from online.scripts import READ
from transformations import ids
from transformations import timestamps as T
from transformations.features import (
    FEATURE_SERVICE,
    RECENCY_FEATURES,
    REQUEST_FUNCTIONS,
    WINDOW_FEATURES,
    Agg,
    Entity,
    feature_names,
)
from transformations.ids import IdTypes
from transformations.request import TIME_FIELD

PRESENT = "PRESENT"
MISSING_ENTITY = "MISSING_ENTITY"
MISSING_REQUEST_DATA = "MISSING_REQUEST_DATA"
UNAVAILABLE = "UNAVAILABLE"

# request fields the repo's functions read beyond the ones the client itself parses
_EXTRA_FIELDS = sorted({f for fn in REQUEST_FUNCTIONS for f in fn.request_inputs}
                       - {TIME_FIELD, "amount", "transaction_id"})
# stands for the other entity in get_entity_features: keyed as "", which matches no key
_NO_ID = object()
DEFAULT_IDS = IdTypes()


def entity_feature_names(entity: Entity | str) -> list[str]:
    """The features read from one entity's state: its window features, then its recency
    features (declaration order)."""
    entity = Entity(entity)
    return ([f.name for f in WINDOW_FEATURES if f.entity == entity]
            + [r.name for r in RECENCY_FEATURES if r.entity == entity])


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

    def row(self, i: int) -> dict[str, object]:
        return {name: self.values[name][i] for name in self.feature_names}

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
    pool = redis.ConnectionPool.from_url(url, **kwargs)
    return redis.Redis(connection_pool=pool)


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
    def __init__(self, redis_conn, prefix: str = "ffs", plan: ReadPlan | None = None,
                 max_batch: int = 1000, id_types: IdTypes = DEFAULT_IDS):
        """id_types: the config's `ids`, so a request's "007" is the id the stream and the
        backfill stored (transformations/ids.py)."""
        self.redis = redis_conn
        self.id_types = id_types
        self.prefix = prefix
        self.plan = plan or compile_plan()
        self.max_batch = max_batch
        self._script = redis_conn.register_script(READ)
        self._argv = self.plan.argv()
        self._names = feature_names()
        self._columns = _compile_columns(self.plan)

    @classmethod
    def from_config(cls, cfg: Config, **kwargs) -> OnlineClient:
        return cls(redis_client(cfg.redis), prefix=cfg.redis.prefix,
                   id_types=cfg.ids.types(), **kwargs)

    def get_features(self, rows: Iterable[Mapping[str, object]], as_of: object = None,
                     feature_service: str = FEATURE_SERVICE) -> OnlineResult:
        rows = list(rows)
        if feature_service != FEATURE_SERVICE:
            raise InputError(f"unknown feature service {feature_service!r}; "
                             f"this store serves {FEATURE_SERVICE!r}")
        if len(rows) > self.max_batch:
            raise InputError(f"batch of {len(rows)} rows is over the limit of {self.max_batch}")
        default_t = _seconds(as_of) if as_of is not None else int(time.time())
        req = _requests(rows, default_t, self.id_types)
        keys: list[str] = []
        argv: list[object] = list(self._argv)
        p = self.prefix
        for cid, tid, t, txid, carries in zip(req.customer, req.terminal, req.t.tolist(),
                                              req.txid, req.carries_tx.tolist(), strict=False):
            keys += [f"{p}:c:{cid}:ev", f"{p}:t:{tid}:ev", f"{p}:t:{tid}:fraud"]
            argv += [t, "" if txid is None else str(txid), str(tid) if carries else ""]
        try:
            raw = self._script(keys=keys, args=argv) if rows else []
        except Exception as exc:  # redis ConnectionError, TimeoutError, BusyLoadingError, ...
            if not _is_redis_error(exc):
                raise
            return self._unavailable(req, _describe(exc))
        return self._assemble(req, np.asarray(raw, dtype=np.int64).reshape(len(rows),
                                                                           self.plan.width))

    def get_entity_features(self, entity: Entity | str, ids: Sequence[object],
                            as_of: object = None) -> OnlineResult:
        """One entity's features (entity_feature_names) for each id, all read at `as_of`
        (default now), with the values and statuses get_features gives a row with that id.
        For callers keyed by a single entity, such as the Feast plugin
        (online/feast_store.py): the other entity's id is a placeholder that matches no key."""
        entity = Entity(entity)
        other = next(e for e in Entity if e != entity)
        res = self.get_features([{entity.key: i, other.key: _NO_ID} for i in ids], as_of)
        names = entity_feature_names(entity)
        return OnlineResult(names, {n: res.values[n] for n in names},
                            {n: res.statuses[n] for n in names}, res.as_of, res.error)

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

    def _assemble(self, req: _Requests, raw: np.ndarray) -> OnlineResult:
        c = self._columns
        c_exists, t_exists, seen, term_in = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
        # The scored transaction joins windows that end at t, unless already ingested.
        add = req.carries_tx & (seen == 0)
        add_i = add.astype(np.int64)
        cents = np.where(add, req.cents, 0)

        cum_n, cum_s = raw[:, c.cum_n], raw[:, c.cum_s]  # (rows, edges)
        counts = cum_n[:, c.hi] - cum_n[:, c.lo] + np.outer(add_i, c.ends_at_t)
        totals = (cum_s[:, c.hi] - cum_s[:, c.lo] + np.outer(cents, c.ends_at_t)) / layout.CENTS
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        distinct = raw[:, c.distinct] + (add & (term_in == 0))
        prev = raw[:, c.prev]
        recency = np.where(prev >= 0, (req.t - prev).astype(np.float64), np.nan)
        t_counts = raw[:, c.t_counts] + np.outer(add_i, c.t_ends_at_t)
        frauds = raw[:, c.f_counts]
        with np.errstate(invalid="ignore", divide="ignore"):
            risk = np.where(t_counts[:, c.risk_count] > 0,
                            frauds / np.maximum(t_counts[:, c.risk_count], 1), 0.0)

        values: dict[str, list] = {}
        for name, col in zip(c.count_names, counts[:, c.count_cols].T.tolist(), strict=False):
            values[name] = col
        for name, col in zip(c.sum_names, totals[:, c.sum_cols].T.tolist(), strict=False):
            values[name] = col
        for name, col in zip(c.mean_names, means[:, c.mean_cols].T, strict=False):
            values[name] = _plain(col)
        for name in c.distinct_names:
            values[name] = distinct.tolist()
        for name in c.recency_names:
            values[name] = _plain(recency)
        for name, col in zip(c.t_count_names, t_counts[:, c.t_count_cols].T.tolist(), strict=False):
            values[name] = col
        for name, col in zip(c.risk_names, risk.T.tolist(), strict=False):
            values[name] = col
        for name, k, is_max, at_t in zip(c.x_names, c.x_cols, c.x_max, c.x_ends_at_t,
                                         strict=True):
            best = raw[:, k].astype(np.float64)
            best[best < 0] = np.nan  # an empty window
            if at_t:  # the scored transaction is in it; fmax/fmin skip the NaN of an empty one
                joined = (np.fmax if is_max else np.fmin)(best, req.cents.astype(np.float64))
                best = np.where(add, joined, best)
            values[name] = _plain(best / layout.CENTS)
        for name, k in zip(c.s_names, c.s_cols, strict=True):
            first = raw[:, k]
            # a customer first seen with the scored transaction itself: 0 seconds
            first = np.where((first < 0) & add, req.t, first)
            values[name] = _plain(np.where(first >= 0, (req.t - first).astype(np.float64),
                                           np.nan))
        for name, k in zip(c.l_names, c.l_cols, strict=True):
            # strictly before t: the scored transaction (at t) is never its own previous
            prev_cents = raw[:, k].astype(np.float64)
            values[name] = _plain(np.where(prev_cents >= 0, prev_cents / layout.CENTS, np.nan))

        c_status = np.where(c_exists.astype(bool) | add, PRESENT, MISSING_ENTITY).tolist()
        t_status = np.where(t_exists.astype(bool) | add, PRESENT, MISSING_ENTITY).tolist()
        statuses = {name: (c_status if name in c.customer_names else t_status)
                    for name in values}
        for name, (vals, stats) in _request_features(req, values).items():
            values[name], statuses[name] = vals, stats
        return OnlineResult(self._names, values, statuses, req.t.tolist())


@dataclass(frozen=True)
class _Columns:
    """Where each feature's numbers sit in the script's reply, compiled once per client."""

    cum_n: np.ndarray
    cum_s: np.ndarray
    lo: np.ndarray  # per customer window feature: edge index of t - delay - W
    hi: np.ndarray  # ... and of t - delay
    ends_at_t: np.ndarray  # 1 where the window ends at t (the scored transaction is inside)
    count_names: list[str]
    count_cols: list[int]
    sum_names: list[str]
    sum_cols: list[int]
    mean_names: list[str]
    mean_cols: list[int]
    distinct: int
    prev: int
    distinct_names: list[str]
    recency_names: list[str]
    t_counts: np.ndarray
    t_ends_at_t: np.ndarray
    t_count_names: list[str]
    t_count_cols: list[int]
    f_counts: np.ndarray
    risk_names: list[str]
    risk_count: list[int]
    customer_names: frozenset[str]
    x_names: list[str] = field(default_factory=list)  # min / max features
    x_cols: list[int] = field(default_factory=list)
    x_max: list[bool] = field(default_factory=list)
    x_ends_at_t: list[bool] = field(default_factory=list)
    s_names: list[str] = field(default_factory=list)  # first-seen features
    s_cols: list[int] = field(default_factory=list)
    l_names: list[str] = field(default_factory=list)  # last-value features
    l_cols: list[int] = field(default_factory=list)


def _compile_columns(plan: ReadPlan) -> _Columns:
    edge = {e: k for k, e in enumerate(plan.customer_edges)}
    col = 4 + 2 * len(plan.customer_edges)
    cust = [f for f in WINDOW_FEATURES
            if f.entity == Entity.CUSTOMER and f.agg in (Agg.COUNT, Agg.SUM, Agg.MEAN)]
    extremes = [f for f in WINDOW_FEATURES
                if f.entity == Entity.CUSTOMER and f.agg in (Agg.MIN, Agg.MAX)]
    first_seen = [f for f in WINDOW_FEATURES
                  if f.entity == Entity.CUSTOMER and f.agg == Agg.FIRST_SEEN]
    last = [f for f in WINDOW_FEATURES if f.entity == Entity.CUSTOMER and f.agg == Agg.LAST]
    x_start = col + 2 + len(plan.terminal_intervals) + len(plan.fraud_intervals)
    x_ivs = list(plan.extremes)
    term_ivs = list(plan.terminal_intervals)
    by_agg = {agg: [(k, f.name) for k, f in enumerate(cust) if f.agg == agg]
              for agg in (Agg.COUNT, Agg.SUM, Agg.MEAN)}
    t_count = [(term_ivs.index((f.delay_s + f.window_s, f.delay_s)), f.name)
               for f in WINDOW_FEATURES if f.entity == Entity.TERMINAL and f.agg == Agg.COUNT]
    risk = [f for f in WINDOW_FEATURES if f.agg == Agg.FRAUD_RATE]
    f_ivs = list(plan.fraud_intervals)
    return _Columns(
        cum_n=np.arange(4, col, 2), cum_s=np.arange(5, col, 2),
        lo=np.array([edge[f.delay_s + f.window_s] for f in cust], dtype=np.int64),
        hi=np.array([edge[f.delay_s] for f in cust], dtype=np.int64),
        ends_at_t=np.array([f.delay_s == 0 for f in cust], dtype=np.int64),
        count_names=[n for _, n in by_agg[Agg.COUNT]], count_cols=[k for k, _ in by_agg[Agg.COUNT]],
        sum_names=[n for _, n in by_agg[Agg.SUM]], sum_cols=[k for k, _ in by_agg[Agg.SUM]],
        mean_names=[n for _, n in by_agg[Agg.MEAN]], mean_cols=[k for k, _ in by_agg[Agg.MEAN]],
        distinct=col, prev=col + 1,
        distinct_names=[f.name for f in WINDOW_FEATURES if f.agg == Agg.COUNT_DISTINCT],
        recency_names=[r.name for r in RECENCY_FEATURES],
        t_counts=np.arange(col + 2, col + 2 + len(term_ivs)),
        t_ends_at_t=np.array([hi == 0 for _, hi in term_ivs], dtype=np.int64),
        t_count_names=[n for _, n in t_count], t_count_cols=[k for k, _ in t_count],
        f_counts=np.arange(col + 2 + len(term_ivs), col + 2 + len(term_ivs) + len(f_ivs))[
            [f_ivs.index((f.delay_s + f.window_s, f.delay_s)) for f in risk]],
        risk_names=[f.name for f in risk],
        risk_count=[term_ivs.index((f.delay_s + f.window_s, f.delay_s)) for f in risk],
        customer_names=frozenset(
            [f.name for f in WINDOW_FEATURES if f.entity == Entity.CUSTOMER]
            + [r.name for r in RECENCY_FEATURES if r.entity == Entity.CUSTOMER]),
        x_names=[f.name for f in extremes],
        x_cols=[x_start + x_ivs.index((f.delay_s + f.window_s, f.delay_s,
                                       int(f.agg == Agg.MAX))) for f in extremes],
        x_max=[f.agg == Agg.MAX for f in extremes],
        x_ends_at_t=[f.delay_s == 0 for f in extremes],
        s_names=[f.name for f in first_seen],
        s_cols=[x_start + len(x_ivs) + list(plan.first_seen).index(f.window_s)
                for f in first_seen],
        l_names=[f.name for f in last],
        l_cols=[x_start + len(x_ivs) + len(plan.first_seen) + list(plan.last).index(f.window_s)
                for f in last],
    )


@dataclass
class _Requests:
    customer: list
    terminal: list
    txid: list
    t: np.ndarray
    amount: np.ndarray
    cents: np.ndarray
    carries_tx: np.ndarray
    extra: dict[str, list] = field(default_factory=dict)  # other request fields, as sent


def _requests(rows: Sequence[Mapping[str, object]], default_t: int,
              id_types: IdTypes) -> _Requests:
    n = len(rows)
    customer: list[object] = []
    terminal: list[object] = []
    txid: list[object] = []
    t = np.full(n, default_t, dtype=np.int64)
    amount = np.full(n, np.nan)
    for i, row in enumerate(rows):
        for name, column in (("customer_id", customer), ("terminal_id", terminal)):
            value = _id(row.get(name), id_types.of(name), f"row {i}: {name}")
            if value is None:
                raise InputError(f"row {i}: missing {name!r}; every row needs customer_id "
                                 f"and terminal_id")
            column.append(value)
        txid.append(_id(row.get("transaction_id"), id_types.transaction_id,
                        f"row {i}: transaction_id"))
        ts = row.get("event_timestamp")
        if ts is not None:
            t[i] = _seconds(ts, f"row {i}: event_timestamp")
        a = row.get("amount")
        if a is not None:
            try:
                amount[i] = float(a)  # type: ignore[arg-type]  # bad values: except below
            except (TypeError, ValueError):
                raise InputError(f"row {i}: amount must be a number, got {a!r}") from None
            if not np.isfinite(amount[i]) or amount[i] < 0:
                raise InputError(f"row {i}: amount must be finite and >= 0, got {a!r}")
    has_ts = np.array([r.get("event_timestamp") is not None for r in rows], dtype=bool)
    carries = has_ts & ~np.isnan(amount)
    cents = layout.to_cents(np.where(carries, amount, 0.0))
    extra = {name: [row.get(name) for row in rows] for name in _EXTRA_FIELDS}
    return _Requests(customer, terminal, txid, t, amount, cents, carries, extra)


def _request_features(req: _Requests, values: Mapping[str, list],
                      ) -> dict[str, tuple[list, list[str]]]:
    """The repo's request functions over the rows (transformations/request.py), each output
    with a status: a null where the row lacks a request field the function reads is
    MISSING_REQUEST_DATA; any other value or null is PRESENT."""
    n = len(req.t)
    t = req.t.tolist()
    request = {"amount": _plain(req.amount), **req.extra}
    out: dict[str, tuple[list, list[str]]] = {}
    for fn in REQUEST_FUNCTIONS:
        fields = [f for f in fn.request_inputs if f != TIME_FIELD]
        cols = [request.get(f) for f in fields]  # None: a field no row carries
        lacking = [any(col is None or col[i] is None for col in cols) for i in range(n)]
        got = fn.apply(t, request, {name: values[name] for name in fn.feature_inputs})
        for name, _dtype in fn.outputs:
            col = got[name]
            out[name] = (col, [PRESENT if v is not None else
                               MISSING_REQUEST_DATA if lacking[i] else PRESENT
                               for i, v in enumerate(col)])
    return out


def _plain(values: np.ndarray) -> list:
    """numpy -> JSON-ready Python values, NaN -> None."""
    if values.dtype.kind == "f":
        return [None if v != v else v for v in values.tolist()]
    return values.tolist()


def _id(value: object, kind: str, what: str) -> object:
    """The id's canonical form (transformations/ids.py); None or NaN is missing (None)."""
    if value is _NO_ID:
        return ""
    try:
        return ids.canonical(value, kind)
    except ids.BadId as exc:
        if exc.rule == "missing":
            return None
        raise InputError(f"{what} = {exc}") from None


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
    if "NOAUTH" in text or "unauthenticated" in text:
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
