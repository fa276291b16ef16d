"""The dashboard as a person sees it, in a real headless Chromium: shared by the DuckDB and
the Pinot dashboard tests, so both check the same things against their store's answers."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.queries import DRIFT_FEATURES
from ffs.analytics import queries

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


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


def wait_for_charts(chrome, timeout_s: float = 30) -> dict[str, str]:
    """{query: rows drawn} once every chart has rows; fails with each chart's error."""
    from selenium.webdriver.support.ui import WebDriverWait

    names = list(queries.QUERIES)

    def all_rendered(d):
        got = d.execute_script(
            "return Array.from(document.querySelectorAll('[data-query]')).map(b => "
            "[b.dataset.query, b.dataset.rows || '', b.dataset.error || ''])")
        done = {n: r for n, r, _ in got if r and int(r) > 0}
        return done if len(done) == len(names) else False

    try:
        return WebDriverWait(chrome, timeout_s, poll_frequency=0.2).until(all_rendered)
    except Exception:
        errors = chrome.execute_script(
            "return Array.from(document.querySelectorAll('[data-query]')).map(b => "
            "[b.dataset.query, b.dataset.error || ''])")
        pytest.fail(f"charts not all rendered with rows: {errors}")


def attrs(chrome, selector: str, attr: str) -> list[str]:
    """One attribute (or 'text') of every element matching selector, read in one script
    call: the page redraws every second, so element handles would go stale."""
    return chrome.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => "
        "arguments[1] === 'text' ? e.textContent : e.getAttribute(arguments[1]))",
        selector, attr)


def assert_page_shows(chrome, rows: dict[str, str],
                      answer: Callable[[str], pd.DataFrame]) -> None:
    """The numbers drawn are the store's answers (answer(name) at the page's `now`)."""
    expected = answer("riskiest_terminals")  # bars: terminals and values, in order
    sel = '[data-query="riskiest_terminals"] rect'
    assert attrs(chrome, sel, "data-x") == list(expected["terminal_id"])
    np.testing.assert_allclose([float(v) for v in attrs(chrome, sel, "data-y")],
                               expected["risk_7d_delay7d"], rtol=1e-9)
    assert int(rows["riskiest_terminals"]) == len(expected)
    assert expected["risk_7d_delay7d"].iloc[0] > 0
    expected = answer("fraud_by_terminal_hour")  # a table: its cells are the rows
    cells = attrs(chrome, '[data-query="fraud_by_terminal_hour"] td[data-col="n_fraud"]',
                  "text")
    assert [float(c) for c in cells] == [float(v) for v in expected["n_fraud"]]
    assert int(rows["fraud_by_terminal_hour"]) == len(expected)
    expected = answer("unusual_velocity")  # the velocity burst of customer 99 comes first
    assert attrs(chrome, '[data-query="unusual_velocity"] rect', "data-x") == \
        list(expected["customer_id"])
    assert expected["customer_id"].iloc[0] == "99"
    expected = answer("fraud_rate_by_hour")  # a line: one point per hour
    drawn = attrs(chrome, '[data-query="fraud_rate_by_hour"] [data-series="n_tx"] circle',
                  "data-y")
    assert [float(v) for v in drawn] == [float(v) for v in expected["n_tx"]]
    # the drift table compares the two days: features x 3 statistics
    assert len(attrs(chrome, '[data-query="feature_drift"] tr', "text")) == \
        1 + 3 * len(DRIFT_FEATURES)


def screenshot(chrome, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert chrome.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
