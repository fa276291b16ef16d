"""HTTP feature server: Feast's `/get-online-features` over the online client.

    ffs serve [--host 127.0.0.1] [--port 6566] [--workers 1]

    curl -s localhost:6566/get-online-features -H 'Content-Type: application/json' -d '{
      "feature_service": "fraud_detection_v1",
      "entities": {"customer_id": [42], "terminal_id": [7]},
      "request_data": {"transaction_id": [991], "event_timestamp": ["2026-03-01T12:00:00Z"],
                       "amount": [12.5]}}'

Endpoints: POST /get-online-features, GET /health (liveness), GET /ready (Redis answers
PING within the timeout), GET /metrics (Prometheus), GET /openapi.json and /docs.
When `serve.api_key` is set, every endpoint but /health needs `X-API-Key: <key>` or
`Authorization: Bearer <key>`.

Request: Feast's shape, with the loaded repo's columns (transformations/features.py).
`entities` holds a column for every join key (KEY_COLUMNS; the shipped repo: customer_id and
terminal_id); the scored transaction's `transaction_id`, `event_timestamp` (ISO 8601 or epoch
seconds), its value columns (VALUE_COLUMNS; the shipped repo: amount) and any other field the
repo's request functions read go in `request_data` (or, as Feast does it, in `entities`); all
columns have one value per row (/openapi.json documents each, a key by its declared id
type). `as_of` (ISO 8601 or epoch seconds) sets the read time of rows without a transaction
(default: now). Response: Feast's columnar shape (`OnlineResult.to_feast_response`): the
entity columns, then every feature of the service, each with values, statuses and
event_timestamps (the instant each row was read at).

A slow or absent Redis never gives a 5xx on /get-online-features: the answer is 200 with
status UNAVAILABLE (and value null) for every Redis-backed feature, within about
`serve.timeout_ms` (see `_Breaker`). A bad request gets a 4xx and
`{"error": "<what is wrong, what to send>"}`.

Performance (one worker; numbers in BENCHMARKS.md): the client is called directly on the
event loop (faster than a worker thread, see `send` in create_app), POST
/get-online-features is served by a pure ASGI front (`_Front`) rather than FastAPI's
routing, requests that arrive together share one Redis read, and the loop serves other
requests while Redis runs it (`_Coalescer`: 1.47x the requests/s of a loop that waited for
each reply, 2026-12-04), and JSON is
parsed here with the json module: pydantic body validation would add
~0.1 ms and cannot express our checks (equal column lengths, id types, timestamps) anyway.
The pydantic models below only document the API in /openapi.json.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import math
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, Optional, Union

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ffs.config import Config
from ffs.errors import ConfigError, InputError
from ffs.online.client import (
    OnlineClient,
    OnlineResult,
    _requests,
    _seconds,
    redis_client,
)
from ffs.online.shards import is_cluster
from ffs.transformations import ids
from ffs.transformations.features import (
    COMPILED,
    FEATURE_SERVICE,
    INPUT_COLUMNS,
    KEY_COLUMNS,
    OPTIONAL_COLUMNS,
    REQUEST_FUNCTIONS,
    VALUE_COLUMNS,
    feature_names,
)
from ffs.transformations.schema import MAX_AMOUNT
from ffs.transformations.timestamps import RANGE_TEXT, in_range, parse_iso

log = logging.getLogger("ffs.server")

ENTITY_KEYS = KEY_COLUMNS  # every join key of the loaded repo: each row needs all of them
NUMBER = "number"  # a VALUE_COLUMNS kind; the other is "text"
OPTIONAL = "optional"  # a number column that may be null (OPTIONAL_COLUMNS), of any sign
# the scored transaction's fields, and any other field the repo's request functions read
EXTRA_KEYS = tuple(sorted({f for fn in REQUEST_FUNCTIONS for f in fn.request_inputs}
                          - {"transaction_id", "event_timestamp", *VALUE_COLUMNS,
                             *ENTITY_KEYS}))
# (a column the views' udfs derive is computed from these, never sent)
REQUEST_KEYS = ("transaction_id", "event_timestamp", *INPUT_COLUMNS, *EXTRA_KEYS)
# the services a request may name: the served one (every feature) and the repo's others,
# each answered with its own features
SERVICES = tuple(dict.fromkeys([FEATURE_SERVICE, *COMPILED.services]))
TOP_LEVEL_KEYS = {"feature_service", "entities", "request_data", "as_of", "features",
                  "full_feature_names", "include_feature_view_version_metadata"}
MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_IDS = ids.IdTypes()
FEATURES_PATH = "/get-online-features"
ENDPOINTS = ("/get-online-features", "/health", "/ready", "/metrics", "/openapi.json", "/docs")
OPEN_ENDPOINTS = ("/health",)
LATENCY_BUCKETS = (0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
                   0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


# ---------------------------------------------------------------- OpenAPI documentation only

Scalar = Union[int, str]


def _listing(names) -> str:
    """"a", "a and b", "a, b and c"."""
    names = list(names)
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _request_text() -> str:
    """The request columns as request_data's description lists them."""
    parts = ["transaction_id", "event_timestamp (ISO 8601 or epoch seconds; naive = UTC)"]
    parts += [f"{c} ({'a number >= 0' if kind == NUMBER else 'an id-like text'})"
              for c, kind in VALUE_COLUMNS.items()]
    parts += [f"{k} (read by the repo's request functions)" for k in EXTRA_KEYS]
    return _listing(parts)


