"""Deep links on a fresh server (real Chromium): a page's own URL opens that page, with no
"Page not found" dialog over it, and /overview opens the Overview (served at "/").

Each test starts its own `streamlit run app.py`: the first page a new server process runs
is the case that went wrong (Streamlit reads a `pages/` folder beside the entrypoint as a v1
multipage app until app.py has called st.navigation once).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.live_server import CHROMIUM, streamlit_server
from tests.ui.test_browser import SCREENS, wait_for_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


def fresh_server(root: Path):
    """A new server on the bundled snapshot (no store file under `root`)."""
    return streamlit_server(root, root / "absent.duckdb")


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
