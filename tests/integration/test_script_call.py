"""The read script sent straight on a pooled connection gives what redis-py's Script gives,
reloads itself on a server that lost it, and leaves the pool clean after an outage."""

import os
import signal
import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from online.redis_server import RedisServer
from online.script_call import direct, overlapped

SCRIPT = "return {#KEYS, ARGV[1], redis.call('INCR', KEYS[1])}"


@pytest.fixture
def server(tmp_path):
    with RedisServer(directory=tmp_path / "redis") as srv:
        yield srv


def test_it_answers_as_redis_py_does_and_reloads_a_flushed_script(server):
    r = redis.Redis.from_url(server.url)
    script = r.register_script(SCRIPT)
    call = direct(r, script)
    assert call is not script and call.sha == script.sha  # from_url: no retries
    assert call(keys=["n", "m"], args=[7]) == [2, b"7", 1]
    assert script(keys=["n", "m"], args=[7]) == [2, b"7", 2]
    r.script_flush()
    assert not r.script_exists(script.sha)[0]
    assert call(keys=["n"], args=["x"]) == [1, b"x", 3]  # NOSCRIPT: loaded, then called once
    assert r.get("n") == b"3"
    assert r.script_exists(script.sha)[0]
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.set("s", "text")
        call(keys=["s"], args=[1])
    assert call(keys=["n"], args=[1])[2] == 4  # the connection came back clean
    pool = r.connection_pool
    assert not pool._in_use_connections


def test_an_outage_raises_redis_errors_and_the_next_call_reconnects(server):
    r = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    call = direct(r, r.register_script(SCRIPT))
    assert call(keys=["n"], args=[0])[2] == 1
    server.stop()
    with pytest.raises(redis.ConnectionError):
        call(keys=["n"], args=[0])
    assert not r.connection_pool._in_use_connections
    server.start()  # same port, empty, without the script
    assert call(keys=["n"], args=[0])[2] == 1


def test_other_clients_keep_redis_py_s_own_way(server):
    class Traced(redis.Redis):
        pass

    retrying = Retry(NoBackoff(), 2)
    for r in (redis.Redis.from_url(server.url, single_connection_client=True),
              Traced.from_url(server.url),
              redis.Redis.from_url(server.url, retry=retrying),
              redis.Redis(port=server.port)):  # redis-py's constructor retries 3 times
        script = r.register_script(SCRIPT)
        assert direct(r, script) is script


def test_a_call_in_halves_and_an_abandoned_one_leave_the_next_reply_its_own(server):
    r = redis.Redis.from_url(server.url, max_connections=1)  # one connection: reused
    call = direct(r, r.register_script(SCRIPT))
    conn = call.send(["n"], [1])
    assert r.connection_pool._in_use_connections  # out of the pool while its reply is due
    assert call.receive(conn, ["n"], [1]) == [1, b"1", 1]
    assert not r.connection_pool._in_use_connections
    os.kill(server.proc.pid, signal.SIGSTOP)  # a hung server: replies come after
    resume = threading.Timer(0.3, os.kill, (server.proc.pid, signal.SIGCONT))
    try:
        late = call.send(["n"], ["late"])
        call.abandon(late)  # given up before its reply exists
        assert not r.connection_pool._in_use_connections
        resume.start()
        # sent while the server is still stopped: on the abandoned connection, this call
        # would read the late reply as its own
        nxt = call.send(["n", "m"], ["next"])
        assert call.receive(nxt, ["n", "m"], ["next"])[:2] == [2, b"next"]
    finally:
        resume.cancel()
        os.kill(server.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize("chunk", [1, 3, 4, 100])
def test_overlapped_calls_run_in_order_once_each_as_a_pipeline_would(server, chunk):
    r = redis.Redis.from_url(server.url)
    script = r.register_script(SCRIPT)
    calls = [(["n"], [k]) for k in range(12)]
    replies = overlapped(r, script, iter(calls), chunk=chunk)  # a generator: built as sent
    assert replies == [[1, str(k).encode(), k + 1] for k in range(12)]  # INCR: ran in order
    assert r.get("n") == b"12"
    assert not r.connection_pool._in_use_connections
    r.delete("n")
    pipe = r.pipeline(transaction=False)
    for keys, args in calls:
        script(keys=keys, args=args, client=pipe)
    assert pipe.execute() == replies


def test_overlapped_calls_reload_a_lost_script_and_raise_an_error_reply_after_all_ran(server):
    r = redis.Redis.from_url(server.url)
    script = r.register_script(SCRIPT)
    r.script_flush()
    calls = [(["n"], [k]) for k in range(7)]
    assert overlapped(r, script, calls, chunk=3) == [[1, str(k).encode(), k + 1]
                                                      for k in range(7)]
    assert r.get("n") == b"7"  # refused, then each sent once more
    r.set("s", "text")
    mixed = [(["n"], [0]), (["s"], [1]), (["n"], [2])]
    with pytest.raises(redis.ResponseError, match="not an integer"):
        overlapped(r, script, mixed, chunk=2)
    assert r.get("n") == b"9"  # the calls around the error ran, as in a pipeline
    assert overlapped(r, script, [(["n"], [3])]) == [[1, b"3", 10]]  # a clean connection


def test_overlapped_calls_of_other_clients_go_through_a_pipeline(server):
    r = redis.Redis.from_url(server.url, single_connection_client=True)
    script = r.register_script(SCRIPT)
    assert overlapped(r, script, [(["n"], [1]), (["n", "m"], [2])]) == [[1, b"1", 1],
                                                                        [2, b"2", 2]]
