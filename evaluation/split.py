"""The time-based protocol of the fraud handbook (chapter 5, "Validation strategies").

Train on `train_days` UTC days, skip `delay_days` (the labels of the last training days are
still arriving then, so a model deployed at the end of training is tested only from the
end of the delay on), then test on `test_days`. On each test day the cards already known to
be compromised are removed, as an investigator would have blocked them: a card is known
when one of its transactions from the first training day on (the training period, the
delay, the earlier test days) has a label in effect before the day starts that says fraud.
Labels count from their own label_timestamp, so a chargeback still on its way is not known;
frauds before the training period do not count, as in the handbook (chapter 3.4,
get_train_test_set: the training period's frauds, then each day's as its labels arrive).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ffs.errors import InputError
from ffs.transformations.timestamps import DAY


@dataclass(frozen=True)
class Protocol:
    train_start: int  # UTC day number (days since 1970-01-01)
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7

    @property
    def train_end(self) -> int:  # exclusive, as every end below
        return self.train_start + self.train_days

    @property
    def test_start(self) -> int:
        return self.train_end + self.delay_days

    @property
    def test_end(self) -> int:
        return self.test_start + self.test_days

    @property
    def span_days(self) -> int:
        return self.train_days + self.delay_days + self.test_days


def day_text(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def parse_day(text: str) -> int:
    try:
        return (dt.date.fromisoformat(text) - dt.date(1970, 1, 1)).days
    except ValueError:
        raise InputError(f"--train-start: expected a UTC date YYYY-MM-DD, found {text!r}") \
            from None


def choose(first_day: int, last_day: int, train_start: str | None = None,
           train_days: int = 7, delay_days: int = 7, test_days: int = 7) -> Protocol:
    """The protocol for data covering the UTC days first_day..last_day (inclusive). Without
    `train_start`, the latest periods the data holds: the test ends with the data, so the
    features have the most history."""
    if train_days < 1 or test_days < 1 or delay_days < 0:
        raise InputError(f"expected train and test days >= 1 and delay days >= 0, found "
                         f"train {train_days}, delay {delay_days}, test {test_days}")
    span = train_days + delay_days + test_days
    start = parse_day(train_start) if train_start else last_day + 1 - span
    protocol = Protocol(start, train_days, delay_days, test_days)
    if start < first_day or protocol.test_end > last_day + 1:
        have = f"{day_text(first_day)} .. {day_text(last_day)} ({last_day - first_day + 1} days)"
        raise InputError(
            f"the transactions cover {have}; train {train_days} + delay {delay_days} + test "
            f"{test_days} days from {day_text(start)} need {day_text(start)} .. "
            f"{day_text(protocol.test_end - 1)}: pass an earlier --train-start or fewer days")
    return protocol


@dataclass
class Split:
    protocol: Protocol
    train: np.ndarray  # row positions in the transactions, in their order
    test: np.ndarray  # row positions, known-compromised cards removed
    removed: list[int]  # per test day: transactions removed (their card was known)
    known_cards: list[int]  # per test day: cards known compromised when the day starts


def days_of(seconds: np.ndarray) -> np.ndarray:
    """UTC day number of each epoch second."""
    return np.floor_divide(seconds, DAY)


def known_compromised(labels: pd.DataFrame, at_s: int, since_s: int | None = None) -> set:
    """Cards known compromised at `at_s`: those with a transaction at or after `since_s`
    (None: any) whose label in effect at `at_s` (the latest with label_timestamp < at_s) says
    fraud. `labels`: transaction_id, is_fraud, label_s (epoch seconds), card, and tx_s (the
    transaction's epoch seconds; needed only with `since_s`)."""
    keep = labels["label_s"].to_numpy() < at_s
    if since_s is not None:
        keep &= labels["tx_s"].to_numpy() >= since_s
    known = labels[keep]
    if known.empty:
        return set()
    latest = known.sort_values("label_s", kind="stable").drop_duplicates("transaction_id",
                                                                          keep="last")
    return set(latest.loc[latest["is_fraud"].to_numpy() == 1, "card"])


def split(seconds: np.ndarray, cards: np.ndarray, labels: pd.DataFrame,
          protocol: Protocol) -> Split:
    """Train and test rows of transactions at `seconds` (epoch seconds) by `cards`, under
    `protocol`; `labels` as known_compromised reads them. Known-compromised cards count only
    the frauds of transactions from the first training day on."""
    days = days_of(seconds)
    train = np.flatnonzero((days >= protocol.train_start) & (days < protocol.train_end))
    test_parts, removed, known_counts = [], [], []
    for day in range(protocol.test_start, protocol.test_end):
        rows = np.flatnonzero(days == day)
        known = known_compromised(labels, day * DAY, protocol.train_start * DAY)
        blocked = pd.Series(cards[rows]).isin(known).to_numpy() if known else \
            np.zeros(len(rows), bool)
        test_parts.append(rows[~blocked])
        removed.append(int(blocked.sum()))
        known_counts.append(len(known))
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.empty(0, np.int64)
    return Split(protocol, train, test, removed, known_counts)
