"""The online client under faults: Redis stopped, hung or busy, wrong or missing password,
TLS with and without the right CA, and bad input.

The contract (online/client.py): get_features never raises for a Redis failure, answers
within about its timeout with the Redis-backed features UNAVAILABLE (request features still
computed), says why in `result.error`, and the same client recovers by itself when Redis is
back. Bad input raises InputError before any Redis call.

Each test starts its own redis-server on a free port (online/redis_server.py).
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time

import pandas as pd
import pytest

from ffs.config import Secret, load_config
from ffs.errors import InputError, TerminalError
from ffs.online.client import (
    MISSING_ENTITY,
    MISSING_REQUEST_DATA,
    PRESENT,
    UNAVAILABLE,
    OnlineClient,
)
from ffs.online.loader import load_state
from ffs.online.redis_server import RedisServer
from ffs.transformations.features import (
    ENTITIES,
    REQUEST_FEATURES,
    entity_feature_names,
    feature_names,
)
from tests.unit.test_window_semantics import labels_frame, tx_frame

pytestmark = [pytest.mark.redis]

TIMEOUT_MS = 100
SLACK_S = 1.0  # timeout + slack: generous for a 2-core machine shared with other work

TX = tx_frame([
    (1, "2024-03-01 10:00:00", 7, 70, 10.0),
    (2, "2024-03-01 12:00:00", 7, 71, 20.0),
    (3, "2024-03-01 12:00:00", 7, 70, 30.0),
    (4, "2024-03-02 01:00:00", 7, 72, 40.0),
    (5, "2024-03-01 23:00:00", 8, 70, 5.0),
])
LABELS = labels_frame([(1, 1, "2024-03-01 11:00:00")])
AS_OF = "2024-03-02 10:00:00"
# A scored transaction at night on a Saturday, and a plain read at AS_OF.
ROW_TX = {"customer_id": 7, "terminal_id": 70, "transaction_id": 100,
          "event_timestamp": "2024-03-02 03:00:00", "amount": 12.5}
ROW_READ = {"customer_id": 8, "terminal_id": 71}
ROWS = [ROW_TX, ROW_READ]
UNKNOWN = {"customer_id": 999, "terminal_id": 9999}

REQUEST = {f.name for f in REQUEST_FEATURES}
# the single entities' features (the rows' card-terminal pairs are not all in the state)
PAIRS = {n for e in ENTITIES if e.composite for n in entity_feature_names(e)}
FROM_REDIS = [n for n in feature_names() if n not in REQUEST and n not in PAIRS] + [
    "amount_over_customer_avg_30d"]


def config(url: str, **env: str):
    """A Config as a service gets it: from FFS_* environment variables only."""
    return load_config(path=None, env={"FFS_REDIS_URL": url,
                                       "FFS_REDIS_TIMEOUT_MS": str(TIMEOUT_MS), **env})


def timed(client: OnlineClient, rows=ROWS, **kwargs):
    """get_features and its wall time; in a worker thread, so a call that hangs (no timeout
    reaching the socket) fails the test instead of hanging the run."""
    started = time.perf_counter()
    future = _WORKER.submit(client.get_features, rows, as_of=AS_OF, **kwargs)
    try:
        result = future.result(timeout=TIMEOUT_MS / 1000 + SLACK_S + 2)
    except concurrent.futures.TimeoutError:
        pytest.fail("get_features did not return: the Redis timeout is not applied")
    return result, time.perf_counter() - started


_WORKER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="online")


def assert_present(result, n: int | None = None):
    n = len(ROWS) if n is None else n
    assert result.error is None, result.error
    assert all(result.statuses[name] == [PRESENT] * n
               for name in FROM_REDIS if name != "amount_over_customer_avg_30d"), {
        k: s for k, s in result.statuses.items() if k in FROM_REDIS and s != [PRESENT] * n}


def assert_unavailable(result, elapsed, *error_parts):
    assert elapsed < TIMEOUT_MS / 1000 + SLACK_S, f"answered after {elapsed:.3f} s"
    for name in FROM_REDIS:
        assert result.statuses[name] == [UNAVAILABLE] * len(result.as_of), name
        assert result.values[name] == [None] * len(result.as_of), name
    assert result.error, "an UNAVAILABLE result must say why"
    for part in error_parts:
        assert part.lower() in result.error.lower(), result.error


def assert_request_features_still_computed(result):
    """ROW_TX is Saturday 03:00 UTC with an amount; ROW_READ is Saturday 10:00 without one."""
    assert result.values["tx_during_night"] == [1, 0]
    assert result.values["tx_during_weekend"] == [1, 1]
    assert result.values["amount"] == [12.5, None]
    assert result.statuses["tx_during_night"] == [PRESENT, PRESENT]
    assert result.statuses["tx_during_weekend"] == [PRESENT, PRESENT]
    assert result.statuses["amount"] == [PRESENT, MISSING_REQUEST_DATA]


@pytest.fixture
def servers():
    """Every RedisServer a test starts; stopped (and resumed first, if paused) at the end."""
    started: list[RedisServer] = []
    yield started
    for srv in started:
        if srv.proc is not None and srv.proc.poll() is None:
            os.kill(srv.proc.pid, signal.SIGCONT)
        srv.stop()


def start(servers, tmp_path, **kwargs) -> RedisServer:
    srv = RedisServer(directory=tmp_path / f"redis{len(servers)}", **kwargs)
    servers.append(srv)
    return srv.start()


def loaded_client(srv: RedisServer, **env) -> OnlineClient:
    client = OnlineClient.from_config(config(srv.url, **env))
    load_state(client.redis, TX, LABELS)
    return client


# -- 1. Redis stopped ---------------------------------------------------------------------


def test_stopped_redis_gives_unavailable_in_time_and_the_same_client_recovers(servers, tmp_path):
    srv = start(servers, tmp_path, persist=True)  # append-only file: data survives a restart
    client = loaded_client(srv)
    before, _ = timed(client)
    assert_present(before)
    assert before.values["customer_nb_tx_1d"] == [5, 1]  # 1, 2, 3, 4 + tx 100; and 5

    srv.stop()
    for _ in range(3):  # every call while it is down, not only the first (stale pooled conn)
        down, elapsed = timed(client)
        assert_unavailable(down, elapsed, "ConnectionError", str(srv.port))
        assert_request_features_still_computed(down)

    srv.start()  # same object: same port, same directory
    after, _ = timed(client)
    assert_present(after)
    assert after.values == before.values
    assert after.statuses == before.statuses


def test_client_made_while_redis_is_down_works_once_it_is_up(servers, tmp_path):
    srv = RedisServer(directory=tmp_path / "redis")
    client = OnlineClient.from_config(config(srv.url))
    down, elapsed = timed(client)
    assert_unavailable(down, elapsed, "ConnectionError")
    servers.append(srv.start())
    load_state(client.redis, TX, LABELS)
    assert_present(timed(client)[0])


# -- 2. Redis slow -------------------------------------------------------------------------


def test_hung_redis_times_out_and_the_client_recovers_without_mixing_replies(servers,
                                                                             tmp_path):
    srv = start(servers, tmp_path)
    client = loaded_client(srv)
    before, _ = timed(client)
    assert_present(before)

    os.kill(srv.proc.pid, signal.SIGSTOP)  # accepts connections (kernel), never answers
    try:
        for _ in range(2):  # the pooled connection, then a fresh one (handshake times out)
            hung, elapsed = timed(client)
            assert elapsed >= TIMEOUT_MS / 1000 * 0.9, "should have waited for the timeout"
            assert_unavailable(hung, elapsed, "TimeoutError")
            assert_request_features_still_computed(hung)
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)

    # Redis now answers the timed-out calls too: those replies must not be read as the answer
    # to the next call. A different batch first: a stale reply would have the wrong shape or
    # the wrong entities.
    other, _ = timed(client, rows=[UNKNOWN])
    assert other.error is None, other.error
    assert other.statuses["customer_nb_tx_1d"] == [MISSING_ENTITY]
    assert other.values["customer_nb_tx_30d"] == [0]
    after, _ = timed(client)
    assert after.values == before.values and after.statuses == before.statuses


def test_busy_script_in_redis_gives_unavailable_not_an_exception(servers, tmp_path):
    import redis

    srv = start(servers, tmp_path)
    client = loaded_client(srv)
    admin = redis.Redis.from_url(srv.url)
    admin.config_set("lua-time-limit", 50)  # others get -BUSY after 50 ms of a running script
    spinner = redis.Redis.from_url(srv.url)
    ended: list[Exception] = []

    def spin():
        try:
            spinner.eval("while true do end", 0)
        except redis.exceptions.ResponseError as exc:  # SCRIPT KILL ends it with an error
            ended.append(exc)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while True:  # wait until Redis says BUSY to everyone else
            try:
                admin.ping()
            except redis.exceptions.ResponseError as exc:
                if "BUSY" in str(exc):
                    break
                raise
            assert time.monotonic() < deadline, "the script never made Redis busy"
            time.sleep(0.02)
        busy, elapsed = timed(client)
        assert_unavailable(busy, elapsed, "BUSY")
        assert_request_features_still_computed(busy)
    finally:
        admin.script_kill()
        thread.join(5)
    assert ended and not thread.is_alive()
    assert_present(timed(client)[0])


def test_something_else_on_the_port_gives_unavailable():
    """Not Redis at the address (an HTTP proxy, a wrong port): redis-py raises InvalidResponse,
    which is not a ConnectionError."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer_http():
            for _ in range(3):  # the record-format check at start, then the two reads
                conn, _addr = listener.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_http, daemon=True)
        thread.start()
        port = listener.getsockname()[1]
        client = OnlineClient.from_config(config(f"redis://127.0.0.1:{port}/0"))
        for _ in range(2):
            result, elapsed = timed(client)
            assert_unavailable(result, elapsed, "Protocol error")
            assert_request_features_still_computed(result)
        thread.join(5)