class GetOnlineFeaturesRequest(BaseModel):
    """Feast's request, plus the scored transaction and an optional read time. `entities`
    and `request_data` are documented per column of the loaded repo by request_schema()."""

    # required, as the server checks it: a schema default would tell clients they may omit it
    feature_service: str = Field(..., examples=[FEATURE_SERVICE])
    entities: dict[str, list[Scalar]] = Field(
        description=f"{_listing(ENTITY_KEYS)} columns, one value per row (ids, by their "
                    f"declared type). {_listing(REQUEST_KEYS)} may also go here, as Feast "
                    f"passes request data.")
    request_data: Optional[dict[str, list[Union[int, float, str, None]]]] = Field(
        None, description=f"The scored transaction, columnar, same length as entities: "
        f"{_request_text()}. A row with {_listing(['event_timestamp', *VALUE_COLUMNS])} is "
        f"scored at its own timestamp and counted in its windows (once, by transaction_id).")
    as_of: Optional[Union[str, float]] = Field(
        None, description="Read time of rows without an event_timestamp: ISO 8601 or epoch "
        "seconds. Default: now.")
    full_feature_names: Literal[False] = Field(False, description="Only false is supported "
                                               "(feature names are unique in the service).")


# What the server accepts as an id of each declared type (transformations/ids.py), so the
# document neither refuses good ids nor promises bad ones: an int id is an integer in int64's
# range or its decimal text; a string id is the ids' text (an integer stands for its text).
_INT_ID = Union[Annotated[int, Field(ge=-(2**63), le=2**63 - 1)],
                Annotated[str, Field(pattern=r"^[+-]?[0-9]+(\.0*)?$",
                                     max_length=ids.MAX_LENGTH)]]
_TEXT_ID = Annotated[str, Field(pattern=f"^{ids.TEXT.pattern}$")]
_STRING_ID = Union[_TEXT_ID, int]
_EXAMPLE_IDS = (42, 7, 3, 11, 5, 19, 23, 29)


def _id_type(kind: str):
    return _INT_ID if kind == ids.INT else _STRING_ID


def _column_schema(item, description: str) -> dict:
    schema = TypeAdapter(list[item]).json_schema()
    schema["description"] = description
    return schema


def entity_example(id_types: ids.IdTypes) -> dict[str, list]:
    """One row of entity columns, e.g. {"customer_id": [42], "terminal_id": [7]}."""
    examples = (_EXAMPLE_IDS[i % len(_EXAMPLE_IDS)] for i in range(len(ENTITY_KEYS)))
    return {k: [n if id_types.of(k) == ids.INT else str(n)]
            for k, n in zip(ENTITY_KEYS, examples, strict=True)}


def _request_columns(id_types: ids.IdTypes) -> dict[str, dict]:
    """Schemas of the request columns: the transaction id, time, value columns, extras."""
    cols = {"transaction_id": _column_schema(
                Optional[_id_type(id_types.transaction_id)],
                f"the scored transaction's id ({id_types.transaction_id}), or null"),
            "event_timestamp": _column_schema(
                Union[int, float, str, None], "ISO 8601 or epoch seconds (naive = UTC), or "
                "null: the row is read at as_of")}
    for column, kind in VALUE_COLUMNS.items():
        if kind == NUMBER:
            item: Any = Optional[Annotated[float, Field(ge=0, le=MAX_AMOUNT)]]
            cols[column] = _column_schema(item, f"a number, 0 to {MAX_AMOUNT:g}, or null")
        else:
            cols[column] = _column_schema(Optional[_TEXT_ID], "an id-like text, or null")
    for key in EXTRA_KEYS:
        cols[key] = _column_schema(Union[int, float, str, bool, None],
                                   "read by the repo's request functions, as sent")
    return cols


