from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ffs.errors import InputError
from ffs.jobs.tools import generate
from ffs.jobs.tools.generate import (
    BURST_AMOUNT,
    FAR,
    GRID,
    MAX_TERMINALS_PER_CUSTOMER,
    RADIUS,
    SCENARIOS,
    GenerateSpec,
    _World,
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
    stolen = tx.loc[tx["fraud_scenario"] == 4, ["customer_id", "terminal_id"]]
    other_stolen = other.loc[other["fraud_scenario"] == 4, ["customer_id", "terminal_id"]]
    assert len(stolen) > 0 and not stolen.merge(other_stolen).equals(stolen)


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
    assert all(counts.get(s, 0) > 0 for s in SCENARIOS), counts.to_dict()
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


def _home_distance(tx: pd.DataFrame, spec: GenerateSpec = SPEC) -> np.ndarray:
    """Distance of each payment's terminal from its customer's home (homes are not output)."""
    home = _World(spec).cust_xy[tx["customer_id"].to_numpy()]
    return np.hypot(tx["terminal_x"].to_numpy() - home[:, 0],
                    tx["terminal_y"].to_numpy() - home[:, 1])


def _new_to_the_card(tx: pd.DataFrame) -> pd.Series:
    """True where the card pays at this terminal for the first time and never pays there with
    its own hands (scenarios 0-2), before or after."""
    ordered = tx.sort_values(["event_timestamp", "transaction_id"])
    first = ~ordered.duplicated(["customer_id", "terminal_id"]).reindex(tx.index)
    pair = ["customer_id", "terminal_id"]
    own = tx.loc[tx["fraud_scenario"].isin([0, 1, 2]), pair].drop_duplicates()
    at_own = tx[pair].merge(own, how="left", on=pair, indicator=True)["_merge"] == "both"
    return first & ~at_own.to_numpy()


def test_terminal_coordinates_are_in_the_grid_and_one_place_per_terminal(frames):
    tx, _ = frames
    for c in ("terminal_x", "terminal_y"):
        assert str(tx[c].dtype) == "float64"
        assert tx[c].between(0, GRID).all()
        assert tx[c].std() > GRID / 5  # spread over the grid, not a constant
    per_terminal = tx.groupby("terminal_id")[["terminal_x", "terminal_y"]].nunique()
    assert (per_terminal == 1).all().all()
    assert len(tx[["terminal_x", "terminal_y"]].drop_duplicates()) == tx["terminal_id"].nunique()


def test_own_card_payments_are_at_the_customers_terminals_near_home(frames):
    tx, _ = frames
    world = _World(SPEC)
    own = tx[tx["fraud_scenario"].isin([0, 1, 2])]  # scenarios 1 and 2 use the card's terminals
    counts = np.diff(world.offsets)
    pairs = pd.DataFrame({"customer_id": np.repeat(np.arange(SPEC.customers), counts),
                          "terminal_id": world.terminals.astype(np.int64)})
    m = own.merge(pairs, how="left", on=["customer_id", "terminal_id"], indicator=True)
    assert (m["_merge"] == "both").all()
    lonely = counts[own["customer_id"]] == 1  # no terminal within RADIUS: the nearest one
    assert (_home_distance(own)[~lonely] <= RADIUS).all() and (~lonely).mean() > 0.9


def test_stolen_card_pays_far_from_home_at_terminals_new_to_the_card(frames):
    tx, _ = frames
    stolen = tx["fraud_scenario"] == 4
    assert stolen.sum() >= 30
    assert (_home_distance(tx[stolen]) > FAR).all()
    assert _new_to_the_card(tx)[stolen].all()
    # The jump from the card's previous payment is what the distance/speed features see.
    ordered = tx[tx["fraud_scenario"] != 3].sort_values(["customer_id", "event_timestamp"])
    prev = ordered.groupby("customer_id")[["terminal_x", "terminal_y", "fraud_scenario"]].shift()
    jump = np.hypot(ordered["terminal_x"] - prev["terminal_x"],
                    ordered["terminal_y"] - prev["terminal_y"])
    assert jump[ordered["fraud_scenario"] == 4].median() > FAR
    at_home = ordered["fraud_scenario"].isin([0, 1, 2]) & prev["fraud_scenario"].isin([0, 1, 2])
    assert jump[at_home].max() <= 2 * RADIUS


def test_stolen_card_spends_ordinary_amounts_at_the_ordinary_pace(frames):
    tx, _ = frames
    genuine = tx[tx["fraud_scenario"] == 0]
    stolen = tx[tx["fraud_scenario"] == 4]
    usual = genuine.groupby("customer_id")["amount"].agg(["median", "min", "max"])
    u = usual.reindex(stolen["customer_id"]).to_numpy()
    amount = stolen["amount"].to_numpy()
    assert 0.7 < np.nanmedian(amount / u[:, 0]) < 1.4  # scenario 2 is > 2.5
    assert ((amount >= u[:, 1]) & (amount <= u[:, 2])).mean() > 0.8
    # Payments in the 24 hours up to each one (bursts left out): a velocity feature's view.
    cards = tx[tx["customer_id"].isin(stolen["customer_id"]) & (tx["fraud_scenario"] != 3)]
    cards = cards.sort_values(["customer_id", "event_timestamp"]).set_index("event_timestamp")
    count = cards.groupby("customer_id")["amount"].rolling("24h").count().to_numpy()
    scenario = cards["fraud_scenario"].to_numpy()
    assert 0.7 < count[scenario == 4].mean() / count[scenario == 0].mean() < 1.4


def test_stolen_card_only_takes_genuine_payments(monkeypatch):
    """Scenario 4 has its own random stream and takes only genuine payments: without it, the
    other rows are the same. Stolen cards are common here, so they meet scenarios 1 and 2."""
    spec = dataclasses.replace(SPEC, days=20)
    monkeypatch.setattr(generate, "STOLEN_CARD_RATE", 1 / 20)
    tx, _ = generate_frames(spec)
    monkeypatch.setattr(generate, "STOLEN_CARD_RATE", 0.0)
    plain, _ = generate_frames(spec)
    assert (plain["fraud_scenario"] != 4).all()
    stolen = tx["fraud_scenario"] == 4
    assert stolen.mean() > 0.02
    assert (plain.loc[stolen, "fraud_scenario"] == 0).all()
    pd.testing.assert_frame_equal(tx[~stolen], plain[~stolen])
    same = ["transaction_id", "event_timestamp", "customer_id", "amount"]
    pd.testing.assert_frame_equal(tx[same], plain[same])


@pytest.mark.parametrize("terminals", [2, 6])
def test_stolen_card_in_a_tiny_world_still_uses_only_new_far_terminals(monkeypatch, terminals):
    """Few terminals and many card-testing bursts: far terminals run out, bursts have used
    some of them and a lonely customer's only terminal may be far from home, yet a stolen card
    never pays at a terminal it uses otherwise."""
    monkeypatch.setattr(generate, "BURST_RATE", 1 / 20)
    spec = GenerateSpec(customers=300, terminals=terminals, days=30, seed=3)
    tx, _ = generate_frames(spec)
    stolen = tx["fraud_scenario"] == 4
    assert stolen.sum() > 0
    assert (_home_distance(tx[stolen], spec) > FAR).all()
    assert _new_to_the_card(tx)[stolen].all()


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
    assert s.fraud_by_scenario == {k: int((tx["fraud_scenario"] == k).sum()) for k in (1, 2, 3, 4)}
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
