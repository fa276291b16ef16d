"""The dashboard in a real headless Chromium: enriched messages go through Apache Kafka into
the embedded store, the page draws every chart with data, and the numbers it
shows are the ones DuckDB answers for the same query. Screenshot: tests/artifacts/."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from ffs.bus.messages import Label, Transaction, enriched_label, enriched_transaction
from ffs.config import Config
from tests.browser import assert_page_shows, screenshot, wait_for_charts
from tests.traffic import small_traffic

pytestmark = pytest.mark.slow



def enriched_messages(seed: int = 3) -> list[tuple[str, bytes]]:
    """(key, message) for 1,200 transactions over 12 days (so the 7-day-delayed terminal
    risk is defined at the end) with features from the engine, a velocity burst on the last
    day, and labels for half of them with delays of 0-3 days."""
    tx, labels, feats = small_traffic(seed, n=1200, customers=12, terminals=15, days=12,
                                      burst=8, burst_gap_s=200)
    out = []
    for rec, f in zip(tx.itertuples(), feats.to_dict("records"), strict=True):
        t = int(rec.event_timestamp.timestamp())
        msg = Transaction.of(rec.transaction_id, t, rec._asdict())
        out.append((msg.transaction_id, enriched_transaction(msg, f, t * 1000)))
    for rec in labels.itertuples():
        lt = int(rec.label_timestamp.timestamp())
        label = Label(str(rec.transaction_id), int(rec.is_fraud), lt)
        out.append((label.transaction_id, enriched_label(label, lt * 1000)))
    return out


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_dashboard_renders_every_chart_with_the_stores_numbers(chrome, kafka_broker):
    from ffs.analytics.dashboard import DuckDBBackend, start_dashboard
    from ffs.bus import kafka
    from ffs.bus.producer import EventProducer

    messages = enriched_messages()
    cfg = Config()
    cfg.kafka.bootstrap_servers = kafka_broker.bootstrap_servers
    cfg.kafka.enriched_topic = f"enriched-{uuid.uuid4().hex[:8]}"
    cfg.kafka.partitions = 2
    cfg.analytics.duckdb_path = ":memory:"
    cfg.analytics.refresh_s = 1
    kafka.ensure_topics(cfg.kafka, [cfg.kafka.enriched_topic])
    with EventProducer(cfg.kafka, validate=False) as bus:
        for key, value in messages:
            bus.send_raw(cfg.kafka.enriched_topic, key.encode(), value)
    backend = DuckDBBackend(cfg)
    url, stop = start_dashboard(cfg, "127.0.0.1", 0, backend=backend)
    try:
        n_tx = 1208
        deadline = time.monotonic() + 15
        while get_json(url + "health")["rows"] < n_tx and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get_json(url + "health")["rows"] == n_tx
        assert backend.store.rows_ingested == len(messages)

        api = get_json(url + "api/query/riskiest_terminals?limit=3")
        assert len(api["rows"]) == 3 and api["now_ms"] == backend.store.now_ms()
        chrome.get(url)
        rows = wait_for_charts(chrome, 20)
        now = backend.store.now_ms()
        assert_page_shows(chrome, rows,
                          lambda name: backend.store.run_named(name, now_ms=now))
        screenshot(chrome, "dashboard.png")
    finally:
        stop()
