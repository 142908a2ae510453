"""Real browser: Debian's Chromium through Playwright against `streamlit run app.py`.

Opens every page on a store made by the real runner, checks that no exception element
shows and that the charts render, waiting the way Streamlit's own e2e tests wait; then
starts a small CPU run from the Run page, follows its link to the Runs page and finds its
cell in Explore.
Screenshots land in /tmp/screens/.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.ui.conftest import copy_runner_store
from tests.ui.live_server import CHROMIUM, streamlit_server, wait_for_app

SCREENS = Path("/tmp/screens")
# url_path ("" is the default page, Overview) -> whether the page draws a plotly chart on the runner store
PAGES = {"": True, "run": False, "explore": True, "depth-width": True, "inversions": True,
         "regimes": False, "why": False, "reproducibility": False, "runs": False, "snapshots": False}
# overview: the store's own shapes; regimes: one regime, 3 shapes: no fit to plot; why, reproducibility: no profile, no repeats; runs: one run to compare
BUNDLED_PAGES = {"overview": "Overview", "explore": "Explore", "depth-width": "Depth vs width", "inversions": "Inversions",
                 "regimes": "Regimes", "why": "Why is it slow", "reproducibility": "Reproducibility", "runs": "Runs"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def server(runner_store, tmp_path_factory):
    """streamlit run app.py on a private copy of the runner store (its own writer process)."""
    root = tmp_path_factory.mktemp("browser")
    db, _ = copy_runner_store(runner_store, root)
    with streamlit_server(root, db) as base:
        yield base, root


def open_page(pg, base: str, url_path: str, data: str = "store") -> None:
    """A fresh session on `url_path`; the store file picked through the link (?data=store), as
    the dashboard opens the bundled reference by default."""
    pg.goto(f"{base}/{url_path}" + (f"?data={data}" if data else ""))
    wait_for_app(pg)


def test_every_page_renders_without_exception_and_charts_show(server, page):
    base, _ = server
    SCREENS.mkdir(exist_ok=True)
    for url_path, has_chart in PAGES.items():
        open_page(page, base, url_path)
        page.wait_for_selector("h1", timeout=30_000)
        if has_chart:
            page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
        assert page.locator("[data-testid='stException']").count() == 0, url_path
        page.screenshot(path=str(SCREENS / f"store-{url_path or 'overview'}.png"), full_page=True)
    # the same pages on the bundled H100 snapshot, picked in the sidebar
    open_page(page, base, "")
    page.get_by_text("bundled snapshot", exact=True).click()
    wait_for_app(page)
    assert "data=" not in page.url, "the default dataset has no parameter in the link"
    wait_for_app(page)
    for url_path, title in BUNDLED_PAGES.items():
        page.get_by_role("link", name=title, exact=True).click()
        wait_for_app(page)
        if url_path != "overview":  # regimes: the backend chart sits in the second tab (attached, hidden)
            page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000,
                                   state="attached" if url_path == "regimes" else "visible")
        assert page.locator("[data-testid='stException']").count() == 0, url_path
        page.screenshot(path=str(SCREENS / f"bundled-{url_path}.png"), full_page=True)


def test_a_cpu_run_started_from_the_run_page_finishes_and_shows_in_explore(server, page):
    base, root = server
    open_page(page, base, "run")
    cells_metric = page.locator("[data-testid='stSidebar'] [data-testid='stMetric']", has_text="Cells")
    before = int(cells_metric.locator("[data-testid='stMetricValue']").inner_text().replace(",", ""))
    page.get_by_role("button", name="Start run").click()
    # live progress from events.jsonl: cells, or cell-rounds when the plan measures in rounds
    page.get_by_text(re.compile(r"\d+ / \d+ (cells|cell-rounds).*ETA")).first.wait_for(timeout=120_000)
    page.screenshot(path=str(SCREENS / "run-in-progress.png"), full_page=True)
    deadline = time.time() + 150
    while time.time() < deadline:
        value = cells_metric.locator("[data-testid='stMetricValue']").inner_text()
        if int(value.replace(",", "")) == before + 1:
            break
        time.sleep(1)
    else:
        log = "\n".join(p.read_text()[-1500:] for p in (root / "runs" / ".dashboard").glob("*.log"))
        pytest.fail(f"the run's cell was not ingested (cells still {value}); runner log:\n{log}")
    assert page.locator("[data-testid='stException']").count() == 0
    # the run ends with its own results where it was started, and a link to it on the Runs page
    page.get_by_text("Results of run").wait_for(timeout=60_000)
    page.screenshot(path=str(SCREENS / "run-finished.png"), full_page=True)
    link = page.get_by_role("link", name="Open run")
    run_id = re.search(r"Open run (\S+) on the Runs page", link.inner_text()).group(1)
    link.click()
    page.get_by_text("Median decode ms per token and its 95% CI").wait_for(timeout=60_000)
    assert f"/runs?run={run_id}" in page.url  # the dataset choice (?data=store) rides along
    assert page.locator("h3", has_text=f"Run {run_id}").count() == 1  # st.subheader
    assert page.locator("[data-testid='stException']").count() == 0
    open_page(page, base, "explore")
    page.get_by_text(f"{before + 1} cells").wait_for(timeout=30_000)
    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=30_000)
    assert page.locator("[data-testid='stException']").count() == 0
