"""`ffs evaluate`'s protocol and plumbing without models: the time split with its delay and
known-compromised cards, the periods chosen, feature sets read from specs, the label read,
the message when the optional extra is missing, and the extra's pin."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffs.errors import InputError, MissingDependency
from ffs.evaluation import feature_sets, split
from ffs.evaluation.run import _target
from ffs.transformations.timestamps import DAY

ROOT = Path(__file__).resolve().parents[2]
D0 = 20_000  # a UTC day number (2024-10-04)


def _labels(rows: list[tuple], seconds: np.ndarray | None = None) -> pd.DataFrame:
    """(transaction_id, is_fraud, label day (fractional), card[, transaction day
    (fractional)]); without the transaction day, the transaction's own time from `seconds`
    (indexed by transaction_id), else the label's."""
    def tx_s(r: tuple) -> int:
        if len(r) > 4:
            return int(r[4] * DAY)
        return int(seconds[r[0]]) if seconds is not None else int(r[2] * DAY)

    return pd.DataFrame({"transaction_id": [r[0] for r in rows],
                         "is_fraud": [r[1] for r in rows],
                         "label_s": [int(r[2] * DAY) for r in rows],
                         "card": [r[3] for r in rows],
                         "tx_s": [tx_s(r) for r in rows]})


def test_split_trains_skips_the_delay_and_tests_on_the_next_days():
    protocol = split.Protocol(D0, train_days=3, delay_days=2, test_days=2)
    days = np.arange(D0 - 1, D0 + 9)  # one transaction per day, from the day before training
    seconds = days * DAY + 3600
    sp = split.split(seconds, np.array(["x"] * len(days)), _labels([]), protocol)
    assert list(days[sp.train]) == [D0, D0 + 1, D0 + 2]
    assert list(days[sp.test]) == [D0 + 5, D0 + 6]  # D0+3 and D0+4 skipped: the delay
    assert sp.removed == [0, 0]


def test_split_removes_cards_known_compromised_from_the_day_after_their_label_arrives():
    protocol = split.Protocol(D0, train_days=1, delay_days=1, test_days=3)
    # card a pays on each test day; its fraud (a training payment) is labelled on the
    # first test day at noon: known from the second test day on, not on the first
    # card b: labelled fraud before the test, then revised to genuine: never known
    # card c: fraud label arrives after the test: not known
    seconds = np.array([D0, D0 + 2, D0 + 3, D0 + 4, D0 + 2, D0 + 3, D0 + 4]) * DAY + 600
    cards = np.array(["a", "a", "a", "a", "b", "c", "c"])
    labels = _labels([(0, 1, D0 + 2.5, "a"), (4, 1, D0 + 1.2, "b"), (4, 0, D0 + 1.5, "b"),
                      (5, 1, D0 + 9, "c")], seconds)
    sp = split.split(seconds, cards, labels, protocol)
    assert list(sp.train) == [0]
    assert list(sp.test) == [1, 4, 5, 6]  # rows 2 and 3: card a, known by then
    assert sp.removed == [0, 1, 1] and sp.known_cards == [0, 1, 1]


def test_known_compromised_cards_count_frauds_from_the_first_training_day_on():
    # the handbook's rule: a fraud before the training period does not make a card known
    protocol = split.Protocol(D0, train_days=2, delay_days=1, test_days=1)
    test_day = protocol.test_start  # D0 + 3
    # card early: its only fraud is the day before training, labelled long before the test
    # card trained: a fraud on the second training day, labelled before the test day starts
    # card transit: a training fraud whose label arrives during the test day
    # card edge: a fraud in the training period's first second, labelled just in time
    seconds = np.array([D0 - 1, D0 + 1, D0 + 1, D0, *[test_day] * 4]) * DAY + \
        np.array([600, 600, 600, 0, 7200, 7200, 7200, 7200])
    cards = np.array(["early", "trained", "transit", "edge",
                      "early", "trained", "transit", "edge"])
    labels = _labels([(0, 1, D0 - 0.5, "early"), (1, 1, test_day - 0.5, "trained"),
                      (2, 1, test_day + 0.01, "transit"), (3, 1, test_day - 1e-4, "edge")],
                     seconds)
    sp = split.split(seconds, cards, labels, protocol)
    assert list(sp.train) == [1, 2, 3]
    assert list(cards[sp.test]) == ["early", "transit"]
    assert sp.removed == [2] and sp.known_cards == [2]
    at = test_day * DAY
    assert split.known_compromised(labels, at, D0 * DAY) == {"trained", "edge"}
    assert split.known_compromised(labels, at) == {"early", "trained", "edge"}  # no bound


