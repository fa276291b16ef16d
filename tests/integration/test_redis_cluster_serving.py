"""What serves from a Redis Cluster (3 primaries, 3 replicas, on free ports): the HTTP server,
`OnlineClient.ping` (what /ready and the circuit breaker ask) and the Feast plugin.

* the server app (online/server.py, in process over httpx's ASGITransport, as in
  test_server.py) with `redis.cluster: true` answers /get-online-features exactly as the
  server over one Redis holding the same state (the generated data of test_redis_cluster);
* a primary SIGKILLed: requests answer within the timeout, UNAVAILABLE (null) exactly for the
  values that node holds, the others served and equal; /ready stays 200; the breaker stays
  closed; once the replica has taken over every value is served again;
* `ping()`: one Redis (passes when up, raises when down); a cluster (passes with a primary
  dead, raises when no node answers);
* the Feast plugin (online/feast_store.py) reads the client's values from the cluster, and
  refuses a partial answer (a primary down) with FFSOnlineStoreUnavailable.

One cluster for the module; the tests run in file order and the last one stops every node.
"""

from __future__ import annotations

import gc
import time

import pandas as pd
import pytest
import redis

from ffs.config import Config
from ffs.online import layout
from ffs.online.client import PRESENT, UNAVAILABLE, OnlineClient, redis_client
from ffs.online.loader import load_state
from ffs.online.redis_cluster import RedisCluster
from ffs.online.redis_server import RedisServer
from ffs.online.server import create_app
from ffs.online.shards import slot_of
from ffs.transformations.features import (
    ENTITIES,
    FEATURE_SERVICE,
    entity,
    entity_feature_names,
    feature_names,
)
from tests.integration.test_redis_cluster import (
    _lost,
    _slots_of,
    request_rows,
    world,  # noqa: F401 - a fixture
)
from tests.integration.test_server import Http, metric

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT_MS = 200
SLACK_S = 1.0  # timeout + slack: a 2-core machine shared with other work
CUSTOMER = entity("customer")
FROM_ENTITY = {n: e for e in ENTITIES for n in entity_feature_names(e)}


def _all_on(dead_slots, customer_id) -> dict:
    """A row whose customer, terminal and pair keys all hash to the dead node's slots."""
    cust = layout.entity_key("ffs", CUSTOMER, str(customer_id))
    assert slot_of(cust) in dead_slots
    pair = entity("customer+terminal")
    for terminal in range(10**6, 10**6 + 100_000):
        keys = [layout.entity_key("ffs", entity("terminal"), str(terminal)),
                layout.entity_key("ffs", pair, layout.entity_value([customer_id, terminal]))]
        if all(slot_of(k) in dead_slots for k in keys):
            return {"customer_id": customer_id, "terminal_id": terminal}
    raise AssertionError("no terminal id with every key on the dead node")


def server_config(url: str, cluster: bool) -> Config:
    cfg = Config()
    cfg.redis.url, cfg.redis.cluster = url, cluster
    cfg.redis.timeout_ms = cfg.serve.timeout_ms = TIMEOUT_MS
    return cfg


@pytest.fixture(scope="module")
def state(world):  # noqa: F811 - the imported fixture
    """The cluster and one Redis, each loaded with the same generated state; the rows asked
    for (plain reads, unknown entities, scored and already ingested transactions) and their
    read time."""
    tx, labels = world
    with RedisCluster(primaries=3, replicas=1) as cluster, RedisServer() as single:
        conn = redis_client(server_config(cluster.url, True).redis)
        conn_1 = redis.Redis.from_url(single.url)
        s = load_state(conn, tx, labels)
        load_state(conn_1, tx, labels)
        conn.close()
        conn_1.close()
        t0 = pd.Timestamp(s.as_of, unit="s", tz="UTC")
        yield cluster, single, request_rows(tx, t0, 3), t0