def request_schema(id_types: ids.IdTypes) -> dict:
    """The request's JSON schema for /openapi.json, with a property for every column of the
    loaded repo (keys typed by `id_types`); other columns are refused, as the server does."""
    schema = GetOnlineFeaturesRequest.model_json_schema()
    props = schema["properties"]
    requests = _request_columns(id_types)
    keys = {k: _column_schema(_id_type(id_types.of(k)),
                              f"join key, one {id_types.of(k)} id per row") for k in ENTITY_KEYS}
    props["entities"] = {
        "type": "object", "title": "Entities", "description": props["entities"]["description"],
        "properties": {**keys, **requests}, "required": list(ENTITY_KEYS),
        "additionalProperties": False, "examples": [entity_example(id_types)]}
    example: dict[str, list] = {"transaction_id": [991 if id_types.transaction_id == ids.INT
                                                   else "991"],
                                "event_timestamp": ["2026-03-01T12:00:00Z"]}
    example.update({c: [12.5 if kind == NUMBER else "a1"] for c, kind in VALUE_COLUMNS.items()})
    props["request_data"] = {
        "anyOf": [{"type": "object", "properties": requests, "additionalProperties": False},
                  {"type": "null"}],
        "default": None, "title": "Request Data",
        "description": props["request_data"]["description"], "examples": [example]}
    return schema


class FeatureColumn(BaseModel):
    values: list[Any]
    statuses: list[str] = Field(description="PRESENT, MISSING_ENTITY, MISSING_REQUEST_DATA "
                                "or UNAVAILABLE (Redis did not answer; value null)")
    event_timestamps: list[str]


class ResponseMetadata(BaseModel):
    feature_names: list[str]


class GetOnlineFeaturesResponse(BaseModel):
    metadata: ResponseMetadata
    results: list[FeatureColumn] = Field(description="One column per name in "
                                         "metadata.feature_names, in that order.")


class ErrorBody(BaseModel):
    error: str


class StatusBody(BaseModel):
    status: str


# ------------------------------------------------------------------------------- metrics


class Metrics:
    """Prometheus metrics in a registry of their own (several apps can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram("ffs_http_request_duration_seconds",
                                 "Time from request received to response sent", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.read_latency = Histogram("ffs_online_read_duration_seconds",
                                      "Time of one online read (Redis round trip included): one "
                                      "request, or several read together",
                                      buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests = Counter("ffs_http_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.rows = Counter("ffs_rows_served", "Entity rows answered by /get-online-features",
                            registry=self.registry)
        self.errors = Counter("ffs_http_errors", "Error responses by reason", ["reason"],
                              registry=self.registry)
        self.unavailable = Counter("ffs_redis_unavailable",
                                   "Responses whose features were UNAVAILABLE, by error type",
                                   ["error"], registry=self.registry)
        # Bound children, so the hot path does not look labels up for every request.
        self._latency = {e: self.latency.labels(e) for e in ENDPOINTS + ("other",)}
        self._requests: dict[tuple[str, int], Any] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self._latency[endpoint].observe(seconds)
        child = self._requests.get((endpoint, status))
        if child is None:
            child = self._requests[(endpoint, status)] = self.requests.labels(endpoint,
                                                                              str(status))
        child.inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# ------------------------------------------------------------------------ request parsing


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, reason: str = "bad_request"):
        super().__init__(message)
        self.status, self.reason = status, reason


def _show(value: object, limit: int = 60) -> str:
    """A value as JSON, cut short: error messages echo input, never a whole payload."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _reject_constant(token: str):
    raise BadRequest(f"invalid JSON: {token} is not a number JSON allows",
                     reason="invalid_json")


