"""The Pinot client, `apply` and `ffs pinot` against a local HTTP server that answers with the
responses recorded from the pinned Pinot (tests/fixtures/pinot, re-recorded by
tests/fixtures/pinot/record.py) and records every request, so the tests check both what is
sent (SQL with its LIMIT, query options, auth header, configs) and how answers and errors are
read, including answers a one-server cluster cannot be made to give (a partial answer, a
controller that lost its leadership). The same code against the live cluster:
tests/integration/test_pinot_live.py."""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from ffs.analytics import pinot_config as pc
from ffs.analytics.pinot_apply import PinotControllerError, apply
from ffs.analytics.pinot_cli import add_parsers
from ffs.analytics.pinot_client import PinotClient, PinotQueryError
from ffs.config import Config, PinotConfig, Secret
from ffs.errors import ConfigError, InputError, TerminalError, TransientError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pinot"
INFRA = Path(__file__).resolve().parents[2] / "infra" / "pinot"
TOKEN = "Basic YWRtaW46dmVyeXNlY3JldA=="


def fixture(name: str):
    return json.loads((FIXTURES / f"{name}.json").read_text())


class FakePinot:
    """HTTP server on a free port; `handle(method, path, body) -> (status, json)` answers,
    `requests` records (method, path, headers, parsed body)."""

    def __init__(self, handle):
        self.handle, self.requests = handle, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                fake.requests.append({"method": self.command, "path": self.path,
                                      "headers": dict(self.headers), "body": body})
                status, payload = fake.handle(self.command, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, *args):  # keep pytest output clean
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that timed out closes first: its broken pipe is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def sent(self, method: str | None = None) -> list[dict]:
        return [r for r in self.requests if method is None or r["method"] == method]


@pytest.fixture
def serve():
    servers = []

    def start(handle):
        servers.append(FakePinot(handle))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def free_port_url() -> str:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def broker(serve, *answers):
    """A broker answering the given fixtures in order (the last one repeats)."""
    queue = list(answers)

    def handle(method, path, body):
        name = queue.pop(0) if len(queue) > 1 else queue[0]
        status = 401 if name == "broker_http_401" else 200
        return status, fixture(name)
    return serve(handle)


# ---- query client ---------------------------------------------------------------------------

def test_query_sends_limit_options_and_token_and_parses_rows(serve):
    b = broker(serve, "broker_select")
    client = PinotClient(PinotConfig(broker_url=b.url + "/", timeout_ms=1234, token=Secret(TOKEN)))
    df = client.query("SELECT terminal_id, COUNT(*) AS n_tx FROM ffs_enriched "
                      "GROUP BY terminal_id ORDER BY COUNT(*) DESC")
    (req,) = b.requests
    assert req["method"] == "POST" and req["path"] == "/query/sql"
    assert req["headers"]["Authorization"] == TOKEN
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["body"]["sql"].endswith("ORDER BY COUNT(*) DESC\nLIMIT 100000")
    # no enableNullHandling: Pinot 0.11 fails aggregations with it
    assert req["body"]["queryOptions"] == "timeoutMs=1234"
    assert list(df.columns) == ["transaction_id", "terminal_id", "is_fraud", "amount",
                                "customer_nb_tx_1h", "customer_avg_amount_1d", "event_time",
                                "flagged"]
    assert df["terminal_id"].tolist() == ["T0042", "T0007", "T0042"]
    assert df["customer_nb_tx_1h"].tolist() == [3, 1, 4]
    assert str(df["customer_nb_tx_1h"].dtype) == "Int64" and str(df["is_fraud"].dtype) == "Int64"
    assert df["is_fraud"].tolist() == [1, 0, 0]  # unlabelled: Pinot shows the default, 0
    assert df["amount"].dtype == "float64" and df["amount"].tolist() == [12.5, 80.0, 7.25]
    assert df["event_time"][0] == pd.Timestamp("2024-03-10 11:00", tz="UTC")
    assert df["flagged"].tolist() == [True, False, False] and str(df["flagged"].dtype) == "boolean"
    assert df.attrs["pinot"]["numDocsScanned"] == 4 and df.attrs["limit_appended"]
    assert df.attrs["pinot"]["totalDocs"] == 6  # upsert: 4 rows are current of 6 ingested


