"""Feast's get_online_features through our online store plugin (online/feast_store.py).

A private redis-server holds a small hand-made state (load_state); a throwaway Feast repo in
tmp_path registers plain views over the shipped repo's features (one per entity, as the Feast
peer of the benchmarks has them: views the repo does not declare) and the repo's own views,
with `online_store: type: ffs.online.feast_store.FFSOnlineStore`; the values Feast returns must
be the ones OnlineClient computes at the same time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from ffs.online.client import MISSING_ENTITY, PRESENT, OnlineClient
from ffs.transformations.features import (
    ENTITIES,
    FEATURE_SERVICE,
    REQUEST_FEATURES,
    entity,
    entity_feature_names,
    feature_dtypes,
)

AS_OF = pd.Timestamp("2024-02-10 12:00:00", tz="UTC")  # a Saturday, noon
T = int(AS_OF.timestamp())
M, H, D = 60, 3600, 86400
CUSTOMER_FEATURES = entity_feature_names(entity("customer"))
TERMINAL_FEATURES = entity_feature_names(entity("terminal"))
# (customer, terminal) rows asked for; 999 is known to no one
ROWS = [(1, 10), (2, 11), (3, 12), (4, 12), (999, 10), (1, 999), (999, 999)]

def _state() -> tuple[pd.DataFrame, pd.DataFrame]:
    events = [  # transaction_id, customer, terminal, seconds before AS_OF, amount
        (1, 1, 10, 5 * M, 20.0), (2, 1, 11, 30 * M, 30.0), (3, 1, 10, 3 * H, 10.0),
        (4, 1, 12, 3 * D, 50.0), (5, 1, 10, 20 * D, 5.0),
        # customer 2: nothing in the last 2 days, so its 1-day windows are empty at AS_OF
        (6, 2, 11, 2 * D, 40.0), (7, 2, 11, 2 * D + H, 60.0),
        # terminal 12: two transactions 7-8 days back (its delayed 1-day window), one fraud
        (8, 3, 12, 7 * D + 6 * H, 15.0), (9, 4, 12, 7 * D + 12 * H, 25.0),
    ]
    tx = pd.DataFrame(events, columns=["transaction_id", "customer_id", "terminal_id", "back",
                                       "amount"])
    tx["event_timestamp"] = AS_OF - pd.to_timedelta(tx.pop("back"), unit="s")
    labels = pd.DataFrame({"transaction_id": [8, 9], "is_fraud": [1, 0],
                           "label_timestamp": [AS_OF - pd.Timedelta(days=7)] * 2})
    return tx, labels


def _yaml(work: Path, registry: Path, **online) -> Path:
    lines = ["project: ffs_plugin_test", "provider: local", "registry:",
             "  registry_type: file", f"  path: {registry}", "  cache_ttl_seconds: 600",
             "offline_store:", "  type: file", "online_store:",
             "  type: ffs.online.feast_store.FFSOnlineStore"]
    lines += [f"  {k}: {v!r}" if isinstance(v, str) else f"  {k}: {v}"
              for k, v in online.items() if v is not None]
    lines.append("entity_key_serialization_version: 3")
    work.mkdir(parents=True, exist_ok=True)
    (work / "feature_store.yaml").write_text("\n".join(lines) + "\n")
    return work


def _tiny_source(path: Path) -> Path:
    """One-row offline features table: Feast's FileSource needs a file to point at."""
    row = {"transaction_id": [0], "customer_id": [1], "terminal_id": [10],
           "event_timestamp": [AS_OF - pd.Timedelta(days=1)]}
    row.update({n: [0 if d == "int64" else 0.0] for n, d in feature_dtypes().items()})
    pd.DataFrame(row).to_parquet(path)
    return path