def _epoch(value: object, what: str) -> int:
    """A timestamp as the client reads it (ISO 8601, or an epoch number: seconds below 1e11,
    then ms, us, ns, as offline), floored to whole seconds, UTC; naive means UTC."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"{what}: expected an ISO 8601 timestamp or epoch seconds, "
                         f"found {_show(value)}")
    seconds = None
    if isinstance(value, str):
        try:  # fast path; pandas (in the client's _seconds) reads the other formats
            seconds = math.floor(parse_iso(value).timestamp())
        except ValueError:
            pass
    if seconds is None:
        try:
            seconds = _seconds(value, what)
        except InputError as exc:
            if "out of range" in str(exc):
                raise BadRequest(f"{what}: {_show(value)} is out of range ({RANGE_TEXT})") \
                    from None
            raise BadRequest(f"{what}: cannot read {_show(value)} as a timestamp; send ISO "
                             f"8601 (e.g. 2026-03-01T12:00:00Z) or epoch seconds") from None
        except (OverflowError, ValueError):
            raise BadRequest(f"{what}: {_show(value)} is out of range") from None
    if not in_range(seconds):
        raise BadRequest(f"{what}: {_show(value)} is out of range ({RANGE_TEXT})")
    return seconds


def _column(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise BadRequest(f"{what}: expected a list (one value per row), "
                         f"found {type(value).__name__}")
    return value


def _check_ids(values: list, what: str, kind: str, nullable: bool = False) -> None:
    """Every id valid under its declared type (transformations/ids.py), or a 400 naming it;
    the client keys them by the same rule."""
    for i, v in enumerate(values):
        if nullable and v is None:
            continue
        try:
            ids.canonical(v, kind)
        except ids.BadId as exc:
            raise BadRequest(f"{what}[{i}]: {exc}") from None


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_request(body: bytes, max_batch: int, id_types: ids.IdTypes = DEFAULT_IDS,
                  ) -> tuple[list[dict], int | None, dict, str]:
    """Body -> (rows for OnlineClient.get_features, as_of, entity columns for the response,
    the feature service asked for)."""
    try:  # json.loads, with the decoder made once rather than per call
        req = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except BadRequest:
        raise
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest(f"invalid JSON: {exc}", reason="invalid_json") from None
    except RecursionError:
        raise BadRequest("invalid JSON: nested too deep", reason="invalid_json") from None
    if not isinstance(req, dict):
        raise BadRequest(f"expected a JSON object, found {type(req).__name__}")
    unknown = set(req) - TOP_LEVEL_KEYS
    if unknown:
        raise BadRequest(f"unknown field(s) {_show(sorted(unknown))}; known: "
                         f"{sorted(TOP_LEVEL_KEYS)}")
    if req.get("features"):
        raise BadRequest(f"this server answers by feature service, not by feature list: send "
                         f"\"feature_service\": \"{FEATURE_SERVICE}\" instead of \"features\"")
    service = req.get("feature_service")
    if service is None:
        raise BadRequest(f"missing \"feature_service\" (this store serves {FEATURE_SERVICE!r})")
    if service not in SERVICES:
        raise BadRequest(f"unknown feature service {_show(service)}; this store serves "
                         f"{_listing(SERVICES)}", status=404,
                         reason="unknown_feature_service")
    full_names = req.get("full_feature_names", False)
    if not isinstance(full_names, bool):
        raise BadRequest(f"full_feature_names: expected true or false, found {_show(full_names)}")
    if full_names:
        raise BadRequest("full_feature_names=true is not supported: feature names are unique "
                         "within the service")

    entities = req.get("entities")
    if not isinstance(entities, dict):
        raise BadRequest(f"missing \"entities\": an object of columns, e.g. "
                         f"{json.dumps(entity_example(id_types))}")
    request_data = req.get("request_data")
    if request_data is None:
        request_data = {}
    elif not isinstance(request_data, dict):
        raise BadRequest(f"\"request_data\": expected an object of columns, found "
                         f"{type(request_data).__name__}")
    columns: dict[str, list] = {}
    for key, value in entities.items():
        if key not in ENTITY_KEYS and key not in REQUEST_KEYS:
            raise BadRequest(f"entities: unknown column {_show(key)}; entities are "
                             f"{list(ENTITY_KEYS)} (request data: {list(REQUEST_KEYS)})")
        columns[key] = _column(value, f"entities.{key}")
    for key, value in request_data.items():
        if key not in REQUEST_KEYS:
            raise BadRequest(f"request_data: unknown column {_show(key)}; known: "
                             f"{list(REQUEST_KEYS)}")
        if key in columns:
            raise BadRequest(f"{key!r} is given both in entities and in request_data")
        columns[key] = _column(value, f"request_data.{key}")
    for key in ENTITY_KEYS:
        if key not in columns:
            raise BadRequest(f"entities: missing column {key!r}; every row needs "
                             f"{_listing(ENTITY_KEYS)}")
    lengths = {k: len(v) for k, v in columns.items()}
    n = lengths[ENTITY_KEYS[0]]
    if any(length != n for length in lengths.values()):
        raise BadRequest(f"columns must all have one value per row; lengths: {lengths}")
    if n > max_batch:
        raise BadRequest(f"batch of {n} rows is over the limit of {max_batch}; split it",
                         status=413, reason="batch_too_large")

    keys = {key: columns[key] for key in ENTITY_KEYS}
    for key, values in keys.items():
        _check_ids(values, key, id_types.of(key))
    rows = [dict(zip(ENTITY_KEYS, row, strict=True)) for row in zip(*keys.values(), strict=True)]
    if "transaction_id" in columns:
        txids = columns["transaction_id"]
        _check_ids(txids, "transaction_id", id_types.transaction_id, nullable=True)
        for row, txid in zip(rows, txids, strict=False):
            row["transaction_id"] = txid
    if "event_timestamp" in columns:
        for i, (row, ts) in enumerate(zip(rows, columns["event_timestamp"], strict=False)):
            row["event_timestamp"] = None if ts is None else _epoch(ts, f"event_timestamp[{i}]")
    for column, kind in INPUT_COLUMNS.items():
        if column in columns:
            for i, (row, v) in enumerate(zip(rows, columns[column], strict=False)):
                row[column] = _value(v, f"{column}[{i}]",
                                     OPTIONAL if column in OPTIONAL_COLUMNS else kind)
    for key in EXTRA_KEYS:  # as sent: JSON scalars, for the request functions to read
        for i, (row, v) in enumerate(zip(rows, columns.get(key, [None] * n), strict=True)):
            if v is not None and type(v) not in (int, float, str, bool):
                raise BadRequest(f"{key}[{i}]: expected a number, text, boolean or null, "
                                 f"found {_show(v)}")
            row[key] = v
    as_of = req.get("as_of")
    as_of = None if as_of is None else _epoch(as_of, "as_of")
    return rows, as_of, keys, service


def _value(value: object, what: str, kind: str) -> object:
    """A value column's entry: a number (the amount rule: 0 to MAX_AMOUNT) or an id-like
    text (canonical text), or None where the row has none."""
    if value is None:
        return None
    if kind == OPTIONAL:  # a coordinate: any sign within the limit
        if type(value) not in (int, float) or not abs(value) <= MAX_AMOUNT:  # type: ignore[arg-type]
            raise BadRequest(f"{what}: expected a number within {MAX_AMOUNT:g} of 0 or null, "
                             f"found {_show(value)}")
        return value
    if kind == NUMBER:
        if type(value) not in (int, float) or not 0 <= value <= MAX_AMOUNT:  # type: ignore[operator]
            raise BadRequest(f"{what}: expected a number between 0 and {MAX_AMOUNT:g}, "
                             f"found {_show(value)}")
        return value
    try:
        return ids.canonical(value, ids.STRING)
    except ids.BadId as exc:
        raise BadRequest(f"{what}: {exc}") from None


# ------------------------------------------------------------------------------ the app


JSON_HEADERS = [(b"content-type", b"application/json")]


def _dumps(content: object) -> bytes:
    # orjson: a 1-row response of the shipped repo (35 features) in ~14 us against ~43 with
    # json; the json module only for what orjson refuses (an int id beyond 64 bits)
    try:
        return orjson.dumps(content)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(content, separators=(",", ":")).encode()


def _json(content: object, status: int = 200) -> Response:
    return Response(_dumps(content), status_code=status, media_type="application/json")


async def _send(send, status: int, data: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": JSON_HEADERS + [(b"content-length", b"%d" % len(data))]
                + (headers or [])})
    await send({"type": "http.response.body", "body": data})


class _Breaker:
    """Fail fast while Redis is failing, instead of making every request wait for it.

    A Redis that hangs would make every request wait for the timeout (and a cluster's reads,
    which the client makes on the event loop, would block it: see `create_app.send`). After
    a read comes back UNAVAILABLE the breaker opens (on one Redis only: see `answered`):
    reads answer UNAVAILABLE at once ("CircuitOpen") while a probe PINGs Redis in a worker
    thread every PROBE_INTERVAL_S; any successful PING (the probe's or /ready's) closes it.
    With a healthy Redis the probe's first PING answers in well under a millisecond, so one
    lost reply costs a few requests, not seconds.
    """

    PROBE_INTERVAL_S = 0.1

    def __init__(self, client: OnlineClient, timeout_ms: int):
        self.client, self.timeout_ms = client, timeout_ms
        self.error: str | None = None  # the failure that opened it; None when closed
        self._probe: asyncio.Task | None = None

    def open(self, why: str) -> None:
        self.error = why
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._run())

    async def ping(self) -> str | None:
        """PING Redis within the timeout: None if it answered (closes the breaker), else why
        not."""
        try:
            await asyncio.wait_for(run_in_threadpool(self.client.ping),
                                   self.timeout_ms / 1000.0)
        except asyncio.TimeoutError:
            return f"TimeoutError: redis did not answer PING within {self.timeout_ms} ms"
        except Exception as exc:  # noqa: BLE001 - any failure is "not reachable"
            return f"{type(exc).__name__}: {exc}"
        self.error = None
        return None

    async def _run(self) -> None:
        while self.error is not None and await self.ping() is not None:
            await asyncio.sleep(self.PROBE_INTERVAL_S)

    async def stop(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            try:
                await self._probe
            except asyncio.CancelledError:
                pass


class _Coalescer:
    """One Redis read for the requests that arrive together, and the loop free while Redis
    runs it.

    A request's rows are queued and a drain is scheduled for the loop's next turn, after
    the requests already received in this one have been parsed and queued too; the drain
    sends them all as one read (`OnlineClient.send_many`: one round trip, one assembly) and
    the loop goes on (parsing the next requests, answering others) until the reply's socket
    is readable; then each request gets its own rows' result. A request alone waits for no
    one: its read starts on the next turn. At most MAX_IN_FLIGHT reads are out at once
    (Redis runs one while the loop assembles another's answer); the requests that arrive
    meanwhile share the next. A batch stays within max_rows rows; requests beyond start
    another. A read that refuses the merged rows (an InputError: one request's bad row) is
    retried one request at a time, so only that request gets the error. A reply that does
    not come within timeout_s is given up (`abandon`: UNAVAILABLE, the connection closed).

    `send(items)` returns the results at once (a list), or a read in flight (an object with
    `fileno`) for `receive(read)` once readable, or `abandon(read)` when late.
    """

    MAX_IN_FLIGHT = 2

    def __init__(self, send, max_rows: int, receive=None, abandon=None,
                 timeout_s: float = 1.0):
        self._send, self._receive, self._abandon = send, receive, abandon
        self.max_rows, self.timeout_s = max_rows, timeout_s
        self._queue: list[tuple[tuple[list[dict], int | None, str], asyncio.Future]] = []
        self._scheduled = False
        self._in_flight = 0

    def read(self, rows: list[dict], as_of: int | None, service: str) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(((rows, as_of, service), future))
        self._schedule(loop)
        return future

    def _schedule(self, loop) -> None:
        if not self._scheduled and self._queue:
            self._scheduled = True
            loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self.MAX_IN_FLIGHT:
            batch: list = []
            size = 0
            while self._queue:
                item = self._queue[0]
                if batch and size + len(item[0][0]) > self.max_rows:
                    break
                batch.append(self._queue.pop(0))
                size += len(item[0][0])
            self._run(batch)

    def _run(self, batch: list) -> None:
        live = [(item, future) for item, future in batch if not future.cancelled()]
        if not live:
            return
        try:
            sent = self._send([item for item, _ in live])
        except InputError as exc:
            if len(live) == 1:
                _settle(live[0][1], exc=exc)
                return
            for one in live:  # whose row it is: each alone
                self._run([one])
            return
        except Exception as exc:  # noqa: BLE001 - each request answers 500 and logs it
            for _, future in live:
                _settle(future, exc=exc)
            return
        if isinstance(sent, list):
            self._answer(live, lambda: sent)
            return
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        fd = sent.fileno

        def ready() -> None:
            loop.remove_reader(fd)
            timer.cancel()
            self._finish(loop, live, lambda: self._receive(sent))

        def late() -> None:
            loop.remove_reader(fd)
            self._finish(loop, live, lambda: self._abandon(sent))

        loop.add_reader(fd, ready)
        timer = loop.call_later(self.timeout_s, late)

    def _finish(self, loop, live: list, results) -> None:
        self._in_flight -= 1
        self._answer(live, results)
        self._schedule(loop)

    @staticmethod
    def _answer(live: list, results) -> None:
        try:
            got = results()
        except Exception as exc:  # noqa: BLE001 - each request answers 500 and logs it
            for _, future in live:
                _settle(future, exc=exc)
            return
        for (_, future), result in zip(live, got, strict=True):
            _settle(future, result)


@dataclasses.dataclass
class _InFlight:
    """A read the server sent and awaits (its socket: `fileno`)."""
    pending: Any  # OnlineClient.send_many's PendingRead
    items: list
    started: float

    @property
    def fileno(self) -> int:
        return self.pending.fileno


def _settle(future: asyncio.Future, result: object = None,
            exc: BaseException | None = None) -> None:
    if future.done():  # the request went away (its client disconnected)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class _Front:
    """The served ASGI app, outside FastAPI: API key check, per-request metrics, and the hot
    endpoint itself (POST /get-online-features); everything else goes on to FastAPI.

    Serving the hot endpoint here skips FastAPI's routing, dependency solving and Request /
    Response objects: 0.52 against 0.61 ms of CPU per 1-row request, in process. Wrapping
    the FastAPI app, rather than being added as its middleware, also skips the middleware
    FastAPI puts in front of every app's own (error handling, telemetry, a body limit): 5
    layers of awaits per request that this endpoint does not use, since it answers its own
    errors. The FastAPI route of the same path documents it in /openapi.json and gives the
    same answers if reached.
    """

    def __init__(self, app, metrics: Metrics, api_key: str | None, features):
        self.app, self.metrics, self.features = app, metrics, features
        self.key = api_key.encode() if api_key else None

    @property
    def state(self):
        """The FastAPI app's state (its metrics and client), as on the app itself."""
        return self.app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.key is not None and path not in OPEN_ENDPOINTS and not self._allowed(scope):
                self.metrics.errors.labels("unauthorized").inc()
                status = 401
                await _send(send, 401, _dumps({"error": "missing or wrong API key: send the "
                            "header X-API-Key: <key> or Authorization: Bearer <key>"}),
                            [(b"www-authenticate", b"Bearer")])
            elif path == FEATURES_PATH and scope["method"] == "POST":
                status, data = await self.features(scope["headers"], receive)
                await _send(send, status, data)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.observe(endpoint, status, time.perf_counter() - started)

    def _allowed(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                given = value.strip()
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
            else:
                continue
            if hmac.compare_digest(given, self.key):
                return True
        return False


async def _read_body(receive, limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes (the rest is not read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("client disconnected", status=400, reason="disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def create_app(cfg: Config, client: OnlineClient | None = None):
    """The ASGI app. `client` defaults to one built from `cfg.redis`, with its Redis socket
    timeouts capped at serve.timeout_ms."""
    scfg = cfg.serve
    api_key = scfg.api_key.reveal() if scfg.api_key is not None else None
    if api_key is not None and not api_key.strip():
        raise ConfigError("serve.api_key is empty: set a key, or unset it to serve without "
                          "authentication")
    if scfg.max_batch < 1 or scfg.timeout_ms < 1:
        raise ConfigError(f"serve.max_batch and serve.timeout_ms must be >= 1, found "
                          f"{scfg.max_batch} and {scfg.timeout_ms}")
    if client is None:
        rcfg = dataclasses.replace(cfg.redis, timeout_ms=min(cfg.redis.timeout_ms,
                                                             scfg.timeout_ms))
        client = OnlineClient(redis_client(rcfg), prefix=cfg.redis.prefix,
                              max_batch=scfg.max_batch, id_types=ids.types(cfg)).check_format()
    id_types = ids.types(cfg)
    metrics = Metrics()
    breaker = _Breaker(client, scfg.timeout_ms)
    clustered = is_cluster(client.redis)
    names = feature_names()

    @asynccontextmanager
    async def lifespan(app):
        # Load the read script now, so the first request does not pay for it (best effort:
        # Redis may be down at start; the client loads it on first use then).
        try:
            client.warm()
        except Exception as exc:  # noqa: BLE001 - /ready reports it
            log.warning("redis not reachable at start (%s); /ready says 503 until it is",
                        type(exc).__name__)
        yield
        await breaker.stop()
        client.redis.close()

    app = FastAPI(title="Fraud feature store", version="1",
                  description="Online features for card-fraud scoring, Feast-compatible "
                  f"request and response. Feature service: {FEATURE_SERVICE}, "
                  f"{len(names)} features: {', '.join(names)}.",
                  redoc_url=None, lifespan=lifespan)
    app.state.metrics, app.state.client = metrics, client

    def error(message: str, status: int, reason: str) -> tuple[int, bytes]:
        metrics.errors.labels(reason).inc()
        return status, _dumps({"error": message})

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        status, data = error(str(exc.detail), exc.status_code, reason)
        # keep the exception's headers: a 405 must say which methods are allowed (Allow)
        return Response(data, status, media_type="application/json",
                        headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        status, data = error(str(exc), 400, "bad_request")
        return Response(data, status, media_type="application/json")

    @app.exception_handler(Exception)
    async def internal_error(request, exc):
        log.exception("internal error on %s", request.url.path)
        status, data = error("internal error (logged on the server)", 500, "internal")
        return Response(data, status, media_type="application/json")

    unavailable_by_kind: dict[str, Any] = {}
    late = (f"TimeoutError: redis did not answer the read within {scfg.timeout_ms} ms "
            "(serve.timeout_ms)")

    def send(items: list[tuple[list[dict], int | None, str]]):
        """The client's read of the requests `_Coalescer` gathered ((rows, as_of, service)
        each), sent: a read in flight, or (breaker open, a cluster) their results now.

        The client runs on the event loop, not in a worker thread: there a request cost
        0.97 ms in process against 0.79 ms direct (2 cores, one worker, 1-row requests), and
        ~760 against ~1,000 req/s at 4 connections. While Redis runs the read the loop is
        free (`_Coalescer`); a cluster's read blocks it for the round trip, at most
        `timeout_ms` (the client's socket timeouts are capped at serve.timeout_ms), and the
        breaker makes only the first read after a failure wait for it.
        """
        started = time.perf_counter()
        if breaker.error is not None:
            merged = []
            for rows, as_of, _service in items:
                default_t = as_of if as_of is not None else int(time.time())
                merged.append(client._unavailable(_requests(rows, default_t, id_types),
                                                  f"CircuitOpen: {breaker.error}"))
            return answered(items, merged, started, opens=False)
        pending = client.send_many([(rows, as_of) for rows, as_of, _ in items])
        if pending.results is not None:
            return answered(items, pending.results, started)
        return _InFlight(pending, items, started)

    def receive(flight: _InFlight) -> list[OnlineResult]:
        return answered(flight.items, client.receive_many(flight.pending), flight.started)

    def abandon(flight: _InFlight) -> list[OnlineResult]:
        return answered(flight.items, client.abandon_many(flight.pending, late),
                        flight.started)

    def answered(items, merged: list[OnlineResult], started: float,
                 opens: bool = True) -> list[OnlineResult]:
        """Each request's result for its service; the breaker opened on a failed read, and
        the metrics."""
        results = [r.of_service(service) for r, (_, _, service) in
                   zip(merged, items, strict=True)]
        # on a cluster, "nothing read" may be one dead node holding every key of this
        # request: opening would answer UNAVAILABLE for the live nodes' entities too, so
        # each request is bounded by the timeout instead
        if opens and results and results[0].error is not None and not clustered:
            breaker.open(results[0].error)
        metrics.read_latency.observe(time.perf_counter() - started)
        for result in results:
            why = result.error or result.unavailable  # all, or (a cluster node down) some
            if why is not None:
                kind = why.split(":", 1)[0]
                child = unavailable_by_kind.get(kind)
                if child is None:
                    child = unavailable_by_kind[kind] = metrics.unavailable.labels(kind)
                child.inc()
        return results

    coalescer = _Coalescer(send, scfg.max_batch, receive, abandon, scfg.timeout_ms / 1000.0)

    async def features(headers: list[tuple[bytes, bytes]], receive) -> tuple[int, bytes]:
        """POST /get-online-features: (status, JSON body)."""
        ctype = length = None
        for name, value in headers:
            if name == b"content-type":
                ctype = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        if ctype is None or ctype.split(";", 1)[0].strip().lower() != "application/json":
            return error(f"Content-Type must be application/json, found {ctype or 'none'!r}",
                         415, "unsupported_media_type")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return error(f"body of {int(length)} bytes is over {MAX_BODY_BYTES}", 413,
                         "too_large")
        try:
            body = await _read_body(receive, MAX_BODY_BYTES)
            if body is None:
                return error(f"body is over {MAX_BODY_BYTES} bytes", 413, "too_large")
            rows, as_of, entity_columns, service = parse_request(body, scfg.max_batch,
                                                                 id_types)
            result = await coalescer.read(rows, as_of, service)
            data = _dumps(result.to_feast_response(entity_columns))
        except BadRequest as exc:
            return error(str(exc), exc.status, exc.reason)
        except InputError as exc:
            return error(str(exc), 400, "bad_request")
        except Exception:  # noqa: BLE001 - a bug: say so, log it, keep serving
            log.exception("internal error on %s", FEATURES_PATH)
            return error("internal error (logged on the server)", 500, "internal")
        metrics.rows.inc(len(rows))
        return 200, data

    @app.post(FEATURES_PATH, response_model=None, summary="Features for entity rows",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": request_schema(id_types)}}}},
              responses={200: {"model": GetOnlineFeaturesResponse,
                               "description": "Feast's columnar response"},
                         400: {"model": ErrorBody, "description": "Bad request"},
                         401: {"model": ErrorBody, "description": "API key missing or wrong"},
                         404: {"model": ErrorBody, "description": "Unknown feature service"},
                         413: {"model": ErrorBody, "description": "Over serve.max_batch rows"},
                         415: {"model": ErrorBody, "description": "Not application/json"}})
    async def get_online_features(request: Request) -> Response:
        # Served by _Front before FastAPI sees it; this route documents it (and would answer
        # the same if reached).
        status, data = await features(request.headers.raw, request.receive)
        return Response(data, status, media_type="application/json")

    @app.get("/health", response_model=StatusBody, summary="Liveness: the process answers")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready", response_model=StatusBody, summary="Readiness: Redis answers PING",
             responses={503: {"model": ErrorBody, "description": "Redis not reachable"}})
    async def ready() -> Response:
        why = await breaker.ping()
        if why is not None and why.startswith("TimeoutError"):
            # one slow answer is not "down": a cluster's PING is a slot lookup and a PING per
            # primary, which a loaded host can stretch past the read timeout; a probe that
            # flaps takes a healthy pod out of service
            why = await breaker.ping()
        if why is not None:
            status, data = error(f"redis not reachable: {why}", 503, "not_ready")
            return Response(data, status, media_type="application/json")
        return _json({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)

    return _Front(app, metrics=metrics, api_key=api_key, features=features)
# ------------------------------------------------------------------------------ running


def serve(cfg: Config, host: str | None = None, port: int | None = None,
          workers: int = 1) -> None:
    """Run uvicorn (uvloop and httptools when installed, no access log) until interrupted."""
    import uvicorn

    host = host or cfg.serve.host
    port = port or cfg.serve.port
    auth = "on" if cfg.serve.api_key is not None else "off"
    log.info("serving %s on http://%s:%d (%d worker(s), API key %s)", FEATURE_SERVICE, host,
             port, workers, auth)
    common: dict[str, Any] = dict(host=host, port=port, access_log=False, loop="auto",
                                  http="auto", log_level="info", server_header=False,
                                  # nothing here reads the client's address, which is all
                                  # X-Forwarded-For would rewrite: a layer less per request
                                  proxy_headers=False)
    if workers == 1:
        uvicorn.run(create_app(cfg), **common)
    else:
        # Each worker process builds its own app from the same config sources (FFS_CONFIG and
        # FFS_* variables, which the parent's environment passes on).
        uvicorn.run("ffs.online.server:app_from_environment", factory=True, workers=workers,
                    **common)


def app_from_environment():
    """The app of each worker process when --workers > 1 (uvicorn imports it by name)."""
    from ffs.config import load_config

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    return create_app(load_config())
