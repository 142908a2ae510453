"""Deep links on a fresh server (real Chromium): a page's own URL opens that page, with no
"Page not found" dialog over it, and /overview opens the Overview (served at "/").

Each test starts its own `streamlit run app.py`: the first page a new server process runs
is the case that went wrong (Streamlit reads a `pages/` folder beside the entrypoint as a v1
multipage app until app.py has called st.navigation once).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.ui.conftest import ROOT
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENS, wait_for_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fresh_server(root: Path) -> Iterator[str]:
    """A new `streamlit run app.py` on the bundled snapshot; yields its base URL once healthy."""
    port = free_port()
    env = {**os.environ, "SHAPEBENCH_DB": str(root / "absent.duckdb"), "SHAPEBENCH_RUNS": str(root / "runs"),
           "SHAPEBENCH_RUN_LOCK": str(root / "run.lock")}
    env.pop("SHAPEBENCH_HOSTED", None)
    env.pop("SHAPEBENCH_SNAPSHOT", None)
    log_path = root / f"server-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://localhost:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).status == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        pytest.fail("streamlit did not start: " + log_path.read_text()[-2000:])
                    time.sleep(0.2)  # polling the health endpoint: there is no event to wait on
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    yield pg
    context.close()


def no_page_not_found(pg) -> None:
    assert pg.get_by_text("Page not found").count() == 0, "a 'Page not found' dialog is shown"
    assert pg.locator("[role='dialog']").count() == 0


@pytest.mark.parametrize("url_path, title", [("runs", "Runs"), ("explore", "Explore")])
def test_a_deep_link_opens_its_page_on_a_fresh_server_without_a_page_not_found_dialog(page, tmp_path, url_path, title):
    with fresh_server(tmp_path) as base:
        page.goto(f"{base}/{url_path}")
        wait_for_app(page)
        page.locator("h1", has_text=title).first.wait_for(timeout=60_000)
        wait_for_app(page)
        no_page_not_found(page)
        SCREENS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENS / f"deep-link-{url_path}.png"), full_page=True)


def test_slash_overview_opens_the_overview_and_keeps_the_links_filters(page, tmp_path):
    import duckdb

    from store.dataset import BUNDLED_SNAPSHOT

    backend = duckdb.connect().execute(
        f"SELECT min(backend) FROM read_parquet('{BUNDLED_SNAPSHOT / 'cells.parquet'}')").fetchall()[0][0]
    with fresh_server(tmp_path) as base:
        page.goto(f"{base}/overview?backend={backend}")
        page.wait_for_url(lambda url: "/overview" not in url, timeout=60_000)
        wait_for_app(page)
        page.locator("h1", has_text="Does shape drive latency?").first.wait_for(timeout=120_000)
        wait_for_app(page)
        no_page_not_found(page)
        assert f"backend={backend}" in page.url