def _plain_views(source_path: Path) -> list[object]:
    """Feast objects over the offline features table as a team without our plugin would
    declare them: one plain FeatureView per entity (`<entity>_features`), the request
    features in `transaction_features` keyed by the first entity, one service over them."""
    from feast import Entity as FeastEntity
    from feast import FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    types = {"int64": Int64, "float64": Float64}
    dtypes = feature_dtypes()
    # one Feast entity per join key (Feast's take one); a composite entity's view lists both
    single = {e.keys[0]: e.name for e in ENTITIES if not e.composite}
    feast_entities = {k: FeastEntity(name=single.get(k, k), join_keys=[k],
                                     value_type=ValueType.INT64)
                      for e in ENTITIES for k in e.keys}
    source = FileSource(name="features_source", path=str(source_path),
                        timestamp_field="event_timestamp")
    names = {f"{e.name.replace('+', '_')}_features": (e.keys, entity_feature_names(e))
             for e in ENTITIES}
    names["transaction_features"] = (ENTITIES[0].keys, [f.name for f in REQUEST_FEATURES])
    views = [FeatureView(name=view, entities=[feast_entities[k] for k in keys],
                         ttl=timedelta(days=40),
                         schema=[Field(name=n, dtype=types[dtypes[n]]) for n in features],
                         source=source, online=True)
             for view, (keys, features) in names.items()]
    return [*feast_entities.values(), source, *views,
            FeatureService(name=FEATURE_SERVICE, features=views)]


@pytest.fixture(scope="module")
def redis_server():
    from ffs.online.loader import load_state
    from ffs.online.redis_server import RedisServer

    with RedisServer() as server:
        import redis

        conn = redis.Redis.from_url(server.url)
        tx, labels = _state()
        load_state(conn, tx, labels)
        conn.close()
        yield server


@pytest.fixture(scope="module")
def repo(redis_server, tmp_path_factory):
    """A Feast repo with our definitions, applied once; `open_store(**online)` opens it
    with other online_store settings."""
    from feast import FeatureStore

    root = tmp_path_factory.mktemp("feast_plugin")
    registry = root / "registry.db"
    source = _tiny_source(root / "features.parquet")
    counter = iter(range(1000))

    def open_store(**online) -> FeatureStore:
        online.setdefault("url", redis_server.url)
        return FeatureStore(repo_path=str(_yaml(root / f"repo{next(counter)}", registry,
                                                **online)))

    store = open_store(as_of=T)
    store.apply(_plain_views(source))
    return open_store, store


@pytest.fixture(scope="module")
def client(redis_server):
    import redis

    conn = redis.Redis.from_url(redis_server.url)
    yield OnlineClient(conn)
    conn.close()


def _read(store, rows=ROWS, **kwargs):
    resp = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{"customer_id": c, "terminal_id": t} for c, t in rows], **kwargs)
    return resp


def _statuses(resp) -> dict[str, list[str]]:
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    return {name: [FieldStatus.Name(s) for s in result.statuses]
            for name, result in zip(resp.proto.metadata.feature_names.val, resp.proto.results,
                                    strict=False)}


def _event_seconds(resp) -> dict[str, set[int]]:
    return {name: {ts.seconds for ts in result.event_timestamps}
            for name, result in zip(resp.proto.metadata.feature_names.val, resp.proto.results,
                                    strict=False)}


@pytest.mark.redis
def test_service_values_equal_online_client_at_as_of(repo, client):
    _, store = repo
    got = _read(store).to_dict()
    statuses = _statuses(_read(store))
    ours = client.get_features([{"customer_id": c, "terminal_id": t} for c, t in ROWS],
                               as_of=T)
    checked = 0
    for name in CUSTOMER_FEATURES + TERMINAL_FEATURES:
        for i, (c, t) in enumerate(ROWS):
            if ours.statuses[name][i] == PRESENT:
                assert got[name][i] == ours.values[name][i], (name, c, t)
                assert statuses[name][i] == "PRESENT", (name, c, t)
                checked += 1
            else:
                assert ours.statuses[name][i] == MISSING_ENTITY
                assert got[name][i] is None and statuses[name][i] == "NOT_FOUND", (name, c, t)
    assert checked == 5 * len(CUSTOMER_FEATURES) + 5 * len(TERMINAL_FEATURES)


