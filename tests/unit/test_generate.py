from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ffs.errors import InputError
from ffs.jobs.tools.generate import (
    BURST_AMOUNT,
    MAX_TERMINALS_PER_CUSTOMER,
    GenerateSpec,
    generate_frames,
    generate_to,
)
from ffs.transformations.schema import normalize_labels, normalize_transactions

SPEC = GenerateSpec(customers=500, terminals=1000, days=40, label_delay_days=(2, 10), seed=11)
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_frames(SPEC)


def _ns(df: pd.DataFrame) -> pd.DataFrame:
    """Readers give us/ns or parsed strings; compare at the same precision."""
    df = df.copy()
    for c in ("event_timestamp", "label_timestamp"):
        if c in df.columns:
            df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[ns, UTC]")
    return df


def test_same_seed_same_data_other_seed_differs(frames):
    tx, labels = frames
    tx2, labels2 = generate_frames(SPEC)
    pd.testing.assert_frame_equal(tx, tx2)
    pd.testing.assert_frame_equal(labels, labels2)
    other, _ = generate_frames(dataclasses.replace(SPEC, seed=12))
    assert len(other) != len(tx) or not other["amount"].equals(tx["amount"])


def test_parquet_files_are_byte_identical(tmp_path):
    spec = dataclasses.replace(SPEC, customers=100, terminals=200, days=5)
    a = generate_to(tmp_path / "a", spec)
    b = generate_to(tmp_path / "b", spec)
    assert a.transactions_path.read_bytes() == b.transactions_path.read_bytes()
    assert a.labels_path.read_bytes() == b.labels_path.read_bytes()