def test_query_keeps_an_explicit_limit_and_honours_options(serve):
    b = broker(serve, "broker_select")
    client = PinotClient(PinotConfig(broker_url=b.url), default_limit=50)
    client.query("SELECT * FROM ffs_enriched LIMIT 3")
    client.query("SELECT * FROM ffs_enriched", null_handling=True)
    client.query("SELECT * FROM ffs_enriched", limit=7, options={"timeoutMs": 5})
    first, second, third = (r["body"] for r in b.requests)
    assert first["sql"] == "SELECT * FROM ffs_enriched LIMIT 3"
    assert "enableNullHandling" not in first["queryOptions"]
    assert second["sql"] == "SELECT * FROM ffs_enriched\nLIMIT 50"
    assert "enableNullHandling=true" in second["queryOptions"]
    assert third["sql"].endswith("\nLIMIT 7") and third["queryOptions"] == "timeoutMs=5"
    assert "Authorization" not in b.requests[0]["headers"]  # no token configured


@pytest.mark.parametrize("code, kind, words", [
    (150, TerminalError, "SqlCompilationException"),
    (180, TerminalError, "access denied"),  # 0.11: no token, HTTP 200 with a null message
    (190, TerminalError, "TableDoesNotExistError"),
    (250, TransientError, "timed out"),  # hand-written: 0.11 answers 400 or 427 here
    (400, TransientError, "BrokerTimeoutError"),
    (427, TransientError, "not responded"),
    (710, TerminalError, "no_such_feature"),
])
def test_errors_inside_http_200_raise_with_code_and_message(serve, code, kind, words):
    b = broker(serve, f"broker_error_{code}")
    with pytest.raises(PinotQueryError) as info:
        PinotClient(PinotConfig(broker_url=b.url)).query("SELECT no_such_feature FROM x")
    err = info.value
    assert err.code == code and isinstance(err, kind)
    assert words in err.message or words in str(err)
    assert f"Pinot error {code}" in str(err)
    assert "SELECT no_such_feature FROM x" in str(err)  # says which query


def test_partial_answers_and_http_errors_are_not_returned_as_data(serve):
    b = broker(serve, "broker_partial")
    with pytest.raises(TransientError, match="1 of 2 servers"):
        PinotClient(PinotConfig(broker_url=b.url)).query("SELECT 1 FROM ffs_enriched")
    b = broker(serve, "broker_http_401")
    with pytest.raises(TerminalError, match="HTTP 401.*pinot.token"):
        PinotClient(PinotConfig(broker_url=b.url)).query("SELECT 1 FROM ffs_enriched")


def test_unreachable_silent_or_unset_broker(serve):
    url = free_port_url()
    with pytest.raises(TransientError, match=f"Pinot broker at {url}/query/sql is unreachable"):
        PinotClient(PinotConfig(broker_url=url)).query("SELECT 1 FROM t")

    def slow(method, path, body):
        time.sleep(3)
        return 200, fixture("broker_select")
    b = serve(slow)
    started = time.perf_counter()
    with pytest.raises(TransientError, match="did not answer within 2.05 s"):
        PinotClient(PinotConfig(broker_url=b.url, timeout_ms=50)).query("SELECT 1 FROM t")
    assert time.perf_counter() - started < 2.9
    with pytest.raises(ConfigError, match="broker_url"):
        PinotClient(PinotConfig())


# ---- apply ------------------------------------------------------------------------------------

class FakeController:
    """Keeps what it is sent, answers GETs with it plus Pinot's own defaults, and refuses
    what Pinot refuses (a partial-upsert table without null handling)."""

    def __init__(self):
        self.schemas: dict[str, dict] = {}
        self.tables: dict[str, dict] = {}
        self.conflict_once: set[str] = set()  # POST /tables answers 409 for these names

    def __call__(self, method, path, body):
        parts = path.split("?")[0].strip("/").split("/")
        if parts[0] == "schemas":
            return self.schema(method, parts, body)
        return self.table(method, parts, body)

    def schema(self, method, parts, body):
        if method == "GET":
            if parts[1] not in self.schemas:
                return 404, fixture("controller_schema_not_found")
            return 200, {**fixture("controller_schema_defaults"), **self.schemas[parts[1]]}
        self.schemas[body["schemaName"]] = body
        return 200, fixture("controller_schema_added")

    def table(self, method, parts, body):
        if method == "GET":
            if parts[1] not in self.tables:
                return 200, fixture("controller_table_absent")
            stored = copy.deepcopy(self.tables[parts[1]])
            merged = fixture("controller_table_defaults")
            for key, value in stored.items():
                merged[key] = {**merged[key], **value} if isinstance(value, dict) and \
                    isinstance(merged.get(key), dict) else value
            merged["tableName"] = f"{parts[1]}_REALTIME"
            return 200, {"REALTIME": merged}
        name = body["tableName"]
        if method == "POST" and name in self.conflict_once:
            self.conflict_once.discard(name)
            return 409, fixture("controller_table_exists_409")
        if method == "POST" and name in self.tables:
            return 409, fixture("controller_table_exists_409")
        if "upsertConfig" in body and not body["tableIndexConfig"].get("nullHandlingEnabled"):
            err = fixture("controller_table_invalid_400")
            err["error"] += " " + json.dumps(body)  # Pinot may echo the config it refused
            return 400, err
        self.tables[name] = body
        return 200, fixture("controller_table_added" if method == "POST"
                            else "controller_table_updated")