@pytest.mark.redis
def test_values_are_windows_at_request_time_not_at_last_event(repo):
    _, store = repo
    got = _read(store, rows=[(1, 10), (2, 11), (3, 12)]).to_dict()
    # customer 1: transactions 5 min, 30 min, 3 h, 3 days and 20 days back
    assert got["customer_nb_tx_10m"][0] == 1
    assert got["customer_nb_tx_1h"][0] == 2
    assert got["customer_sum_amount_1h"][0] == pytest.approx(50.0)
    assert got["customer_nb_tx_1d"][0] == 3
    assert got["customer_nb_terminals_1d"][0] == 2
    assert got["customer_nb_tx_7d"][0] == 4
    assert got["customer_nb_tx_30d"][0] == 5
    assert got["customer_secs_since_prev_tx"][0] == 300.0
    assert got["terminal_nb_tx_1h"][0] == 1
    # customer 2's last transaction was 2 days before AS_OF: Feast's own store would still
    # serve the 1-day count written then (2); the window at AS_OF is empty
    assert got["customer_nb_tx_1d"][1] == 0
    assert got["customer_avg_amount_1d"][1] is None
    assert got["customer_nb_tx_7d"][1] == 2
    assert got["customer_avg_amount_7d"][1] == pytest.approx(50.0)
    # terminal 12: 2 transactions in (AS_OF - 8 d, AS_OF - 7 d], one fraud
    assert got["terminal_nb_tx_1d_delay7d"][2] == 2
    assert got["terminal_risk_1d_delay7d"][2] == pytest.approx(0.5)


@pytest.mark.redis
def test_request_features_need_request_data(repo, client):
    _, store = repo
    resp = _read(store, rows=[(1, 10), (999, 999)])
    got, statuses = resp.to_dict(), _statuses(resp)
    for name in ("amount", "amount_over_customer_avg_30d"):
        assert got[name] == [None, None]
        assert statuses[name] == ["NOT_FOUND", "NOT_FOUND"]
    ours = client.get_features([{"customer_id": 1, "terminal_id": 10}], as_of=T)
    for name in ("tx_during_weekend", "tx_during_night"):  # from the read time alone
        assert got[name] == [ours.values[name][0]] * 2
        assert statuses[name] == ["PRESENT", "PRESENT"]
    assert got["tx_during_weekend"] == [1, 1] and got["tx_during_night"] == [0, 0]


@pytest.mark.redis
@pytest.mark.parametrize("shape", ["columnar", "one_entity"])
def test_other_request_shapes_and_feature_lists(repo, client, shape):
    """Columnar rows (one Redis read for both views) and rows with only customer_id asking
    only customer features (each view reads its own entity) give the client's values."""
    _, store = repo
    names = ["customer_nb_tx_1d", "customer_avg_amount_1d", "customer_secs_since_prev_tx"]
    if shape == "columnar":
        entity_rows = {"customer_id": [1, 2, 999], "terminal_id": [10, 11, 12]}
        names.append("terminal_risk_1d_delay7d")
    else:
        entity_rows = [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 999}]
    view = {n: "customer_features" if n.startswith("customer") else "terminal_features"
            for n in names}
    resp = store.get_online_features(features=[f"{view[n]}:{n}" for n in names],
                                     entity_rows=entity_rows)
    got, statuses = resp.to_dict(), _statuses(resp)
    ours = client.get_features([{"customer_id": c, "terminal_id": t}
                                for c, t in zip([1, 2, 999], [10, 11, 12], strict=False)], as_of=T)
    for name in names:
        want = [v if s == PRESENT else None for v, s in zip(ours.values[name],
                                                            ours.statuses[name], strict=False)]
        assert got[name] == want, name
    assert statuses["customer_nb_tx_1d"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert got["customer_nb_tx_1d"] == [3, 0, None]


@pytest.mark.redis
def test_one_redis_round_trip_per_call_when_rows_carry_both_ids(repo, monkeypatch):
    _, store = repo
    calls = []
    _read(store, rows=[(1, 10)])  # the read script is loaded: no NOSCRIPT retry below
    pool = store._get_provider().online_store.client(store.config).redis.connection_pool
    get_connection = pool.get_connection
    # every round trip (a command, a script, a pipeline) takes a connection from the pool
    monkeypatch.setattr(pool, "get_connection",
                        lambda *a, **k: calls.append(1) or get_connection(*a, **k))
    got = _read(store, rows=[(1, 10), (2, 11), (1, 11)]).to_dict()
    assert len(calls) == 1
    assert got["customer_nb_tx_1d"] == [3, 0, 3] and got["terminal_nb_tx_1h"] == [1, 1, 1]


@pytest.mark.redis
def test_missing_entity_is_not_found(repo):
    _, store = repo
    resp = _read(store, rows=[(999, 999)])
    got, statuses = resp.to_dict(), _statuses(resp)
    for name in CUSTOMER_FEATURES + TERMINAL_FEATURES:
        assert got[name] == [None] and statuses[name] == ["NOT_FOUND"], name


@pytest.mark.redis
def test_missing_entity_empty_windows_mode_matches_online_client(repo, client):
    open_store, _ = repo
    store = open_store(as_of=T, missing_entity="empty_windows")
    rows = [(999, 999), (2, 999)]
    resp = _read(store, rows=rows)
    got, statuses = resp.to_dict(), _statuses(resp)
    ours = client.get_features([{"customer_id": c, "terminal_id": t} for c, t in rows], as_of=T)
    for name in CUSTOMER_FEATURES + TERMINAL_FEATURES:
        assert got[name] == ours.values[name], name
        assert statuses[name] == ["PRESENT", "PRESENT"], name
    assert got["customer_nb_tx_30d"] == [0, 2] and got["terminal_risk_1d_delay7d"] == [0.0, 0.0]


@pytest.mark.redis
def test_now_is_one_read_time_per_call(repo, client):
    open_store, _ = repo
    store = open_store()  # no as_of: now
    before = int(time.time())
    resp = _read(store, rows=[(1, 10), (2, 11)])
    after = int(time.time())
    seconds = _event_seconds(resp)
    (t,) = seconds["customer_nb_tx_30d"]
    assert before <= t <= after
    for name in CUSTOMER_FEATURES + TERMINAL_FEATURES + ["tx_during_night"]:
        assert seconds[name] == {t}, name  # every view read at the same second
    got = resp.to_dict()
    ours = client.get_features([{"customer_id": 1, "terminal_id": 10},
                                {"customer_id": 2, "terminal_id": 11}], as_of=t)
    for name in CUSTOMER_FEATURES + TERMINAL_FEATURES:
        assert got[name] == ours.values[name], name
    # months after the state's events, every window is empty but the entities are known
    assert got["customer_nb_tx_30d"] == [0, 0]


@pytest.mark.redis
def test_as_of_event_timestamp_and_async(repo):
    import asyncio

    _, store = repo
    resp = _read(store, rows=[(1, 10)])
    assert _event_seconds(resp)["customer_nb_tx_1d"] == {T}
    got = asyncio.run(store.get_online_features_async(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{"customer_id": 1, "terminal_id": 10}])).to_dict()
    assert got == resp.to_dict()


