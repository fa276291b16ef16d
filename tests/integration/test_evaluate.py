"""`ffs evaluate` end to end on a small generated dataset: the real models (scikit-learn),
the same report twice for one seed, other metrics when a feature is removed, the report's
shape and the chart's numbers."""

from __future__ import annotations

import functools
import json

import pytest

from ffs.cli import main
from ffs.evaluation.feature_sets import repo_services
from ffs.evaluation.report import METRICS
from ffs.jobs.tools.generate import GenerateSpec, generate_to
from ffs.transformations.features import FEATURE_SERVICE

pytestmark = pytest.mark.slow
pytest.importorskip("sklearn", reason="the evaluate extra: pip install -e '.[evaluate]'")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    spec = GenerateSpec(customers=1500, terminals=3000, days=28, start="2026-03-01", seed=11)
    gen = generate_to(out / "input", spec)
    return out, gen.transactions_path, gen.labels_path


def _run(out, tx, labels, *extra: str) -> dict:
    # the generator's ground truth: its last weeks' frauds are mostly not labelled yet (a
    # chargeback takes up to 30 days), which would leave a test period of a dozen frauds
    code = main(["evaluate", "--transactions", str(tx), "--labels", str(labels),
                 "--label-column", "tx_fraud", "--out", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_evaluate_is_deterministic_and_sees_a_removed_feature(data, capsys):
    root, tx, labels = data
    cfg_less = f"{FEATURE_SERVICE},-{_first_feature()}"
    args = ("--features", FEATURE_SERVICE, "--compare", cfg_less, "--seed", "3")
    first = _run(root / "a" / "report.json", tx, labels, *args)
    printed = capsys.readouterr().out
    second = _run(root / "b" / "report.json", tx, labels, *args)
    # one seed, one input: the same files, byte for byte
    assert (root / "a" / "report.json").read_bytes() == (root / "b" / "report.json").read_bytes()
    assert (root / "a" / "report.html").read_bytes() == (root / "b" / "report.html").read_bytes()
    assert first == second

    # the report's shape
    assert set(first) == {"format", "seed", "label", "card", "top_k", "models", "data",
                          "protocol", "feature_sets", "results"}
    assert first["seed"] == 3 and first["top_k"] == 100 and first["models"] == ["lr", "trees"]
    assert first["label"] == "column tx_fraud of the transactions"
    p = first["protocol"]
    assert (p["train"]["start"], p["train"]["end"]) == ("2026-03-08", "2026-03-14")
    assert (p["test"]["start"], p["test"]["end"]) == ("2026-03-22", "2026-03-28")
    assert p["delay_days"] == 7 and len(p["test"]["days"]) == 7
    assert p["test"]["rows"] == sum(d["rows"] for d in p["test"]["days"])
    assert p["test"]["removed_known_compromised"] > 0  # the protocol did remove cards
    assert 0 < p["train"]["frauds"] < p["train"]["rows"]
    a, b = first["feature_sets"]
    assert (a["name"], a["spec"], b["name"], b["spec"]) == ("A", FEATURE_SERVICE, "B", cfg_less)
    assert b["features"] == [f for f in a["features"] if f != _first_feature()]
    assert [(r["feature_set"], r["model"]) for r in first["results"]] == [
        ("A", "lr"), ("A", "trees"), ("B", "lr"), ("B", "trees")]
    for r in first["results"]:
        for metric in METRICS:
            assert 0.0 <= r[metric] <= 1.0, (r, metric)
        assert len(r["card_precision_per_day"]) == 7
        # better than chance on this data, or the features are not reaching the model
        assert r["auc_roc"] > 0.6, r

    # a feature removed: other scores (for each model)
    by = {(r["feature_set"], r["model"]): r for r in first["results"]}
    for model in ("lr", "trees"):
        assert by[("A", model)]["auc_roc"] != by[("B", model)]["auc_roc"]
        assert by[("A", model)]["average_precision"] != by[("B", model)]["average_precision"]

    # the chart and the printed table carry the numbers
    chart = (root / "a" / "report.html").read_text()
    assert chart.startswith("<!doctype html>") and chart.count("<svg") == len(METRICS)
    for r in first["results"]:
        for metric in METRICS:
            assert f"{r[metric]:.4f}" in chart
            assert f"{r[metric]:.4f}" in printed
    assert FEATURE_SERVICE in chart and cfg_less in chart


def test_another_seed_or_model_list_changes_the_report(data):
    root, tx, labels = data
    base = ("--features", FEATURE_SERVICE, "--models", "trees")
    one = _run(root / "s1.json", tx, labels, *base, "--seed", "1")
    two = _run(root / "s2.json", tx, labels, *base, "--seed", "2")
    assert one["models"] == ["trees"] and len(one["results"]) == 1
    # the trees' early stopping holds out a random tenth: the seed picks it
    assert one["results"][0]["auc_roc"] != two["results"][0]["auc_roc"]


@functools.cache
def _first_feature() -> str:
    return repo_services(None)[FEATURE_SERVICE][0]
