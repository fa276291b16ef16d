"""ffs/postgres.py's LocalPostgres, and Feast 0.67's SQL registry on it.

The `postgres` fixture (tests/conftest.py) is one real PostgreSQL for the run: password
authentication only, 127.0.0.1 only. Feast's registry tests use a project of their own.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from ffs.errors import TerminalError
from ffs.postgres import LocalPostgres, find_bindir


# -- the server ----------------------------------------------------------------------------
@pytest.mark.postgres
def test_accepts_the_password_and_serves_its_database(postgres):
    engine = sa.create_engine(postgres.url)
    try:
        with engine.connect() as conn:
            user, db = conn.execute(sa.text("SELECT current_user, current_database()")).one()
            listen = conn.execute(sa.text("SHOW listen_addresses")).scalar_one()
            conn.execute(sa.text("CREATE TEMP TABLE t (x int)"))
            conn.execute(sa.text("INSERT INTO t VALUES (41), (1)"))
            total = conn.execute(sa.text("SELECT sum(x) FROM t")).scalar_one()
    finally:
        engine.dispose()
    assert (user, db) == ("ffs", "feast_registry")
    assert listen == "127.0.0.1"
    assert total == 42


@pytest.mark.postgres
def test_refuses_a_wrong_or_missing_password(postgres):
    wrong = sa.engine.make_url(postgres.url).set(password=postgres.password + "x")
    engine = sa.create_engine(wrong)
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()
    # no trust anywhere: not over TCP, not on the unix socket in the server's directory
    for host in ("127.0.0.1", str(postgres.dir)):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host=host, port=postgres.port, user="ffs",
                            dbname="feast_registry", connect_timeout=5)


@pytest.mark.postgres
def test_the_password_stays_out_of_repr_and_logs(postgres):
    assert postgres.password in postgres.url
    for text in (repr(postgres), str(postgres), postgres.safe_url,
                 postgres.log_path.read_text(errors="replace")):
        assert postgres.password not in text
    assert f":{postgres.port}/feast_registry" in postgres.safe_url


def test_missing_binaries_fail_with_the_fix(tmp_path, monkeypatch):
    with pytest.raises(TerminalError, match="make setup"):
        LocalPostgres(bindir=tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TerminalError, match="make setup"):
        find_bindir(tmp_path / "nothing-here")


def test_the_newest_debian_version_is_chosen(tmp_path):
    for version in ("9.6", "15", "16", "17"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for exe in ("initdb", "postgres"):
            if version != "17":  # 17 is incomplete: no server binaries
                (bindir / exe).write_text("")
    assert find_bindir(tmp_path) == tmp_path / "16" / "bin"  # numeric, not "9.6" > "16"


@pytest.mark.postgres
def test_a_stopped_server_is_gone_with_its_directory():
    server = LocalPostgres(database="scratch").start()
    url, directory = server.url, server.dir
    assert (directory / "data" / "PG_VERSION").exists()
    engine = sa.create_engine(url)
    try:
        conn = engine.connect()  # left open: stop() must not wait for clients
        assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "scratch"
        server.stop()
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT 1"))
        conn.invalidate()
        with pytest.raises(sa.exc.OperationalError):
            engine.connect()
    finally:
        engine.dispose()
        server.stop()
    assert not directory.exists()


# -- Feast's SQL registry ------------------------------------------------------------------
def _store(postgres: LocalPostgres, work: Path):
    from feast import FeatureStore
    from feast.infra.registry.sql import SqlRegistryConfig
    from feast.repo_config import RepoConfig

    # SqlRegistryConfig, not RegistryConfig(registry_type="sql"): FeatureStore passes the
    # object as is to SqlRegistry, which asserts its class (a YAML/dict config is converted)
    config = RepoConfig(
        project="ffs_test", provider="local", repo_path=work,
        registry=SqlRegistryConfig(registry_type="sql", path=postgres.url,
                                   cache_ttl_seconds=0),
        offline_store={"type": "file"},
        online_store={"type": "sqlite", "path": str(work / "online.db")},
        entity_key_serialization_version=3)
    return FeatureStore(config=config)


@pytest.mark.postgres
def test_feast_sql_registry_is_shared_between_stores(postgres, tmp_path):
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    parquet = tmp_path / "customer_stats.parquet"
    pd.DataFrame({"customer_id": [1, 2], "amount_sum_1d": [10.0, 2.5], "tx_count_1d": [3, 1],
                  "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True)}
                 ).to_parquet(parquet)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    source = FileSource(name="customer_stats_source", path=str(parquet),
                        timestamp_field="event_timestamp")
    view = FeatureView(name="customer_stats", entities=[customer], ttl=timedelta(days=1),
                       schema=[Field(name="customer_id", dtype=Int64),
                               Field(name="amount_sum_1d", dtype=Float64),
                               Field(name="tx_count_1d", dtype=Int64)],
                       source=source)
    writer = _store(postgres, tmp_path / "writer")
    writer.apply([customer, source, view])

    reader = _store(postgres, tmp_path / "reader")  # a second store: only the database is shared
    assert [e.name for e in reader.list_entities()] == ["customer"]
    assert reader.get_entity("customer").join_key == "customer_id"
    assert [s.name for s in reader.list_data_sources()] == ["customer_stats_source"]
    [fv] = reader.list_feature_views()
    assert fv.name == "customer_stats"
    assert {f.name: f.dtype for f in fv.features} == {"amount_sum_1d": Float64,
                                                       "tx_count_1d": Int64}
    assert fv.entities == ["customer"]
    assert fv.batch_source.path == str(parquet)
    # the rows are in PostgreSQL, under our project
    engine = sa.create_engine(postgres.url)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT feature_view_name FROM feature_views "
                                         "WHERE project_id = 'ffs_test'")).scalars().all()
    finally:
        engine.dispose()
    assert names == ["customer_stats"]

    writer.delete_feature_view("customer_stats")
    assert reader.list_feature_views() == []
    assert [e.name for e in reader.list_entities()] == ["customer"]  # the rest stays