@pytest.mark.redis
def test_redis_down_raises_a_clear_error_and_recovers(repo, tmp_path):
    import redis

    from ffs.online.feast_store import FFSOnlineStoreUnavailable
    from ffs.online.loader import load_state
    from ffs.online.redis_server import RedisServer

    open_store, _ = repo
    server = RedisServer(directory=tmp_path).start()
    try:
        conn = redis.Redis.from_url(server.url)
        load_state(conn, *_state())
        conn.close()
        store = open_store(url=server.url, as_of=T, timeout_ms=200)
        assert _read(store, rows=[(1, 10)]).to_dict()["customer_nb_tx_1d"] == [3]
        server.stop()
        started = time.perf_counter()
        with pytest.raises(FFSOnlineStoreUnavailable) as err:
            _read(store, rows=[(1, 10)])
        assert time.perf_counter() - started < 2.0
        message = str(err.value)
        assert f"127.0.0.1:{server.port}" in message and "ConnectionError" in message
        server.start()  # same port, empty: reads work again, entities unknown
        resp = _read(store, rows=[(1, 10)])
        assert _statuses(resp)["customer_nb_tx_1d"] == ["NOT_FOUND"]
    finally:
        server.stop()


@pytest.mark.redis
def test_feast_writes_are_refused(repo):
    from ffs.online.feast_store import FFSWriteUnsupported

    _, store = repo
    df = pd.DataFrame({"customer_id": [1], "event_timestamp": [AS_OF],
                       **{n: [0 if feature_dtypes()[n] == "int64" else 0.0]
                          for n in CUSTOMER_FEATURES}})
    with pytest.raises(FFSWriteUnsupported, match="ffs materialize"):
        store.write_to_online_store("customer_features", df)


# -- configuration (no Redis needed) ---------------------------------------------------------

@pytest.mark.parametrize("value", [T, str(T), "2024-02-10T12:00:00Z", "2024-02-10 13:00:00+01:00",
                                   datetime(2024, 2, 10, 12, tzinfo=timezone.utc),
                                   datetime(2024, 2, 10, 12)])
