"""One parity suite: a table of hand-written cases per aggregation, each run on every engine
(the brute-force reference, the NumPy engine, Spark, the online read after `ffs materialize`,
and the online read after the stream writer), each checked against the value written in the
case, and every engine against the reference on every feature of every point.

The cases run under their own repo, tests/fixtures/parity_repo: every aggregation (count,
sum, mean, min, max, std, count_distinct, last, first_seen, seconds_since_previous,
fraud_rate) with and without a delay, on an entity with integer ids (user), one with text ids
(shop) and their composite key (user, shop). The product loads its repo at import, so the
engines run in a subprocess with FFS_FEATURES_REPO pointing at that repo (this module, run as
a script: `python -m tests.integration.test_parity WORLD OUT ENGINES`), which writes every
engine's features as JSON; pytest then checks each case on each engine as its own test.

A case an engine cannot run says so with its reason (as ibis marks backends), and is
reported as skipped for that engine rather than left out.

All cases share one world (ids kept apart per case, one time span), so each engine runs
once: one Spark job, one Redis load, one stream pass.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REPO = PROJECT_ROOT / "tests" / "fixtures" / "parity_repo"
T0 = pd.Timestamp("2024-03-01 00:00:00", tz="UTC")
ENGINES = ("reference", "numpy", "spark", "online", "stream")

pytestmark = pytest.mark.redis


class E(NamedTuple):
    """One event of a case: its id, time offset from T0, keys and value columns."""

    txid: object
    at: str
    user: object  # an int id, or digits as text ("007" is the user 7)
    shop: str
    value: float = 1.0
    qty: int = 1
    kind: str = "web"
    geo: float | None = None  # optional: null unless given


class P(NamedTuple):
    """One request point of a case and the values it must give."""

    user: int
    shop: str
    at: str
    expect: dict


@dataclass
class Case:
    """labels: (txid, is_fraud, offset); not_on: engine -> reason it cannot run the case;
    exact: values compared with == (sums of hundredths are exact on every engine)."""

    name: str
    aggregation: str
    tx: list[E]
    points: list[P]
    labels: list[tuple] = field(default_factory=list)
    not_on: dict[str, str] = field(default_factory=dict)
    exact: bool = False


# every feature of the repo on a window with no event (and no previous event in 7 days)
EMPTY = {
    "u_share_of_shop_1h": None, "u_spread_1d": None,
    "u_count_1h": 0, "u_count_1d": 0, "u_sum_10m": 0.0, "u_sum_1h": 0.0, "u_qty_1d": 0.0,
    "u_mean_1d": None, "u_mean_7d": None, "u_min_1d": None, "u_max_1d": None,
    "u_std_1d": None, "u_shops_1d": 0, "u_last_1d": None, "u_first_seen_7d": None,
    "u_fraud_rate_1d": 0.0,
    "u_count_1d_lag2d": 0, "u_sum_1d_lag2d": 0.0, "u_mean_1d_lag2d": None,
    "u_min_1d_lag2d": None, "u_max_1d_lag2d": None, "u_std_1d_lag2d": None,
    "u_shops_1d_lag2d": 0, "u_last_1d_lag2d": None, "u_first_seen_1d_lag2d": None,
    "u_fraud_rate_1d_lag2d": 0.0,
    "s_count_1h": 0, "s_kinds_1d": 0, "s_max_1h": None,
    "s_count_1d_lag7d": 0, "s_fraud_rate_1d_lag7d": 0.0,
    "p_count_7d": 0, "p_sum_7d": 0.0, "p_first_seen_7d": None, "p_last_7d": None,
    "p_fraud_rate_7d": 0.0, "p_count_1d_lag1d": 0, "p_fraud_rate_1d_lag1d": 0.0,
    "u_gap_s": None, "p_gap_s": None, "u_geo_last_1d": None, "u_late_share_1d": None,
}

# a user paying every 30 s for 16 h 40 m, across 7 shops (s1 gets every 7th payment)
HOT = [E(i, f"{30 * i}s", 1, f"s{1 + i % 7}", 1.25) for i in range(1, 2001)]

CASES = [
    Case("last of an optional column", "last (optional)",
         [E(1, "1h", 1, "a", geo=5.0), E(2, "2h", 1, "a"),
          E(3, "5h", 1, "a"), E(4, "5h", 1, "b", geo=-2.5), E(5, "8h", 1, "a", geo=0.0)],
         [P(1, "a", "2h", {"u_geo_last_1d": 5.0}),  # strictly before t: the 1h event's
          P(1, "a", "3h", {"u_geo_last_1d": None}),  # the latest event has none: null
          P(1, "a", "6h", {"u_geo_last_1d": -2.5}),  # of one second's, a value beats a null
          P(1, "a", "9h", {"u_geo_last_1d": 0.0})]),  # a zero is a value
    Case("a column the view's udf derives from the event's time", "mean (derived)",
         [E(1, "17h 59m 59s", 1, "a"), E(2, "18h", 1, "a"), E(3, "23h", 1, "a")],
         [P(1, "a", "17h 59m 59s", {"u_late_share_1d": 0.0}),
          P(1, "a", "18h", {"u_late_share_1d": 0.5}),
          P(1, "a", "23h", {"u_late_share_1d": 2 / 3}),
          P(1, "a", "1d 18h 30m", {"u_late_share_1d": 1.0})]),
    Case("ties at t are inside", "count, count_distinct",
         [E(1, "10h", 1, "a"), E(2, "12h", 1, "b"), E(3, "12h", 1, "a")],
         [P(1, "a", "12h", {"u_count_1d": 3, "u_count_1h": 2, "s_count_1h": 1,
                            "p_count_7d": 2, "u_shops_1d": 2})]),
    Case("the window is open at t - W", "count, mean",
         [E(1, "10h", 1, "a", 10.0), E(2, "1d 9h", 1, "a", 20.0)],
         [P(1, "a", "1d 10h", {"u_count_1d": 1, "u_mean_1d": 20.0}),
          P(1, "a", "1d 9h 59m 59s", {"u_count_1d": 2, "u_mean_1d": 15.0})]),
    Case("empty windows", "every aggregation",
         [E(1, "0s", 1, "a", 10.0)],
         [P(1, "a", "9d", EMPTY),  # its only event is older than every window
          P(9, "z", "2d", EMPTY)]),  # never seen
    Case("sums are exact to the cent", "sum, mean", exact=True,
         tx=[E(1, "1h", 1, "a", 0.1, qty=2), E(2, "1h 1m", 1, "a", 0.2, qty=3)]
         + [E(3 + k, f"2h {k}s", 1, "a", 0.1) for k in range(10)],
         points=[P(1, "a", "1h 2m", {"u_sum_10m": 0.3, "u_sum_1h": 0.3, "u_qty_1d": 5.0,
                                     "u_mean_1d": 0.15, "p_sum_7d": 0.3}),
                 P(1, "a", "2h 1m", {"u_sum_10m": 1.0, "u_sum_1h": 1.0, "u_qty_1d": 15.0})]),
    Case("mean over the window only", "mean",
         [E(1, "0s", 1, "a", 100.0), E(2, "1d 1h", 1, "a", 10.0), E(3, "1d 2h", 1, "a", 20.0)],
         [P(1, "a", "1d 3h", {"u_mean_1d": 15.0, "u_mean_7d": 130 / 3, "u_count_1d": 2})]),
    Case("min and max over the window (a zero is a value)", "min, max, request",
         [E(1, "1h", 1, "a", 5.0), E(2, "2h", 1, "a", 50.0), E(3, "3h", 1, "a", 0.0),
          E(4, "1d 2h 30m", 1, "a", 7.0)],
         [P(1, "a", "3h", {"u_min_1d": 0.0, "u_max_1d": 50.0, "s_max_1h": 0.0,
                           "u_spread_1d": 50.0}),
          P(1, "a", "1d 2h 30m", {"u_min_1d": 0.0, "u_max_1d": 7.0, "s_max_1h": 7.0,
                                  "u_spread_1d": 7.0}),
          P(1, "a", "1d 3h", {"u_min_1d": 7.0, "u_max_1d": 7.0, "u_spread_1d": 0.0})]),
    Case("standard deviation is the sample one", "std",
         [E(1, "1h", 1, "a", 10.0), E(2, "2h", 1, "a", 20.0), E(3, "3h", 1, "a", 30.0),
          E(4, "1h", 2, "a", 0.01), E(5, "2h", 2, "a", 0.02),
          E(6, "1h", 3, "a", 5.0), E(7, "1h", 3, "a", 5.0)],
         [P(1, "a", "1h", {"u_std_1d": None}),  # one event: no sample deviation
          P(1, "a", "2h", {"u_std_1d": 50 ** 0.5}),
          P(1, "a", "3h", {"u_std_1d": 10.0}),
          P(2, "a", "2h", {"u_std_1d": 0.5 ** 0.5 / 100}),
          P(3, "a", "1h", {"u_std_1d": 0.0})]),  # equal values: zero, never a NaN
    Case("distinct values counted once", "count_distinct",
         [E(1, "1h", 1, "a", kind="web"), E(2, "2h", 1, "b", kind="pos"),
          E(3, "3h", 1, "a", kind="pos"), E(4, "4h", 1, "c", kind="web"),
          E(5, "4h", 2, "a", kind="app")],
         [P(1, "a", "4h", {"u_shops_1d": 3, "s_kinds_1d": 3}),
          P(1, "a", "1d 2h 30m", {"u_shops_1d": 2, "s_kinds_1d": 2}),
          P(1, "a", "1d 3h 30m", {"u_shops_1d": 1, "s_kinds_1d": 1})]),
    Case("last: the latest event strictly before t (of one second's, the largest)", "last",
         [E(1, "1h", 1, "a", 10.0), E(2, "2h", 1, "a", 30.0), E(3, "2h", 1, "a", 20.0),
          E(4, "3h", 1, "a", 40.0)],
         [P(1, "a", "1h", {"u_last_1d": None, "p_last_7d": None}),
          P(1, "a", "2h", {"u_last_1d": 10.0, "p_last_7d": 10.0}),
          P(1, "a", "3h", {"u_last_1d": 30.0, "p_last_7d": 30.0}),
          P(1, "a", "3h 1s", {"u_last_1d": 40.0}),
          P(1, "a", "1d 2h 59m 59s", {"u_last_1d": 40.0}),
          P(1, "a", "1d 3h", {"u_last_1d": None})]),  # open at t - W
    # more events in one second than the online read's first lookup holds (online/scripts.py
    # RECENT): the second's records are fetched whole, so its largest value is found
    Case("last: one second's many events, past the newest records read at once", "last",
         [E(1, "1h", 1, "a", 70.0), *[E(k, "1h", 1, "a", 10.0 * k) for k in range(2, 7)],
          E(7, "2h", 1, "a", 5.0)],
         [P(1, "a", "1h 30m", {"u_last_1d": 70.0}),
          P(1, "a", "2h", {"u_last_1d": 70.0}),
          P(1, "a", "2h 1s", {"u_last_1d": 5.0})]),
    Case("first seen: seconds since the first event in the window", "first_seen",
         [E(1, "1h", 1, "a"), E(2, "5h", 1, "a")],
         [P(1, "a", "30m", {"u_first_seen_7d": None, "p_first_seen_7d": None}),
          P(1, "a", "1h", {"u_first_seen_7d": 0.0, "p_first_seen_7d": 0.0}),
          P(1, "a", "5h", {"u_first_seen_7d": 14400.0}),
          # at the retention edge: the 1h event is in (t - 7d, t] one second before it
          # leaves, and then the first seen is the 5h one
          P(1, "a", "7d 59m 59s", {"u_first_seen_7d": 604799.0, "p_first_seen_7d": 604799.0}),
          P(1, "a", "7d 1h", {"u_first_seen_7d": 590400.0, "p_first_seen_7d": 590400.0}),
          P(1, "a", "7d 2h", {"u_first_seen_7d": 594000.0, "p_first_seen_7d": 594000.0})]),
    Case("the previous event is strictly before t", "seconds_since_previous",
         [E(1, "1h", 1, "a"), E(2, "3h", 1, "a"), E(3, "3h", 1, "b")],
         [P(1, "a", "1h", {"u_gap_s": None}),
          P(1, "a", "3h", {"u_gap_s": 7200.0, "p_gap_s": 7200.0}),
          P(1, "b", "3h", {"u_gap_s": 7200.0, "p_gap_s": None}),
          P(1, "b", "3h 1s", {"u_gap_s": 1.0, "p_gap_s": 1.0}),
          P(1, "a", "7d 2h 59m 59s", {"u_gap_s": 604799.0}),
          P(1, "a", "7d 3h", {"u_gap_s": None})]),  # a gap of the whole horizon: none
    Case("a delayed window ends D before t", "every aggregation with a delay",
         [E(1, "0s", 1, "a", 10.0), E(2, "1d", 1, "b", 20.0), E(3, "1d", 1, "b", 30.0),
          E(4, "1d 12h", 1, "a", 40.0)],
         [P(1, "a", "1d 23h 59m 59s", {"u_count_1d_lag2d": 0, "u_first_seen_1d_lag2d": None,
                                       "u_last_1d_lag2d": None, "u_min_1d_lag2d": None}),
          P(1, "a", "2d", {"u_count_1d_lag2d": 1, "u_sum_1d_lag2d": 10.0,
                           "u_mean_1d_lag2d": 10.0, "u_min_1d_lag2d": 10.0,
                           "u_max_1d_lag2d": 10.0, "u_std_1d_lag2d": None,
                           "u_shops_1d_lag2d": 1, "u_last_1d_lag2d": None,
                           "u_first_seen_1d_lag2d": 172800.0, "u_count_1d": 1}),
          P(1, "a", "3d", {"u_count_1d_lag2d": 2, "u_first_seen_1d_lag2d": 172800.0,
                           "u_max_1d_lag2d": 30.0, "u_last_1d_lag2d": None}),
          P(1, "a", "3d 12h", {"u_count_1d_lag2d": 3, "u_sum_1d_lag2d": 90.0,
                               "u_mean_1d_lag2d": 30.0, "u_min_1d_lag2d": 20.0,
                               "u_max_1d_lag2d": 40.0, "u_std_1d_lag2d": 10.0,
                               "u_shops_1d_lag2d": 2, "u_last_1d_lag2d": 30.0,
                               "u_first_seen_1d_lag2d": 216000.0, "u_count_1d": 0}),
          P(1, "a", "3d 12h 1s", {"u_count_1d_lag2d": 3, "u_last_1d_lag2d": 40.0})]),
    Case("a 7-day delay on a text-keyed shop, a 1-day one on a pair", "count with a delay",
         [E(1, "0s", 1, "a"), E(2, "6d", 2, "a")],
         [P(3, "a", "7d 1h", {"s_count_1d_lag7d": 1, "s_count_1h": 0}),
          P(3, "a", "8d", {"s_count_1d_lag7d": 0}),
          P(3, "a", "13d", {"s_count_1d_lag7d": 1}),
          P(2, "a", "6d 12h", {"p_count_1d_lag1d": 0}),
          P(2, "a", "7d", {"p_count_1d_lag1d": 1})]),
    Case("a label counts once known", "fraud_rate with a delay",
         [E(1, "0s", 1, "a"), E(2, "1h", 2, "a")],
         [P(3, "a", "7d 4h", {"s_fraud_rate_1d_lag7d": 0.5, "s_count_1d_lag7d": 2})],
         labels=[(1, 1, "7d 3h")]),
    Case("a label does not count before its timestamp", "fraud_rate with a delay",
         [E(1, "0s", 1, "a"), E(2, "1h", 2, "a")],
         [P(3, "a", "7d 2h", {"s_fraud_rate_1d_lag7d": 0.0})],
         labels=[(1, 1, "7d 3h")]),
    Case("a revised label replaces the earlier one", "fraud_rate with a delay",
         [E(1, "0s", 1, "a")],
         [P(2, "a", "7d 3h", {"s_fraud_rate_1d_lag7d": 0.0})],
         labels=[(1, 1, "10m"), (1, 0, "7d 2h")]),
    Case("before its revision, the earlier label holds", "fraud_rate with a delay",
         [E(1, "0s", 1, "a")],
         [P(2, "a", "7d 1h", {"s_fraud_rate_1d_lag7d": 1.0})],
         labels=[(1, 1, "10m"), (1, 0, "7d 2h")]),
    Case("a fraud rate without a delay counts the labels known at t", "fraud_rate",
         [E(1, "1h", 1, "a"), E(2, "2h", 1, "a"), E(3, "3h", 1, "b")],
         [P(1, "a", "2h 30m", {"u_fraud_rate_1d": 0.5, "p_fraud_rate_7d": 0.5}),
          P(1, "b", "4h", {"u_fraud_rate_1d": 2 / 3, "p_fraud_rate_7d": 1.0})],
         labels=[(1, 1, "2h 30m"), (2, 0, "2h 30m"), (3, 1, "3h")]),
    Case("a delayed fraud rate on a user and on a pair", "fraud_rate with a delay",
         [E(1, "0s", 1, "a"), E(2, "1h", 1, "a")],
         [P(1, "a", "1d 2h", {"p_fraud_rate_1d_lag1d": 0.5, "p_count_1d_lag1d": 2}),
          P(1, "a", "2d 30m", {"u_fraud_rate_1d_lag2d": 1.0, "u_count_1d_lag2d": 1}),
          P(1, "a", "2d 2h", {"u_fraud_rate_1d_lag2d": 0.5, "u_count_1d_lag2d": 2})],
         labels=[(1, 1, "1d")]),
    Case("a hot user: 2,000 payments in 17 hours", "count, sum, std, count_distinct, last",
         HOT,
         [P(1, "s1", "16h 40m", {
             "u_count_1d": 2000, "u_count_1h": 120, "u_sum_1h": 150.0, "u_qty_1d": 2000.0,
             "u_mean_1d": 1.25, "u_shops_1d": 7, "u_std_1d": 0.0, "u_max_1d": 1.25,
             "u_last_1d": 1.25, "u_first_seen_7d": 59970.0, "u_gap_s": 30.0,
             "s_count_1h": 17, "p_count_7d": 285, "p_sum_7d": 356.25,
             "u_share_of_shop_1h": 120 / 17})]),
    Case("text ids: '007' and '7' are two shops; 007 and 7 are one user", "int and text ids",
         [E(1, "0s", "007", "007", 5.0), E(2, "10m", 7, "7", 6.0),
          E(3, "20m", "0007", "007", 7.0)],
         [P(7, "007", "30m", {"u_count_1d": 3, "u_shops_1d": 2, "s_count_1h": 2,
                              "s_max_1h": 7.0, "p_count_7d": 2, "p_sum_7d": 12.0}),
          P(7, "7", "30m", {"s_count_1h": 1, "s_max_1h": 6.0, "p_count_7d": 1,
                            "p_last_7d": 6.0}),
          P(7, "7", "7d 1h", {"s_fraud_rate_1d_lag7d": 1.0, "s_count_1d_lag7d": 1}),
          P(7, "007", "7d 1h", {"s_fraud_rate_1d_lag7d": 0.0, "s_count_1d_lag7d": 2})],
         labels=[(2, 1, "25m")]),
    Case("a composite key aggregates the pair's own events", "composite key",
         [E(1, "1h", 1, "a", 10.0), E(2, "2h", 1, "b", 20.0), E(3, "3h", 1, "a", 30.0),
          E(4, "2h 30m", 2, "a", 40.0)],
         [P(1, "a", "4h", {"p_count_7d": 2, "p_sum_7d": 40.0, "p_first_seen_7d": 10800.0,
                           "p_last_7d": 30.0, "p_gap_s": 3600.0, "u_count_1d": 3,
                           "s_count_1h": 0}),
          P(2, "a", "4h", {"p_count_7d": 1, "p_sum_7d": 40.0, "p_first_seen_7d": 5400.0,
                           "p_last_7d": 40.0, "p_gap_s": 5400.0, "u_count_1d": 1}),
          P(1, "b", "4h", {"p_count_7d": 1, "p_sum_7d": 20.0, "p_last_7d": 20.0,
                           "p_gap_s": 7200.0}),
          P(2, "b", "4h", {"p_count_7d": 0, "p_sum_7d": 0.0, "p_first_seen_7d": None,
                           "p_last_7d": None, "p_gap_s": None, "p_fraud_rate_7d": 0.0}),
          P(1, "a", "1d 6h", {"p_count_1d_lag1d": 2, "p_fraud_rate_1d_lag1d": 0.5,
                              "p_fraud_rate_7d": 0.5}),
          P(2, "a", "1d 6h", {"p_count_1d_lag1d": 1, "p_fraud_rate_1d_lag1d": 0.0})],
         labels=[(1, 1, "3h 30m")]),
]


# ---- the world: every case's events under ids of its own --------------------------------

def _user(i: int, user: object) -> object:
    """Case i's users are 1000 (i + 1) + u; a user written as digits keeps its text (leading
    zeros and all), so the engines read "007" as the user 7 of that case."""
    offset = 1000 * (i + 1)
    if isinstance(user, str):
        zeros = len(user) - len(user.lstrip("0"))
        return "0" * zeros + str(int(user) + offset)
    return int(user) + offset


def _shop(i: int, shop: str) -> str:
    return f"c{i}-{shop}"


def _txid(i: int, txid: object) -> str:
    return f"c{i}-{txid}"


def _iso(offset: str) -> str:
    return (T0 + pd.Timedelta(offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def world() -> dict:
    """The events, labels and points of every case, as the raw rows a team would load
    (JSON-ready); owner[j] is the index of point j's case."""
    tx, labels, points, owner = [], [], [], []
    for i, case in enumerate(CASES):
        if len(case.not_on) == len(ENGINES):
            continue
        tx += [{"transaction_id": _txid(i, e.txid), "user_id": _user(i, e.user),
                "shop_id": _shop(i, e.shop), "event_timestamp": _iso(e.at), "value": e.value,
                "qty": e.qty, "kind": e.kind, "geo": e.geo} for e in case.tx]
        labels += [{"transaction_id": _txid(i, txid), "is_fraud": fraud,
                    "label_timestamp": _iso(at)} for txid, fraud, at in case.labels]
        for p in case.points:
            points.append({"user_id": _user(i, p.user), "shop_id": _shop(i, p.shop),
                           "event_timestamp": _iso(p.at)})
            owner.append(i)
    return {"tx": tx, "labels": labels, "points": points, "owner": owner}


