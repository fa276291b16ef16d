"""In-process online client for scoring services.

    client = OnlineClient.from_config(load_config())
    result = client.get_features([{"customer_id": 42, "terminal_id": 7,
                                   "transaction_id": 991, "event_timestamp": ts, "amount": 12.5}])
    result.values["customer_nb_tx_1h"], result.statuses["customer_nb_tx_1h"]

A row that carries a transaction (event_timestamp and amount) is scored at its own timestamp
and the transaction is counted in its windows, exactly as the training set counts it, unless
it was already ingested (same transaction_id). Other rows are read at `as_of` (default: now).
Every value has a status: PRESENT, MISSING_ENTITY (nothing known about that customer or
terminal: windows are empty), MISSING_REQUEST_DATA (a request feature without its input) or
UNAVAILABLE (Redis did not answer within the timeout; the value is None). The client never
raises for a Redis failure: it answers within its timeout and recovers when Redis is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from feature_repo.windows import (
    FEATURE_SERVICE,
    RECENCY_FEATURES,
    REQUEST_FEATURES,
    WINDOW_FEATURES,
    Agg,
    Entity,
    feature_names,
)
from ffs.config import Config, RedisConfig
from ffs.errors import InputError
from online import layout
from online.plan import ReadPlan, compile_plan
from online.scripts import READ
from transformations import timestamps as T

PRESENT = "PRESENT"
MISSING_ENTITY = "MISSING_ENTITY"
MISSING_REQUEST_DATA = "MISSING_REQUEST_DATA"
UNAVAILABLE = "UNAVAILABLE"

_REQUEST = {f.name for f in REQUEST_FEATURES}


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
        keys = list(entities)
        return {
            "metadata": {"feature_names": keys + self.feature_names},
            "results": [{"values": list(entities[k]), "statuses": [PRESENT] * len(entities[k]),
                         "event_timestamps": ["1970-01-01T00:00:00Z"] * len(entities[k])}
                        for k in keys]
            + [{"values": self.values[n], "statuses": self.statuses[n],
                "event_timestamps": [_iso(t) for t in self.as_of]} for n in self.feature_names],
        }


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def redis_client(cfg: RedisConfig, max_connections: int = 32):
    import redis

    timeout = cfg.timeout_ms / 1000.0
    kwargs = dict(socket_timeout=timeout, socket_connect_timeout=timeout,
                  max_connections=max_connections, retry_on_timeout=False)
    if cfg.password is not None:
        kwargs["password"] = cfg.password.reveal()
    url = cfg.url
    if cfg.tls and url.startswith("redis://"):
        url = "rediss://" + url[len("redis://"):]
    if url.startswith("rediss://") and cfg.tls_ca_file:
        kwargs["ssl_ca_certs"] = cfg.tls_ca_file
    pool = redis.ConnectionPool.from_url(url, **kwargs)
    return redis.Redis(connection_pool=pool)


class OnlineClient:
    def __init__(self, redis_conn, prefix: str = "ffs", plan: ReadPlan | None = None,
                 max_batch: int = 1000):
        self.redis = redis_conn
        self.prefix = prefix
        self.plan = plan or compile_plan()
        self.max_batch = max_batch
        self._script = redis_conn.register_script(READ)
        self._argv = self.plan.argv()
        self._names = feature_names()

    @classmethod
    def from_config(cls, cfg: Config, **kwargs) -> OnlineClient:
        return cls(redis_client(cfg.redis), prefix=cfg.redis.prefix, **kwargs)

    def get_features(self, rows: Iterable[Mapping[str, object]], as_of: object = None,
                     feature_service: str = FEATURE_SERVICE) -> OnlineResult:
        rows = list(rows)
        if feature_service != FEATURE_SERVICE:
            raise InputError(f"unknown feature service {feature_service!r}; "
                             f"this store serves {FEATURE_SERVICE!r}")
        if len(rows) > self.max_batch:
            raise InputError(f"batch of {len(rows)} rows is over the limit of {self.max_batch}")
        default_t = _seconds(as_of) if as_of is not None else int(time.time())
        req = _requests(rows, default_t)
        keys: list[str] = []
        argv: list[object] = list(self._argv)
        p = self.prefix
        for cid, tid, t, txid, carries in zip(req.customer, req.terminal, req.t.tolist(),
                                              req.txid, req.carries_tx.tolist()):
            keys += [f"{p}:c:{cid}:ev", f"{p}:c:{cid}:term", f"{p}:t:{tid}:ev",
                     f"{p}:t:{tid}:fraud"]
            argv += [t, "" if txid is None else str(txid), str(tid) if carries else ""]
        try:
            raw = self._script(keys=keys, args=argv) if rows else []
        except Exception as exc:  # redis ConnectionError, TimeoutError, BusyLoadingError, ...
            if not _is_redis_error(exc):
                raise
            return self._unavailable(req, f"{type(exc).__name__}: {exc}")
        return self._assemble(req, np.asarray(raw, dtype=np.int64).reshape(len(rows),
                                                                           self.plan.width))

    def _unavailable(self, req: _Requests, why: str) -> OnlineResult:
        n = len(req.t)
        values: dict[str, list] = {}
        statuses: dict[str, list[str]] = {}
        request = _request_features(req, np.full(n, np.nan))
        for name in self._names:
            if name in request and name != "amount_over_customer_avg_30d":
                values[name], statuses[name] = request[name]
            else:
                values[name], statuses[name] = [None] * n, [UNAVAILABLE] * n
        return OnlineResult(self._names, values, statuses, req.t.tolist(), why)

    def _assemble(self, req: _Requests, raw: np.ndarray) -> OnlineResult:
        plan = self.plan
        n = len(req.t)
        c_exists, t_exists, seen, last_term = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
        col = 4
        cum_n, cum_s = {}, {}
        for edge in plan.customer_edges:
            cum_n[edge], cum_s[edge] = raw[:, col], raw[:, col + 1]
            col += 2
        distinct, prev = raw[:, col], raw[:, col + 1]
        col += 2
        t_counts = {iv: raw[:, col + k] for k, iv in enumerate(plan.terminal_intervals)}
        col += len(plan.terminal_intervals)
        f_counts = {iv: raw[:, col + k] for k, iv in enumerate(plan.fraud_intervals)}

        # The scored transaction joins windows that end at t, unless already ingested.
        add = req.carries_tx & (seen == 0)
        cents = np.where(add, req.cents, 0)
        out: dict[str, np.ndarray] = {}
        for f in WINDOW_FEATURES:
            lo, hi = f.delay_s + f.window_s, f.delay_s
            inc = add if hi == 0 else np.zeros(n, dtype=bool)
            if f.entity == Entity.CUSTOMER and f.agg != Agg.COUNT_DISTINCT:
                count = cum_n[hi] - cum_n[lo] + inc
                total = (cum_s[hi] - cum_s[lo] + np.where(inc, cents, 0)) / layout.CENTS
                if f.agg == Agg.COUNT:
                    out[f.name] = count
                elif f.agg == Agg.SUM:
                    out[f.name] = total
                else:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        out[f.name] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            elif f.agg == Agg.COUNT_DISTINCT:
                new_term = (last_term < 0) | (last_term <= req.t - f.window_s)
                out[f.name] = distinct + (inc & new_term)
            elif f.agg == Agg.COUNT:
                out[f.name] = t_counts[(lo, hi)] + inc
            else:  # FRAUD_RATE: delayed windows never contain the scored transaction
                count = t_counts[(lo, hi)] + inc
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[f.name] = np.where(count > 0, f_counts[(lo, hi)] / np.maximum(count, 1),
                                           0.0)
        for r in RECENCY_FEATURES:
            out[r.name] = np.where(prev >= 0, (req.t - prev).astype(np.float64), np.nan)

        values: dict[str, list] = {}
        statuses: dict[str, list[str]] = {}
        request = _request_features(req, out["customer_avg_amount_30d"])
        c_status = np.where(c_exists | add, PRESENT, MISSING_ENTITY).tolist()
        t_status = np.where(t_exists | add, PRESENT, MISSING_ENTITY).tolist()
        for f in WINDOW_FEATURES:
            values[f.name] = _plain(out[f.name])
            statuses[f.name] = c_status if f.entity == Entity.CUSTOMER else t_status
        for r in RECENCY_FEATURES:
            values[r.name] = _plain(out[r.name])
            statuses[r.name] = c_status
        for name, (vals, stats) in request.items():
            values[name], statuses[name] = vals, stats
        return OnlineResult(self._names, values, statuses, req.t.tolist())


@dataclass
class _Requests:
    customer: list
    terminal: list
    txid: list
    t: np.ndarray
    amount: np.ndarray
    cents: np.ndarray
    carries_tx: np.ndarray


def _requests(rows: list[Mapping[str, object]], default_t: int) -> _Requests:
    n = len(rows)
    customer, terminal, txid = [], [], []
    t = np.full(n, default_t, dtype=np.int64)
    amount = np.full(n, np.nan)
    for i, row in enumerate(rows):
        try:
            customer.append(row["customer_id"])
            terminal.append(row["terminal_id"])
        except KeyError as exc:
            raise InputError(f"row {i}: missing {exc.args[0]!r}; every row needs customer_id "
                             f"and terminal_id") from None
        txid.append(row.get("transaction_id"))
        ts = row.get("event_timestamp")
        if ts is not None:
            t[i] = _seconds(ts, f"row {i}: event_timestamp")
        a = row.get("amount")
        if a is not None:
            try:
                amount[i] = float(a)
            except (TypeError, ValueError):
                raise InputError(f"row {i}: amount must be a number, got {a!r}") from None
            if not np.isfinite(amount[i]) or amount[i] < 0:
                raise InputError(f"row {i}: amount must be finite and >= 0, got {a!r}")
    has_ts = np.array([r.get("event_timestamp") is not None for r in rows], dtype=bool)
    carries = has_ts & ~np.isnan(amount)
    cents = layout.to_cents(np.nan_to_num(amount))
    return _Requests(customer, terminal, txid, t, amount, cents, carries)


def _request_features(req: _Requests, avg30: np.ndarray) -> dict[str, tuple[list, list[str]]]:
    n = len(req.t)
    has_amount = ~np.isnan(req.amount)
    amount_status = np.where(has_amount, PRESENT, MISSING_REQUEST_DATA).tolist()
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(avg30) & (avg30 != 0), req.amount / avg30, np.nan)
    return {
        "amount": (_plain(req.amount), amount_status),
        "tx_during_weekend": ((T.weekday(req.t) >= 5).astype(np.int64).tolist(), [PRESENT] * n),
        "tx_during_night": ((T.hour(req.t) <= 6).astype(np.int64).tolist(), [PRESENT] * n),
        "amount_over_customer_avg_30d": (_plain(ratio), amount_status),
    }


def _plain(values: np.ndarray) -> list:
    """numpy -> JSON-ready Python values, NaN -> None."""
    if values.dtype.kind == "f":
        return [None if v != v else v for v in values.tolist()]
    return values.tolist()


def _seconds(value: object, what: str = "as_of") -> int:
    import pandas as pd

    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: cannot read {value!r} as a timestamp") from None
    if ts is pd.NaT:
        raise InputError(f"{what}: missing timestamp")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.timestamp())


def _is_redis_error(exc: Exception) -> bool:
    import redis

    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            redis.exceptions.BusyLoadingError, OSError))