def body(rows: list[dict], t0: pd.Timestamp) -> dict:
    def plain(v):
        if v is None:
            return None
        if isinstance(v, pd.Timestamp):
            return v.isoformat()
        return v.item() if hasattr(v, "item") else v

    return {"feature_service": FEATURE_SERVICE, "as_of": int(t0.timestamp()),
            "entities": {k: [plain(r[k]) for r in rows] for k in ("customer_id", "terminal_id")},
            "request_data": {k: [plain(r.get(k)) for r in rows]
                             for k in ("transaction_id", "event_timestamp", "amount")}}


@pytest.fixture(scope="module")
def servers(state):
    """(server on the cluster, server on one Redis, the one-Redis answer to `rows`)."""
    cluster, single, rows, t0 = state
    on_cluster = serve(server_config(cluster.url, True))
    on_one = serve(server_config(single.url, False))
    want = on_one.features(body(rows, t0))
    assert want.status_code == 200
    yield on_cluster, on_one, want.json()
    on_cluster.close()
    on_one.close()


def serve(cfg: Config) -> Http:
    app = create_app(cfg)
    http = Http(app)
    http.app = app  # its state holds the client
    return http


def columns(doc: dict) -> dict[str, tuple[list, list]]:
    names = doc["metadata"]["feature_names"]
    return {n: (r["values"], r["statuses"]) for n, r in zip(names, doc["results"], strict=True)}


def test_server_on_a_cluster_answers_as_on_one_redis(state, servers):
    cluster, _single, rows, t0 = state
    on_cluster, _on_one, want = servers
    on_cluster.app.state.client.warm()  # what the app's lifespan does at start
    # warm() loaded the read scripts on every primary
    shas = list(on_cluster.app.state.client._shards._scripts)
    for node in cluster.primaries():
        assert all(redis.Redis(port=node.port).script_exists(*shas))
    r = on_cluster.features(body(rows, t0))
    assert r.status_code == 200
    assert r.json() == want
    got = columns(r.json())
    assert set(got) >= set(feature_names())
    # not a vacuous equality: real counts and sums, and each entity's unknown value
    assert sum(v or 0 for v in got["customer_nb_tx_1d"][0]) > 10
    assert PRESENT in got["terminal_nb_tx_7d_delay7d"][1]
    assert "MISSING_ENTITY" in got["customer_nb_tx_1d"][1]
    assert UNAVAILABLE not in {s for _, stats in got.values() for s in stats}
    assert on_cluster.get("/ready").status_code == 200


def test_ping_on_one_redis(tmp_path):
    with RedisServer(directory=tmp_path) as server:
        client = OnlineClient(redis_client(server_config(server.url, False).redis))
        client.ping()
        server.stop()
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        assert time.monotonic() - started < TIMEOUT_MS / 1000 + SLACK_S
        server.start()  # same port: the next call reconnects
        client.ping()
        client.redis.close()


@pytest.fixture(scope="module")
def feast(state, tmp_path_factory):
    """A Feast repo (test_feast_plugin's plain views) over the cluster, read at t0."""
    from feast import FeatureStore

    from tests.integration.test_feast_plugin import _plain_views, _tiny_source, _yaml

    cluster, _single, _rows, t0 = state
    root = tmp_path_factory.mktemp("feast_cluster")
    store = FeatureStore(repo_path=str(_yaml(root / "repo", root / "registry.db",
                                             url=cluster.url, as_of=int(t0.timestamp()),
                                             timeout_ms=TIMEOUT_MS)))
    store.apply(_plain_views(_tiny_source(root / "features.parquet")))
    return store


def feast_read(store, rows: list[dict]):
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    resp = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{"customer_id": int(r["customer_id"]), "terminal_id": int(r["terminal_id"])}
                     for r in rows])
    statuses = {name: [FieldStatus.Name(s) for s in result.statuses]
                for name, result in zip(resp.proto.metadata.feature_names.val,
                                        resp.proto.results, strict=False)}
    return resp.to_dict(), statuses


def plain_rows(rows: list[dict]) -> list[dict]:
    """The rows' join keys only (Feast passes no request data to an online store)."""
    return [{"customer_id": r["customer_id"], "terminal_id": r["terminal_id"]} for r in rows]