# ---- the engines, in a process that loads the parity repo --------------------------------

def _rows(frame: pd.DataFrame, names: list[str]) -> list[list]:
    """A feature frame as JSON-ready rows (NaN and <NA> are null)."""
    out = []
    for values in frame[names].itertuples(index=False):
        row = []
        for v in values:
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                row.append(None)
            else:
                row.append(v.item() if hasattr(v, "item") else v)
        out.append(row)
    return out


def _frames(doc: dict):
    """(transactions, labels, points) normalized as every path normalizes them."""
    from ffs.config import load_config
    from ffs.transformations import ids, schema

    cfg = load_config()
    types = ids.types(cfg)
    tx_norm = schema.normalize_transactions(pd.DataFrame(doc["tx"]), types)
    lab_norm = schema.normalize_labels(pd.DataFrame(doc["labels"]), tx_norm.rows, types)
    assert not tx_norm.n_rejected and not lab_norm.n_rejected, (
        tx_norm.reject_summary(), lab_norm.reject_summary())
    points = pd.DataFrame(doc["points"])
    points["user_id"] = points["user_id"].astype("int64")
    points["event_timestamp"] = pd.to_datetime(points["event_timestamp"], utc=True)
    return cfg, tx_norm.rows, lab_norm.rows, points


def _online(conn, cfg, prefix: str, points: pd.DataFrame) -> pd.DataFrame:
    from ffs.online.client import OnlineClient
    from ffs.transformations import ids

    client = OnlineClient(conn, prefix=prefix, max_batch=10_000, id_types=ids.types(cfg))
    rows = [{"user_id": r.user_id, "shop_id": r.shop_id,
             "event_timestamp": int(r.event_timestamp.timestamp())} for r in points.itertuples()]
    res = client.get_features(rows)
    assert res.error is None, res.error
    # a few rows are assembled another way (online/client.py SMALL_BATCH): one at a time too
    for i, row in enumerate(rows):
        one = client.get_features([row])
        differ = [n for n in res.feature_names
                  if not _same(one.values[n][0], res.values[n][i])]
        assert not differ, f"point {i} read alone differs from its batch on {differ}"
    return pd.DataFrame({n: res.values[n] for n in res.feature_names})


