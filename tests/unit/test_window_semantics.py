"""Window semantics, case by case, and the engine against the brute-force reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffs.transformations import engine, schema
from ffs.transformations.features import WINDOW_FEATURES, feature_names
from tests.conftest import random_events, utc
from tests.reference import reference_features


def tx_frame(rows):
    """rows: (id, 'time', customer, terminal, amount)"""
    return pd.DataFrame(rows, columns=["transaction_id", "event_timestamp", "customer_id",
                                       "terminal_id", "amount"]).assign(
        event_timestamp=lambda d: pd.to_datetime(d["event_timestamp"], utc=True))


def labels_frame(rows):
    return pd.DataFrame(rows, columns=["transaction_id", "is_fraud", "label_timestamp"]).assign(
        label_timestamp=lambda d: pd.to_datetime(d["label_timestamp"], utc=True))


def at(customer, terminal, when, amount=np.nan):
    return pd.DataFrame({"customer_id": [customer], "terminal_id": [terminal],
                         "event_timestamp": [utc(when)], "amount": [amount]})


def features(tx, points, labels=None):
    return engine.compute_features(tx, labels, points).iloc[0]


TX = tx_frame([
    (1, "2024-03-01 10:00:00", 7, 70, 10.0),
    (2, "2024-03-01 12:00:00", 7, 71, 20.0),
    (3, "2024-03-01 12:00:00", 7, 70, 30.0),  # same second as 2: a tie
    (4, "2024-03-02 09:00:00", 7, 72, 40.0),
])


def test_window_is_open_at_start_and_closed_at_end():
    # (t - 1d, t]: at exactly 1 day after tx 1 it has left the window; 1 s before, it is in.
    f = features(TX, at(7, 70, "2024-03-02 10:00:00"))
    assert f["customer_nb_tx_1d"] == 3  # 2, 3, 4
    f = features(TX, at(7, 70, "2024-03-02 09:59:59"))
    assert f["customer_nb_tx_1d"] == 4


def test_events_exactly_at_t_are_included_with_all_ties():
    f = features(TX, at(7, 70, "2024-03-01 12:00:00"))
    assert f["customer_nb_tx_1d"] == 3  # 1 and both tied events at 12:00:00
    assert f["customer_sum_amount_1h"] == pytest.approx(50.0)


def test_recency_treats_same_second_as_simultaneous():
    f = features(TX, at(7, 70, "2024-03-01 12:00:00"))
    assert f["customer_secs_since_prev_tx"] == 2 * 3600  # previous is tx 1, not its tie
    f = features(TX, at(7, 70, "2024-03-01 12:00:05"))
    assert f["customer_secs_since_prev_tx"] == 5


def test_empty_windows_give_zero_counts_zero_risk_and_null_mean():
    f = features(TX, at(99, 999, "2024-03-01 12:00:00", amount=12.0))
    assert f["customer_nb_tx_1d"] == 0 and f["customer_nb_terminals_1d"] == 0
    assert f["customer_sum_amount_10m"] == 0.0
    assert np.isnan(f["customer_avg_amount_1d"])
    assert f["terminal_nb_tx_1d_delay7d"] == 0 and f["terminal_risk_1d_delay7d"] == 0.0
    assert np.isnan(f["customer_secs_since_prev_tx"])
    assert np.isnan(f["amount_over_customer_avg_30d"])
    assert f["amount"] == 12.0


def test_request_time_ignores_future_events():
    f = features(TX, at(7, 70, "2024-03-01 11:59:59"))
    assert f["customer_nb_tx_1d"] == 1


def test_distinct_terminals_count_each_terminal_once():
    f = features(TX, at(7, 70, "2024-03-02 09:00:00"))
    assert f["customer_nb_terminals_1d"] == 3  # 70 (twice), 71, 72
    f = features(TX, at(7, 70, "2024-03-02 11:00:00"))
    assert f["customer_nb_terminals_1d"] == 3  # tx 1 left, but 70 is still there via tx 3
    f = features(TX, at(7, 70, "2024-03-02 12:00:00"))
    assert f["customer_nb_terminals_1d"] == 1  # only 72


DELAY_TX = tx_frame([
    (10, "2024-03-01 10:00:00", 1, 5, 1.0),
    (11, "2024-03-01 11:00:00", 2, 5, 1.0),
    (12, "2024-03-05 10:00:00", 3, 5, 1.0),
])


def test_delayed_window_covers_t_minus_delay_minus_w_to_t_minus_delay():
    # (t - 7d - 1d, t - 7d]: at 2024-03-08 10:00:00 tx 10 sits exactly at t - 7d: included.
    f = features(DELAY_TX, at(1, 5, "2024-03-08 10:00:00"))
    assert f["terminal_nb_tx_1d_delay7d"] == 1
    f = features(DELAY_TX, at(1, 5, "2024-03-08 09:59:59"))
    assert f["terminal_nb_tx_1d_delay7d"] == 0
    f = features(DELAY_TX, at(1, 5, "2024-03-08 11:00:00"))
    assert f["terminal_nb_tx_1d_delay7d"] == 2
    f = features(DELAY_TX, at(1, 5, "2024-03-09 10:00:00"))
    assert f["terminal_nb_tx_1d_delay7d"] == 1  # tx 10 left (at exactly 1 day), 11 remains


def test_label_counts_only_from_its_label_timestamp():
    labels = labels_frame([(10, 1, "2024-03-09 00:00:00")])
    before = features(DELAY_TX, at(1, 5, "2024-03-08 12:00:00"), labels)
    after = features(DELAY_TX, at(1, 5, "2024-03-09 00:00:00"), labels)
    assert before["terminal_risk_1d_delay7d"] == 0.0  # chargeback not known yet
    assert before["terminal_nb_tx_1d_delay7d"] == 2
    assert after["terminal_risk_1d_delay7d"] == pytest.approx(0.5)


def test_label_revision_replaces_the_earlier_label():
    labels = labels_frame([(10, 1, "2024-03-08 00:00:00"), (10, 0, "2024-03-08 11:30:00")])
    f = features(DELAY_TX, at(1, 5, "2024-03-08 11:00:00"), labels)
    assert f["terminal_risk_1d_delay7d"] == pytest.approx(0.5)
    f = features(DELAY_TX, at(1, 5, "2024-03-08 11:30:00"), labels)
    assert f["terminal_risk_1d_delay7d"] == 0.0


def test_late_arriving_event_is_placed_by_its_event_time():
    # Row order in the input does not matter: only event_timestamp does.
    shuffled = TX.iloc[[3, 1, 0, 2]]
    a = engine.compute_features(TX, None, at(7, 70, "2024-03-02 09:00:00"))
    b = engine.compute_features(shuffled, None, at(7, 70, "2024-03-02 09:00:00"))
    pd.testing.assert_frame_equal(a, b)


def test_amount_ratio_uses_the_30_day_mean_including_the_transaction():
    f = features(TX, at(7, 72, "2024-03-02 09:00:00", amount=40.0))
    assert f["amount_over_customer_avg_30d"] == pytest.approx(40.0 / 25.0)


def test_weekend_and_night_flags_are_utc():
    f = features(TX, at(7, 70, "2024-03-02 06:59:59"))  # Saturday
    assert f["tx_during_weekend"] == 1 and f["tx_during_night"] == 1
    f = features(TX, at(7, 70, "2024-03-04 07:00:00"))  # Monday
    assert f["tx_during_weekend"] == 0 and f["tx_during_night"] == 0


def test_output_columns_and_dtypes_follow_the_declarations():
    out = engine.compute_features(TX, None, at(7, 70, "2024-03-02 09:00:00"))
    assert list(out.columns) == feature_names()
    counts = [f.name for f in WINDOW_FEATURES if f.dtype == "int64"]
    assert all(out[c].dtype == np.int64 for c in counts)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_engine_equals_reference_on_random_events(seed):
    tx, labels, points = random_events(seed)
    tx = schema.normalize_transactions(tx).rows
    labels = schema.normalize_labels(labels, tx).rows
    got = engine.compute_features(tx, labels, points)
    expected = reference_features(tx, labels, points)
    for col in expected.columns:
        np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float),
                                   rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=col)


def test_relevant_labels_keeps_every_label_of_ever_fraud_transactions():
    labels = labels_frame([(1, 0, "2024-01-01"), (1, 1, "2024-01-02"), (2, 0, "2024-01-01")])
    kept = engine.relevant_labels(labels)
    assert sorted(kept["transaction_id"]) == [1, 1]


def test_no_events_at_all_gives_empty_windows():
    out = engine.compute_features(TX.iloc[:0], None, at(7, 70, "2024-03-02 09:00:00", 5.0))
    f = out.iloc[0]
    assert f["customer_nb_tx_30d"] == 0 and f["terminal_nb_tx_1h"] == 0
    assert np.isnan(f["customer_secs_since_prev_tx"]) and np.isnan(f["customer_avg_amount_1d"])