def test_output_normalizes_without_rejects(frames):
    tx, labels = frames
    ntx = normalize_transactions(tx)
    assert ntx.n_rejected == 0 and len(ntx.rows) == len(tx)
    nl = normalize_labels(labels, ntx.rows)
    assert nl.n_rejected == 0 and len(nl.rows) == len(labels) > 0
    assert str(tx["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert (tx["event_timestamp"].dt.floor("s") == tx["event_timestamp"]).all()
    assert (tx["amount"] >= 0).all() and (tx["amount"] == tx["amount"].round(2)).all()


def test_ids_unique_and_increasing_with_time(frames):
    tx, _ = frames
    assert tx["transaction_id"].is_unique
    ordered = tx.sort_values("transaction_id")
    assert ordered["event_timestamp"].is_monotonic_increasing
    start = pd.Timestamp(SPEC.start, tz="UTC")
    assert tx["event_timestamp"].min() >= start
    assert tx["event_timestamp"].max() < start + SPEC.days * DAY


def test_all_fraud_scenarios_present_and_flagged(frames):
    tx, _ = frames
    counts = tx["fraud_scenario"].value_counts()
    assert all(counts.get(s, 0) > 0 for s in (1, 2, 3)), counts.to_dict()
    assert (tx["tx_fraud"] == (tx["fraud_scenario"] > 0)).all()
    assert 0.002 < tx["tx_fraud"].mean() < 0.03


def test_compromised_terminal_takes_every_payment_that_day(frames):
    tx, _ = frames
    day = tx["event_timestamp"].dt.floor("D")
    hit = tx.loc[tx["fraud_scenario"] == 1, ["terminal_id"]].assign(day=day).drop_duplicates()
    during = tx.assign(day=day).merge(hit, on=["terminal_id", "day"])
    assert len(during) > 0 and (during["tx_fraud"] == 1).all()


def test_compromised_card_spends_unusual_amounts(frames):
    tx, _ = frames
    usual = tx[tx["fraud_scenario"] == 0].groupby("customer_id")["amount"].median()
    card = tx[tx["fraud_scenario"] == 2]
    ratio = card["amount"].to_numpy() / usual.reindex(card["customer_id"]).to_numpy()
    assert np.nanmedian(ratio) > 2.5


def test_card_testing_bursts_are_small_fast_and_on_one_card(frames):
    tx, _ = frames
    burst = tx[tx["fraud_scenario"] == 3].sort_values(["customer_id", "event_timestamp"])
    assert burst["amount"].between(*BURST_AMOUNT).all()
    gap = burst.groupby("customer_id")["event_timestamp"].diff()
    burst = burst.assign(burst_no=(gap.isna() | (gap > pd.Timedelta(minutes=30))).cumsum())
    per = burst.groupby("burst_no").agg(
        n=("amount", "size"),
        span=("event_timestamp", lambda s: (s.max() - s.min()).total_seconds()),
        terminals=("terminal_id", "nunique"),
    )
    assert len(per) >= 3
    assert (per["n"] >= 3).all()
    assert (per["span"] <= 10 * 60).all()  # "a few minutes", independent of the constants
    assert (per["terminals"] >= 2).all()


def test_customers_shop_at_few_terminals(frames):
    tx, _ = frames
    genuine = tx[tx["fraud_scenario"] == 0]
    assert genuine.groupby("customer_id")["terminal_id"].nunique().max() <= (
        MAX_TERMINALS_PER_CUSTOMER)


def test_labels_arrive_after_their_transaction_within_the_period(frames):
    tx, labels = frames
    lo, hi = (d * DAY for d in SPEC.label_delay_days)
    end = pd.Timestamp(SPEC.start, tz="UTC") + SPEC.days * DAY
    m = labels.merge(tx, on="transaction_id", validate="one_to_one")
    delay = m["label_timestamp"] - m["event_timestamp"]
    assert delay.between(lo, hi).all()
    assert (m["is_fraud"] == m["tx_fraud"]).all()
    assert (labels["label_timestamp"] < end).all()
    assert labels["label_timestamp"].is_monotonic_increasing
    # Every fraud is labelled unless its chargeback could still be in transit.
    unlabelled = tx[(tx["tx_fraud"] == 1) & ~tx["transaction_id"].isin(labels["transaction_id"])]
    assert (unlabelled["event_timestamp"] >= end - hi).all()
    assert (tx["event_timestamp"] < end - hi).sum() > 0
    # Old enough genuine payments: about genuine_label_rate of them are confirmed.
    old = tx[(tx["tx_fraud"] == 0) & (tx["event_timestamp"] < end - hi)]
    rate = old["transaction_id"].isin(labels["transaction_id"]).mean()
    assert abs(rate - SPEC.genuine_label_rate) < 0.01


def test_fewer_payments_at_night(frames):
    tx, _ = frames
    hour = tx.loc[tx["fraud_scenario"] == 0, "event_timestamp"].dt.hour
    night = hour.between(0, 4).sum()
    midday = hour.between(10, 14).sum()
    assert night * 5 < midday


def test_csv_and_parquet_give_the_same_rows_as_in_memory(tmp_path, frames):
    tx, labels = frames
    for fmt in ("parquet", "csv"):
        s = generate_to(tmp_path / fmt, dataclasses.replace(SPEC, fmt=fmt))
        assert s.transactions_path.name == f"transactions.{fmt}"
        read = pd.read_parquet if fmt == "parquet" else pd.read_csv
        pd.testing.assert_frame_equal(_ns(read(s.transactions_path)), tx)
        pd.testing.assert_frame_equal(_ns(read(s.labels_path)), labels)


def test_generate_to_reports_progress_and_summary(tmp_path, frames):
    tx, labels = frames
    lines: list[str] = []
    s = generate_to(tmp_path, SPEC, progress=lines.append)
    assert len(lines) == SPEC.days
    assert lines[0].startswith("day 1/40: ") and lines[-1].startswith("day 40/40: ")
    per_day = tx["event_timestamp"].dt.floor("D").value_counts().sort_index()
    assert lines[-1] == f"day 40/40: {per_day.iloc[-1]:,} transactions"
    assert (s.n_transactions, s.n_labels) == (len(tx), len(labels))
    assert s.n_fraud == int(tx["tx_fraud"].sum())
    assert s.fraud_by_scenario == {k: int((tx["fraud_scenario"] == k).sum()) for k in (1, 2, 3)}
    assert (s.start, s.end) == ("2026-01-01", "2026-02-10")
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("change, words", [
    ({"customers": 0}, "customers"),
    ({"terminals": -1}, "terminals"),
    ({"days": 0}, "days"),
    ({"days": 2.5}, "days"),
    ({"fmt": "xlsx"}, "fmt"),
    ({"start": "2026-13-01"}, "start"),
    ({"start": "yesterday"}, "start"),
    ({"label_delay_days": (5, 1)}, "label_delay_days"),
    ({"genuine_label_rate": 1.5}, "genuine_label_rate"),
    ({"seed": -1}, "seed"),
])
def test_bad_spec_raises_input_error(tmp_path, change, words):
    spec = dataclasses.replace(GenerateSpec(customers=10, terminals=10, days=1), **change)
    with pytest.raises(InputError, match=words):
        generate_frames(spec)
    with pytest.raises(InputError, match=words):
        generate_to(tmp_path / "out", spec)
    assert not (tmp_path / "out").exists()
