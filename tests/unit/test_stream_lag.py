"""Consumer lag as `ffs stream` reports it: from Spark's progress, or right after a restart
from the checkpoint's last committed offsets."""

from __future__ import annotations

import json

from ffs.config import load_config
from ffs.jobs.stream.job import _lag, committed_offsets

MARKS = {"ffs.transactions:0": (0, 100), "ffs.transactions:1": (5, 50), "ffs.labels:0": (0, 7)}


def _checkpoint(tmp_path, batches: dict[int, dict], committed: list[int]):
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    for bid, offsets in batches.items():
        (tmp_path / "offsets" / str(bid)).write_text(
            "v1\n" + json.dumps({"batchWatermarkMs": 0}) + "\n" + json.dumps(offsets))
    for bid in committed:
        (tmp_path / "commits" / str(bid)).write_text("v1\n{}")
    return str(tmp_path)


def test_lag_from_progress_counts_per_topic():
    cfg = load_config(env={})
    progress = {"sources": [{"endOffset": json.dumps(  # as Spark reports it: JSON text
        {"ffs.transactions": {"0": 90, "1": 50}, "ffs.labels": {"0": 3}})}]}
    assert _lag(cfg, progress, MARKS) == {"ffs.transactions": 10, "ffs.labels": 4}


def test_lag_reads_spark_connector_offsets():
    cfg = load_config(env={})
    progress = {"sources": [{"endOffset": {"ffs.transactions": {"0": 100, "1": 40},
                                           "ffs.labels": {"0": 7}}}]}
    assert _lag(cfg, progress, MARKS) == {"ffs.transactions": 10, "ffs.labels": 0}


def test_after_restart_the_last_committed_batch_counts_not_the_planned_one(tmp_path):
    cfg = load_config(env={})
    cfg.stream.checkpoint = _checkpoint(
        tmp_path, {0: {"ffs.transactions": {"0": 60, "1": 20}, "ffs.labels": {"0": 7}},
                   1: {"ffs.transactions": {"0": 100, "1": 50}, "ffs.labels": {"0": 7}}},
        committed=[0])  # batch 1 was planned, then the job was killed
    assert committed_offsets(cfg.stream.checkpoint)["ffs.transactions"]["0"] == 60
    assert _lag(cfg, None, MARKS) == {"ffs.transactions": 70, "ffs.labels": 0}


def test_no_checkpoint_means_everything_is_lag(tmp_path):
    cfg = load_config(env={})
    cfg.stream.checkpoint = str(tmp_path / "none")
    assert committed_offsets(cfg.stream.checkpoint) is None
    assert _lag(cfg, None, MARKS) == {"ffs.transactions": 145, "ffs.labels": 7}