def configured(url: str, **kafka) -> Config:
    cfg = Config()
    cfg.pinot.controller_url = url
    cfg.pinot.token = Secret(TOKEN)
    cfg.kafka.bootstrap_servers = "kafka-1:9092"
    for key, value in kafka.items():
        setattr(cfg.kafka, key, value)
    return cfg


def changes(server) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in server.requests if r["method"] != "GET"]


def test_apply_creates_then_changes_nothing(serve):
    ctl = FakeController()
    c = serve(ctl)
    cfg = configured(c.url)
    logged: list[str] = []
    first = apply(cfg, INFRA, logged.append)
    assert first.actions == [("schema", "ffs_enriched", "created"),
                             ("schema", "ffs_enriched_agg", "created"),
                             ("table", "ffs_enriched", "created"),
                             ("table", "ffs_enriched_agg", "created")]
    assert changes(c) == [("POST", "/schemas"), ("POST", "/schemas"),
                          ("POST", "/tables"), ("POST", "/tables")]
    assert all(r["headers"]["Authorization"] == TOKEN for r in c.requests)
    assert ctl.schemas["ffs_enriched"] == pc.enriched_schema()
    sent = ctl.tables["ffs_enriched"]["ingestionConfig"]["streamIngestionConfig"]
    assert sent["streamConfigMaps"][0]["stream.kafka.broker.list"] == "kafka-1:9092"
    assert "  table ffs_enriched_agg: created" in logged

    n = len(c.requests)
    second = apply(cfg, INFRA)
    assert [a[2] for a in second.actions] == ["unchanged"] * 4 and not second.changed()
    assert all(r["method"] == "GET" for r in c.requests[n:])


def test_apply_updates_what_changed(serve, tmp_path):
    ctl = FakeController()
    c = serve(ctl)
    cfg = configured(c.url)
    apply(cfg, INFRA)
    d = tmp_path / "pinot"
    shutil.copytree(INFRA, d)
    schema = json.loads((d / "ffs_enriched.schema.json").read_text())
    schema["metricFieldSpecs"].append({"name": "new_feature", "dataType": "DOUBLE"})
    (d / "ffs_enriched.schema.json").write_text(json.dumps(schema))
    n = len(c.requests)
    cfg.kafka.bootstrap_servers = "kafka-2:9092"  # the table's stream config changes too
    result = apply(cfg, d)
    assert result.actions == [("schema", "ffs_enriched", "updated"),
                              ("schema", "ffs_enriched_agg", "unchanged"),
                              ("table", "ffs_enriched", "updated"),
                              ("table", "ffs_enriched_agg", "updated")]
    assert [(r["method"], r["path"]) for r in c.requests[n:] if r["method"] != "GET"] == [
        ("PUT", "/schemas/ffs_enriched?reload=true&force=true"),
        ("PUT", "/tables/ffs_enriched"), ("PUT", "/tables/ffs_enriched_agg")]


def test_apply_treats_a_409_race_as_an_update(serve):
    ctl = FakeController()
    ctl.conflict_once = {"ffs_enriched"}
    c = serve(ctl)
    result = apply(configured(c.url), INFRA)
    assert ("table", "ffs_enriched", "updated") in result.actions
    assert ("PUT", "/tables/ffs_enriched") in changes(c)


def test_apply_reports_pinots_refusal_without_the_password(serve, tmp_path):
    c = serve(FakeController())
    cfg = configured(c.url, security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                     sasl_username="ffs", sasl_password=Secret("hunter2-xyz"))
    pc.write_artifacts(tmp_path, cfg)
    path = tmp_path / "ffs_enriched.table.json"
    table = json.loads(path.read_text())
    table["tableIndexConfig"]["nullHandlingEnabled"] = False
    path.write_text(json.dumps(table))
    with pytest.raises(PinotControllerError) as info:
        apply(cfg, tmp_path)
    err = info.value
    assert err.status == 400 and isinstance(err, TerminalError)
    assert "Null handling must be enabled for partial upsert tables" in str(err)
    assert "POST /tables" in str(err)
    assert "hunter2-xyz" not in str(err) and "***" in str(err)
    # the password was sent (that is where it belongs), filled into the JAAS line
    jaas = c.sent("POST")[-1]["body"]["ingestionConfig"]["streamIngestionConfig"][
        "streamConfigMaps"][0]["sasl.jaas.config"]
    assert jaas.endswith('username="ffs" password="hunter2-xyz";')


