"""The online state's record-format marker (online/state_format.py), against a real Redis: a
state written in another format is refused by the loader, the stream and the client, with
the entities that differ named; a state without a marker is taken as it is."""

from __future__ import annotations

import json

import pytest
import redis

from ffs.config import load_config
from ffs.jobs.stream.batch import BatchProcessor
from ffs.online import state_format
from ffs.online.client import OnlineClient
from ffs.online.loader import load_state
from ffs.online.redis_server import RedisServer
from tests.conftest import random_events

pytestmark = pytest.mark.redis


@pytest.fixture()
def conn():
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        yield client
        client.close()


def _other_format(conn, prefix="ffs"):
    """The marker another repo would have left: the customer keeps one more own value."""
    key = state_format.format_key(prefix)
    stored = json.loads(conn.get(key))
    stored["entities"]["customer"]["own values"].append("amount")
    stored["format"] = "0123456789abcdef"
    conn.set(key, json.dumps(stored))


def test_the_loader_records_the_format_and_readers_accept_it(conn):
    tx, labels, _ = random_events(3)
    load_state(conn, tx, labels)
    stored = json.loads(conn.get(state_format.format_key("ffs")))
    assert stored["format"] == state_format.describe()["format"]
    assert set(stored["entities"]) >= {"customer", "terminal"}
    client = OnlineClient(conn)
    res = client.get_features([{"customer_id": int(tx["customer_id"].iloc[0]),
                                "terminal_id": int(tx["terminal_id"].iloc[0])}])
    assert res.error is None
    load_state(conn, tx, labels)  # the same format again: fine


def test_a_state_in_another_format_is_refused_by_every_reader_and_writer(conn):
    tx, labels, _ = random_events(3)
    load_state(conn, tx, labels)
    _other_format(conn)
    cfg = load_config(env={})
    for make in (lambda: OnlineClient(conn).check_format(),
                 lambda: BatchProcessor(cfg, conn, lambda *a: None, lambda: None),
                 lambda: load_state(conn, tx, labels)):
        with pytest.raises(state_format.StateFormatError, match=r"customer.*materialize"):
            make()
    # another prefix is another state: a fresh one
    OnlineClient(conn, prefix="other").check_format()
    load_state(conn, tx, labels, prefix="other")


def test_a_state_without_marker_is_taken_and_a_writer_marks_it(conn):
    tx, labels, _ = random_events(3)
    load_state(conn, tx, labels)
    conn.delete(state_format.format_key("ffs"))  # as a state written before the marker
    OnlineClient(conn).check_format()
    assert conn.get(state_format.format_key("ffs")) is None  # a reader leaves it so
    BatchProcessor(load_config(env={}), conn, lambda *a: None, lambda: None)
    assert json.loads(conn.get(state_format.format_key("ffs")))["format"] == \
        state_format.describe()["format"]


def test_a_marker_that_is_not_one_is_refused(conn):
    conn.set(state_format.format_key("ffs"), b"\x00garbage")
    with pytest.raises(state_format.StateFormatError, match="does not hold a record format"):
        OnlineClient(conn).check_format()


def test_the_server_refuses_to_start_on_a_state_in_another_format(conn):
    from ffs.online.server import create_app

    tx, labels, _ = random_events(3)
    load_state(conn, tx, labels)
    _other_format(conn)
    cfg = load_config(env={})
    cfg.redis.url = f"redis://127.0.0.1:{conn.connection_pool.connection_kwargs['port']}/0"
    with pytest.raises(state_format.StateFormatError):
        create_app(cfg)
