"""`ffs evaluate`'s split on the handbook's data: the periods of its chapter 3.4 (train from
2018-07-25, 7 days; delay 7; test 7) and its known-compromised cards give its published
training and test sets (train 67,240 transactions / 598 frauds, test 58,264 / 385). Only the
reading and the split, as `evaluate` runs them: no features, no models (about 12 s)."""

from __future__ import annotations

import pandas as pd
import pytest

from ffs.config import load_config
from ffs.evaluation import split
from ffs.evaluation.run import _labels_with_cards, _target
from ffs.jobs.batch.training_set import read_events
from ffs.transformations.timestamps import DAY, to_seconds

pytestmark = [pytest.mark.handbook, pytest.mark.slow]


def test_the_split_gives_the_handbooks_training_and_test_sets(handbook_path):
    raw = pd.read_parquet(handbook_path, columns=["TRANSACTION_ID", "TX_DATETIME", "TX_FRAUD"])
    # TX_FRAUD as label events, each known 7 days after its payment (the handbook's delay),
    # as benchmarks/evaluate.py builds them
    labels = pd.DataFrame({
        "transaction_id": raw["TRANSACTION_ID"], "is_fraud": raw["TX_FRAUD"].astype("int64"),
        "label_timestamp": pd.to_datetime(raw["TX_DATETIME"], utc=True) + pd.Timedelta(days=7)})
    tx, lab, rejected = read_events(load_config(env={}), str(handbook_path), labels)
    assert rejected == {"transactions": {}, "labels": {}}
    seconds = to_seconds(tx["event_timestamp"])
    days = split.days_of(seconds)
    protocol = split.choose(int(days.min()), int(days.max()), "2018-07-25", 7, 7, 7)
    cards = tx["customer_id"].to_numpy()
    sp = split.split(seconds, cards, _labels_with_cards(lab, tx, "customer_id"), protocol)
    y, _ = _target(tx, lab, "TX_FRAUD")

    assert (split.day_text(protocol.test_start), split.day_text(protocol.test_end - 1)) == \
        ("2018-08-08", "2018-08-14")
    assert (len(sp.train), int(y[sp.train].sum())) == (67_240, 598)
    assert (len(sp.test), int(y[sp.test].sum())) == (58_264, 385)
    assert sum(sp.removed) == 67_080 - 58_264
    # the frauds before 2018-07-25 do not count: without that bound, far more cards
    before = split.known_compromised(_labels_with_cards(lab, tx, "customer_id"),
                                     protocol.test_start * DAY)
    assert sp.known_cards[0] < 500 < len(before)
