"""`ffs dashboard`: one page with a chart per analyst query, refreshed live.

    ffs dashboard [--host 127.0.0.1] [--port 8502] [--store duckdb|pinot]

Endpoints: GET / (the page), GET /api/queries (definitions + refresh interval),
GET /api/query/{name}?param=value (rows as JSON; parameters are the query's own, e.g.
hours, limit), GET /health (store, rows, ingestion lag), GET /metrics (Prometheus).

The page (dashboard_static/index.html) draws its charts with hand-written SVG in inline
JavaScript: no CDN, so it works offline and on CI. Queries run on the embedded DuckDB store,
which ingests the enriched topic in a background thread, or on Pinot when
analytics.store = "pinot" (PinotClient imported only then).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from fastapi import Request  # module level: FastAPI resolves annotations from module globals

from ffs.analytics import queries
from ffs.config import Config
from ffs.errors import ConfigError, FFSError, InputError, TransientError

log = logging.getLogger("ffs.dashboard")
PAGE = Path(__file__).with_name("dashboard_static") / "index.html"
QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Backend(Protocol):
    name: str

    def run(self, name: str, params: dict[str, Any]) -> tuple[pd.DataFrame, int | None]: ...

    def health(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class DuckDBBackend:
    """The embedded store, fed from the enriched topic by a thread of its own."""

    name = "duckdb"

    def __init__(self, cfg: Config, ingest: bool = True):
        from ffs.analytics.olap_store import OlapStore

        self.store = OlapStore(cfg.kafka if ingest else None, cfg.analytics.duckdb_path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if ingest:
            self._thread = threading.Thread(target=self._ingest, name="ffs-olap-ingest",
                                            daemon=True)
            self._thread.start()

    def _ingest(self) -> None:
        from ffs.bus import kafka

        kcfg = self.store.kafka
        assert kcfg is not None  # only started with a Kafka config
        while not self._stop.is_set():  # the topic may not exist yet on a fresh broker
            try:
                kafka.ensure_topics(kcfg, [self.store.topic])
                break
            except FFSError as exc:
                log.warning("enriched topic not ready: %s (retrying)", exc)
                self._stop.wait(2.0)
        self.store.run(self._stop)

    def run(self, name: str, params: dict[str, Any]) -> tuple[pd.DataFrame, int | None]:
        now = params.pop("now_ms", None) or self.store.now_ms()
        if now is None:  # nothing ingested yet: an empty answer, not an error
            return pd.DataFrame(columns=list(queries.QUERIES[name].columns)), None
        return self.store.query(queries.render(name, "duckdb", now_ms=now, **params)), now

    def health(self) -> dict[str, Any]:
        return {"rows": self.store.count(), "rows_ingested": self.store.rows_ingested,
                "skipped": self.store.skipped, "ingest_lag": self.store.lag_summary(),
                "ingesting": bool(self._thread and self._thread.is_alive())}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.store.close()


class PinotBackend:
    name = "pinot"

    def __init__(self, cfg: Config):
        from ffs.analytics.pinot_client import PinotClient  # only Pinot users need it

        self.client = PinotClient(cfg.pinot)

    def _now(self) -> int | None:
        df = self.client.query(queries.now_sql("pinot"))
        value = df.iloc[0, 0] if len(df) else None
        if value is None or pd.isna(value) or value <= 0:  # -inf / MIN_VALUE on empty
            return None
        return int(value)

    def run(self, name: str, params: dict[str, Any]) -> tuple[pd.DataFrame, int | None]:
        now = params.pop("now_ms", None) or self._now()
        if now is None:
            return pd.DataFrame(columns=list(queries.QUERIES[name].columns)), None
        return self.client.query(queries.render(name, "pinot", now_ms=now, **params)), now

    def health(self) -> dict[str, Any]:
        return {"broker_url": self.client.url}

    def close(self) -> None:
        pass


def make_backend(cfg: Config) -> Backend:
    if cfg.analytics.store == "duckdb":
        return DuckDBBackend(cfg)
    if cfg.analytics.store == "pinot":
        return PinotBackend(cfg)
    raise ConfigError(f"analytics.store = {cfg.analytics.store!r}; expected duckdb or pinot")


def _json_rows(df: pd.DataFrame) -> list[list[Any]]:
    """Rows with plain Python values; NaN and +/-inf become null (JSON has neither)."""
    out = []
    for row in df.itertuples(index=False, name=None):
        vals = []
        for v in row:
            if hasattr(v, "item"):  # numpy scalar
                v = v.item()
            if v is pd.NA or v is pd.NaT or (isinstance(v, float) and not math.isfinite(v)):
                v = None
            vals.append(v)
        out.append(vals)
    return out


def create_app(backend: Backend, refresh_s: float = 2.0):
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry(auto_describe=True)
    latency = Histogram("ffs_dashboard_query_duration_seconds", "Analyst query time",
                        ["query", "store"], buckets=QUERY_BUCKETS, registry=registry)
    errors = Counter("ffs_dashboard_query_errors", "Failed analyst queries", ["query", "kind"],
                     registry=registry)
    page = PAGE.read_text()
    app = FastAPI(title="ffs dashboard", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/queries")
    def list_queries() -> dict:
        return {"store": backend.name, "refresh_s": refresh_s,
                "queries": [q.meta() for q in queries.QUERIES.values()]}

    @app.get("/api/query/{name}")
    def run_query(name: str, request: Request):  # sync: FastAPI runs it in a worker thread
        if name not in queries.QUERIES:
            return JSONResponse({"error": f"unknown query {name!r}; known: "
                                          f"{sorted(queries.QUERIES)}"}, 404)
        params: dict[str, Any] = dict(request.query_params)
        started = time.perf_counter()
        try:
            df, now = backend.run(name, params)
        except InputError as exc:
            errors.labels(name, "input").inc()
            return JSONResponse({"error": str(exc)}, 400)
        except TransientError as exc:
            errors.labels(name, "transient").inc()
            return JSONResponse({"error": str(exc)}, 503)
        elapsed = time.perf_counter() - started
        latency.labels(name, backend.name).observe(elapsed)
        return {"name": name, "store": backend.name, "now_ms": now,
                "columns": [str(c) for c in df.columns], "rows": _json_rows(df),
                "elapsed_ms": round(elapsed * 1000, 1)}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "store": backend.name, **backend.health()}

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _Running:
    """A uvicorn server in a daemon thread, and what to stop with it."""

    def __init__(self, server, thread: threading.Thread, backend: Backend, extra=None):
        self.server, self.thread, self.backend, self.extra = server, thread, backend, extra

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.backend.close()
        if self.extra is not None:
            self.extra()


def start_dashboard(cfg: Config, host: str | None = None, port: int | None = None,
                    backend: Backend | None = None) -> tuple[str, Any]:
    """Serve the dashboard from a background thread: (url, stop). Port 0 picks a free one.
    With kafka.bootstrap_servers empty, an embedded broker is started (and stopped by stop)."""
    import uvicorn

    from ffs.net import free_port

    stop_broker = None
    if backend is None and cfg.analytics.store == "duckdb" and not cfg.kafka.bootstrap_servers:
        from ffs.bus.broker import LocalKafka

        broker = LocalKafka().start()
        cfg.kafka.bootstrap_servers = broker.bootstrap_servers
        stop_broker = broker.stop
        log.warning("kafka.bootstrap_servers is empty: started an embedded broker at %s "
                    "(its enriched topic is empty until a stream job publishes to it)",
                    broker.bootstrap_servers)
    host = host or cfg.analytics.dashboard_host
    port = free_port() if port == 0 else (port or cfg.analytics.dashboard_port)
    backend = backend or make_backend(cfg)
    app = create_app(backend, cfg.analytics.refresh_s)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, name="ffs-dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            backend.close()
            if stop_broker:
                stop_broker()
            raise TransientError(f"the dashboard did not start on {host}:{port} (port in use?)")
        time.sleep(0.02)
    running = _Running(server, thread, backend, stop_broker)
    return f"http://{host}:{port}/", running.stop
