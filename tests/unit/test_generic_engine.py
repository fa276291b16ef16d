"""The NumPy engine on a repo of another shape than the shipped one, built in process: a
string key, an int key, a composite key (card, shop), a text value column, every aggregation
(std included), delays on count_distinct, first_seen and last, fraud_rate on two entities, a
request function reading features of two entities. Checked against the brute-force
reference (tests/reference.py), at arbitrary points and at every transaction (the backfill)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from ffs.transformations import engine, schema
from ffs.transformations.compiler import Compiled
from ffs.transformations.declarations import (
    Agg,
    Entity,
    RecencyFeature,
    RequestFeature,
    WindowFeature,
)
from ffs.transformations.ids import IdTypes
from ffs.transformations.request import RequestFunction
from tests.reference import reference_features

H, D = timedelta(hours=1), timedelta(days=1)
CARD = Entity("card", ("card_id",))  # string ids
SHOP = Entity("shop", ("shop_id",))  # int ids
PAIR = Entity("card+shop", ("card_id", "shop_id"))


def _w(name, entity, agg, window, column=None, delay=timedelta(0)):
    return WindowFeature(name, entity, agg, window, column, delay)


WINDOWS = [
    _w("card_n_1h", CARD, Agg.COUNT, H),
    _w("card_sum_1d", CARD, Agg.SUM, D, "amount"),
    _w("card_mean_1d", CARD, Agg.MEAN, D, "amount"),
    _w("card_std_1d", CARD, Agg.STD, D, "amount"),
    _w("card_devices_6h_lag1h", CARD, Agg.COUNT_DISTINCT, 6 * H, "device", H),
    _w("card_shops_1d", CARD, Agg.COUNT_DISTINCT, D, "shop_id"),
    _w("card_first_2d_lag30m", CARD, Agg.FIRST_SEEN, 2 * D, "event_timestamp", H / 2),
    _w("card_last_1d_lag1h", CARD, Agg.LAST, D, "amount", H),
    _w("card_risk_2d_lag1d", CARD, Agg.FRAUD_RATE, 2 * D, "is_fraud", D),
    _w("pair_n_1d", PAIR, Agg.COUNT, D),
    _w("pair_mean_2d", PAIR, Agg.MEAN, 2 * D, "amount"),
    _w("pair_std_2d_lag2h", PAIR, Agg.STD, 2 * D, "amount", 2 * H),
    _w("pair_last_1d", PAIR, Agg.LAST, D, "amount"),
    _w("pair_amounts_1d", PAIR, Agg.COUNT_DISTINCT, D, "amount"),
    _w("pair_max_1d_lag1h", PAIR, Agg.MAX, D, "amount", H),
    _w("shop_min_1d", SHOP, Agg.MIN, D, "amount"),
    _w("shop_cards_1d_lag2h", SHOP, Agg.COUNT_DISTINCT, D, "card_id", 2 * H),
    _w("shop_risk_3d_lag12h", SHOP, Agg.FRAUD_RATE, 3 * D, "is_fraud", 12 * H),
    _w("shop_first_1d", SHOP, Agg.FIRST_SEEN, D, "event_timestamp"),
]
RECENCY = [RecencyFeature("card_gap_s", CARD, 3 * D), RecencyFeature("pair_gap_s", PAIR, D)]
RATIO = RequestFunction.from_source("payment", '''
def payment(inputs):
    out = {"payment_amount": inputs["amount"], "vs_pair_mean": [], "busy_card": []}
    for a, m, n in zip(inputs["amount"], inputs["pair_mean_2d"], inputs["card_n_1h"]):
        out["vs_pair_mean"].append(a / m if a is not None and m else None)
        out["busy_card"].append(int(n is not None and n >= 2))
    return out
''', request_inputs=("amount", "event_timestamp"),
    feature_inputs=("pair_mean_2d", "card_n_1h"),
    outputs=(("payment_amount", "float64"), ("vs_pair_mean", "float64"),
             ("busy_card", "int64")))
REPO = Compiled(
    service="generic", windows=WINDOWS, recency=RECENCY,
    request=[RequestFeature(n, t) for n, t in RATIO.outputs],
    id_types={"card_id": "string", "shop_id": "int"},
    views={}, functions=[RATIO], entities=[CARD, PAIR, SHOP],
    values={"amount": "number", "device": "text"})
IDS = IdTypes("int", keys=(("card_id", "string"), ("shop_id", "int")))
T0 = pd.Timestamp("2024-05-01", tz="UTC")


def _events(seed: int, n: int = 260):
    rng = np.random.default_rng(seed)
    secs = np.sort(rng.integers(0, 6 * 86400, n))
    secs[::5] = secs[::5] // 1800 * 1800  # same-second ties, across and within entities
    secs[1::7] = secs[::7][: len(secs[1::7])]
    amounts = np.round(rng.uniform(0, 80, n), 2)
    amounts[::6] = 12.5  # equal amounts: a zero spread, repeated distinct values
    raw = pd.DataFrame({
        "transaction_id": np.arange(n),
        "event_timestamp": T0 + pd.to_timedelta(secs, unit="s"),
        "card_id": [f"c-{i}" for i in rng.integers(0, 4, n)],
        "shop_id": rng.integers(0, 5, n),
        "device": [f"d.{i}" for i in rng.integers(0, 3, n)],
        "amount": amounts,
    })
    tx = schema.normalize_transactions(raw, IDS, repo=REPO).rows
    picked = tx.sample(n // 3, random_state=seed)
    labels = pd.DataFrame({
        "transaction_id": picked["transaction_id"].to_numpy(),
        "is_fraud": rng.integers(0, 2, len(picked)),
        "label_timestamp": picked["event_timestamp"].reset_index(drop=True)
        + pd.to_timedelta(rng.integers(0, 3 * 86400, len(picked)), unit="s"),
    })
    revised = labels.sample(max(1, len(labels) // 4), random_state=seed + 1).copy()
    revised["label_timestamp"] += pd.Timedelta(hours=20)
    revised["is_fraud"] = 1 - revised["is_fraud"]
    labels = schema.normalize_labels(pd.concat([labels, revised], ignore_index=True), tx,
                                     IDS).rows
    points = pd.DataFrame({
        "card_id": [f"c-{i}" for i in rng.integers(0, 5, 120)],  # c-4: no events
        "shop_id": rng.integers(0, 6, 120),
        "event_timestamp": T0 + pd.to_timedelta(rng.integers(-3600, 8 * 86400, 120), unit="s"),
        "amount": rng.uniform(0, 50, 120),
    })
    # the transactions' own instants: ties with t, "strictly before t - D"
    points = pd.concat([points, tx[points.columns].sample(60, random_state=seed)],
                       ignore_index=True)
    return tx, labels, points


def _same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    for col in expected.columns:
        np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float),
                                   rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=col)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_engine_equals_reference_at_arbitrary_points(seed):
    tx, labels, points = _events(seed)
    got = engine.compute_features(tx, labels, points, REPO)
    _same(got, reference_features(tx, labels, points, REPO))
    assert list(got.columns) == engine.feature_names(REPO)
    assert got["card_std_1d"].notna().any() and got["card_std_1d"].isna().any()
    assert (got["card_risk_2d_lag1d"] > 0).any() and (got["shop_risk_3d_lag12h"] > 0).any()


@pytest.mark.parametrize("seed", [4, 5])
def test_engine_equals_reference_at_every_transaction(seed):
    tx, labels, _ = _events(seed)
    got = engine.compute_features(tx, labels, tx, REPO)  # the backfill's shortcut
    _same(got, reference_features(tx, labels, tx, REPO))
    again = engine.compute_features(tx, labels, tx.copy(), REPO)  # the general path
    pd.testing.assert_frame_equal(got, again)


def test_entity_features_of_one_entity_are_its_columns_of_the_whole():
    tx, labels, points = _events(6)
    whole = engine.compute_features(tx, labels, points, REPO)
    attached = engine.attach_labels(engine.relevant_labels(labels), tx,
                                    engine.label_keys(REPO))
    for entity in REPO.entities:
        one = engine.entity_features(entity, tx, attached, points, REPO)
        names = [f.name for f in engine.windows_of(entity, REPO)] + \
            [r.name for r in engine.recency_of(entity, REPO)]
        assert list(one.columns) == names
        pd.testing.assert_frame_equal(one, whole[names])


def test_composite_key_is_the_pair_not_either_key():
    at = pd.Timestamp("2024-05-02 12:00", tz="UTC")
    tx = schema.normalize_transactions(pd.DataFrame({
        "transaction_id": [1, 2, 3, 4],
        "event_timestamp": [at - pd.Timedelta(m, "min") for m in (50, 40, 30, 20)],
        "card_id": ["a", "a", "b", "a"], "shop_id": [1, 2, 1, 1],
        "device": ["x", "y", "x", "x"], "amount": [10.0, 20.0, 30.0, 14.0],
    }), IDS, repo=REPO).rows
    points = pd.DataFrame({"card_id": ["a", "b"], "shop_id": [1, 2], "event_timestamp": [at, at]})
    got = engine.compute_features(tx, None, points, REPO)
    assert got["pair_n_1d"].tolist() == [2, 0]  # (a, 1): tx 1 and 4; (b, 2): none
    assert got["pair_std_2d_lag2h"].isna().all()  # both pairs' events are within the lag
    np.testing.assert_allclose(got.loc[0, "pair_mean_2d"], 12.0)
    assert got.loc[0, "pair_last_1d"] == 14.0 and np.isnan(got.loc[1, "pair_last_1d"])
    np.testing.assert_allclose(got.loc[0, "card_std_1d"], np.std([10, 20, 14], ddof=1))
    assert got.loc[0, "card_gap_s"] == 20 * 60 and got.loc[0, "pair_gap_s"] == 20 * 60


def test_delayed_last_and_first_seen_read_before_t_minus_delay():
    at = pd.Timestamp("2024-05-02 12:00", tz="UTC")
    tx = schema.normalize_transactions(pd.DataFrame({
        "transaction_id": [1, 2, 3],
        # 3: exactly at t - 1h (not "strictly before" it, so not the last); 2: after it
        "event_timestamp": [at - pd.Timedelta(90, "min"), at - pd.Timedelta(30, "min"),
                            at - pd.Timedelta(60, "min")],
        "card_id": ["a", "a", "a"], "shop_id": [1, 1, 1], "device": ["x", "y", "z"],
        "amount": [10.0, 20.0, 30.0],
    }), IDS, repo=REPO).rows
    got = engine.compute_features(tx, None, pd.DataFrame(
        {"card_id": ["a"], "shop_id": [1], "event_timestamp": [at]}), REPO).iloc[0]
    assert got["card_last_1d_lag1h"] == 10.0
    assert got["card_first_2d_lag30m"] == 90 * 60  # tx 1, inside (t - 30m - 2d, t - 30m]
    assert got["card_devices_6h_lag1h"] == 2  # x and z: y is after t - 1h
    assert got["pair_max_1d_lag1h"] == 30.0


def test_text_value_columns_follow_the_id_rule_with_their_name():
    raw = pd.DataFrame({"transaction_id": [1, 2, 3, 4], "card_id": ["a", "b", "c", "d"],
                        "shop_id": [1, 1, 1, 1], "device": ["ok", "not ok", None, "ok"],
                        "amount": [1.0, 2.0, 3.0, -4.0],
                        "event_timestamp": ["2024-05-01T00:00:00Z"] * 4})
    norm = schema.normalize_transactions(raw, IDS, repo=REPO)
    assert norm.rows["transaction_id"].tolist() == [1]
    assert norm.rows["device"].tolist() == ["ok"]
    reasons = dict(zip(norm.rejects["transaction_id"], norm.rejects["reason"], strict=True))
    assert reasons["2"].startswith("bad device: ") and reasons["3"] == "missing device"
    assert reasons["4"] == "amount is negative"
    assert schema.tx_columns(REPO) == ("transaction_id", "event_timestamp", "card_id",
                                       "shop_id", "amount", "device")
    with pytest.raises(Exception, match=r"missing column\(s\) \['device'\]"):
        schema.normalize_transactions(raw.drop(columns="device"), IDS, repo=REPO)


def test_std_of_large_amounts_stays_exact():
    """Squares of hundredths past int64 (amounts near the limit) take exact integers."""
    at = pd.Timestamp("2024-05-02 12:00", tz="UTC")
    amounts = [9.0e8, 9.0e8 + 0.01, 1.0e9]
    tx = schema.normalize_transactions(pd.DataFrame({
        "transaction_id": [1, 2, 3],
        "event_timestamp": [at - pd.Timedelta(m, "min") for m in (3, 2, 1)],
        "card_id": ["a"] * 3, "shop_id": [1] * 3, "device": ["x"] * 3, "amount": amounts,
    }), IDS, repo=REPO).rows
    points = pd.DataFrame({"card_id": ["a"], "shop_id": [1], "event_timestamp": [at]})
    got = engine.compute_features(tx, None, points, REPO)
    _same(got, reference_features(tx, None, points, REPO))
