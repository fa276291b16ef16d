"""The HTTP feature server (online/server.py) against a real Redis.

Requests go through the ASGI app in process (httpx's ASGITransport), except one test that
runs `ffs serve` as a subprocess. The reference for every value is the online client itself
(online/client.py) on the same rows: the server must add transport, not change answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from ffs.config import Config, Secret
from ffs.errors import ConfigError, InputError
from ffs.online.client import MISSING_ENTITY, PRESENT, UNAVAILABLE, OnlineClient, OnlineResult
from ffs.online.loader import load_state
from ffs.online.redis_server import RedisServer, free_port
from ffs.online.server import create_app
from ffs.transformations.features import FEATURE_SERVICE, REQUEST_FEATURES, feature_names
from tests.unit.test_window_semantics import labels_frame, tx_frame

pytestmark = [pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
TX = tx_frame([
    (1, "2024-03-01 10:00:00", 7, 70, 10.0),
    (2, "2024-03-01 12:00:00", 7, 71, 20.0),
    (3, "2024-03-01 12:00:00", 7, 70, 30.0),
    (4, "2024-03-02 09:00:00", 7, 72, 40.0),
    (5, "2024-03-02 09:30:00", 8, 70, 5.0),
])
LABELS = labels_frame([(1, 1, "2024-03-01 11:00:00")])
AS_OF = "2024-03-02T10:00:00Z"
AS_OF_S = 1709373600  # the same instant in epoch seconds
REQUEST = {f.name for f in REQUEST_FEATURES}
FROM_REDIS = [n for n in feature_names() if n not in REQUEST] + ["amount_over_customer_avg_30d"]


def body(customers, terminals, **extra) -> dict:
    return {"feature_service": FEATURE_SERVICE,
            "entities": {"customer_id": customers, "terminal_id": terminals}, **extra}


class Http:
    """A synchronous face on httpx.AsyncClient over the app (no network, no lifespan)."""

    def __init__(self, app):
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url="http://ffs.test")

    def get(self, path: str, **kw) -> httpx.Response:
        return self.loop.run_until_complete(self.client.get(path, **kw))

    def post(self, path: str, **kw) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, **kw))

    def features(self, payload: dict, **kw) -> httpx.Response:
        return self.post("/get-online-features", json=payload, **kw)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        pending = asyncio.all_tasks(self.loop)  # the breaker's probe, if Redis is still down
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending))
        self.loop.close()


def config(url: str, **serve) -> Config:
    cfg = Config()
    cfg.redis.url = url
    cfg.redis.timeout_ms = 200  # generous: the machine is shared
    for key, value in serve.items():
        setattr(cfg.serve, key, value)
    return cfg


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One redis-server with the hand-made state, for every read-only test."""
    with RedisServer(directory=tmp_path_factory.mktemp("redis")) as srv:
        conn = redis.Redis.from_url(srv.url, socket_timeout=10)
        load_state(conn, TX, LABELS)
        conn.close()
        yield srv


@pytest.fixture()
def http(loaded):
    clients = []

    def make(**serve) -> Http:
        clients.append(Http(create_app(config(loaded.url, **serve))))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def reference(url: str, rows: list[dict], as_of=None) -> OnlineResult:
    client = OnlineClient.from_config(config(url))
    try:
        return client.get_features(rows, as_of)
    finally:
        client.redis.close()


def column(doc: dict, name: str) -> dict:
    return doc["results"][doc["metadata"]["feature_names"].index(name)]


