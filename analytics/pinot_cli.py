"""`ffs pinot generate | apply | query | up`: the Pinot subcommands, added to `ffs` by
`add_parsers(sub)` so ffs/cli.py needs two lines. Imports stay inside the handlers: building
the parser must not load pandas or read any config."""

from __future__ import annotations

import sys

from ffs.errors import InputError

DEFAULT_DIR = "infra/pinot"


def _log(msg: str) -> None:
    print(msg, flush=True)


def cmd_generate(args, cfg) -> int:
    from ffs.analytics.pinot_config import write_artifacts

    for path in write_artifacts(args.out, cfg):
        _log(f"  wrote {path}")
    return 0


def cmd_apply(args, cfg) -> int:
    from ffs.analytics.pinot_apply import apply

    if args.controller:
        cfg.pinot.controller_url = args.controller
    _log(f"applying {args.artifacts} to {cfg.pinot.controller_url or '(no controller)'}")
    result = apply(cfg, args.artifacts, _log)
    _log("applied: " + ("changes made" if result.changed() else "nothing to change"))
    return 0


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param expects KEY=VALUE, found {pair!r}")
        out[key] = value
    return out


def _named_sql(client, name: str, params: dict[str, str]) -> str:
    try:
        from ffs.analytics import queries
    except ImportError:
        raise InputError("--named needs analytics/queries.py, which is not installed; "
                         "pass the SQL text instead") from None
    if "now_ms" not in params and hasattr(queries, "now_sql"):
        # Named queries are anchored to the newest event in the table, not the wall clock
        # (replayed data lives in the past).
        now = client.query(queries.now_sql("pinot"))
        if now.empty or now.iloc[0, 0] is None or str(now.iloc[0, 0]) in ("<NA>", "nan"):
            raise InputError("the table has no transactions yet: cannot anchor the query "
                             "(pass --param now_ms=...)")
        params["now_ms"] = str(int(now.iloc[0, 0]))
    return queries.render(name, "pinot", **params)


def cmd_query(args, cfg) -> int:
    from ffs.analytics.pinot_client import PinotClient

    if bool(args.sql) == bool(args.named):
        raise InputError("pass either SQL text or --named NAME (not both)")
    client = PinotClient(cfg.pinot, broker_url=args.broker)
    sql = args.sql or _named_sql(client, args.named, _params(args.param))
    df = client.query(sql, limit=args.limit)
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", lines=True), end="")
    else:
        print(df.to_string(index=False) if len(df) else "(no rows)")
    note = f"{len(df):,} rows"
    if df.attrs.get("limit_appended"):
        limit = args.limit or client.default_limit
        note += f" (LIMIT {limit} added{'; result may be cut' if len(df) >= limit else ''})"
    print(note, file=sys.stderr)
    return 0


def cmd_up(args, cfg) -> int:
    """A local Pinot in the foreground until Ctrl-C (or SIGTERM); with --apply, the generated
    tables created on it, consuming the enriched topic of --kafka."""
    import signal
    import threading

    from ffs.analytics.pinot_cluster import LocalPinot

    if args.kafka:
        cfg.kafka.bootstrap_servers = args.kafka
    if args.apply and not cfg.kafka.bootstrap_servers:
        raise InputError("--apply needs the Kafka the tables consume: pass --kafka HOST:PORT "
                         "(e.g. from `ffs broker`) or set FFS_KAFKA_BOOTSTRAP_SERVERS")
    with LocalPinot(heap=args.heap, controller_port=args.controller_port,
                    broker_port=args.broker_port, log=_log) as pinot:
        cfg.pinot.controller_url, cfg.pinot.broker_url = pinot.controller_url, pinot.broker_url
        if args.apply:
            from ffs.analytics.pinot_apply import apply
            from ffs.bus import kafka

            kafka.ensure_topics(cfg.kafka, [cfg.kafka.enriched_topic])
            _log(f"applying {args.artifacts} (topic {cfg.kafka.enriched_topic} at "
                 f"{cfg.kafka.bootstrap_servers})")
            apply(cfg, args.artifacts, _log)
        _log(f"  export FFS_PINOT_CONTROLLER_URL={pinot.controller_url}")
        _log(f"  export FFS_PINOT_BROKER_URL={pinot.broker_url}")
        _log(f"  Superset / Grafana (pinotdb): {pinot.sqlalchemy_url}")
        _log("  Ctrl-C stops it (its temporary data folder goes with it)")
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            while not done.wait(1):
                pinot.check_alive()
        except KeyboardInterrupt:
            pass
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("pinot", help="Apache Pinot: generate and apply the table configs, "
                       "run SQL on the broker")
    ps = p.add_subparsers(dest="pinot_command", required=True, metavar="ACTION")

    s = ps.add_parser("generate", help="write schemas and table configs generated from the "
                      "feature definitions")
    s.add_argument("--out", default=DEFAULT_DIR, help=f"directory (default {DEFAULT_DIR})")
    s.set_defaults(fn=cmd_generate)

    s = ps.add_parser("apply", help="create or update the schemas and tables on the "
                      "controller (idempotent)")
    s.add_argument("--artifacts", default=DEFAULT_DIR,
                   help=f"generated files (default {DEFAULT_DIR})")
    s.add_argument("--controller", help="controller URL (default: pinot.controller_url)")
    s.set_defaults(fn=cmd_apply)

    s = ps.add_parser("query", help="run SQL on the broker and print the rows "
                      "(an explicit LIMIT is added when missing)")
    s.add_argument("sql", nargs="?", help="SQL text")
    s.add_argument("--named", help="an analyst query of the feature repo (its queries.py)")
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter of the named query (repeatable)")
    s.add_argument("--limit", type=int, help="LIMIT added when the SQL has none "
                   "(default 100000)")
    s.add_argument("--broker", help="broker URL (default: pinot.broker_url)")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(fn=cmd_query)

    s = ps.add_parser("up", help="run a local Pinot (ZooKeeper, controller, broker, server) "
                      "in the foreground until Ctrl-C")
    s.add_argument("--apply", action="store_true", help="create the generated tables on it, "
                   "consuming the enriched topic (needs --kafka)")
    s.add_argument("--kafka", metavar="BOOTSTRAP", help="Kafka the tables consume "
                   "(default: kafka.bootstrap_servers)")
    s.add_argument("--artifacts", default=DEFAULT_DIR,
                   help=f"with --apply: generated files (default {DEFAULT_DIR})")
    s.add_argument("--controller-port", type=int, help="default: a free port")
    s.add_argument("--broker-port", type=int, help="default: a free port")
    s.add_argument("--heap", default="1536m", help="JVM heap of controller + broker + server "
                   "(default 1536m)")
    s.set_defaults(fn=cmd_up)