# -- 3. Password from config -----------------------------------------------------------------


def test_password_comes_from_env_works_and_never_shows(servers, tmp_path):
    password = "pw-" + secrets.token_hex(12)
    srv = start(servers, tmp_path, password=password)
    cfg = config(srv.url, FFS_REDIS_PASSWORD=password)
    assert isinstance(cfg.redis.password, Secret) and cfg.redis.password.reveal() == password
    for shown in (repr(cfg), str(cfg), repr(cfg.redis), str(cfg.redis), f"{cfg.redis}",
                  f"{cfg.redis.password}", repr(cfg.redis.password)):
        assert password not in shown

    client = OnlineClient.from_config(cfg)
    assert password not in repr(client.redis)
    load_state(client.redis, TX, LABELS)
    good, _ = timed(client)
    assert_present(good)

    wrong = "wrong-" + secrets.token_hex(12)
    bad, elapsed = timed(OnlineClient.from_config(config(srv.url, FFS_REDIS_PASSWORD=wrong)))
    assert_unavailable(bad, elapsed, "AuthenticationError")
    assert_request_features_still_computed(bad)
    assert password not in bad.error and wrong not in bad.error

    # No password at all: Redis answers NOAUTH (or, for a long EVALSHA, a protocol error);
    # either way the error says to set the password.
    none, elapsed = timed(OnlineClient.from_config(config(srv.url)))
    assert_unavailable(none, elapsed, "password")
    assert password not in none.error


