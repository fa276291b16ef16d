"""`ffs dashboard` and `ffs query`: the analytics subcommands, added to ffs/cli.py with

    from ffs.analytics.dashboard_cli import add_parsers
    add_parsers(sub)
"""

from __future__ import annotations

import argparse
import threading

from ffs.analytics.dashboard import start_dashboard
from ffs.config import any_port
from ffs.errors import InputError

__all__ = ["add_parsers", "start_dashboard"]


def _apply_overrides(args, cfg) -> None:
    if getattr(args, "store", None):
        cfg.analytics.store = args.store
    if getattr(args, "bootstrap_servers", None):
        cfg.kafka.bootstrap_servers = args.bootstrap_servers


def cmd_dashboard(args, cfg) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    _apply_overrides(args, cfg)
    url, stop = start_dashboard(cfg, args.host, args.port)
    where = (f"DuckDB {cfg.analytics.duckdb_path}, fed from {cfg.kafka.enriched_topic} at "
             f"{cfg.kafka.bootstrap_servers}" if cfg.analytics.store == "duckdb"
             else f"Pinot broker {cfg.pinot.broker_url}")
    print(f"dashboard: {url} (store: {where}; refresh every {cfg.analytics.refresh_s} s); "
          f"Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param {pair!r}: expected NAME=VALUE, e.g. hours=6")
        out[key] = value
    return out


def cmd_query(args, cfg) -> int:
    from ffs.analytics import queries

    if args.list:
        for q in queries.QUERIES.values():
            print(f"  {q.name:<24} {q.title}: {q.description}")
        return 0
    if not args.name:
        raise InputError("name a query (ffs query --list shows them)")
    _apply_overrides(args, cfg)
    params: dict[str, object] = dict(_params(args.param))
    if args.sql:
        params.setdefault("now_ms", "0")
        print(queries.render(args.name, args.dialect or cfg.analytics.store, **params))
        return 0
    if cfg.analytics.store == "pinot":
        from ffs.analytics.dashboard import PinotBackend

        df, _ = PinotBackend(cfg).run(args.name, params)
    else:
        from ffs.analytics.olap_store import OlapStore

        # DuckDB allows one writing process per file: stop `ffs dashboard` first, or query
        # through its HTTP API (/api/query/NAME).
        store = OlapStore(cfg.kafka if args.ingest else None, cfg.analytics.duckdb_path)
        try:
            if args.ingest:
                while store.poll_once():
                    pass
            anchor = params.pop("now_ms", None) or store.now_ms()  # text or int: both render
            df = store.run_named(args.name, now_ms=anchor, **params) if anchor else None
        finally:
            store.close()
    if df is None:
        print("the store holds no transactions yet")
        return 0
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(df.to_string(index=False))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("dashboard", help="live web dashboard of the analyst queries",
                       description="Serve one page with a chart per analyst query "
                       "(the repo's queries.py), refreshed every analytics.refresh_s seconds. "
                       "Store: the embedded DuckDB (analytics.duckdb_path) fed from the "
                       "enriched topic, or Pinot (pinot.broker_url).")
    s.add_argument("--host", help="address to bind (default: analytics.dashboard_host, "
                   "127.0.0.1)")
    s.add_argument("--port", type=any_port, help="port (default: analytics.dashboard_port, 8502; "
                   "0 picks a free one)")
    s.add_argument("--store", choices=["duckdb", "pinot"], help="default: analytics.store")
    s.add_argument("--bootstrap-servers", help="Kafka to read the enriched topic from "
                   "(default: kafka.bootstrap_servers; empty starts an embedded broker)")
    s.set_defaults(fn=cmd_dashboard)

    s = sub.add_parser("query", help="run one analyst query and print its rows",
                       description="Run an analyst query on the DuckDB store file "
                       "(analytics.duckdb_path) or on Pinot; --sql prints the SQL instead.")
    s.add_argument("name", nargs="?", help="query name (see --list)")
    s.add_argument("--list", action="store_true", help="list the queries")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="query parameter, e.g. --param hours=6 --param limit=5 "
                        "(now_ms defaults to the newest event in the store)")
    s.add_argument("--store", choices=["duckdb", "pinot"], help="default: analytics.store")
    s.add_argument("--sql", action="store_true", help="print the SQL, do not run it")
    s.add_argument("--dialect", choices=["duckdb", "pinot"], help="with --sql (default: store)")
    s.add_argument("--ingest", action="store_true",
                   help="duckdb: first read what the enriched topic holds into the store")
    s.add_argument("--bootstrap-servers", help="with --ingest: Kafka to read from")
    s.set_defaults(fn=cmd_query)
