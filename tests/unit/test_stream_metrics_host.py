"""stream.metrics_host: where `ffs stream` binds its Prometheus /metrics."""

from __future__ import annotations

import urllib.request

from ffs.config import StreamConfig, load_config
from ffs.jobs.stream.metrics import StreamMetrics


def test_serve_binds_the_given_host_and_answers_metrics():
    metrics = StreamMetrics()
    port = metrics.serve(0, host="127.0.0.1")
    assert port and port == metrics.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        body = resp.read().decode()
    assert "ffs_stream_batches_total" in body


def test_serve_with_a_negative_port_serves_nothing():
    assert StreamMetrics().serve(-1, host="127.0.0.1") is None


def test_metrics_host_defaults_to_loopback_and_follows_the_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ffs.yaml in the working directory
    assert StreamConfig().metrics_host == "127.0.0.1"
    assert load_config(env={}).stream.metrics_host == "127.0.0.1"
    cfg = load_config(env={"FFS_STREAM_METRICS_HOST": "0.0.0.0"})
    assert cfg.stream.metrics_host == "0.0.0.0"
    assert cfg.stream.metrics_port == 9108  # untouched