def test_known_compromised_counts_labels_from_their_own_time_only():
    labels = _labels([(1, 1, 10.0, "a"), (2, 0, 10.0, "b"), (3, 1, 12.0, "c")])
    assert split.known_compromised(labels, 10 * DAY) == set()  # strictly before
    assert split.known_compromised(labels, 10 * DAY + 1) == {"a"}
    assert split.known_compromised(labels, 13 * DAY) == {"a", "c"}
    # from the transaction's own time: a label of an earlier transaction does not count
    labels = _labels([(1, 1, 10.0, "a", 9.0), (2, 1, 10.0, "b", 8.0)])
    assert split.known_compromised(labels, 11 * DAY, 9 * DAY) == {"a"}


def test_default_periods_end_with_the_data_and_too_short_data_is_refused():
    p = split.choose(D0, D0 + 29)
    assert (p.train_start, p.test_end) == (D0 + 9, D0 + 30)
    p = split.choose(D0, D0 + 29, split.day_text(D0 + 2), 5, 3, 4)
    assert (p.train_end, p.test_start, p.test_end) == (D0 + 7, D0 + 10, D0 + 14)
    with pytest.raises(InputError, match=r"cover .* \(20 days\).*need"):
        split.choose(D0, D0 + 19)
    with pytest.raises(InputError, match="earlier --train-start"):
        split.choose(D0, D0 + 29, split.day_text(D0 - 1))
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        split.choose(D0, D0 + 29, "01/02/2026")
    with pytest.raises(InputError, match="delay days >= 0"):
        split.choose(D0, D0 + 29, None, 0)


FEATURES = ["f1", "f2", "f3", "f4"]
SERVICES = {"svc": ["f2", "f1"], "more": ["f2", "f1", "f4"]}


def test_feature_sets_from_services_features_and_removals():
    def resolve(spec):
        return feature_sets.resolve(spec, FEATURES, lambda: SERVICES).features

    assert resolve("svc") == ("f2", "f1")  # the service's order
    assert resolve("more,-f1") == ("f2", "f4")
    assert resolve("f3, svc,f2") == ("f3", "f2", "f1")  # each feature once
    assert resolve("more,-svc") == ("f4",)

    def no_repo():
        raise AssertionError("features alone must not read the repo's services")

    assert feature_sets.resolve("f4,f1", FEATURES, no_repo).features == ("f4", "f1")
    with pytest.raises(InputError, match=r"'nope' is neither a feature service.*\['more', 'svc'\]"):
        resolve("svc,nope")
    with pytest.raises(InputError, match="leaves no feature"):
        resolve("svc,-svc")
    with pytest.raises(InputError, match="engine computes no feature"):
        feature_sets.resolve("x", FEATURES, lambda: {"x": ["gone"]})


def test_target_is_the_latest_label_or_a_column():
    tx = pd.DataFrame({"transaction_id": [1, 2, 3, 4], "truth": [1, 0, 1, 0]})
    t = pd.Timestamp("2026-01-01", tz="UTC")
    lab = pd.DataFrame({"transaction_id": [1, 2, 2, 3, 3],
                        "is_fraud": [1, 1, 0, 0, 1],
                        "label_timestamp": [t, t, t + pd.Timedelta(days=2),
                                            t + pd.Timedelta(days=3), t + pd.Timedelta(days=1)]})
    y, text = _target(tx, lab, None)
    # 2: fraud then revised genuine; 3: the later label (day 3) says genuine; 4: unlabelled
    assert list(y) == [1, 0, 0, 0] and "latest label" in text
    y, text = _target(tx, lab, "truth")
    assert list(y) == [1, 0, 1, 0] and "truth" in text
    with pytest.raises(InputError, match="expected 0 or 1"):
        _target(tx.assign(truth=[1, 2, 0, 0]), lab, "truth")
    with pytest.raises(InputError, match="not a column"):
        _target(tx, lab, "nope")


def test_missing_scikit_learn_names_the_extra_to_install(monkeypatch, capsys):
    from ffs.cli import main

    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` raises ImportError
    code = main(["evaluate", "--transactions", "never-read.parquet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "scikit-learn" in err and "pip install -e '.[evaluate]'" in err
    from ffs.evaluation.models import require

    with pytest.raises(MissingDependency):
        require()


def test_the_evaluate_extra_is_pinned_and_in_the_test_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert extras["evaluate"] and all("==" in r for r in extras["evaluate"])
    assert set(extras["evaluate"]) <= set(extras["test"]), \
        "CI installs the test extra: it must hold the evaluate extra's pins, the same"


def test_no_evaluation_module_names_a_feature_of_the_loaded_repo():
    from ffs.transformations.features import feature_names

    names = [n for n in feature_names() if n != "amount"]  # an event column too
    found = []
    for path in sorted((ROOT / "evaluation").rglob("*.py")):
        text = path.read_text()
        found += [(path.name, n) for n in names if re.search(rf"\b{n}\b", text)]
    assert found == []
