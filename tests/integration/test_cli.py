"""The `ffs` command end to end (in process): the wiring users touch, and its exit codes."""

from __future__ import annotations

import pandas as pd
import pytest

from ffs.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FFS_OFFLINE_PATH", str(tmp_path / "offline"))
    monkeypatch.setenv("FFS_VALIDATION_DATA_DOCS_DIR", str(tmp_path / "docs"))


def test_generate_validate_backfill_training_set(tmp_path, capsys):
    assert main(["generate", "--out", "in", "--customers", "60", "--terminals", "120",
                 "--days", "15", "-q"]) == 0
    assert main(["validate", "--transactions", "in/transactions.parquet",
                 "--labels", "in/labels.parquet"]) == 0
    assert (tmp_path / "docs" / "index.html").exists()
    assert main(["backfill", "--transactions", "in/transactions.parquet",
                 "--labels", "in/labels.parquet", "--engine", "local"]) == 0
    tx = pd.read_parquet("in/transactions.parquet")
    entities = tx[["customer_id", "terminal_id", "event_timestamp"]].head(50).assign(y=1)
    entities.to_csv("rows.csv", index=False)
    assert main(["training-set", "--entities", "rows.csv", "--output", "out/ts.parquet"]) == 0
    out = pd.read_parquet("out/ts.parquet")
    assert len(out) == 50 and (out["y"] == 1).all()
    assert (out["customer_nb_tx_1d"] >= 1).all()  # each row is a transaction: it counts itself
    printed = capsys.readouterr().out
    assert "backfilled" in printed and "training set: 50 rows" in printed


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["backfill", "--transactions", "missing.parquet", "--engine", "local"]) == 2
    assert "input not found" in capsys.readouterr().err
    pd.DataFrame({"customer_id": [1]}).to_csv("rows.csv", index=False)
    assert main(["training-set", "--entities", "rows.csv", "--output", "x.parquet"]) == 2
    assert "missing column" in capsys.readouterr().err


def test_validate_exits_3_when_a_fail_check_fails(tmp_path, capsys):
    pd.DataFrame({"transaction_id": [1, 2], "customer_id": [1, 1], "terminal_id": [1, 1],
                  "event_timestamp": ["2024-01-01", "2024-01-02"],
                  "customer_nb_tx_1d": [0, 1]}).to_parquet("features.parquet")
    assert main(["validate", "--features", "features.parquet"]) == 3
    assert "fail" in capsys.readouterr().out


def test_features_lists_every_declaration(capsys):
    from ffs.transformations.features import feature_names

    assert main(["features"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in feature_names())
    # how each event column comes, and the repo's other service
    assert ("value columns: amount (number), is_night (number, derived by customer_habits's "
            "udf), terminal_x (number, optional), terminal_y (number, optional)") in printed
    assert "feature service fraud_detection_v2: 35 features" in printed
    assert "also serves fraud_detection_v1: 23 of them" in printed


def test_ffs_broker_runs_kafka_with_the_topics_until_sigterm(tmp_path):
    """`ffs broker` as a user runs it: a real Kafka with the project's topics, up until
    SIGTERM, then exit 0 with its temporary data gone."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from ffs.bus import kafka
    from ffs.config import KafkaConfig

    env = {k: v for k, v in os.environ.items() if not k.startswith("FFS_KAFKA_")}
    proc = subprocess.Popen([sys.executable, "-m", "ffs.cli", "broker"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines, address, deadline = [], None, time.monotonic() + 120
        while address is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            m = re.search(r"FFS_KAFKA_BOOTSTRAP_SERVERS=(\S+)", line)
            address = m.group(1) if m else None
        assert address, "".join(lines)
        assert any("started in" in x for x in lines)  # the start time is printed
        data_dir = re.search(r"data in (\S+)\)", "".join(lines)).group(1)
        cfg = KafkaConfig(bootstrap_servers=address)
        assert set(kafka.topics(cfg)) <= set(kafka.admin(cfg).list_topics(timeout=10).topics)
        time.sleep(1.5)  # past the first liveness check: it must not stop by itself
        assert proc.poll() is None, proc.stdout.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not os.path.exists(data_dir)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.redis
def test_a_redis_database_the_server_lacks_is_an_error_naming_the_setting(tmp_path, capsys,
                                                                          monkeypatch):
    """Issue 10, defect 8: redis.url with database 99 passed the config check (a server may
    have more than 16) and then raised a ResponseError traceback from the first command."""
    from ffs.online.client import OnlineClient
    from ffs.online.redis_server import RedisServer

    assert main(["generate", "--out", "in", "--customers", "5", "--terminals", "5",
                 "--days", "2", "-q"]) == 0
    with RedisServer() as server:
        url = server.url.rsplit("/", 1)[0] + "/99"
        monkeypatch.setenv("FFS_REDIS_URL", url)
        capsys.readouterr()
        assert main(["materialize", "--transactions", "in/transactions.parquet"]) == 2
        err = capsys.readouterr().err
        assert "redis.url selects a database this Redis server does not have" in err
        assert "Traceback" not in err
        from ffs.config import load_config

        client = OnlineClient.from_config(load_config())
        result = client.get_features([{"customer_id": 1, "terminal_id": 1}])
        assert "does not have" in result.error  # served as UNAVAILABLE, saying why
        assert set(result.statuses["customer_nb_tx_1d"]) == {"UNAVAILABLE"}
