"""How fast the dashboard's pages are on a store of about a million raw samples.

Store: analysis.synthetic, 3 regimes x 2 backends x 40 shapes (240 cells, 4,224 samples
each: 1.01M samples), written to a DuckDB file as the dashboard would open it.

- script run time of each page through AppTest (app.py + the page): cold (caches
  cleared first) target <= 2 s; warm (same page again) target <= 0.5 s
- in Chromium (Playwright, Debian's /usr/bin/chromium) against `streamlit run`: time from
  clicking the page's link to the first plotly chart drawn, target <= 4 s; first visit
  (cold caches) and second visit

Run: python -m benchmarks.bench_dashboard [--repeats N] [--no-browser]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from analysis.synthetic import SyntheticPlan, build_store, depth_width_law

ROOT = Path(__file__).resolve().parent.parent
REGIMES = ("NVIDIA H100 80GB HBM3 x1", "NVIDIA H200 x1", "CPU Xeon 16 threads")
SHAPES = tuple((d, w) for d in (1, 2, 4, 8, 12, 16, 24, 32) for w in (64, 128, 256, 512, 1024))
PAGES = {"overview": "app_pages/overview.py", "explore": "app_pages/explore.py",
         "depth_width": "app_pages/depth_width.py", "inversions": "app_pages/inversions.py",
         "regimes": "app_pages/regimes.py", "snapshots": "app_pages/snapshots.py", "run": "app_pages/run.py"}
LINKS = {"explore": "Explore", "depth_width": "Depth vs width", "inversions": "Inversions", "regimes": "Regimes"}
TARGET_WARM_S, TARGET_COLD_S, TARGET_BROWSER_S = 0.5, 2.0, 4.0
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def build(path: Path) -> int:
    from store.db import connect

    plan = SyntheticPlan(law=depth_width_law(), regimes=REGIMES, backends=("hf-eager", "torch-compile"), shapes=SHAPES,
                         gen_len=64, reps=64, noise_cv=0.05, cell_cv=0.03, seed=0)
    con = connect(path)
    build_store(plan, con)
    n = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
    con.close()
    return n


def _line(label: str, value: float, target: float) -> str:
    return f"{label:<44} {value:7.3f} s | target {target:.1f} s, ratio {value / target:.2f}"


def bench_apptest(db: Path, repeats: int) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["SHAPEBENCH_DB"] = str(db)
    os.environ["SHAPEBENCH_RUNS"] = tempfile.mkdtemp()
    os.environ["SHAPEBENCH_RUN_LOCK"] = str(Path(os.environ["SHAPEBENCH_RUNS"]) / "lock")
    print("\n== AppTest script run time (app.py + page) ==")
    for name, path in PAGES.items():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()  # lands on Overview
        if name != "overview":
            at.switch_page(path)
        st.cache_data.clear()  # cold: every query and statistic recomputed (connections kept)
        start = time.perf_counter()
        at.run()
        cold = time.perf_counter() - start
        assert not at.exception, (name, [e.value for e in at.exception])
        assert not [e for e in at.error if "could not be drawn" in e.value], (name, [e.value for e in at.error])
        warm = []
        for _ in range(repeats):
            start = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - start)
        print(_line(f"{name}: cold", cold, TARGET_COLD_S))
        print(_line(f"{name}: warm (median of {repeats})", statistics.median(warm), TARGET_WARM_S))


def bench_browser(db: Path) -> None:
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SHAPEBENCH_DB": str(db), "SHAPEBENCH_RUNS": tempfile.mkdtemp()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://localhost:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        print("\n== Browser: link click -> first chart drawn ==")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(base)
            page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=300_000)
            for visit in ("first visit", "second visit"):
                for name, link in LINKS.items():
                    page.get_by_role("link", name="Overview").click()
                    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=300_000)
                    page.wait_for_selector("[data-testid='stPlotlyChart']", state="detached", timeout=60_000)
                    start = time.perf_counter()
                    page.get_by_role("link", name=link).click()
                    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=300_000)
                    print(_line(f"{name}: {visit}", time.perf_counter() - start, TARGET_BROWSER_S))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    start = time.perf_counter()
    n = build(work / "store.duckdb")
    print(f"store: {n:,} samples, 240 cells, built in {time.perf_counter() - start:.1f} s ({work})")
    # the browser's server and this process each hold their own copy: DuckDB allows one writer per file
    shutil.copy(work / "store.duckdb", work / "browser.duckdb")
    bench_apptest(work / "store.duckdb", args.repeats)
    if not args.no_browser and Path("/usr/bin/chromium").exists():
        bench_browser(work / "browser.duckdb")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