def test_apply_refuses_a_config_pinot_only_half_understood(serve):
    """0.11 takes a table config written for Pinot 1.x (upsertConfig.comparisonColumns) with
    HTTP 200, drops the list and compares on the time column: apply says so."""
    ctl = FakeController()
    c = serve(lambda m, p, b: (200, fixture("controller_table_unrecognized"))
              if (m, p) == ("POST", "/tables") else ctl(m, p, b))
    with pytest.raises(PinotControllerError) as info:
        apply(configured(c.url), INFRA)
    err = str(info.value)
    assert "POST /tables" in err and "comparisonColumns" in err
    assert "another Pinot version" in err and "ffs pinot generate" in err


def test_apply_errors_are_clear(serve, tmp_path, monkeypatch):
    url = free_port_url()
    with pytest.raises(TransientError, match=f"Pinot controller at {url}/schemas/ffs_enriched"):
        apply(configured(url), INFRA)
    with pytest.raises(ConfigError, match="controller_url"):
        apply(configured(""), INFRA)
    down = serve(lambda m, p, b: (503, fixture("controller_unavailable_503")))
    with pytest.raises(TransientError, match="HTTP 503: Controller is not the lead"):
        apply(configured(down.url), INFRA)
    c = serve(FakeController())
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    cfg = configured(c.url)
    cfg.kafka.bootstrap_servers = ""  # the committed files hold the servers placeholder
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        apply(cfg, INFRA)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    apply(cfg, INFRA)
    body = c.sent("POST")[-1]["body"]
    assert body["ingestionConfig"]["streamIngestionConfig"]["streamConfigMaps"][0][
        "stream.kafka.broker.list"] == "from-env:9092"
    with pytest.raises(InputError, match="not found: generate it"):
        apply(configured(c.url), tmp_path / "empty")


# ---- ffs pinot ... --------------------------------------------------------------------------

def run(argv: list[str], cfg: Config) -> int:
    p = argparse.ArgumentParser(prog="ffs")
    add_parsers(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.fn(args, cfg)


def test_cli_generate_apply_query(serve, tmp_path, capsys):
    assert run(["pinot", "generate", "--out", str(tmp_path / "g")], Config()) == 0
    assert {p.name: p.read_text() for p in (tmp_path / "g").iterdir()} == pc.artifacts(Config())

    c = serve(FakeController())
    cfg = configured("")
    assert run(["pinot", "apply", "--artifacts", str(tmp_path / "g"), "--controller", c.url],
               cfg) == 0
    assert "changes made" in capsys.readouterr().out and len(c.sent("POST")) == 4

    b = broker(serve, "broker_select")
    cfg.pinot.broker_url = b.url
    assert run(["pinot", "query", "SELECT terminal_id FROM ffs_enriched", "--format", "csv",
                "--limit", "3"], cfg) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("transaction_id,terminal_id,is_fraud,")
    assert "3 rows (LIMIT 3 added; result may be cut)" in out.err
    assert b.requests[-1]["body"]["sql"] == "SELECT terminal_id FROM ffs_enriched\nLIMIT 3"


def test_cli_named_query_is_anchored_to_the_newest_event(serve, capsys):
    queries = pytest.importorskip("ffs.analytics.queries")
    b = broker(serve, "broker_now", "broker_select")
    cfg = Config()
    cfg.pinot.broker_url = b.url
    assert run(["pinot", "query", "--named", "riskiest_terminals", "--param", "limit=5"],
               cfg) == 0
    now_req, query_req = (r["body"]["sql"] for r in b.requests)
    assert "MAX(event_time_ms)" in now_req
    assert query_req == queries.render("riskiest_terminals", "pinot", now_ms=1710071999000,
                                       limit=5)
    assert "T0042" in capsys.readouterr().out
    with pytest.raises(InputError, match="either SQL text or --named"):
        run(["pinot", "query"], cfg)


def test_cli_up_with_apply_needs_the_kafka_to_consume():
    cfg = Config()
    cfg.kafka.bootstrap_servers = ""
    with pytest.raises(InputError, match="--apply needs the Kafka"):
        run(["pinot", "up", "--apply"], cfg)  # refused before any JVM starts
