"""`evaluate(cfg, request)`: the whole run, for `ffs evaluate` and for notebooks.

Read the events once (the offline store's, or files), place the protocol's periods, compute
every feature at each train and test transaction's own timestamp with the training-set
engine (point-in-time correct: only events and labels known by then), then for each feature
set and model fit on the training period, score the test period and measure. The target is
each transaction's label as known at evaluation time (its latest label; unlabelled counts as
genuine), or a 0/1 column of the transactions (`label_column`: synthetic data's ground truth,
whose late frauds have no label yet).
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd

from ffs.config import Config
from ffs.errors import InputError
from ffs.evaluation import feature_sets, metrics, models, split
from ffs.evaluation.report import FORMAT
from ffs.transformations.timestamps import to_seconds

Events: TypeAlias = str | Path | pd.DataFrame | None


@dataclass
class Request:
    feature_sets: Sequence[str]  # specs (feature_sets.py); the first is the baseline
    transactions: Events = None  # None: the offline store's
    labels: Events = None
    label_column: str | None = None
    card: str | None = None  # default: the first join key of the repo's entities
    train_start: str | None = None  # YYYY-MM-DD; default: the latest periods the data holds
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7
    models: Sequence[str] = field(default_factory=lambda: list(models.MODELS))
    seed: int = 0
    top_k: int = 100
    engine: str = "local"


def evaluate(cfg: Config, request: Request,
             log: Callable[[str], None] = lambda _: None) -> dict:
    """The report (report.py writes it): protocol, feature sets, one result per set and
    model."""
    models.require()  # before minutes of work, not after
    from ffs.jobs.batch.training_set import (
        read_events,  # the engine's own reading
        training_set,
    )
    from ffs.transformations.features import KEY_COLUMNS, feature_names

    if request.top_k < 1:
        raise InputError(f"--top-k must be >= 1, found {request.top_k}")
    if len(request.feature_sets) > 26:
        raise InputError("at most 26 feature sets side by side")
    started = time.perf_counter()
    services: dict[str, list[str]] = {}

    def repo_services() -> dict[str, list[str]]:
        if not services:
            services.update(feature_sets.repo_services(cfg))
        return services

    sets = [feature_sets.resolve(spec, feature_names(), repo_services)
            for spec in request.feature_sets]
    tx, lab, rejected = read_events(cfg, request.transactions, request.labels)
    for kind, reasons in rejected.items():
        if reasons:
            log(f"  {sum(reasons.values()):,} {kind} row(s) set aside: {reasons}")
    card = request.card or KEY_COLUMNS[0]
    if card not in tx.columns:
        raise InputError(f"--card {card!r} is not a column of the transactions "
                         f"({list(tx.columns)})")
    if tx.empty:
        raise InputError("no transactions to evaluate on")
    seconds = to_seconds(tx["event_timestamp"])
    days = split.days_of(seconds)
    protocol = split.choose(int(days.min()), int(days.max()), request.train_start,
                            request.train_days, request.delay_days, request.test_days)
    cards = tx[card].to_numpy()
    known = _labels_with_cards(lab, tx, card)
    sp = split.split(seconds, cards, known, protocol)
    target, label_text = _target(tx, lab, request.label_column)
    _check_classes(target[sp.train], "training", protocol.train_start, protocol.train_end)
    _check_classes(target[sp.test], "test", protocol.test_start, protocol.test_end)
    log(f"  train {split.day_text(protocol.train_start)} .. "
        f"{split.day_text(protocol.train_end - 1)}: {len(sp.train):,} transactions, "
        f"{int(target[sp.train].sum()):,} frauds; test {split.day_text(protocol.test_start)} "
        f".. {split.day_text(protocol.test_end - 1)}: {len(sp.test):,} transactions, "
        f"{int(target[sp.test].sum()):,} frauds (without {sum(sp.removed):,} transactions of "
        f"cards already known compromised)")

    rows = np.union1d(sp.train, sp.test)
    step = time.perf_counter()
    log(f"  features at {len(rows):,} transactions ({request.engine} training-set engine)")
    feats = training_set(tx.iloc[rows], cfg, tx, lab, request.engine, log)
    log(f"    {time.perf_counter() - step:.1f} s")
    train_at, test_at = np.searchsorted(rows, sp.train), np.searchsorted(rows, sp.test)
    y_train, y_test = target[sp.train], target[sp.test]
    test_days, test_cards = days[sp.test], cards[sp.test]

    names = list(string.ascii_uppercase)
    results = []
    unused: dict[str, list[str]] = {}
    for name, fs in zip(names, sets, strict=False):
        x = feats[list(fs.features)].to_numpy(dtype="float64", na_value=np.nan)
        # a feature with no value in the whole training period teaches nothing (and breaks
        # the trees' binning): left out of the fit, and said in the report
        empty = np.isnan(x[train_at]).all(axis=0)
        if empty.any():
            unused[name] = [f for f, e in zip(fs.features, empty, strict=True) if e]
            log(f"  {name}: no value in the training period, not used: {unused[name]}")
            x = x[:, ~empty]
        for model in request.models:
            step = time.perf_counter()
            log(f"  {name}: {models.MODELS[model]} on {len(fs.features)} features, "
                f"{len(train_at):,} rows")
            scores = models.fit_scores(model, request.seed, x[train_at], y_train, x[test_at])
            cp, cp_days = metrics.card_precision_top_k(test_days, test_cards, y_test, scores,
                                                       request.top_k)
            results.append({
                "feature_set": name, "model": model,
                "auc_roc": _round(metrics.auc_roc(y_test, scores)),
                "average_precision": _round(metrics.average_precision(y_test, scores)),
                "card_precision_top_k": _round(cp),
                "card_precision_per_day": [_round(v) for v in cp_days],
            })
            log(f"    AUC ROC {results[-1]['auc_roc']}, average precision "
                f"{results[-1]['average_precision']}, card precision@{request.top_k} "
                f"{results[-1]['card_precision_top_k']} ({time.perf_counter() - step:.1f} s)")
    log(f"  evaluated in {time.perf_counter() - started:.1f} s")
    return {
        "format": FORMAT,
        "seed": request.seed,
        "label": label_text,
        "card": card,
        "top_k": request.top_k,
        "models": list(request.models),
        "data": {"transactions": len(tx), "labels": len(lab), "rejected": rejected,
                 "first_day": split.day_text(int(days.min())),
                 "last_day": split.day_text(int(days.max()))},
        "protocol": _protocol(protocol, sp, days, cards, target),
        "feature_sets": [{"name": n, "spec": fs.spec, "features": list(fs.features),
                          "unused_empty_in_training": unused.get(n, [])}
                         for n, fs in zip(names, sets, strict=False)],
        "results": results,
    }


def _labels_with_cards(lab: pd.DataFrame, tx: pd.DataFrame, card: str) -> pd.DataFrame:
    """Labels as split.known_compromised reads them: with their transaction's card and time
    and the label time, in epoch seconds."""
    joined = lab[["transaction_id", "is_fraud", "label_timestamp"]].merge(
        tx[["transaction_id", "event_timestamp", card]], on="transaction_id", how="inner")
    return pd.DataFrame({"transaction_id": joined["transaction_id"].to_numpy(),
                         "is_fraud": joined["is_fraud"].to_numpy(),
                         "label_s": to_seconds(joined["label_timestamp"]),
                         "card": joined[card].to_numpy(),
                         "tx_s": to_seconds(joined["event_timestamp"])})


def _target(tx: pd.DataFrame, lab: pd.DataFrame,
            column: str | None) -> tuple[np.ndarray, str]:
    """(0/1 per transaction, how it was read)."""
    if column is not None:
        if column not in tx.columns:
            raise InputError(f"--label-column {column!r} is not a column of the transactions "
                             f"({list(tx.columns)})")
        values = pd.to_numeric(tx[column], errors="coerce")
        if not values.isin([0, 1]).all():
            raise InputError(f"--label-column {column!r}: expected 0 or 1 in every row, found "
                             f"{sorted(set(values.dropna().unique()) - {0, 1})[:5]} and "
                             f"{int(values.isna().sum())} missing")
        return values.to_numpy(dtype=np.int8), f"column {column} of the transactions"
    latest = lab.sort_values("label_timestamp", kind="stable").drop_duplicates(
        "transaction_id", keep="last")
    fraud = tx["transaction_id"].map(latest.set_index("transaction_id")["is_fraud"])
    until = (f"; labels known until {lab['label_timestamp'].max():%Y-%m-%d %H:%M}"
             if not lab.empty else "; no labels")
    return (fraud.fillna(0).to_numpy(dtype=np.int8),
            f"each transaction's latest label (unlabelled = genuine{until})")


def _check_classes(y: np.ndarray, period: str, start: int, end: int) -> None:
    frauds = int(y.sum())
    if frauds == 0 or frauds == len(y):
        raise InputError(
            f"the {period} period {split.day_text(start)} .. {split.day_text(end - 1)} has "
            f"{len(y):,} transactions of which {frauds:,} frauds: a model needs both "
            "classes; pick other days (--train-start) or a label column (--label-column)")


def _protocol(p: split.Protocol, sp: split.Split, days: np.ndarray, cards: np.ndarray,
              target: np.ndarray) -> dict:
    test_days = []
    for i, day in enumerate(range(p.test_start, p.test_end)):
        kept = sp.test[days[sp.test] == day]
        test_days.append({"date": split.day_text(day), "rows": len(kept),
                          "frauds": int(target[kept].sum()),
                          # the most card precision@k can find that day: k times this
                          "fraud_cards": len(set(cards[kept[target[kept] == 1]])),
                          "removed": sp.removed[i],
                          "known_compromised_cards": sp.known_cards[i]})
    return {
        "train": {"start": split.day_text(p.train_start), "end": split.day_text(p.train_end - 1),
                  "rows": len(sp.train), "frauds": int(target[sp.train].sum())},
        "delay_days": p.delay_days,
        "test": {"start": split.day_text(p.test_start), "end": split.day_text(p.test_end - 1),
                 "rows": len(sp.test), "frauds": int(target[sp.test].sum()),
                 "removed_known_compromised": sum(sp.removed), "days": test_days},
    }


def _round(v: float) -> float | None:
    """6 decimals (a reader's precision; stable text), None for NaN (JSON has no NaN)."""
    return None if v != v else round(float(v), 6)