def _same(a, b) -> bool:
    """Equal, of one type (an int is not a float in a response), NaN equal to NaN."""
    if a is None or b is None:
        return a is None and b is None
    return type(a) is type(b) and (a == b or (a != a and b != b))


def _stream(conn, cfg, prefix: str, doc: dict) -> None:
    """Every raw event as a message on one partition per topic, in time order (a replay)."""
    import dataclasses

    from ffs.bus import messages as M
    from ffs.jobs.stream.batch import BatchProcessor

    scfg = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, prefix=prefix),
                               stream=dataclasses.replace(cfg.stream, enrich=False,
                                                          allowed_lateness_s=30 * 86400))
    events = [(pd.Timestamp(e["event_timestamp"]), 0, scfg.kafka.transactions_topic,
               M.transaction_message(e)) for e in doc["tx"]]
    events += [(pd.Timestamp(lb["label_timestamp"]), 1, scfg.kafka.labels_topic,
                M.label_message(lb)) for lb in doc["labels"]]
    events.sort(key=lambda e: (e[0], e[1]))
    rows: dict[str, list] = {c: [] for c in ("topic", "partition", "offset", "key", "value",
                                             "timestamp_ms")}
    offsets: dict[str, int] = {}
    for _t, _kind, topic, value in events:
        rows["topic"].append(topic)
        rows["partition"].append(0)
        rows["offset"].append(offsets.setdefault(topic, 0))
        offsets[topic] += 1
        rows["key"].append(None)
        rows["value"].append(value)
        rows["timestamp_ms"].append(0)
    dead: list[bytes] = []
    proc = BatchProcessor(scfg, conn, lambda topic, key, value: dead.append(value), lambda: None)
    rep = proc.process(0, rows)
    assert rep.n_dead == 0, [json.loads(d)["reason"] for d in dead]