def test_as_of_accepts_epoch_iso_and_datetime(value):
    from ffs.online.feast_store import FFSOnlineStoreConfig

    assert FFSOnlineStoreConfig(as_of=value).as_of == T


@pytest.mark.parametrize("value", ["yesterday", True, [1]])
def test_as_of_rejects_what_is_not_a_time(value):
    from pydantic import ValidationError

    from ffs.online.feast_store import FFSOnlineStoreConfig

    with pytest.raises(ValidationError, match="as_of"):
        FFSOnlineStoreConfig(as_of=value)


def test_connection_defaults_come_from_ffs_config(monkeypatch):
    from ffs.online.feast_store import FFSOnlineStore, FFSOnlineStoreConfig

    monkeypatch.setenv("FFS_REDIS_URL", "redis://10.1.2.3:6390/2")
    monkeypatch.setenv("FFS_REDIS_PREFIX", "other")
    settings = FFSOnlineStore._redis_settings(FFSOnlineStoreConfig())
    assert (settings.url, settings.prefix) == ("redis://10.1.2.3:6390/2", "other")
    settings = FFSOnlineStore._redis_settings(FFSOnlineStoreConfig(
        url="redis://h:1/0", prefix="p", timeout_ms=7, password="s3cr3t-x"))
    assert (settings.url, settings.prefix, settings.timeout_ms) == ("redis://h:1/0", "p", 7)
    assert settings.password.reveal() == "s3cr3t-x"
    assert "s3cr3t" not in repr(FFSOnlineStoreConfig(password="s3cr3t-x"))


def test_shipped_yaml_selects_the_plugin():
    from feast.repo_config import load_repo_config

    from feature_repo.store import REPO_DIR
    from ffs.online.feast_store import FFSOnlineStoreConfig

    config = load_repo_config(REPO_DIR, REPO_DIR / "feature_store_ffs.yaml")
    assert isinstance(config.online_store, FFSOnlineStoreConfig)
    assert config.project == load_repo_config(REPO_DIR, REPO_DIR / "feature_store.yaml").project


@pytest.mark.redis
def test_the_shipped_repo_served_by_feast_with_the_plugin_equals_the_online_client(
        redis_server, client, tmp_path):
    """The repo as a team writes it (stream views, an on-demand view over request data, the
    service), registered as `ffs apply` does and read through Feast: the windows are our
    state at the read time (Feast hands an online store no request data, so the scored
    transaction is not in them: the client's values for the ids alone), and Feast runs the
    on-demand view's function on the request data and those windows."""
    from feast import FeatureStore

    from ffs.transformations import repo as R

    root = tmp_path / "shipped"
    store = FeatureStore(repo_path=str(_yaml(root, tmp_path / "registry.db",
                                             url=redis_server.url, as_of=T)))
    contents = R.parse(R.SHIPPED)
    store.apply([*contents.data_sources, *contents.entities, *contents.stream_feature_views,
                 *contents.on_demand_feature_views, *contents.feature_services])
    at = AS_OF.to_pydatetime()  # (a pandas Timestamp reaches the function as 1970-01-01)
    # (Feast needs every request source's fields: the behavioural view reads coordinates)
    rows = [{"customer_id": c, "terminal_id": t, "amount": 40.0 + i, "event_timestamp": at,
             "terminal_x": 10.0, "terminal_y": 20.0} for i, (c, t) in enumerate(ROWS)]
    got = store.get_online_features(features=store.get_feature_service(FEATURE_SERVICE),
                                    entity_rows=rows).to_dict()
    ours = client.get_features([{"customer_id": c, "terminal_id": t} for c, t in ROWS],
                               as_of=T)
    compared = 0
    for name in CUSTOMER_FEATURES + TERMINAL_FEATURES:
        for i in range(len(rows)):
            if ours.statuses[name][i] == PRESENT:
                want, have = ours.values[name][i], got[name][i]
                assert (want is None and have is None) or have == pytest.approx(want), name
                compared += 1
    assert compared == 5 * len(CUSTOMER_FEATURES) + 5 * len(TERMINAL_FEATURES)
    assert got["amount"] == [r["amount"] for r in rows]
    assert set(got["tx_during_weekend"]) == {1} and set(got["tx_during_night"]) == {0}  # Sat 12h
    for i, r in enumerate(rows):
        mean = ours.values["customer_avg_amount_30d"][i]
        want = None if mean in (None, 0) else r["amount"] / mean
        assert got["amount_over_customer_avg_30d"][i] == pytest.approx(want), i


