"""Take the dashboard's screenshots in docs/screens/ from the bundled data.

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [--out docs/screens] [--full-page]

Starts `streamlit run app.py` headless on a free port with no store file (so the bundled
snapshot opens), drives Debian's Chromium through Playwright, opens every page by its link,
waits the way Streamlit's own e2e tests wait (connected, then the script finished) and until
every plotly chart on the page has drawn, then writes `<out>/<page>.png`. The server and the
browser are the ones the browser tests use (`tests/ui/live_server.py`), so a picture shows
what a test has looked at. The first visit of a data version computes the derived results
(a minute or more on a slow CPU); they are kept under SHAPEBENCH_CACHE for later runs.
Needs playwright (requirements-dev.txt) and /usr/bin/chromium (`apt-get install chromium`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from tests.ui.live_server import CHROMIUM, CHROMIUM_ARGS, ROOT, ServerDidNotStart, streamlit_server, wait_for_app

# url_path -> file name; "" is the Overview, the default page. Every page of the local dashboard.
PAGES = {"": "overview", "run": "run", "explore": "explore", "depth-width": "depth-width",
         "inversions": "inversions", "regimes": "regimes", "why": "why", "reproducibility": "reproducibility",
         "runs": "runs", "snapshots": "snapshots"}
# A wide window, as on a desktop screen; the height shows a page's first charts without scrolling.
VIEWPORT = {"width": 1440, "height": 1000}
# The first visit of the bundled data computes its derived results: minutes on a busy 2-core CPU.
FIRST_VISIT_TIMEOUT_MS = 900_000
PAGE_TIMEOUT_MS = 300_000
# True once every plotly chart in the document has drawn its SVG (charts in hidden tabs included).
CHARTS_DRAWN = """() => {
  const charts = document.querySelectorAll("[data-testid='stPlotlyChart']");
  return Array.from(charts).every(c => c.querySelector('.main-svg') !== null);
}"""


def take_screenshots(out: Path, full_page: bool = False) -> list[Path]:
    """Open every page on the bundled data and write one PNG per page into `out`; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="shapebench-screens-") as tmp:
        root = Path(tmp)
        with streamlit_server(root, root / "absent.duckdb") as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(base)
            wait_for_app(page, timeout_ms=FIRST_VISIT_TIMEOUT_MS)
            for url_path, name in PAGES.items():
                page.goto(f"{base}/{url_path}")
                wait_for_app(page, timeout_ms=PAGE_TIMEOUT_MS)
                page.wait_for_selector("h1", timeout=PAGE_TIMEOUT_MS)
                page.wait_for_function(CHARTS_DRAWN, timeout=PAGE_TIMEOUT_MS)
                if page.locator("[data-testid='stException']").count():
                    raise RuntimeError(f"the {name} page shows an exception; no screenshot taken")
                path = out / f"{name}.png"
                page.screenshot(path=str(path), full_page=full_page)
                written.append(path)
                print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
            browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screens", help="folder for <page>.png")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the first screen of it")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 1
    try:
        take_screenshots(args.out, args.full_page)
    except (ServerDidNotStart, RuntimeError, PlaywrightError) as exc:  # a timeout names what it waited for
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