def test_feast_plugin_on_a_cluster_reads_the_clients_values(state, feast, monkeypatch):
    cluster, _single, rows, t0 = state
    monkeypatch.setenv("FFS_REDIS_CLUSTER", "1")  # the plugin's connection: the ffs config's
    keys = plain_rows(rows)
    got, statuses = feast_read(feast, keys)
    client = OnlineClient(redis_client(server_config(cluster.url, True).redis))
    want = client.get_features(keys, as_of=t0)
    client.redis.close()
    assert want.error is None and want.unavailable is None
    present = 0
    for name in FROM_ENTITY:
        for i in range(len(keys)):
            if want.statuses[name][i] == PRESENT:
                assert (got[name][i], statuses[name][i]) == (want.values[name][i], "PRESENT"), \
                    (name, i)
                present += 1
            else:
                assert (got[name][i], statuses[name][i]) == (None, "NOT_FOUND"), (name, i)
    assert present > len(FROM_ENTITY) * len(keys) // 2


@pytest.fixture()
def lean_heap():
    """This process holds pandas', pyarrow's and Feast's objects (~250k): a full garbage
    collection of them takes 250-330 ms on a 2-core machine, longer than the 200 ms /ready
    gives PING (a server process holds ~100k, ~50 ms). Frozen, they are not collected."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def test_a_primary_killed_while_serving(state, servers, feast, monkeypatch, lean_heap):
    """A primary SIGKILLed under the server: every request answers within the timeout, its
    values of the entity values (and scored rows whose transaction index key) on the dead
    node UNAVAILABLE and null, every other value served and equal to one Redis' answer.

    /ready stays 200 while any primary answers (OnlineClient.ping on a cluster): that is the
    design, so that one shard failing over does not take every server out of the load
    balancer, and with it the entities of the shards that still answer. The circuit breaker
    opens only when nothing was read (`OnlineResult.error`), never on a partial answer
    (`OnlineResult.unavailable`): it would otherwise answer UNAVAILABLE for the live shards
    too. The Feast plugin, which has no per-value status, refuses the partial answer.

    The dead primary's replica is told not to fail over until the checks are done
    (cluster-replica-no-failover), so they do not race the failover; then it is let go and
    takes over, and every value is served again."""
    from ffs.online.feast_store import FFSOnlineStoreUnavailable

    cluster, _single, rows, t0 = state
    on_cluster, _on_one, want_doc = servers
    want = columns(want_doc)
    victim = cluster.node_of(slot_of(layout.entity_key("ffs", CUSTOMER,
                                                      str(rows[0]["customer_id"]))))
    replica = next(n for n in cluster.nodes if n.proc is not None and redis.Redis(
        port=n.port).info("replication").get("master_port") == victim.port)
    redis.Redis(port=replica.port).config_set("cluster-replica-no-failover", "yes")
    dead_slots = _slots_of(victim)
    lost = {e.name: _lost(rows, e, dead_slots) for e in ENTITIES}
    for e in ENTITIES:
        assert any(lost[e.name]) and not all(lost[e.name]), e.name
    cluster.kill(victim)

    for _ in range(3):
        started = time.monotonic()
        r = on_cluster.features(body(rows, t0))
        assert time.monotonic() - started < TIMEOUT_MS / 1000 + SLACK_S
        assert r.status_code == 200
        got = columns(r.json())
        assert got.keys() == want.keys()
        for name, (values, stats) in got.items():
            ent = FROM_ENTITY.get(name)
            for i in range(len(rows)):
                if ent is not None and lost[ent.name][i]:
                    assert (values[i], stats[i]) == (None, UNAVAILABLE), (name, i)
                elif ent is not None or not any(lost[e.name][i] for e in ENTITIES):
                    assert (values[i], stats[i]) == (want[name][0][i], want[name][1][i]), \
                        (name, i)
                else:
                    # a request feature, of a row with a lost entity: made of its features
                    # (UNAVAILABLE) or not (served)
                    assert (values[i], stats[i]) in ((None, UNAVAILABLE),
                                                     (want[name][0][i], want[name][1][i]))
        ready = on_cluster.get("/ready")
        assert ready.status_code == 200, ready.json()
    # a request whose every key is on the dead node reads nothing: on one Redis that opens
    # the breaker, on a cluster it must not, or the next request, for live nodes, would be
    # answered CircuitOpen
    alone = _all_on(dead_slots, rows[0]["customer_id"])
    r = on_cluster.features(body([alone], t0))
    assert r.status_code == 200
    assert {s for _n, (_v, stats) in columns(r.json()).items() for s in stats} >= {UNAVAILABLE}
    r = on_cluster.features(body(rows, t0))
    got = columns(r.json())
    served = [i for i in range(len(rows)) if not any(lost[e.name][i] for e in ENTITIES)]
    assert served and all(got[n][0][i] == want[n][0][i] for n in want for i in served)
    on_cluster.app.state.client.ping()  # one primary answers: passes
    text = on_cluster.get("/metrics").text
    assert metric(text, "ffs_redis_unavailable_total", error="ConnectionError") >= 3
    assert metric(text, "ffs_redis_unavailable_total", error="CircuitOpen") is None

    # the Feast plugin refuses the partial answer, naming the cause
    monkeypatch.setenv("FFS_REDIS_CLUSTER", "1")
    started = time.monotonic()
    with pytest.raises(FFSOnlineStoreUnavailable, match="ConnectionError") as err:
        feast_read(feast, plain_rows(rows))
    assert time.monotonic() - started < TIMEOUT_MS / 1000 + SLACK_S
    assert "did not answer" in str(err.value)

    # the replica takes over: everything is served again, and equal
    redis.Redis(port=replica.port).config_set("cluster-replica-no-failover", "no")
    cluster.wait_ok(timeout=30)
    assert victim not in cluster.primaries() and replica in cluster.primaries()
    deadline = time.monotonic() + 10
    while True:
        r = on_cluster.features(body(rows, t0))
        if r.json() == want_doc or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.json() == want_doc
    ready = on_cluster.get("/ready")
    assert ready.status_code == 200, ready.json()


def test_ping_on_a_cluster_raises_only_when_no_node_answers(state, servers):
    """Last in the module: it stops every node of the cluster."""
    cluster, _single, _rows, _t0 = state
    on_cluster, _on_one, _want = servers
    client = OnlineClient(redis_client(server_config(cluster.url, True).redis))
    client.ping()
    survivor, *others = cluster.primaries()
    for node in others:
        cluster.kill(node)
    client.ping()  # one primary left
    for node in cluster.nodes:
        if node.proc is not None:
            cluster.kill(node)
    started = time.monotonic()
    with pytest.raises(redis.RedisError):
        client.ping()
    assert time.monotonic() - started < TIMEOUT_MS / 1000 + SLACK_S
    r = on_cluster.get("/ready")
    assert r.status_code == 503 and "redis not reachable" in r.json()["error"]
    client.redis.close()


def test_a_request_feature_made_of_unavailable_features_is_unavailable():
    """Redis down (one node here; on a cluster, the node of the row's customer+terminal):
    every feature made of Redis' features is UNAVAILABLE, not computed from nulls."""
    from ffs.online.redis_server import free_port

    cfg = server_config(f"redis://127.0.0.1:{free_port()}/0", False)  # nothing listens
    client = OnlineClient(redis_client(cfg.redis))
    got = client.get_features([{"customer_id": 1, "terminal_id": 2, "transaction_id": 5,
                                "event_timestamp": "2024-03-01T10:00:00Z", "amount": 3.0}])
    assert got.error is not None
    served = {n: (got.values[n][0], got.statuses[n][0]) for n in got.feature_names
              if got.statuses[n][0] != UNAVAILABLE}
    # what needs no Redis: the scored transaction's own fields
    assert served == {"amount": (3.0, PRESENT), "tx_during_weekend": (0, PRESENT),
                      "tx_during_night": (0, PRESENT)}
