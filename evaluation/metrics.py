"""The three measures of the fraud handbook (chapter 4), in NumPy: AUC ROC and average
precision over transactions, card precision@k over the cards an investigator checks each day.

AUC ROC and average precision follow scikit-learn's definitions exactly (ties between scores
counted as half / as one threshold), so a reader can compare with any notebook; the tests
check them on hand-computed cases and against scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype="float64")
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be two 1-d arrays of one length, found "
                         f"{y.shape} and {s.shape}")
    return y, s


def auc_roc(labels, scores) -> float:
    """Area under the ROC curve: the chance that a random fraud scores above a random genuine
    transaction (a tie counts half). NaN when one class is absent."""
    y, s = _arrays(labels, scores)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0  # 1-based rank, ties share their mean
    rank_sum = float(average_rank[inverse][y].sum())
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def average_precision(labels, scores) -> float:
    """Sum over score thresholds (highest first) of precision times the recall it adds; one
    threshold per distinct score. NaN without any fraud."""
    y, s = _arrays(labels, scores)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # the last row of each run of equal scores
    tp = np.cumsum(ys)[last]
    seen = np.flatnonzero(last) + 1
    precision = tp / seen
    recall = tp / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def card_precision_top_k(days, cards, labels, scores, k: int = 100,
                         remove_detected: bool = True) -> tuple[float, list[float]]:
    """(mean over days, per day) share of fraudulent cards among the k cards with the highest
    score each day. A card's score that day is the highest score of its transactions that
    day; it is fraudulent that day if any of them is. Divided by k even on a day with fewer
    cards (the investigators' capacity is k). With `remove_detected`, a fraudulent card found
    in the top k is blocked and leaves the following days' rankings, as in the handbook."""
    y, s = _arrays(labels, scores)
    if k < 1:
        raise ValueError(f"k must be >= 1, found {k}")
    frame = pd.DataFrame({"day": np.asarray(days), "card": np.asarray(cards),
                          "fraud": y.astype(np.int8), "score": s})
    detected: set = set()
    per_day: list[float] = []
    for _, day in frame.groupby("day", sort=True):
        if detected:
            day = day[~day["card"].isin(detected)]
        by_card = day.groupby("card", sort=True).agg(score=("score", "max"),
                                                      fraud=("fraud", "max"))
        # ties in score: the smaller card id first, so the ranking is the same on every run
        top = by_card.reset_index().sort_values(["score", "card"], ascending=[False, True],
                                                kind="mergesort").head(k)
        hits = top.loc[top["fraud"] == 1, "card"]
        per_day.append(len(hits) / k)
        if remove_detected:
            detected.update(hits)
    mean = float(np.mean(per_day)) if per_day else float("nan")
    return mean, per_day
