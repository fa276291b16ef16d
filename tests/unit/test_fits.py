"""Batch jobs say before they start when their input will not fit in memory
(jobs/batch/fits.py), and point to what would."""

from __future__ import annotations

import pandas as pd
import pytest

from ffs.cli import main
from ffs.errors import InputError
from ffs.jobs.batch import fits


@pytest.fixture()
def events(tmp_path):
    tx = pd.DataFrame({"transaction_id": range(5000), "customer_id": 1, "terminal_id": 2,
                       "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
                       "amount": 1.0})
    tx.to_parquet(tmp_path / "tx.parquet")
    (tmp_path / "dir").mkdir()
    tx.iloc[:2000].to_parquet(tmp_path / "dir" / "a.parquet")
    tx.iloc[2000:].to_parquet(tmp_path / "dir" / "b.parquet")
    tx.to_csv(tmp_path / "tx.csv", index=False)
    return tmp_path


def test_rows_are_counted_from_footers_and_estimated_for_csv(events):
    assert fits.count_rows(events / "tx.parquet") == 5000
    assert fits.count_rows(events / "dir") == 5000
    assert fits.count_rows(events / "tx.csv") == 5000  # under a megabyte: read whole
    assert fits.count_rows(events / "missing.parquet") is None


def test_too_large_an_input_is_refused_with_the_numbers_and_the_way_out(events):
    need = fits.FIXED_BYTES + 5000 * fits.BYTES_PER_ROW[("backfill", "local")]
    fits.check_fits(events / "tx.parquet", "local", available=need)  # just fits
    with pytest.raises(InputError) as exc:
        fits.check_fits(events / "tx.parquet", "local", available=need - 1)
    text = str(exc.value)
    assert "5,000 transactions" in text and "holds every event in this process" in text
    assert "--engine spark" in text and "--no-memory-check" in text
    with pytest.raises(InputError, match="driver still reads the events.*driver_memory"):
        fits.check_fits(events / "tx.parquet", "spark", "training set",
                        available=fits.FIXED_BYTES)


def test_the_cli_refuses_before_it_starts_and_can_be_told_to_try(events, monkeypatch, capsys):
    monkeypatch.setattr(fits, "available_bytes", lambda: fits.FIXED_BYTES)
    code = main(["backfill", "--transactions", str(events / "tx.parquet"), "--engine", "local",
                 "--offline", str(events / "offline")])
    assert code == 2
    assert "does not fit" in capsys.readouterr().err
    assert not (events / "offline").exists()  # nothing started
    code = main(["backfill", "--transactions", str(events / "tx.parquet"), "--engine", "local",
                 "--offline", str(events / "offline"), "--no-memory-check"])
    assert code == 0 and (events / "offline" / "features").exists()
