"""Config is checked once, at load, with ranges and choices: a bad value is a clear error
(exit 2) naming the setting, never a 500 per request, a port other than the one logged, or a
traceback (issue 10, defects 8 and 9)."""

from __future__ import annotations

import re

import pytest

from ffs.cli import main
from ffs.config import load_config
from ffs.errors import ConfigError


@pytest.mark.parametrize("key, value, words", [
    ("FFS_REDIS_TIMEOUT_MS", "-5", "redis.timeout_ms = -5"),
    ("FFS_REDIS_TIMEOUT_MS", "0", "redis.timeout_ms = 0"),
    ("FFS_SERVE_PORT", "99999", "serve.port = 99999"),
    ("FFS_SERVE_PORT", "0", "serve.port = 0"),
    ("FFS_ANALYTICS_DASHBOARD_PORT", "70000", "analytics.dashboard_port"),
    ("FFS_STREAM_METRICS_PORT", "-2", "stream.metrics_port"),
    ("FFS_SERVE_MAX_BATCH", "0", "serve.max_batch"),
    ("FFS_KAFKA_PARTITIONS", "0", "kafka.partitions"),
    ("FFS_STREAM_STARTING_OFFSETS", "yesterday", "stream.starting_offsets"),
    ("FFS_ANALYTICS_STORE", "excel", "analytics.store"),
    ("FFS_KAFKA_SECURITY_PROTOCOL", "TLS", "kafka.security_protocol"),
    ("FFS_REDIS_URL", "http://127.0.0.1:6379/0", "scheme"),
    ("FFS_REDIS_URL", "redis://127.0.0.1:notaport/0", "redis.url"),
    ("FFS_REDIS_URL", "redis://127.0.0.1:6379/abc", "database"),
    ("FFS_REDIS_URL", "redis:///0", "no host"),
])
def test_out_of_range_values_are_refused_at_load(key, value, words):
    with pytest.raises(ConfigError, match="invalid configuration") as exc:
        load_config(env={key: value})
    assert words in str(exc.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        load_config(env={"FFS_REDIS_TIMEOUT_MS": "-1", "FFS_SERVE_PORT": "99999"})
    assert "redis.timeout_ms" in str(exc.value) and "serve.port" in str(exc.value)


def test_the_edges_of_the_ranges_are_accepted():
    cfg = load_config(env={"FFS_SERVE_PORT": "65535", "FFS_STREAM_METRICS_PORT": "-1",
                           "FFS_REDIS_TIMEOUT_MS": "1", "FFS_REDIS_URL": "rediss://h:1/15"})
    assert (cfg.serve.port, cfg.stream.metrics_port, cfg.redis.timeout_ms) == (65535, -1, 1)


@pytest.mark.parametrize("content, words", [
    (b"redis: {url: [unclosed", "not valid YAML (line 1"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8"),
    (b"- a\n- list\n", "expected a mapping"),
])
def test_a_bad_config_file_is_a_clear_error(tmp_path, content, words):
    path = tmp_path / "ffs.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(path, env={})


def test_a_directory_as_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


def test_the_cli_exits_2_on_bad_config_not_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FFS_SERVE_PORT", "99999")
    assert main(["features"]) == 2  # 3 is reserved for a refused validation gate
    assert "serve.port = 99999" in capsys.readouterr().err
    monkeypatch.delenv("FFS_SERVE_PORT")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\x00\xff binary")
    assert main(["--config", str(bad), "features"]) == 2
    assert "not UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["serve", "--port", "99999"], ["broker", "--port", "-3"],
                                  ["dashboard", "--port", "70000"], ["serve", "--port", "x"]])
def test_port_options_are_range_checked_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2  # argparse's usage error, before anything starts
    assert "port" in capsys.readouterr().err


def test_an_unusable_output_path_is_an_error_not_a_traceback(capsys):
    """Issue 10, defect 8 (an unwritable output path gave a traceback)."""
    code = main(["generate", "--out", "/proc/ffs-cannot-write-here", "--customers", "3",
                 "--terminals", "3", "--days", "1", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot use /proc/ffs-cannot-write-here" in err and "Traceback" not in err


@pytest.mark.parametrize("setting, master, executors", [
    ("auto", "local[2]", False), ("auto", "k8s://https://api:6443", True),
    ("auto", "spark://head:7077", True), ("executors", "local[2]", True),
    ("driver", "k8s://https://api:6443", False)])
def test_where_stream_batches_run(setting, master, executors):
    cfg = load_config(env={"FFS_STREAM_BATCHES_ON": setting, "FFS_SPARK_MASTER": master})
    assert cfg.stream.distributed(cfg.spark.master) is executors


def test_adaptive_batches_run_as_tasks_after_a_large_batch_only():
    cfg = load_config(env={"FFS_STREAM_BATCHES_ON": "adaptive", "FFS_SPARK_MASTER": "local[2]",
                           "FFS_STREAM_TASKS_AFTER_EVENTS": "500"})
    assert cfg.stream.distributed(cfg.spark.master)  # the tasks are set up, even locally
    assert [cfg.stream.as_tasks(n) for n in (0, 499, 500, 100_000)] == [
        False, False, True, True]
    for setting in ("executors", "auto"):
        fixed = load_config(env={"FFS_STREAM_BATCHES_ON": setting})
        assert fixed.stream.as_tasks(0) and fixed.stream.as_tasks(10**6)
    with pytest.raises(ConfigError, match="stream.tasks_after_events"):
        load_config(env={"FFS_STREAM_BATCHES_ON": "adaptive",
                         "FFS_STREAM_TASKS_AFTER_EVENTS": "0"})


def test_an_unknown_place_for_stream_batches_is_refused():
    with pytest.raises(ConfigError, match="stream.batches_on"):
        load_config(env={"FFS_STREAM_BATCHES_ON": "everywhere"})