def run_engines(doc: dict, engines: list[str]) -> dict:
    """{engine: {"features": names, "rows": [...]} or {"error": text}}: an engine that fails
    fails its own tests, not the others'."""
    import traceback

    from ffs.transformations.features import (
        RECENCY_FEATURES,
        REQUEST_FEATURES,
        WINDOW_FEATURES,
        feature_names,
    )

    names = feature_names()
    out: dict = {"declared": {f.name: [f.agg.value, f.delay_s, f.entity.name]
                              for f in WINDOW_FEATURES},
                 "request": [f.name for f in REQUEST_FEATURES]}
    out["declared"].update({r.name: ["seconds_since_previous", 0, r.entity.name]
                            for r in RECENCY_FEATURES})

    try:
        cfg, tx, labels, points = _frames(doc)
    except Exception:  # every engine reads these frames: each reports it
        why = "loading the world failed:\n" + traceback.format_exc()[-3000:]
        out.update({engine: {"error": why} for engine in engines})
        return out

    def record(engine: str, compute) -> None:
        try:
            frame = compute().reset_index(drop=True)
            out[engine] = {"features": names, "rows": _rows(frame, names)}
        except Exception:  # reported per engine by the tests
            out[engine] = {"error": traceback.format_exc()[-3000:]}

    if "reference" in engines:
        from tests.reference import reference_features

        record("reference", lambda: reference_features(tx, labels, points))
    if "numpy" in engines:
        from ffs.jobs.batch.features_job import compute

        record("numpy", lambda: compute(cfg, tx, labels, points, "local", log=lambda _: None))
    if "spark" in engines:
        from ffs.config import SparkConfig
        from ffs.jobs.batch.features_job import compute
        from ffs.jobs.batch.spark import spark_session

        def spark():
            session = spark_session(SparkConfig(shuffle_partitions=4, buckets=3,
                                                driver_memory="2g"))
            try:
                return compute(cfg, tx, labels, points, "spark", log=lambda _: None,
                               spark=session)
            finally:
                session.stop()

        record("spark", spark)
    if {"online", "stream"} & set(engines):
        import redis

        from ffs.online.loader import load_state
        from ffs.online.redis_server import RedisServer

        with RedisServer() as server:
            conn = redis.Redis.from_url(server.url)

            def online():
                load_state(conn, tx, labels, prefix="load")
                return _online(conn, cfg, "load", points)

            def stream():
                _stream(conn, cfg, "stream", doc)
                return _online(conn, cfg, "stream", points)

            if "online" in engines:
                record("online", online)
            if "stream" in engines:
                record("stream", stream)
            conn.close()
    return out


