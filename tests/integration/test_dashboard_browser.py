"""The dashboard in a real headless Chromium: enriched messages go through a real broker
(tansu) into the embedded store, the page draws every chart with data, and the numbers it
shows are the ones DuckDB answers for the same query. Screenshot: tests/artifacts/."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics import queries
from bus.messages import Label, Transaction, enriched_label, enriched_transaction
from ffs.config import Config

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def enriched_messages(seed: int = 3) -> list[tuple[str, bytes]]:
    """(key, message) for 1,200 transactions over 12 days (so the 7-day-delayed terminal
    risk is defined at the end) with features from the engine, a velocity burst on the last
    day, and labels for half of them with delays of 0-3 days."""
    from transformations import schema
    from transformations.engine import compute_features

    rng = np.random.default_rng(seed)
    n, t0 = 1200, pd.Timestamp("2024-05-01", tz="UTC")
    secs = np.sort(rng.integers(0, 12 * 86400, n))
    raw = pd.DataFrame({"transaction_id": np.arange(n), "customer_id": rng.integers(0, 12, n),
                        "terminal_id": rng.integers(0, 15, n),
                        "event_timestamp": t0 + pd.to_timedelta(secs, unit="s"),
                        "amount": np.round(rng.gamma(2.0, 30.0, n), 2)})
    burst = pd.DataFrame({"transaction_id": np.arange(n, n + 8), "customer_id": 99,
                          "terminal_id": rng.integers(0, 15, 8),
                          "event_timestamp": t0 + pd.Timedelta(days=11, hours=20)
                          + pd.to_timedelta(np.arange(8) * 200, unit="s"), "amount": 75.0})
    tx = schema.normalize_transactions(pd.concat([raw, burst], ignore_index=True)).rows
    picked = tx.sample(frac=0.5, random_state=seed)
    labels = pd.DataFrame({"transaction_id": picked["transaction_id"].to_numpy(),
                           "is_fraud": (rng.random(len(picked)) < 0.3).astype(int),
                           "label_timestamp": picked["event_timestamp"].reset_index(drop=True)
                           + pd.to_timedelta(rng.integers(0, 3 * 86400, len(picked)), unit="s")})
    labels = schema.normalize_labels(labels, tx).rows
    feats = compute_features(tx, labels, tx[["customer_id", "terminal_id", "event_timestamp",
                                             "amount"]])
    out = []
    for rec, f in zip(tx.itertuples(), feats.to_dict("records"), strict=True):
        t = int(rec.event_timestamp.timestamp())
        msg = Transaction(str(rec.transaction_id), str(rec.customer_id), str(rec.terminal_id),
                          t, float(rec.amount))
        out.append((msg.transaction_id, enriched_transaction(msg, f, t * 1000)))
    for rec in labels.itertuples():
        lt = int(rec.label_timestamp.timestamp())
        label = Label(str(rec.transaction_id), int(rec.is_fraud), lt)
        out.append((label.transaction_id, enriched_label(label, lt * 1000)))
    return out


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture()
def chrome():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium / chromedriver not installed: run infra/install_chromium.sh "
                    "(Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2000", "--no-proxy-server"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def test_dashboard_renders_every_chart_with_the_stores_numbers(chrome, kafka_broker):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from analytics.dashboard import DuckDBBackend, start_dashboard
    from bus import kafka
    from bus.producer import EventProducer

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
        names = list(queries.QUERIES)

        def all_rendered(d):
            boxes = d.find_elements(By.CSS_SELECTOR, "[data-query]")
            got = {b.get_attribute("data-query"): b.get_attribute("data-rows") for b in boxes}
            return got if len(got) == len(names) and all(
                v and int(v) > 0 for v in got.values()) else False

        try:
            rows = WebDriverWait(chrome, 20, poll_frequency=0.2).until(all_rendered)
        except Exception:
            errors = {b.get_attribute("data-query"): b.get_attribute("data-error")
                      for b in chrome.find_elements(By.CSS_SELECTOR, "[data-query]")}
            pytest.fail(f"charts not all rendered with rows: {errors}")
        assert set(rows) == set(names)

        store = backend.store
        now = store.now_ms()
        # read each chart in one script call: the page redraws every second, so
        # element handles kept across calls would go stale
        def attrs(selector: str, attr: str) -> list[str]:
            return chrome.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0])).map(e => "
                "arguments[1] === 'text' ? e.textContent : e.getAttribute(arguments[1]))",
                selector, attr)

        # the bar chart: terminals and risk values drawn are DuckDB's answer, in order
        expected = store.run_named("riskiest_terminals", now_ms=now)
        sel = '[data-query="riskiest_terminals"] rect'
        assert attrs(sel, "data-x") == list(expected["terminal_id"])
        np.testing.assert_allclose([float(v) for v in attrs(sel, "data-y")],
                                   expected["risk_7d_delay7d"], rtol=1e-9)
        assert int(rows["riskiest_terminals"]) == len(expected)
        assert expected["risk_7d_delay7d"].iloc[0] > 0
        # a table: the cells shown equal the query's rows
        expected = store.run_named("fraud_by_terminal_hour", now_ms=now)
        cells = attrs('[data-query="fraud_by_terminal_hour"] td[data-col="n_fraud"]', "text")
        assert [int(c) for c in cells] == list(expected["n_fraud"])
        assert int(rows["fraud_by_terminal_hour"]) == len(expected)
        # the velocity burst of customer 99 is the first bar
        assert attrs('[data-query="unusual_velocity"] rect', "data-x")[0] == "99"
        # the drift table compares the two days: 4 features x 3 statistics
        assert len(attrs('[data-query="feature_drift"] tr', "text")) == \
            1 + 3 * len(queries.DRIFT_FEATURES)

        ARTIFACTS.mkdir(exist_ok=True)
        assert chrome.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        print(f"screenshot: {ARTIFACTS / 'dashboard.png'}")
    finally:
        stop()
