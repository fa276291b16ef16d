"""Behavioural features: what they are worth, measured with `ffs evaluate`'s protocol.

    python -m benchmarks.evaluate [--seeds 1,2,3,4,5] [--customers 1500] [--terminals 3000]
                                  [--days 45] [--handbook] [--skip-generated]

1. Generated data, one `ffs generate` data set per seed (the demo's sizes by default): the
   handbook's 15 baseline features, `fraud_detection_v1` (baseline + velocity) and
   `fraud_detection_v2` (v1 + behavioural) side by side, per model (lr, trees) and measure
   (AUC ROC, average precision, card precision@100); mean, std, min and max over the seeds
   of each set and of the lifts v2 - v1 and v2 - baseline. The target is the generator's
   ground truth (`--label-column tx_fraud`); the labels file feeds the features (terminal
   risk) and the known-compromised cards. The model's seed is the data's, so the spread
   holds both.
2. `--handbook`: the handbook's transactions (`../shared/data/handbook`, read in place,
   never copied), the 15 baseline features, the handbook's periods (train from 2018-07-25,
   7 days; delay 7; test 7), the target its `TX_FRAUD` column, set beside the handbook's
   published test-set table (chapter 3.4, `HANDBOOK_PUBLISHED` below). Skipped, said so,
   when the data is absent.

Results go to benchmarks/results/evaluate-<date>.json; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks import workdir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
HANDBOOK = Path(os.environ.get(
    "FFS_HANDBOOK", ROOT.parent / "shared" / "data" / "handbook" / "transactions.parquet"))

# The handbook's chapter 3.4 features, by our names (README "Features").
BASELINE = ",".join([
    "amount", "tx_during_weekend", "tx_during_night",
    "customer_nb_tx_1d", "customer_nb_tx_7d", "customer_nb_tx_30d",
    "customer_avg_amount_1d", "customer_avg_amount_7d", "customer_avg_amount_30d",
    "terminal_nb_tx_1d_delay7d", "terminal_nb_tx_7d_delay7d", "terminal_nb_tx_30d_delay7d",
    "terminal_risk_1d_delay7d", "terminal_risk_7d_delay7d", "terminal_risk_30d_delay7d",
])
SETS = {"baseline": BASELINE, "v1": "fraud_detection_v1", "v2": "fraud_detection_v2"}
LIFTS = {"v2 - v1": ("v2", "v1"), "v2 - baseline": ("v2", "baseline"),
         "v1 - baseline": ("v1", "baseline")}
MEASURES = ("auc_roc", "average_precision", "card_precision_top_k")

# Fraud Detection Handbook, chapter 3.4 "Baseline fraud detection system", the test-set
# performance table (notebook Chapter_3_GettingStarted/BaselineModeling.ipynb, cell 41, in
# github.com/Fraud-Detection-Handbook/fraud-detection-handbook at 81cf7d17, 2022-09-08):
# train 2018-07-25..31 (67,240 transactions, 598 frauds), test 2018-08-08..14 (58,264, 385).
HANDBOOK_SOURCE = ("https://fraud-detection-handbook.github.io/fraud-detection-handbook/"
                   "Chapter_3_GettingStarted/BaselineModeling.html (notebook "
                   "Chapter_3_GettingStarted/BaselineModeling.ipynb, test-set table, "
                   "commit 81cf7d1714bb7b2f5b496407d9055d91dc68dc25)")
HANDBOOK_PUBLISHED = {
    "logistic regression": (0.871, 0.606, 0.291),
    "decision tree, depth 2": (0.763, 0.496, 0.241),
    "decision tree, unlimited depth": (0.788, 0.309, 0.243),
    "random forest": (0.867, 0.658, 0.287),
    "XGBoost": (0.862, 0.639, 0.273),
}
HANDBOOK_TRAIN_START = "2018-07-25"  # then 7 days train, 7 delay, 7 test (the defaults)


def _spread(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4), "n": len(values)}


def _by_set(report: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{set key: {model: {measure: value}}} of one `evaluate` report."""
    letters = {fs["name"]: key for fs, key in zip(report["feature_sets"], SETS, strict=True)}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in report["results"]:
        out.setdefault(letters[r["feature_set"]], {})[r["model"]] = {
            m: r[m] for m in MEASURES}
    return out


