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
    from feature_repo.windows import feature_names

    assert main(["features"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in feature_names())
