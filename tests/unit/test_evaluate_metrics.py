"""`ffs evaluate`'s measures on hand-computed cases, and AUC ROC / average precision against
scikit-learn's definitions on random scores with ties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ffs.evaluation.metrics import auc_roc, average_precision, card_precision_top_k


def test_auc_roc_by_hand():
    # pairs (fraud, genuine): (0.35, 0.1) right, (0.35, 0.4) wrong, (0.8, *) right: 3 of 4
    assert auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc_roc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert auc_roc([1, 1, 0], [0.9, 0.9, 0.9]) == pytest.approx(0.5)
    assert auc_roc([0, 1], [0.9, 0.1]) == 0.0
    assert math.isnan(auc_roc([1, 1], [0.2, 0.3]))  # one class only


def test_average_precision_by_hand():
    # ranked: 0.8 fraud (P 1, R .5), 0.4 genuine, 0.35 fraud (P 2/3, R 1): .5*1 + .5*2/3
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # a tie is one threshold: both rows at once, precision 1/2, recall 1
    assert average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([1, 0, 0], [0.9, 0.2, 0.1]) == pytest.approx(1.0)
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))


def test_auc_and_average_precision_match_scikit_learn_with_ties():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for n in (10, 200, 5000):
        y = (rng.random(n) < 0.1).astype(int)
        y[0], y[1] = 0, 1
        s = np.round(rng.random(n) + 0.5 * y, 1)  # few distinct values: many ties
        assert auc_roc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s),
                                                        abs=1e-12)


def test_card_precision_ranks_cards_by_their_best_transaction_and_blocks_detected_cards():
    # day 1: a's best score .99 (its other payment .1), b .8 genuine, c .7 fraud; k=2:
    #   a and b checked, a is fraud -> 1/2; a is now blocked
    # day 2: a .95 fraud (blocked: left out), c .6 fraud, b .5, d .4: c and b -> 1/2
    days = [1, 1, 1, 1, 2, 2, 2, 2]
    cards = ["a", "a", "b", "c", "a", "c", "b", "d"]
    fraud = [0, 1, 0, 1, 1, 1, 0, 0]
    score = [0.1, 0.99, 0.8, 0.7, 0.95, 0.6, 0.5, 0.4]
    mean, per_day = card_precision_top_k(days, cards, fraud, score, k=2)
    assert per_day == [0.5, 0.5] and mean == pytest.approx(0.5)
    # without blocking, day 2 checks a and c: both fraud
    _, per_day = card_precision_top_k(days, cards, fraud, score, k=2, remove_detected=False)
    assert per_day == [0.5, 1.0]


def test_card_precision_divides_by_k_and_breaks_ties_by_card():
    # one day, two cards, k=4: one fraud card of the 4 the investigators could check
    mean, _ = card_precision_top_k([0, 0], [7, 8], [1, 0], [0.3, 0.2], k=4)
    assert mean == pytest.approx(0.25)
    # equal scores: the smaller card id is checked first, on every run
    mean, _ = card_precision_top_k([0, 0], [9, 3], [1, 0], [0.5, 0.5], k=1)
    assert mean == 0.0
    mean, _ = card_precision_top_k([0, 0], [9, 3], [0, 1], [0.5, 0.5], k=1)
    assert mean == 1.0