OTHER_REPO = r'''
import json, sys
from pathlib import Path
import pandas as pd, redis
from feast import FeatureStore
from ffs.online.client import OnlineClient
from ffs.online.loader import load_state
from ffs.online.redis_server import RedisServer
from tests.integration.test_second_repo import KEYS, generate
from ffs.transformations import ids, repo as R
from ffs.transformations.features import FEATURE_SERVICE, entity, entity_feature_names
from ffs.config import load_config

work = Path(sys.argv[1])
tx, labels = generate()
t = int(tx["event_timestamp"].max().timestamp())
pick = tx.sample(12, random_state=5)
rows = [{k: getattr(r, k) for k in KEYS} for r in pick.itertuples()]
rows.append({"account_id": "acct-none", "device_id": rows[0]["device_id"], "ip": "10.9.9.9"})
pair = entity("account+device")
out = {}
with RedisServer() as server:
    conn = redis.Redis.from_url(server.url)
    load_state(conn, tx, labels)
    client = OnlineClient(conn, id_types=ids.types(load_config()))
    ours = client.get_features(rows, as_of=t)
    (work / "feast").mkdir()
    (work / "feast" / "feature_store.yaml").write_text(
        "project: ffs_plugin_other\nprovider: local\nregistry:\n  registry_type: file\n"
        f"  path: {work / 'registry.db'}\noffline_store:\n  type: file\nonline_store:\n"
        f"  type: ffs.online.feast_store.FFSOnlineStore\n  url: {server.url}\n  as_of: {t}\n"
        "entity_key_serialization_version: 3\n")
    store = FeatureStore(repo_path=str(work / "feast"))
    contents = R.parse(R.repo_dir())
    store.apply([*contents.data_sources, *contents.entities, *contents.stream_feature_views,
                 *contents.on_demand_feature_views, *contents.feature_services])
    at = pd.Timestamp(t, unit="s", tz="UTC").to_pydatetime()
    got = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{**r, "amount": 10.0, "channel": "pos", "event_timestamp": at}
                     for r in rows]).to_dict()
    # rows without every join key: the composite view reads its own (account, device) ids
    alone = store.get_online_features(
        features=[f"account_device:{n}" for n in entity_feature_names(pair)],
        entity_rows=[{k: r[k] for k in pair.keys} for r in rows]).to_dict()
    names = [n for e in ("device", "account", "account+device", "ip")
             for n in entity_feature_names(entity(e))]
    out["ours"] = {n: [v if s == "PRESENT" else None for v, s in
                       zip(ours.values[n], ours.statuses[n])] for n in names}
    out["feast"] = {n: got[n] for n in names}
    out["alone"] = {n: alone[n] for n in entity_feature_names(pair)}
    out["pair"] = entity_feature_names(pair)
    conn.close()
print("RESULT " + json.dumps(out, default=str))
'''


@pytest.mark.redis
def test_a_repo_with_a_composite_view_is_served_by_its_join_keys(tmp_path):
    """Another repo (tests/fixtures/payments_repo: three entities with text ids and a
    composite (account, device) view), served through Feast with the plugin: every view's
    features equal the client's, the composite one read by both join keys, in one call with
    every key and alone (the plugin then asks the client for (account, device) tuples)."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    repo = tmp_path / "payments_repo"
    shutil.copytree(root / "tests" / "fixtures" / "payments_repo", repo,
                    ignore=shutil.ignore_patterns(".ffs", "__pycache__", "registry.db"))
    env = {**os.environ, "FFS_FEATURES_REPO": str(repo), "FFS_IDS_TRANSACTION_ID": "string"}
    run = subprocess.run([sys.executable, "-c", OTHER_REPO, str(tmp_path)], env=env, cwd=root,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])

    def same(x, y) -> bool:
        if x is None or y is None:
            return x is None and y is None
        return x == pytest.approx(y)

    def close(a: list, b: list) -> bool:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))

    for name, values in out["ours"].items():
        assert close(out["feast"][name], values), (name, out["feast"][name], values)
    for name in out["pair"]:
        assert close(out["alone"][name], out["ours"][name]), name
    assert any(v is not None for v in out["ours"][out["pair"][0]])  # known pairs were read
    assert out["ours"][out["pair"][0]][-1] is None  # the new account on a known device