def generated(args, cfg, log) -> dict:
    from ffs.evaluation.run import Request, evaluate
    from ffs.jobs.tools.generate import GenerateSpec, generate_to

    runs = []
    work = Path(args.work or workdir.temporary("ffs-bench-evaluate-"))
    for seed in args.seeds:
        log(f"seed {seed}: generate {args.customers:,} customers, {args.terminals:,} "
            f"terminals, {args.days} days")
        step = time.perf_counter()
        spec = GenerateSpec(customers=args.customers, terminals=args.terminals,
                            days=args.days, start="2026-01-01", seed=seed)
        gen = generate_to(work / f"seed-{seed}", spec)
        gen_s = time.perf_counter() - step
        step = time.perf_counter()
        report = evaluate(cfg, Request(
            feature_sets=list(SETS.values()), transactions=gen.transactions_path,
            labels=gen.labels_path, label_column="tx_fraud", models=args.models, seed=seed,
            top_k=args.top_k), log)
        values = _by_set(report)
        cards = [d["fraud_cards"] for d in report["protocol"]["test"]["days"]]
        runs.append({
            "seed": seed, "generate_s": round(gen_s, 1),
            "evaluate_s": round(time.perf_counter() - step, 1),
            "transactions": gen.n_transactions, "frauds": gen.n_fraud,
            "fraud_by_scenario": {str(k): v for k, v in sorted(gen.fraud_by_scenario.items())},
            "train": report["protocol"]["train"],
            "test": {k: v for k, v in report["protocol"]["test"].items() if k != "days"},
            "test_fraud_cards_per_day": cards,
            # the most card precision@k could reach: each day's fraud cards over k
            "card_precision_ceiling": round(
                statistics.fmean(min(c, args.top_k) / args.top_k for c in cards), 4),
            "unused_empty_in_training": {fs["spec"]: fs["unused_empty_in_training"]
                                         for fs in report["feature_sets"]
                                         if fs["unused_empty_in_training"]},
            "results": values,
        })
        for model in args.models:
            log(f"  {model}: " + "; ".join(
                f"{m} " + " / ".join(f"{k} {values[k][model][m]:.3f}" for k in SETS)
                for m in MEASURES))
    summary: dict = {}
    for model in args.models:
        for m in MEASURES:
            row = {k: _spread([r["results"][k][model][m] for r in runs]) for k in SETS}
            for name, (a, b) in LIFTS.items():
                diffs = [r["results"][a][model][m] - r["results"][b][model][m] for r in runs]
                row[name] = {**_spread(diffs), "positive": sum(d > 0 for d in diffs)}
            summary.setdefault(model, {})[m] = row
    summary["card_precision_ceiling"] = _spread([r["card_precision_ceiling"] for r in runs])
    return {"sizes": {"customers": args.customers, "terminals": args.terminals,
                      "days": args.days, "start": "2026-01-01"},
            "seeds": args.seeds, "work": str(work), "runs": runs, "summary": summary}


def handbook(args, cfg, log) -> dict:
    from ffs.evaluation.run import Request, evaluate

    raw = pd.read_parquet(HANDBOOK, columns=["TRANSACTION_ID", "TX_DATETIME", "TX_FRAUD"])
    # The handbook's labels are TX_FRAUD on the transactions. As label events they say when
    # each label is known: `--label-delay-days` after the payment (7, the handbook's delay:
    # its test day d removes the cards with a fraud up to d - 8, and its terminal risk reads
    # (t - 7d - W, t - 7d], all known by then with this delay).
    labels = pd.DataFrame({
        "transaction_id": raw["TRANSACTION_ID"], "is_fraud": raw["TX_FRAUD"].astype("int64"),
        "label_timestamp": pd.to_datetime(raw["TX_DATETIME"], utc=True)
        + pd.Timedelta(days=args.label_delay_days)})
    del raw
    request = Request(feature_sets=[BASELINE], transactions=str(HANDBOOK), labels=labels,
                      label_column="TX_FRAUD", models=args.models, seed=0, top_k=args.top_k,
                      train_start=HANDBOOK_TRAIN_START, train_days=7, delay_days=7,
                      test_days=7)
    log("handbook data")
    step = time.perf_counter()
    report = evaluate(cfg, request, log)
    ours = {r["model"]: {m: r[m] for m in MEASURES} for r in report["results"]}
    for model, v in ours.items():
        log(f"  {model}: " + ", ".join(f"{m} {v[m]:.3f}" for m in MEASURES))
    return {"data": str(HANDBOOK), "label_delay_days": args.label_delay_days,
            "known_compromised": "`ffs evaluate`'s rule, the handbook's: the cards with a "
                                 "fraud from the first training day on whose label is "
                                 "known before the test day starts",
            "protocol": report["protocol"], "label": report["label"],
            "unused_empty_in_training": report["feature_sets"][0]["unused_empty_in_training"],
            "evaluate_s": round(time.perf_counter() - step, 1), "results": ours,
            "published": {"source": HANDBOOK_SOURCE,
                          "train": {"rows": 67_240, "frauds": 598},
                          "test": {"rows": 58_264, "frauds": 385},
                          "results": {k: dict(zip(MEASURES, v, strict=True))
                                      for k, v in HANDBOOK_PUBLISHED.items()}}}


def main(argv: list[str] | None = None) -> int:
    from ffs.config import load_config
    from ffs.evaluation import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated generator seeds")
    ap.add_argument("--customers", type=int, default=1500)
    ap.add_argument("--terminals", type=int, default=3000)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--models", default="lr,trees")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--handbook", action="store_true",
                    help=f"also the baseline on the handbook's data ({HANDBOOK}; FFS_HANDBOOK)")
    ap.add_argument("--label-delay-days", type=float, default=7.0,
                    help="handbook: when each TX_FRAUD label counts as known, after the payment")
    ap.add_argument("--skip-generated", action="store_true", help="only the handbook part")
    ap.add_argument("--work", default=None, help="scratch directory for the generated data "
                    "(default: a temp dir)")
    ap.add_argument("--out", default=None, help="default: results/evaluate-<date>.json")
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.models = models.parse(args.models)
    log = lambda line: print(line, flush=True)  # noqa: E731

    cfg = load_config(env={})
    started = time.perf_counter()
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
                 "python": platform.python_version(), "models": args.models,
                 "top_k": args.top_k, "feature_sets": SETS}
    try:
        import sklearn

        out["scikit_learn"] = sklearn.__version__
    except ImportError:
        pass  # evaluate() names the install command
    out["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    if not args.skip_generated:
        out["generated"] = generated(args, cfg, log)
    if args.handbook:
        if HANDBOOK.exists():
            out["handbook"] = handbook(args, cfg, log)
        else:
            log(f"handbook part skipped: data not found at {HANDBOOK} (set FFS_HANDBOOK)")
            out["handbook"] = {"skipped": f"not found: {HANDBOOK}"}
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["wall_s"] = round(time.perf_counter() - started, 1)
    path = Path(args.out) if args.out else RESULTS / f"evaluate-{dt.date.today()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    log(f"wrote {path} ({out['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(workdir.run(main))
