"""`ffs`: the command line of the fraud feature store.

Each subcommand is a thin wrapper: parse arguments, load config once, call the job, print a
short report. Errors of the project's own kinds print one clear message and exit non-zero
(2 = bad input or config, 3 = validation gate refused the batch, 4 = a service is down).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ffs.config import port
from ffs.errors import FFSError, TransientError, ValidationFailed
from ffs.transformations import ids as _ids


def _log(msg: str) -> None:
    print(msg, flush=True)


def cmd_features(args, cfg) -> int:
    from ffs.transformations.features import (
        COMPILED,
        DERIVED_FUNCTIONS,
        ENTITIES,
        FEATURE_SERVICE,
        OPTIONAL_COLUMNS,
        RECENCY_FEATURES,
        REQUEST_FEATURES,
        REQUEST_FUNCTIONS,
        VALUE_COLUMNS,
        WINDOW_FEATURES,
        human,
    )
    from ffs.transformations.repo import repo_dir

    print(f"repo {repo_dir(cfg)}")
    types = _ids.types(cfg)  # the events' columns: what every request and event carries
    print("entities: " + ", ".join(
        f"{e.name} ({', '.join(f'{k} {types.of(k)}' for k in e.keys)})" for e in ENTITIES))
    derived_by = {name: fn.view for fn in DERIVED_FUNCTIONS for name, _ in fn.outputs}

    def column(c: str, kind: str) -> str:
        how = ", optional" if c in OPTIONAL_COLUMNS else \
            f", derived by {derived_by[c]}'s udf" if c in derived_by else ""
        return f"{c} ({kind}{how})"

    print("value columns: " + (", ".join(column(c, k) for c, k in VALUE_COLUMNS.items())
                               or "none"))
    print(f"feature service {FEATURE_SERVICE}: "
          f"{len(REQUEST_FEATURES) + len(WINDOW_FEATURES) + len(RECENCY_FEATURES)} features")
    for name, names in COMPILED.services.items():
        if name != FEATURE_SERVICE:
            print(f"  also serves {name}: {len(names)} of them")
    for fn in REQUEST_FUNCTIONS:
        print(f"  request function {fn.view}.{fn.function}"
              f"({', '.join(fn.request_inputs + fn.feature_inputs)})")
    for f in REQUEST_FEATURES:
        print(f"  {f.name:<32} request    {f.description}")
    for w in WINDOW_FEATURES:
        span = f"(t-{human(w.delay + w.window)}, t-{human(w.delay)}]" if w.delay_s \
            else f"(t-{human(w.window)}, t]"
        print(f"  {w.name:<32} {w.entity.value:<10} {w.agg.value}({w.column or '*'}) "
              f"over {span}: {w.description}")
    for r in RECENCY_FEATURES:
        print(f"  {r.name:<32} {r.entity.value:<10} {r.description}")
    return 0


def cmd_apply(args, cfg) -> int:
    from ffs.jobs.tools.apply import apply

    s = apply(cfg, log=_log, register=not args.check)
    c = s.compiled
    _log(f"applied {s.repo.name}: service {c.service}, {len(c.windows) + len(c.recency)} "
         f"windowed and {len(c.request)} request features, {len(c.views)} views "
         f"({s.seconds:.1f} s)")
    return 0


def cmd_generate(args, cfg) -> int:
    from ffs.jobs.tools.generate import GenerateSpec, generate_to

    spec = GenerateSpec(customers=args.customers, terminals=args.terminals, days=args.days,
                        start=args.start, seed=args.seed, fmt=args.format)
    progress = None if args.quiet else (lambda line: _log(f"  {line}"))
    s = generate_to(Path(args.out), spec, progress)
    _log(f"generated {s.n_transactions:,} transactions ({s.n_fraud:,} fraud: "
         f"{dict(sorted(s.fraud_by_scenario.items()))} by scenario) and {s.n_labels:,} labels, "
         f"{s.start} .. {s.end}, in {s.seconds:.1f} s")
    _log(f"  {s.transactions_path}\n  {s.labels_path}")
    return 0


def cmd_validate(args, cfg) -> int:
    from ffs.transformations import schema
    from ffs.validation.run import validate

    docs = Path(args.data_docs or cfg.validation.data_docs_dir)
    failed = 0
    tx_rows = None
    if args.transactions:
        norm = schema.normalize_transactions(schema.read_table(args.transactions),
                                             _ids.types(cfg))
        tx_rows = norm.rows
        failed += _report(validate("transactions", norm.rows, docs), norm.reject_summary())
    if args.labels:
        norm = schema.normalize_labels(schema.read_table(args.labels), tx_rows, _ids.types(cfg))
        failed += _report(validate("labels", norm.rows, docs), norm.reject_summary())
    if args.features:
        failed += _report(validate("features", schema.read_table(args.features), docs), {})
    if not (args.transactions or args.labels or args.features):
        raise FFSError("nothing to validate: pass --transactions, --labels and/or --features")
    _log(f"data docs: {docs / 'index.html'}")
    return 3 if failed else 0


def _report(report, rejects: dict[str, int]) -> int:
    _log(report.summary())
    if rejects:
        _log(f"  rows rejected before validation: {rejects}")
    for r in report.failures + report.warnings:
        _log(f"  [{r.severity}] {r.line()}")
    return 0 if report.ok else 1


def cmd_backfill(args, cfg) -> int:
    from ffs.jobs.batch.backfill import backfill

    if args.offline:
        cfg.offline.path = args.offline
    _log(f"backfill ({args.engine}) -> {cfg.offline.path}")
    s = backfill(cfg, args.transactions, args.labels, args.engine, _log,
                 memory_check=not args.no_memory_check)
    for line in s.validation:
        _log(f"  validated {line}")
    _log(f"backfilled {s.transactions:,} transactions and {s.labels:,} labels into "
         f"{s.partitions} partitions in {s.seconds:.1f} s")
    return 0


def cmd_training_set(args, cfg) -> int:
    from ffs.jobs.batch.training_set import training_set
    from ffs.transformations import schema

    if args.offline:
        cfg.offline.path = args.offline
    started = time.perf_counter()
    if args.engine == "spark":  # file to file: no row passes through this process
        return _training_set_on_spark(args, cfg, started)
    entities = schema.read_table(args.entities)
    out = training_set(entities, cfg, args.transactions, args.labels, args.engine, _log,
                       memory_check=not args.no_memory_check)
    dest = Path(args.output)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix.lower() == ".csv":
        out.to_csv(dest, index=False)
    else:
        from ffs.jobs.batch.offline_store import write_parquet

        write_parquet(out, dest)
    _log(f"training set: {len(out):,} rows x {out.shape[1]} columns -> {dest} "
         f"in {time.perf_counter() - started:.1f} s")
    return 0


def _training_set_on_spark(args, cfg, started: float) -> int:
    from ffs.jobs.batch.spark import spark_session, warm_up
    from ffs.jobs.batch.spark_training_set import training_set_files

    spark = spark_session(cfg.spark, "ffs-training-set", _log)
    warm_up(spark)
    s = training_set_files(cfg, spark, args.entities, args.output, args.transactions,
                           args.labels, _log)
    for kind, reasons in s.rejected.items():
        if reasons:
            _log(f"  {sum(reasons.values()):,} {kind} row(s) set aside: {reasons}")
    _log(f"training set: {s.rows:,} rows x {s.columns} columns -> {args.output} "
         f"in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_evaluate(args, cfg) -> int:
    from ffs.evaluation import models
    from ffs.evaluation.report import chart_path, table, write_chart, write_json
    from ffs.evaluation.run import Request, evaluate
    from ffs.transformations.features import FEATURE_SERVICE

    if args.offline:
        cfg.offline.path = args.offline
    request = Request(
        feature_sets=[args.features or FEATURE_SERVICE, *(args.compare or [])],
        transactions=args.transactions, labels=args.labels, label_column=args.label_column,
        card=args.card, train_start=args.train_start, train_days=args.train_days,
        delay_days=args.delay_days, test_days=args.test_days,
        models=models.parse(args.models), seed=args.seed, top_k=args.top_k,
        engine=args.engine)
    _log("evaluate " + " vs ".join(request.feature_sets))
    report = evaluate(cfg, request, _log)
    out = Path(args.out)
    write_json(report, out)
    write_chart(report, chart_path(out))
    for line in table(report):
        _log(line)
    _log(f"report {out}\nchart  {chart_path(out)}")
    return 0


def cmd_materialize(args, cfg) -> int:
    from ffs.online.materialize import materialize

    if args.offline:
        cfg.offline.path = args.offline
    if args.redis_url:
        cfg.redis.url = args.redis_url
    s = materialize(cfg, args.transactions, args.labels, _log)
    _log(f"online state loaded in {s.seconds:.1f} s: {s.describe()}, {s.frauds:,} frauds, "
         f"{s.transactions_indexed:,} transactions indexed; "
         f"reads are exact from {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(s.as_of))} UTC on")
    return 0


def cmd_demo(args, cfg) -> int:
    from ffs.jobs.demo.run import run_demo

    return run_demo(cfg, Path(args.workdir), engine=args.engine, log=_log,
                    with_pinot=not args.no_pinot,
                    linger_s=args.linger)


def cmd_serve(args, cfg) -> int:
    import logging
    import os

    from ffs.online.server import serve

    if args.workers < 1:
        raise FFSError(f"--workers must be >= 1, found {args.workers}")
    if args.config:  # worker processes (--workers > 1) load the same file
        os.environ["FFS_CONFIG"] = str(Path(args.config).resolve())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    serve(cfg, host=args.host, port=args.port, workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ffs", description="Fraud feature store: exact sliding-window features for "
        "card-fraud detection, offline and online, from one definition.")
    p.add_argument("--config", help="YAML config file (default: $FFS_CONFIG or ./ffs.yaml)")
    p.add_argument("--repo", help="the Feast feature repo to run: a directory with "
                   "feature_store.yaml, or that file (default: features.repo, "
                   "$FFS_FEATURES_REPO, else the shipped feature_repo/)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("features", help="list every feature of the loaded repo and its window")
    s.set_defaults(fn=cmd_features)

    s = sub.add_parser("apply", help="compile the feature repo for every engine, check it, "
                       "and register it in Feast's registry")
    s.add_argument("--check", action="store_true", help="compile and check only; register "
                   "nothing")
    s.set_defaults(fn=cmd_apply)

    s = sub.add_parser("generate", help="write synthetic card traffic and delayed fraud labels")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--customers", type=int, default=2000)
    s.add_argument("--terminals", type=int, default=4000)
    s.add_argument("--days", type=int, default=60)
    s.add_argument("--start", default="2026-01-01", help="first day (UTC), YYYY-MM-DD")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    s.add_argument("-q", "--quiet", action="store_true", help="no per-day progress")
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("validate", help="run the Great Expectations suites and build Data Docs")
    s.add_argument("--transactions")
    s.add_argument("--labels")
    s.add_argument("--features", help="a feature table (e.g. the offline store's features/)")
    s.add_argument("--data-docs", help="Data Docs output directory")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("backfill", help="compute features at every transaction into the "
                       "offline store (validated before publishing)")
    s.add_argument("--transactions", required=True, help="Parquet or CSV")
    s.add_argument("--labels", help="Parquet or CSV of fraud labels (omit: no labels yet)")
    s.add_argument("--engine", choices=["spark", "local"], default="spark")
    s.add_argument("--offline", help="offline store root (default from config)")
    s.add_argument("--no-memory-check", action="store_true",
                   help="start even when the input looks too large for this machine's memory")
    s.set_defaults(fn=cmd_backfill)

    s = sub.add_parser("training-set", help="features as of each entity row's own timestamp")
    s.add_argument("--entities", required=True,
                   help="Parquet/CSV with the repo's join keys (`ffs features` lists "
                        "them), event_timestamp (+ any)")
    s.add_argument("--output", required=True, help="Parquet (or .csv) to write")
    s.add_argument("--transactions", help="default: the offline store's transactions")
    s.add_argument("--labels", help="default: the offline store's labels")
    s.add_argument("--engine", choices=["spark", "local"], default="local",
                   help="local (default): the engine in this process, identical values and "
                        "faster below tens of millions of events; spark: every step "
                        "distributed, file to file")
    s.add_argument("--offline", help="offline store root (default from config)")
    s.add_argument("--no-memory-check", action="store_true",
                   help="start even when the events look too large for this machine's memory")
    s.set_defaults(fn=cmd_training_set)

    s = sub.add_parser("evaluate", help="train baseline models on one period, test on a later "
                       "one (the fraud handbook's protocol), compare feature sets",
                       description="Features at each transaction's own timestamp from the "
                       "training-set engine; train on --train-days, skip --delay-days, test "
                       "on --test-days with cards already known compromised removed each "
                       "day; AUC ROC, average precision and card precision@k per model and "
                       "feature set; a JSON report and an HTML chart beside it. Needs the "
                       "optional extra: pip install -e '.[evaluate]'.")
    s.add_argument("--features", help="a feature service of the loaded repo, or features, "
                   "comma-separated (`svc,feature`, `svc,-feature` also work; default: the "
                   "repo's service)")
    s.add_argument("--compare", action="append", metavar="FEATURES",
                   help="another feature set, side by side with --features (repeatable)")
    s.add_argument("--transactions", help="default: the offline store's transactions")
    s.add_argument("--labels", help="default: the offline store's labels")
    s.add_argument("--offline", help="offline store root (default from config)")
    s.add_argument("--label-column", help="take each transaction's fraud label from this 0/1 "
                   "column of the transactions (e.g. synthetic data's ground truth) instead of "
                   "its latest label event")
    s.add_argument("--card", help="the card column, for card precision and known-compromised "
                   "cards (default: the first join key of the repo's entities)")
    s.add_argument("--train-start", metavar="YYYY-MM-DD",
                   help="first training day, UTC (default: the latest periods the data holds)")
    s.add_argument("--train-days", type=int, default=7)
    s.add_argument("--delay-days", type=int, default=7)
    s.add_argument("--test-days", type=int, default=7)
    s.add_argument("--models", default="lr,trees", help="comma-separated: lr (logistic "
                   "regression), trees (gradient-boosted trees); default both")
    s.add_argument("--top-k", type=int, default=100, help="cards checked per day (default 100)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="data/evaluation/report.json",
                   help="JSON report; the chart is written beside it (.html)")
    s.add_argument("--engine", choices=["spark", "local"], default="local",
                   help="the training-set engine (default local)")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("materialize", help="load the online state (Redis) from the offline "
                       "store, idempotently")
    s.add_argument("--offline", help="offline store root (default from config)")
    s.add_argument("--transactions", help="load from this file instead of the offline store")
    s.add_argument("--labels", help="with --transactions: labels file")
    s.add_argument("--redis-url", help="default from config (FFS_REDIS_URL)")
    s.set_defaults(fn=cmd_materialize)

    s = sub.add_parser("demo", help="generate, validate, backfill, build a training set, "
                       "score online, stream live with a fraud burst, serve the dashboard")
    s.add_argument("--workdir", default="data/demo")
    s.add_argument("--linger", type=float, metavar="SECONDS",
                   help="keep the dashboard up this long at the end (default: until Ctrl-C "
                        "when run interactively (a TTY), 0 otherwise)")
    s.add_argument("--engine", choices=["spark", "local"], default="spark")
    s.add_argument("--no-pinot", action="store_true",
                   help="skip the live Apache Pinot in the analytics step (saves about 20 s "
                   "and 600 MB; DuckDB still answers every query)")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("serve", help="HTTP feature server: Feast's /get-online-features, "
                       "/health, /ready, /metrics, /docs",
                       description="Serve online features over HTTP (Feast-compatible "
                       "POST /get-online-features) from the Redis in the config "
                       "(redis.url). Settings: serve.host, serve.port, serve.max_batch, "
                       "serve.timeout_ms, serve.api_key (or FFS_SERVE_API_KEY: when set, "
                       "every endpoint but /health needs X-API-Key or Authorization: Bearer).")
    s.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    s.add_argument("--port", type=port, help="port (default: serve.port, 6566)")
    s.add_argument("--workers", type=int, default=1,
                   help="worker processes (default 1; each has its own Redis connections)")
    s.set_defaults(fn=cmd_serve)
    _add_stream_parsers(sub)
    return p


def _kafka_override(args, cfg) -> None:
    if getattr(args, "bootstrap_servers", None):
        cfg.kafka.bootstrap_servers = args.bootstrap_servers


def cmd_broker(args, cfg) -> int:
    import signal
    import threading

    from ffs.bus import kafka
    from ffs.bus.broker import LocalKafka

    with LocalKafka(port=args.port, directory=args.data_dir, log=_log) as broker:
        cfg.kafka.bootstrap_servers = broker.bootstrap_servers
        kafka.ensure_topics(cfg.kafka)
        _log(f"topics {kafka.topics(cfg.kafka)}")
        _log(f"  export FFS_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
        _log("  Ctrl-C stops it" + (f" (its data stays in {args.data_dir})" if args.data_dir
                                    else " (its temporary data folder goes with it)"))
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            while not done.wait(1) and broker.process is not None and broker.process.alive():
                pass
        except KeyboardInterrupt:
            pass
    return 0


def cmd_replay(args, cfg) -> int:
    from ffs.bus import kafka
    from ffs.bus.replay import load_events, replay

    _kafka_override(args, cfg)
    delay = None if args.label_delay is None else int(args.label_delay * 86400)
    tx, labels, rejected = load_events(args.transactions, args.labels, delay,
                                         _ids.types(cfg))
    if rejected:
        _log(f"  {rejected:,} input rows rejected by normalization (not published)")
    kafka.ensure_topics(cfg.kafka)
    pace = "as fast as possible" if not args.speed else f"at {args.speed:g}x real time"
    _log(f"replaying {len(tx):,} transactions and {len(labels):,} labels {pace} to "
         f"{cfg.kafka.bootstrap_servers}")
    s = replay(cfg.kafka, tx, labels, args.speed, None if args.quiet else _log,
               shift_to_now=args.shift_to_now)
    _log(f"published {s.transactions:,} transactions and {s.labels:,} labels in "
         f"{s.seconds:.1f} s ({s.rate:,.0f} events/s)")
    return 0


def cmd_stream(args, cfg) -> int:
    from ffs.jobs.stream.job import run_stream

    _kafka_override(args, cfg)
    if args.checkpoint:
        cfg.stream.checkpoint = args.checkpoint
    if args.metrics_port is not None:
        cfg.stream.metrics_port = args.metrics_port
    summary = run_stream(cfg, _log, args.until_idle, args.max_seconds)
    return 0 if summary.stopped_because else 1


def cmd_consistency(args, cfg) -> int:
    from ffs.jobs.tools.consistency import check

    _kafka_override(args, cfg)
    report = check(cfg, samples=args.samples, seed=args.seed, enriched=not args.no_enriched,
                   log=_log)
    for line in report.lines():
        _log(line)
    return 0 if report.ok else 1


def _add_stream_parsers(sub) -> None:
    s = sub.add_parser("broker", help="run a local Apache Kafka (KRaft, one node) for local "
                       "work, creating the project's topics")
    s.add_argument("--port", type=port, help="default: a free port")
    s.add_argument("--data-dir", type=Path, help="keep the broker's data here across runs "
                   "(default: a temporary folder, removed at exit)")
    s.set_defaults(fn=cmd_broker)

    s = sub.add_parser("replay", help="publish a transactions file (and labels) to the bus in "
                       "event-time order, as fast as possible or at N x real time")
    s.add_argument("--transactions", required=True, help="Parquet or CSV (handbook columns ok)")
    s.add_argument("--labels", help="labels file; without it, --label-delay derives labels "
                   "from a TX_FRAUD column")
    s.add_argument("--label-delay", type=float, metavar="DAYS",
                   help="labels from TX_FRAUD, known this many days after the payment")
    s.add_argument("--speed", type=float, help="N x real time (default: as fast as possible)")
    s.add_argument("--shift-to-now", action="store_true",
                   help="move the timeline so the first event is now (live demos)")
    s.add_argument("--bootstrap-servers", help="default: kafka.bootstrap_servers")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(fn=cmd_replay)

    s = sub.add_parser("stream", help="Spark Structured Streaming: transactions and labels "
                       "from Kafka into the online state, enriched rows and dead letters back",
                       description="Consume kafka.transactions_topic and kafka.labels_topic, "
                       "update the online state in Redis (redis.url) exactly once, publish "
                       "enriched transactions to kafka.enriched_topic and refused messages "
                       "with their reason to kafka.dead_letter_topic. SIGTERM/Ctrl-C stop it "
                       "after the running micro-batch; restarting resumes from the checkpoint.")
    s.add_argument("--bootstrap-servers", help="default: kafka.bootstrap_servers")
    s.add_argument("--checkpoint", help="default: stream.checkpoint")
    s.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free, -1: off)")
    s.add_argument("--until-idle", type=float, metavar="SECONDS",
                   help="stop once caught up and idle this long (batch-like runs, tests)")
    s.add_argument("--max-seconds", type=float, help="stop after this long")
    s.set_defaults(fn=cmd_stream)

    s = sub.add_parser("consistency", help="compare online reads and enriched rows with the "
                       "offline computation over the events on the bus")
    s.add_argument("--samples", type=int, default=2000, help="request points (default 2000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-enriched", action="store_true", help="skip the enriched-topic check")
    s.add_argument("--bootstrap-servers", help="default: kafka.bootstrap_servers")
    s.set_defaults(fn=cmd_consistency)

    from ffs.analytics.pinot_cli import add_parsers as add_pinot_parsers

    add_pinot_parsers(sub)

    from ffs.analytics.dashboard_cli import add_parsers as add_analytics_parsers

    add_analytics_parsers(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ffs.config import load_config

    try:
        cfg = load_config(args.config)
        if args.repo:  # before any engine loads the repo's declarations
            os.environ["FFS_FEATURES_REPO"] = args.repo
            cfg.features.repo = args.repo
        return args.fn(args, cfg)
    except ValidationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except TransientError as exc:
        print(f"error (retry may help): {exc}", file=sys.stderr)
        return 4
    except FFSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, TimeoutError) as exc:  # a service, not a file
        print(f"error (retry may help): {exc}", file=sys.stderr)
        return 4
    except OSError as exc:  # a path that cannot be read or written: say which, no traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Redis refusing a setting of ours (database, password): the fix
        from ffs.online.client import redis_refusal

        fix = redis_refusal(exc)
        if fix is None:
            raise
        print(f"error: {fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0


if __name__ == "__main__":
    sys.exit(main())