if __name__ == "__main__":  # python -m tests.integration.test_parity WORLD OUT ENGINES
    _doc = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(run_engines(_doc, sys.argv[3].split(","))))
    sys.exit(0)


# ---- the tests --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parity_env(tmp_path_factory):
    """A copy of the parity repo (its compiled cache stays out of the tree) and the world."""
    work = tmp_path_factory.mktemp("parity")
    repo = work / "parity_repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(".ffs", "__pycache__"))
    (work / "world.json").write_text(json.dumps(world()))
    env = {**os.environ, "FFS_FEATURES_REPO": str(repo), "FFS_IDS_TRANSACTION_ID": "string",
           "FFS_OFFLINE_PATH": str(work / "offline"), "FFS_VALIDATION_ENABLED": "false"}
    return work, env


def _run(parity_env, engines: tuple[str, ...]) -> dict:
    work, env = parity_env
    out = work / f"{'-'.join(engines)}.json"
    run = subprocess.run([sys.executable, "-m", "tests.integration.test_parity",
                          str(work / "world.json"), str(out), ",".join(engines)],
                         env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def results(parity_env):
    """Every engine but Spark, in one process: one compile, one Redis load, one stream pass."""
    return _run(parity_env, ("reference", "numpy", "online", "stream"))


@pytest.fixture(scope="module")
def spark_results(parity_env):
    return _run(parity_env, ("spark",))


@pytest.fixture(scope="module")
def owner():
    return world()["owner"]


def _frame(engine: str, request) -> pd.DataFrame:
    got = request.getfixturevalue("spark_results" if engine == "spark" else "results")[engine]
    if "error" in got:
        pytest.fail(f"{engine} failed:\n{got['error']}")
    return pd.DataFrame(got["rows"], columns=got["features"], dtype=object)


def _null(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _same(got, want, exact: bool = False) -> bool:
    if _null(want) or _null(got):
        return _null(want) and _null(got)
    if exact:
        return float(got) == float(want)
    return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-9)


ENGINE_PARAMS = [pytest.param(e, marks=pytest.mark.spark) if e == "spark" else e
                 for e in ENGINES]


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_case_gives_its_written_values_on_every_engine(case, engine, owner, request):
    if engine in case.not_on:
        pytest.skip(f"{engine}: {case.not_on[engine]}")
    frame = _frame(engine, request)
    rows = [j for j, i in enumerate(owner) if i == CASES.index(case)]
    assert len(rows) == len(case.points), case.name
    wrong = []
    for j, point in zip(rows, case.points, strict=True):
        for name, want in point.expect.items():
            assert name in frame.columns, (name, "is not a feature of the parity repo")
            got = frame.at[j, name]
            if not _same(got, want, case.exact):
                wrong.append((point.user, point.shop, point.at, name, got, want))
    assert wrong == [], f"{case.name} on {engine}: (user, shop, at, feature, got, want) {wrong}"


@pytest.mark.parametrize("engine", [e for e in ENGINE_PARAMS if e != "reference"])
def test_every_engine_equals_the_reference_on_every_feature(engine, owner, request):
    ref = _frame("reference", request)
    frame = _frame(engine, request)
    assert list(frame.columns) == list(ref.columns)
    runs = [j for j, i in enumerate(owner) if engine not in CASES[i].not_on]
    bad = [(CASES[owner[j]].name, n, frame.at[j, n], ref.at[j, n]) for j in runs
           for n in ref.columns if not _same(frame.at[j, n], ref.at[j, n])]
    assert bad == [], bad[:8]
    assert len(runs) > 50


def test_the_cases_cover_every_aggregation_with_and_without_a_delay(results):
    """The table's coverage, read from the repo as the runner compiled it: every feature has a
    written value in some case besides the empty windows, and every function is checked with
    no delay and with one (seconds_since_previous has none), on each kind of entity."""
    declared = results["declared"]  # feature -> [function, delay in seconds, entity]
    assert set(EMPTY) == set(declared) | set(results["request"])
    checked = {name for c in CASES if c.points[0].expect is not EMPTY
               for p in c.points for name in p.expect}
    assert sorted(set(EMPTY) - checked) == []
    covered = {(fn, delay > 0) for name, (fn, delay, _e) in declared.items() if name in checked}
    functions = {fn for fn, _d, _e in declared.values()}
    want = {(fn, lagged) for fn in functions for lagged in (False, True)
            if not (fn == "seconds_since_previous" and lagged)}
    assert covered == want
    assert {e for _f, _d, e in declared.values()} == {"user", "shop", "user+shop"}
    assert len(functions) == 11