def test_pool_size_comes_from_config(servers, tmp_path):
    srv = start(servers, tmp_path)
    client = OnlineClient.from_config(config(srv.url, FFS_REDIS_MAX_CONNECTIONS="3"))
    assert client.redis.connection_pool.max_connections == 3
    assert client.redis.connection_pool.connection_kwargs["socket_timeout"] == TIMEOUT_MS / 1000


# -- 4. TLS ----------------------------------------------------------------------------------


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(directory, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1",
             "-subj", f"/CN=ffs throwaway {name}", cwd=directory)


@pytest.fixture
def certs(tmp_path):
    """A throwaway CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed: cannot make throwaway TLS certificates")
    d = tmp_path / "tls"
    d.mkdir()
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf", cwd=d)
    return d


def start_tls(servers, tmp_path, certs) -> RedisServer:
    try:
        return start(servers, tmp_path, tls_cert_file=certs / "server.crt",
                     tls_key_file=certs / "server.key", tls_ca_file=certs / "ca.crt")
    except TerminalError as exc:
        if "Bad directive" in str(exc) or ("tls" in str(exc).lower() and "not" in str(exc)):
            pytest.skip(f"this redis-server has no TLS support: {exc}")
        raise


def test_tls_with_the_ca_works(servers, tmp_path, certs):
    srv = start_tls(servers, tmp_path, certs)
    plain_url = srv.url.replace("rediss://", "redis://")  # cfg.tls turns it into rediss://
    client = OnlineClient.from_config(config(plain_url, FFS_REDIS_TLS="true",
                                             FFS_REDIS_TLS_CA_FILE=str(certs / "ca.crt")))
    load_state(client.redis, TX, LABELS)
    result, _ = timed(client)
    assert_present(result)
    assert result.values["customer_nb_tx_1d"] == [5, 1]


@pytest.mark.parametrize("env", [
    pytest.param({"FFS_REDIS_TLS": "true"}, id="no-ca-file"),
    pytest.param({"FFS_REDIS_TLS": "true", "FFS_REDIS_TLS_CA_FILE": "other-ca.crt"},
                 id="other-ca"),
    pytest.param({"FFS_REDIS_TLS": "false"}, id="plain-tcp-to-tls-port"),
])
def test_tls_without_the_right_ca_fails_cleanly(servers, tmp_path, certs, env):
    srv = start_tls(servers, tmp_path, certs)
    plain_url = srv.url.replace("rediss://", "redis://")
    env = {k: str(certs / v) if k == "FFS_REDIS_TLS_CA_FILE" else v for k, v in env.items()}
    result, elapsed = timed(OnlineClient.from_config(config(plain_url, **env)))
    assert_unavailable(result, elapsed)
    assert_request_features_still_computed(result)
    if env["FFS_REDIS_TLS"] == "true":
        assert "certificate verify failed" in result.error, result.error


# -- 5. Bad input ----------------------------------------------------------------------------


class _NoRedis:
    """Stands in for a Redis connection: bad input must be refused before any call."""

    def register_script(self, _script):
        def call(**_):
            raise AssertionError("Redis was called for a request that should be refused")
        return call


def _client(max_batch: int = 1000) -> OnlineClient:
    return OnlineClient(_NoRedis(), max_batch=max_batch)


@pytest.mark.parametrize("rows, kwargs, message", [
    ([{"terminal_id": 70}], {}, r"row 0: missing 'customer_id'"),
    ([ROW_READ, {"customer_id": 7}], {}, r"row 1: missing 'terminal_id'"),
    ([{"customer_id": None, "terminal_id": 70}], {}, r"row 0: missing 'customer_id'"),
    ([{"customer_id": float("nan"), "terminal_id": 70}], {}, r"row 0: missing 'customer_id'"),
    ([{**ROW_TX, "amount": -0.01}], {},
     r"row 0: amount must be a finite number from 0 to 1,000,000,000, got -0.01"),
    ([{**ROW_TX, "amount": float("inf")}], {}, r"row 0: amount must be a finite number"),
    ([{**ROW_TX, "amount": 2e9}], {},
     r"row 0: amount must be .* to 1,000,000,000, got 2000000000.0"),
    ([{**ROW_TX, "amount": "twelve"}], {}, r"row 0: amount must be a number, got 'twelve'"),
    ([ROW_READ, {**ROW_TX, "event_timestamp": "not a time"}], {},
     r"row 1: event_timestamp: cannot read 'not a time' as a timestamp"),
    ([{**ROW_TX, "event_timestamp": float("nan")}], {}, r"row 0: event_timestamp"),
    ([{**ROW_TX, "event_timestamp": pd.NaT}], {}, r"row 0: event_timestamp: missing"),
    ([ROW_READ], {"as_of": "soon"}, r"as_of: cannot read 'soon'"),
    ([ROW_READ], {"feature_service": "fraud_detection_v0"},
     r"unknown feature service .fraud_detection_v0.; this store serves "
     r"fraud_detection_v2, fraud_detection_v1"),
])
def test_bad_input_raises_input_error_before_any_redis_call(rows, kwargs, message):
    with pytest.raises(InputError, match=message):
        _client().get_features(rows, **kwargs)


def test_batch_over_the_limit_is_refused():
    with pytest.raises(InputError, match=r"batch of 4 rows is over the limit of 3"):
        _client(max_batch=3).get_features([ROW_READ] * 4)


def test_empty_batch_needs_no_redis():
    result = _client().get_features([])
    assert result.error is None and all(v == [] for v in result.values.values())


def test_numbers_and_ids_are_read_as_the_offline_store_reads_them(servers, tmp_path):
    """Epoch numbers: seconds, or ms/us/ns by magnitude, floats included (a float of epoch
    seconds was read as nanoseconds: 1970). Ids: 7.0 (a pandas row) is the entity 7."""
    srv = start(servers, tmp_path)
    client = loaded_client(srv)
    ref, _ = timed(client, rows=[ROW_TX])
    secs = int(pd.Timestamp(ROW_TX["event_timestamp"], tz="UTC").timestamp())
    for ts in (secs, float(secs) + 0.9, secs * 1000, secs * 10**9):
        got, _ = timed(client, rows=[{**ROW_TX, "event_timestamp": ts}])
        assert got.as_of == ref.as_of == [secs], ts
        assert got.values == ref.values, ts
    as_float = {**ROW_TX, "customer_id": 7.0, "terminal_id": 70.0, "transaction_id": 100.0}
    got, _ = timed(client, rows=[as_float])
    assert got.values == ref.values and got.statuses == ref.statuses