def metric(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


# ---------------------------------------------------------------------------------- reads


def test_response_has_feasts_shape_and_the_clients_values(http, loaded):
    customers, terminals = [7, 8, 99], [70, 70, 999]
    r = http().features(body(customers, terminals, as_of=AS_OF))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()

    # Feast's columnar shape: metadata.feature_names, then one column per name, in order.
    assert set(doc) == {"metadata", "results"} and set(doc["metadata"]) == {"feature_names"}
    assert doc["metadata"]["feature_names"] == ["customer_id", "terminal_id"] + feature_names()
    assert len(doc["results"]) == 2 + len(feature_names())
    for col in doc["results"]:
        assert set(col) == {"values", "statuses", "event_timestamps"}
        assert len(col["values"]) == len(col["statuses"]) == len(col["event_timestamps"]) == 3
    assert column(doc, "customer_id")["values"] == customers
    assert column(doc, "terminal_id")["values"] == terminals

    # The client's answer, to the byte, and a few values checked by hand.
    rows = [{"customer_id": c, "terminal_id": t}
            for c, t in zip(customers, terminals, strict=False)]
    expected = reference(loaded.url, rows, AS_OF).to_feast_response(
        {"customer_id": customers, "terminal_id": terminals})
    assert doc == json.loads(json.dumps(expected))
    nb_1d = column(doc, "customer_nb_tx_1d")
    assert nb_1d["values"] == [3, 1, 0]  # (03-01 10:00, 03-02 10:00]: tx 2, 3, 4 | tx 5 | -
    assert nb_1d["statuses"] == [PRESENT, PRESENT, MISSING_ENTITY]
    assert nb_1d["event_timestamps"] == [AS_OF] * 3
    assert column(doc, "customer_avg_amount_1d")["values"] == [30.0, 5.0, None]


def test_request_data_transaction_is_scored_and_counted_once(http, loaded):
    request_data = {"transaction_id": [100, 4], "event_timestamp": ["2024-03-02T09:00:00Z",
                                                                    "2024-03-02T09:00:00Z"],
                    "amount": [60.0, 40.0]}
    r = http().features(body([7, 7], [70, 72], request_data=request_data))
    assert r.status_code == 200, r.text
    doc = r.json()
    # (03-01 09:00, 03-02 09:00]: tx 1..4, plus the new transaction 100; tx 4 is already in.
    assert column(doc, "customer_nb_tx_1d")["values"] == [5, 4]
    assert column(doc, "customer_sum_amount_1h")["values"] == [100.0, 40.0]
    assert column(doc, "amount")["values"] == [60.0, 40.0]
    assert column(doc, "amount")["statuses"] == [PRESENT, PRESENT]
    assert column(doc, "customer_nb_tx_1d")["event_timestamps"] == ["2024-03-02T09:00:00Z"] * 2
    rows = [{"customer_id": 7, "terminal_id": t, "transaction_id": x,
             "event_timestamp": ts, "amount": a}
            for t, x, ts, a in zip([70, 72], *request_data.values(), strict=False)]
    expected = reference(loaded.url, rows).to_feast_response(
        {"customer_id": [7, 7], "terminal_id": [70, 72]})
    assert doc == json.loads(json.dumps(expected))

    # Feast passes request data among the entities: the same answer.
    feast_style = {"feature_service": FEATURE_SERVICE,
                   "entities": {"customer_id": [7, 7], "terminal_id": [70, 72], **request_data}}
    assert http().features(feast_style).json() == doc


def test_as_of_is_honored_as_iso_or_epoch_and_defaults_to_now(http):
    client = http()
    at = client.features(body([7], [70], as_of=AS_OF)).json()
    assert client.features(body([7], [70], as_of=AS_OF_S)).json() == at
    assert client.features(body([7], [70], as_of="2024-03-02 12:00:00+02:00")).json() == at
    later = client.features(body([7], [70], as_of="2024-03-02T12:00:00Z")).json()
    assert column(at, "customer_nb_tx_1d")["values"] == [3]
    # (03-01 12:00, 03-02 12:00] is open at its start: tx 2 and 3 have left, tx 4 is in.
    assert column(later, "customer_nb_tx_1d")["values"] == [1]
    assert column(later, "amount")["event_timestamps"] == ["2024-03-02T12:00:00Z"]

    before = time.time()
    now = client.features(body([7], [70])).json()
    stamp = column(now, "customer_nb_tx_1d")["event_timestamps"][0]
    read_at = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before - 2 <= read_at <= time.time() + 1
    assert column(now, "customer_nb_tx_1d")["values"] == [0]  # 2024 is long gone


def test_empty_batch_is_an_empty_answer(http):
    r = http().features(body([], []))
    assert r.status_code == 200
    assert all(col["values"] == [] for col in r.json()["results"])


# ------------------------------------------------------------------------------- bad input


def _raw(payload) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


BAD = [
    ("invalid json", b'{"entities": ', 400, "invalid JSON"),
    ("nan token", b'{"feature_service": "fraud_detection_v1", "entities": {"customer_id": [NaN],'
     b' "terminal_id": [1]}}', 400, "NaN"),
    ("not an object", b"[1, 2]", 400, "expected a JSON object"),
    ("nested too deep", b"[" * 100_000 + b"]" * 100_000, 400, "invalid JSON"),
    ("not utf-8", b'{"entities": "\xff"}', 400, "invalid JSON"),
    ("missing entities", {"feature_service": FEATURE_SERVICE}, 400, "missing \"entities\""),
    ("entities not an object", {"feature_service": FEATURE_SERVICE, "entities": [7]}, 400,
     "missing \"entities\""),
    ("missing terminal_id", {"feature_service": FEATURE_SERVICE,
                             "entities": {"customer_id": [7]}}, 400, "'terminal_id'"),
    ("column not a list", body(7, [70]), 400, "entities.customer_id: expected a list"),
    ("unequal lengths", body([7, 8], [70]), 400, "one value per row"),
    ("unequal request data", body([7], [70], request_data={"amount": [1.0, 2.0]}), 400,
     "one value per row"),
    ("unknown entity column", {"feature_service": FEATURE_SERVICE,
                               "entities": {"customer_id": [7], "terminal_id": [70],
                                            "card": [1]}}, 400, 'unknown column "card"'),
    ("unknown request column", body([7], [70], request_data={"amt": [1.0]}), 400,
     'unknown column "amt"'),
    ("in both places", {"feature_service": FEATURE_SERVICE,
                        "entities": {"customer_id": [7], "terminal_id": [70], "amount": [1]},
                        "request_data": {"amount": [1]}}, 400, "both in entities"),
    ("unknown field", body([7], [70], asof=AS_OF), 400, 'unknown field(s) ["asof"]'),
    ("missing feature service", {"entities": {"customer_id": [7], "terminal_id": [70]}}, 400,
     "missing \"feature_service\""),
    ("unknown feature service", {**body([7], [70]), "feature_service": "fraud_v9"}, 404,
     'unknown feature service "fraud_v9"'),
    ("features list", {"features": ["customer_features:customer_nb_tx_1d"],
                       "entities": {"customer_id": [7], "terminal_id": [70]}}, 400,
     "instead of \"features\""),
    ("full feature names", body([7], [70], full_feature_names=True), 400, "full_feature_names"),
    ("bool id", body([True], [70]), 400, "customer_id[0]: True: a boolean is not an id"),
    ("null id", body([7], [None]), 400, "terminal_id[0]"),
    ("fractional id", body([7.5], [70]), 400, "customer_id[0]"),
    ("object id", body([{"id": 7}], [70]), 400, "customer_id[0]"),
    ("bad timestamp", body([7], [70], request_data={"event_timestamp": ["yesterday noon"]}),
     400, "event_timestamp[0]"),
    ("timestamp out of range", body([7], [70], request_data={"event_timestamp": [-5]}), 400,
     "out of range"),
    ("huge timestamp", body([7], [70], request_data={"event_timestamp": [10**40]}), 400,
     "event_timestamp[0]"),
    ("bad as_of", body([7], [70], as_of="2024-13-45"), 400, "as_of"),
    ("as_of object", body([7], [70], as_of={"t": 1}), 400, "as_of"),
    ("negative amount", body([7], [70], request_data={"amount": [-1.0]}), 400, "amount[0]"),
    ("string amount", body([7], [70], request_data={"amount": ["12.5"]}), 400, "amount[0]"),
    ("amount over the limit", body([7], [70], request_data={"amount": [9e16]}), 400,
     "between 0 and 1e+09"),
    ("infinite amount", b'{"feature_service": "fraud_detection_v1", "entities": '
     b'{"customer_id": [7], "terminal_id": [70]}, "request_data": {"amount": [1e999]}}', 400,
     "amount[0]"),
    ("bool transaction id", body([7], [70], request_data={"transaction_id": [False]}), 400,
     "transaction_id[0]"),
]


@pytest.mark.parametrize("payload, status, message", [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_with_a_clear_error(http, payload, status, message):
    r = http().post("/get-online-features", content=_raw(payload),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert set(r.json()) == {"error"} and message in r.json()["error"], r.json()


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(http, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    r = http().post("/get-online-features", content=_raw(body([7], [70])), headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    ok = http().post("/get-online-features", content=_raw(body([7], [70])),
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_long_input_is_not_echoed_whole(http):
    r = http().features(body(["x" * 10_000], [70], request_data={"amount": ["y" * 10_000]}))
    assert r.status_code == 400 and len(r.json()["error"]) < 300


def test_body_over_the_size_limit_is_413(http, monkeypatch):
    monkeypatch.setattr("ffs.online.server.MAX_BODY_BYTES", 100)
    r = http().features(body(list(range(50)), list(range(50))))
    assert r.status_code == 413 and "over 100" in r.json()["error"]


def test_unknown_path_and_wrong_method_answer_with_an_error_body(http):
    client = http()
    r = client.get("/nope")
    assert r.status_code == 404 and set(r.json()) == {"error"}
    r = client.get("/get-online-features")
    assert r.status_code == 405 and set(r.json()) == {"error"}


def test_batch_limit_comes_from_config(http):
    client = http(max_batch=3)
    assert client.features(body([7] * 3, [70] * 3, as_of=AS_OF)).status_code == 200
    r = client.features(body([7] * 4, [70] * 4, as_of=AS_OF))
    assert r.status_code == 413
    assert r.json() == {"error": "batch of 4 rows is over the limit of 3; split it"}


# ------------------------------------------------------------------------------------ auth


def test_api_key_guards_every_endpoint_but_health(http):
    key = "k-" + os.urandom(8).hex()
    client = http(api_key=Secret(key))
    payload = body([7], [70], as_of=AS_OF)
    assert client.get("/health").status_code == 200
    for path in ("/ready", "/metrics", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 401, path
    assert client.features(payload).status_code == 401
    wrong = client.features(payload, headers={"X-API-Key": key + "x"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
    assert client.features(payload, headers={"Authorization": f"Basic {key}"}).status_code == 401
    assert client.features(payload, headers={"X-API-Key": key}).status_code == 200
    assert client.features(payload, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    metrics = client.get("/metrics", headers={"X-API-Key": key})
    assert metrics.status_code == 200 and key not in metrics.text
    assert metric(metrics.text, "ffs_http_requests_total", endpoint="/get-online-features",
                  status="401") == 3


def test_without_a_key_no_header_is_needed(http):
    client = http()
    assert client.features(body([7], [70], as_of=AS_OF)).status_code == 200
    assert client.get("/metrics").status_code == 200


def test_an_empty_api_key_is_a_config_error(loaded):
    with pytest.raises(ConfigError, match="api_key is empty"):
        create_app(config(loaded.url, api_key=Secret("")))


# --------------------------------------------------------------------- readiness and faults


def test_ready_follows_redis_and_reads_stay_200_while_it_is_down(tmp_path):
    servers = [RedisServer(directory=tmp_path / "redis").start()]
    client = Http(create_app(config(servers[0].url)))
    try:
        assert client.get("/ready").json() == {"status": "ready"}
        servers[0].stop()
        r = client.get("/ready")
        assert r.status_code == 503 and r.json()["error"].startswith("redis not reachable")
        assert client.get("/health").status_code == 200

        payload = body([7], [70], request_data={"event_timestamp": [AS_OF], "amount": [9.5]})
        down = client.features(payload)
        assert down.status_code == 200
        doc = down.json()
        for name in FROM_REDIS:
            assert column(doc, name)["statuses"] == [UNAVAILABLE], name
            assert column(doc, name)["values"] == [None], name
        assert column(doc, "amount")["values"] == [9.5]  # request features still answered
        assert column(doc, "amount")["statuses"] == [PRESENT]
        # The next reads do not wait for Redis: the breaker answers until a PING succeeds.
        again = client.features(payload).json()
        assert column(again, "customer_nb_tx_1d")["statuses"] == [UNAVAILABLE]
        text = client.get("/metrics").text
        assert metric(text, "ffs_redis_unavailable_total", error="ConnectionError") == 1
        assert metric(text, "ffs_redis_unavailable_total", error="CircuitOpen") == 1

        # Back on the same port (empty: nothing was persisted): ready, and reads work again.
        servers.append(RedisServer(port=servers[0].port, directory=tmp_path / "again").start())
        assert client.get("/ready").json() == {"status": "ready"}
        up = client.features(payload).json()
        assert column(up, "customer_nb_tx_1d")["statuses"] == [PRESENT]
        assert column(up, "customer_nb_tx_1d")["values"] == [1]  # only the transaction itself
    finally:
        client.close()
        for srv in servers:
            srv.stop()


def test_hung_redis_answers_unavailable_by_the_request_deadline(tmp_path):
    """serve.timeout_ms bounds the request even when the Redis socket timeout is longer."""
    srv = RedisServer(directory=tmp_path / "redis").start()
    cfg = config(srv.url, timeout_ms=100)
    cfg.redis.timeout_ms = 3000
    client = Http(create_app(cfg))
    try:
        assert client.features(body([7], [70], as_of=AS_OF)).status_code == 200  # connected
        os.kill(srv.proc.pid, signal.SIGSTOP)  # accepts connections (kernel), never answers
        try:
            started = time.perf_counter()
            r = client.features(body([7], [70], as_of=AS_OF))
            elapsed = time.perf_counter() - started
            ready = client.get("/ready")
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
        assert r.status_code == 200 and elapsed < 1.5, elapsed  # not the 3 s socket timeout
        assert column(r.json(), "customer_nb_tx_1d")["statuses"] == [UNAVAILABLE]
        # the request deadline and the socket timeout are both 100 ms here: whichever fires
        # first names the timeout (a race that a loaded machine decides either way)
        why = ready.json()["error"]
        assert ready.status_code == 503 and ("within 100 ms" in why or "Timeout reading" in why)
        text = client.get("/metrics").text
        assert metric(text, "ffs_redis_unavailable_total", error="TimeoutError") == 1
    finally:
        client.close()
        srv.stop()


# ------------------------------------------------------------------- metrics and OpenAPI


def test_metrics_count_requests_rows_errors_and_latency(http):
    client = http()
    assert client.features(body([7, 8], [70, 70], as_of=AS_OF)).status_code == 200
    assert client.features(body([7], [70, 71])).status_code == 400
    assert client.get("/health").status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    ep = "/get-online-features"
    assert metric(text, "ffs_http_requests_total", endpoint=ep, status="200") == 1
    assert metric(text, "ffs_http_requests_total", endpoint=ep, status="400") == 1
    assert metric(text, "ffs_http_requests_total", endpoint="/health", status="200") == 1
    assert metric(text, "ffs_rows_served_total") == 2
    assert metric(text, "ffs_http_errors_total", reason="bad_request") == 1
    assert metric(text, "ffs_http_request_duration_seconds_count", endpoint=ep) == 2
    assert metric(text, "ffs_http_request_duration_seconds_bucket", endpoint=ep,
                  le="0.0005") is not None  # sub-ms buckets
    assert metric(text, "ffs_http_request_duration_seconds_bucket", endpoint=ep,
                  le="+Inf") == 2
    assert metric(text, "ffs_online_read_duration_seconds_count") == 1
    assert metric(text, "ffs_redis_unavailable_total") is None  # nothing failed
    # A second app in the same process has its own registry, starting from zero.
    other = http().get("/metrics").text
    assert metric(other, "ffs_http_requests_total", endpoint=ep, status="200") is None


def test_openapi_documents_the_endpoints(http):
    client = http()
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/get-online-features"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert {"feature_service", "entities", "request_data", "as_of"} <= set(schema["properties"])
    assert {"200", "400", "401", "413", "415"} <= set(op["responses"])
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/GetOnlineFeaturesResponse")
    assert {"/health", "/ready", "/metrics"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_openapi_columns_are_the_repos_keys_typed_by_their_declared_ids(loaded):
    """entities documents every join key of the loaded repo (required) and the request
    columns, nothing else (the server refuses other columns); each key by its id type."""
    from ffs.transformations.features import KEY_COLUMNS, VALUE_COLUMNS

    def request_schema(cfg: Config) -> dict:
        client = Http(create_app(cfg))
        try:
            spec = client.get("/openapi.json").json()
        finally:
            client.close()
        return spec["paths"]["/get-online-features"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]["properties"]

    props = request_schema(config(loaded.url))
    entities = props["entities"]
    assert entities["required"] == list(KEY_COLUMNS) == ["customer_id", "terminal_id"]
    assert list(entities["properties"]) == [*KEY_COLUMNS, "transaction_id", "event_timestamp",
                                            *VALUE_COLUMNS]
    assert entities["additionalProperties"] is False
    assert entities["examples"] == [{"customer_id": [42], "terminal_id": [7]}]
    kinds = {s["type"] for s in entities["properties"]["customer_id"]["items"]["anyOf"]}
    assert kinds == {"integer", "string"}  # an int id, or its decimal text
    amount = props["request_data"]["anyOf"][0]["properties"]["amount"]["items"]["anyOf"][0]
    assert (amount["type"], amount["minimum"]) == ("number", 0)

    cfg = config(loaded.url)
    cfg.ids.keys["terminal_id"] = "string"
    text = request_schema(cfg)["entities"]["properties"]["terminal_id"]["items"]["anyOf"]
    assert text[0] == {"type": "string", "pattern": "^[A-Za-z0-9_.:@/+=-]{1,128}$"}


def test_the_contract_matches_what_the_server_does(http):
    """The schema says feature_service is required, as the server enforces (a default in
    the schema told generated clients they could leave it out: issue 10, defect 10); a 405
    names the allowed methods."""
    client = http()
    spec = client.get("/openapi.json").json()
    model = spec["paths"]["/get-online-features"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    if "$ref" in model:
        model = spec["components"]["schemas"][model["$ref"].rsplit("/", 1)[1]]
    assert "feature_service" in model["required"]
    assert "default" not in model["properties"]["feature_service"]
    r = client.features({"entities": {"customer_id": [1], "terminal_id": [1]}})
    assert r.status_code == 400 and "feature_service" in r.json()["error"]
    r = client.get("/get-online-features")
    assert r.status_code == 405
    assert r.headers.get("allow") == "POST"


# --------------------------------------------------------------------------- `ffs serve`


def test_ffs_serve_runs_uvicorn_with_auth_and_never_prints_the_key(loaded, tmp_path):
    key = "k-" + os.urandom(8).hex()
    port = free_port()
    env = {**os.environ, "FFS_REDIS_URL": loaded.url, "FFS_SERVE_API_KEY": key,
           "PYTHONPATH": str(ROOT)}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ffs.cli", "serve", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ffs serve did not answer within 60 s"
            time.sleep(0.2)
        payload = body([7], [70], as_of=AS_OF)
        assert httpx.post(f"{base}/get-online-features", json=payload).status_code == 401
        r = httpx.post(f"{base}/get-online-features", json=payload,
                       headers={"X-API-Key": key})
        assert r.status_code == 200 and column(r.json(), "customer_nb_tx_1d")["values"] == [3]
        assert "server" not in r.headers  # no server banner
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = log.read_text()
    assert f"http://127.0.0.1:{port}" in text and key not in text


# ------------------------------------------------------------------ another repo's columns

OTHER_REPO = r'''
import json
from ffs.online.server import BadRequest, parse_request, request_schema
from ffs.transformations.ids import ALL_STRING

def ask(**parts):
    try:
        return parse_request(json.dumps({"feature_service": "fraud_v2", **parts}).encode(),
                             10, ALL_STRING)[::2]
    except BadRequest as exc:
        return str(exc)

keys = {"account_id": ["a1", "a2"], "device_id": ["d1", "d2"], "ip": ["10.0.0.1", 7]}
out = {
    "ok": ask(entities=keys, request_data={"amount": [1.5, None], "channel": ["pos", 5],
                                           "declined": [0, 1]}),
    "missing": ask(entities={"account_id": ["a1"], "ip": ["x"]}),
    "bad_text": ask(entities=keys, request_data={"channel": ["on line", "pos"]}),
    "bad_number": ask(entities=keys, request_data={"declined": [-1, 0]}),
    "unknown": ask(entities=keys, request_data={"customer_id": [1, 2]}),
    "schema": list(request_schema(ALL_STRING)["properties"]["entities"]["properties"]),
}
print("RESULT " + json.dumps(out))
'''


def test_another_repos_request_columns(tmp_path):
    """tests/fixtures/payments_repo: its join keys are the entity columns (a missing one is
    named), its value columns the request data (a number by the amount rule, a text by the
    ids' rule); the shipped repo's columns are unknown there."""
    root = ROOT
    repo = tmp_path / "payments_repo"
    import shutil

    shutil.copytree(root / "tests" / "fixtures" / "payments_repo", repo,
                    ignore=shutil.ignore_patterns(".ffs", "__pycache__"))
    run = subprocess.run([sys.executable, "-c", OTHER_REPO], cwd=root, capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, "FFS_FEATURES_REPO": str(repo)})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    rows, entities = out["ok"]
    assert rows[0] == {"account_id": "a1", "device_id": "d1", "ip": "10.0.0.1",
                       "amount": 1.5, "channel": "pos", "declined": 0}
    assert rows[1]["channel"] == "5" and rows[1]["amount"] is None and rows[1]["ip"] == 7
    assert set(entities) == {"account_id", "device_id", "ip"}
    assert out["missing"].startswith("entities: missing column 'device_id'; every row needs")
    assert out["bad_text"].startswith("channel[0]: 'on line': ids are")
    assert out["bad_number"].startswith("declined[0]: expected a number between 0 and")
    assert out["unknown"].startswith("request_data: unknown column \"customer_id\"")
    assert set(out["schema"]) >= {"account_id", "device_id", "ip", "amount", "channel",
                                  "declined", "transaction_id", "event_timestamp"}


def test_responses_encode_what_orjson_refuses_with_the_json_module():
    from ffs.online.server import _dumps

    body = {"values": [2**70, -(2**65), 1.5, None, "x"], "n": [0.1, 1e-05]}
    assert json.loads(_dumps(body)) == body  # an int beyond 64 bits: orjson raises


# ------------------------------------------------------------------------------ coalescing

def test_requests_that_arrive_together_share_one_read_and_get_their_own_answers(http, loaded):
    """Concurrent requests (other read times, other services, a scored transaction, several
    rows) are read in one call, and each answer equals that request sent alone."""
    payloads = [
        body([7], [70], as_of=AS_OF),
        body([7, 8], [71, 70], as_of=AS_OF_S - 86_400),  # a day earlier
        {**body([7], [72], request_data={"transaction_id": [100],
                                         "event_timestamp": ["2024-03-02T09:00:00Z"],
                                         "amount": [60.0]}),
         "feature_service": "fraud_detection_v1"},
        body([9], [99], as_of=AS_OF),  # nothing known of them
    ]
    alone = [http().features(p).json() for p in payloads]
    h = http()
    client = h.client._transport.app.state.client  # type: ignore[attr-defined]
    sizes: list[int] = []
    real = client.send_many

    def counting(batches):
        sizes.append(len(batches))
        return real(batches)

    client.send_many = counting

    async def together():
        return await asyncio.gather(*(h.client.post("/get-online-features", json=p)
                                      for p in payloads))

    answers = h.loop.run_until_complete(together())
    assert [a.status_code for a in answers] == [200] * len(payloads)
    assert [a.json() for a in answers] == alone
    assert len(sizes) < len(payloads) and max(sizes) > 1, sizes  # merged, not one by one
    assert sum(sizes) == len(payloads)


def test_a_read_in_halves_answers_as_the_read_in_one_and_an_abandoned_one_unavailable(loaded):
    """OnlineClient.send_many / receive_many (the server's way: the loop free between them)
    give get_features_many's results; abandon_many gives every Redis value UNAVAILABLE."""
    client = OnlineClient.from_config(config(loaded.url))
    batches = [([{"customer_id": 7, "terminal_id": 70}], AS_OF),
               ([{"customer_id": 7, "terminal_id": 72, "transaction_id": 100,
                  "event_timestamp": "2024-03-02T09:00:00Z", "amount": 60.0},
                 {"customer_id": 8, "terminal_id": 70}], AS_OF_S - 3600)]
    try:
        pending = client.send_many(batches)
        assert pending.fileno is not None and pending.results is None
        got = client.receive_many(pending)
        want = client.get_features_many(batches)
        assert [(g.values, g.statuses) for g in got] == [(w.values, w.statuses) for w in want]
        assert got[0].values["customer_nb_tx_1d"] == [3]  # not a vacuous equality
        given_up = client.abandon_many(client.send_many(batches), "TimeoutError: late")
        for result in given_up:
            assert result.error == "TimeoutError: late"
            assert all(result.statuses[n] == [UNAVAILABLE] * len(result.statuses[n])
                       for n in FROM_REDIS)
        again = client.get_features_many(batches)  # the pool is clean after it
        assert [(a.values, a.statuses) for a in again] == [(w.values, w.statuses) for w in want]
    finally:
        client.redis.close()


def _coalesce(read, items, max_rows=10):
    """Queue `items` ((rows, as_of, service)) on a _Coalescer in one loop turn; their results
    or exceptions, in order."""
    from ffs.online.server import _Coalescer

    async def run():
        c = _Coalescer(read, max_rows)
        return await asyncio.gather(*(c.read(*item) for item in items), return_exceptions=True)

    return asyncio.run(run())


def test_coalescer_splits_at_max_rows_and_isolates_a_refused_request():
    calls: list[list] = []

    def read(items):
        calls.append([rows[0]["n"] for rows, _, _ in items])
        if any(rows[0]["n"] == "bad" for rows, _, _ in items):
            raise InputError("row 0: bad")
        return [f"result {rows[0]['n']}" for rows, _, _ in items]

    items = [([{"n": k}] * size, None, FEATURE_SERVICE) for k, size in
             ((1, 4), (2, 4), (3, 4), ("bad", 1), (5, 1))]
    got = _coalesce(read, items, max_rows=10)
    assert got[:3] == ["result 1", "result 2", "result 3"]
    assert isinstance(got[3], InputError) and str(got[3]) == "row 0: bad"
    assert got[4] == "result 5"
    # 4 + 4 rows fit in 10, the third request starts another read; the refused read is
    # retried one request at a time
    assert calls == [[1, 2], [3, "bad", 5], [3], ["bad"], [5]]


class _Flight:
    """A read in flight whose reply is a byte on a socket pair the test writes."""

    def __init__(self, items):
        self.items = items
        self.ours, self.redis = socket.socketpair()
        self.fileno = self.ours.fileno()

    def close(self):
        self.ours.close()
        self.redis.close()


def _names(items) -> list:
    return [rows[0]["n"] for rows, _, _ in items]


def test_coalescer_keeps_the_loop_free_while_reads_are_out_and_bounds_how_many():
    from ffs.online.server import _Coalescer

    flights: list[_Flight] = []

    def send(items):
        flights.append(_Flight(items))
        return flights[-1]

    def receive(flight):
        assert flight.ours.recv(1) == b"x"
        flight.close()
        return [f"got {n}" for n in _names(flight.items)]

    def abandon(flight):
        raise AssertionError("no reply is late here")

    async def run():
        c = _Coalescer(send, 1, receive, abandon, timeout_s=30)  # one request per read
        futures = [c.read([{"n": k}], None, FEATURE_SERVICE) for k in range(3)]
        ticks = 0
        while ticks < 20:  # the loop keeps turning while the reads are out
            await asyncio.sleep(0)
            ticks += 1
        assert [_names(f.items) for f in flights] == [[0], [1]]  # MAX_IN_FLIGHT out
        assert not any(f.done() for f in futures)
        flights[1].redis.send(b"x")  # the second answers first
        assert await futures[1] == "got 1"
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [_names(f.items) for f in flights] == [[0], [1], [2]]  # the next took its place
        assert not futures[0].done()
        flights[0].redis.send(b"x")
        flights[2].redis.send(b"x")
        return await asyncio.gather(*futures)

    assert asyncio.run(run()) == ["got 0", "got 1", "got 2"]


def test_coalescer_gives_up_a_late_reply_and_never_reads_it_afterwards():
    from ffs.online.server import _Coalescer

    flights: list[_Flight] = []
    received, abandoned = [], []

    def send(items):
        flights.append(_Flight(items))
        return flights[-1]

    def receive(flight):
        received.append(flight)
        return ["read"]

    def abandon(flight):
        abandoned.append(flight)
        return ["UNAVAILABLE"]

    async def run():
        c = _Coalescer(send, 10, receive, abandon, timeout_s=0.05)
        started = time.perf_counter()
        got = await c.read([{"n": 1}], None, FEATURE_SERVICE)
        waited = time.perf_counter() - started
        flights[0].redis.send(b"x")  # the reply, too late
        await asyncio.sleep(0.05)
        return got, waited

    got, waited = asyncio.run(run())
    assert got == "UNAVAILABLE" and 0.05 <= waited < 2.0, waited
    assert abandoned == flights and received == []
    flights[0].close()


def test_coalescer_gives_every_request_an_unexpected_error():
    def read(items):
        raise RuntimeError("bug")

    got = _coalesce(read, [([{}], None, FEATURE_SERVICE)] * 3)
    assert all(isinstance(g, RuntimeError) for g in got)
