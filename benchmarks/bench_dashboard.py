"""How fast every dashboard page is on the bundled data and on a store ten times its size.

Datasets:
- bundle: data/snapshot, opened as a fresh clone opens it (no store file: the bundled
  snapshot, in memory).
- x10: a store file holding the bundle's runs copied ten times over, each copy a repeat run
  of the same cells (same regime and cell keys, new run ids) with its own run-level and
  (run, cell)-level offsets: ten times the runs, cells and samples, every cell measured in at
  least ten runs, so the pooled, multi-run paths (reproducibility, CIs across runs) carry
  the weight they will carry once more runs are in.

Per page (AppTest script run time of app.py + the page, the server's view; connections and
imports are kept, as in a running server):
- first: the first visit to this data version, nothing kept (the pages in order, so a page
  reuses what an earlier one computed): what one visitor pays once per data version.
- cold: the in-memory caches cleared (st.cache_data, cache.clear_results), the derived results kept
  on disk (analysis.derived): a new server process or an evicted cache. Target <= 2 s.
- warm: the same page again. Target <= 0.5 s (median of --repeats runs).

With --browser (Chromium, Playwright, Debian's /usr/bin/chromium against `streamlit run` on
the bundle): time from clicking a page's link to its first plotly chart drawn, target <= 2 s;
then each page's deep link opened in a new tab of the same browser (a new session on the warm
server; the browser's cache shared, as a user's new tab) to its first chart, target <= 4 s, and
once in a new browser profile (nothing cached: Streamlit's and plotly's scripts fetched and
compiled first).

A snapshot exported with its derived results (`runner snapshot export`), or the x10 store
with `--kept` (derived results kept as `runner ingest` keeps them), shows what a first visit
costs once they are kept: the dashboard reads them instead of computing.

Run: python -m benchmarks.bench_dashboard [--data bundle,x10,snapshot=DIR] [--kept] [--repeats N] [--browser]
     python -m benchmarks.bench_dashboard --short --check   (CI: the bundle, one warm run, exit 1 above a target)
"""
from __future__ import annotations

import argparse
import json
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

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "overview": "app_pages/overview.py", "run": "app_pages/run.py", "explore": "app_pages/explore.py",
    "depth_width": "app_pages/depth_width.py", "inversions": "app_pages/inversions.py",
    "regimes": "app_pages/regimes.py", "why": "app_pages/why.py", "reproducibility": "app_pages/reproducibility.py",
    "runs": "app_pages/runs.py", "snapshots": "app_pages/snapshots.py",
}
LINKS = {"explore": "Explore", "depth_width": "Depth vs width", "inversions": "Inversions", "regimes": "Regimes",
         "reproducibility": "Reproducibility", "runs": "Runs"}
# The address of each page with a chart (app.py's url_path), for a deep link opened in a new tab.
URL_PATHS = {"overview": "", "explore": "explore", "depth_width": "depth-width", "inversions": "inversions",
             "regimes": "regimes", "reproducibility": "reproducibility", "runs": "runs"}
TARGET_WARM_S, TARGET_COLD_S, TARGET_BROWSER_S, TARGET_NEW_TAB_S = 0.5, 2.0, 2.0, 4.0
COPIES = 10  # the x10 store: the bundle's runs this many times
RUN_JITTER, CELL_JITTER = 0.04, 0.02  # relative spread of a copy's run offset and (run, cell) drift: a few %, as measured
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def build_x10(path: Path, copies: int = COPIES) -> dict[str, int]:
    """A store file with the bundle's runs `copies` times, each copy a repeat of the same cells.

    Run ids get a suffix `.k`; latencies of copy k are multiplied by a run offset and a
    (run, cell) drift drawn from DuckDB's row hash (deterministic, no other randomness).
    """
    from store.dataset import BUNDLED_SNAPSHOT
    from store.db import connect
    from store.snapshot import open_snapshot

    src = open_snapshot(BUNDLED_SNAPSHOT)
    src.execute(f"CREATE TEMP TABLE copies AS SELECT range AS k FROM range({copies})")
    # uniform in [-0.5, 0.5) from a hash: a spread of RUN_JITTER / CELL_JITTER around 1
    def u(of: str) -> str:
        return f"((hash({of}) % 1000000)::DOUBLE / 1000000 - 0.5)"

    run_factor, cell_factor = u("c.run_id, k"), u("s.cell_id, k")
    queries = {
        "runs": "SELECT r.* REPLACE (r.run_id || '.' || k AS run_id) FROM runs r, copies",
        "cells": ("SELECT c.* REPLACE (c.run_id || '.' || k AS run_id, "
                  "c.run_id || '.' || k || substr(c.cell_id, length(c.run_id) + 1) AS cell_id) FROM cells c, copies"),
        "samples": (f"SELECT s.* REPLACE (c.run_id || '.' || k || substr(s.cell_id, length(c.run_id) + 1) AS cell_id, "
                    f"s.latency_ms * exp({RUN_JITTER} * {run_factor} + {CELL_JITTER} * {cell_factor}) AS latency_ms) "
                    "FROM samples s JOIN cells c USING (cell_id), copies"),
    }
    con = connect(path)
    try:
        for table, sql in queries.items():
            frame = src.sql(sql).to_arrow_table()
            con.register("_copy", frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _copy")
            con.unregister("_copy")
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("runs", "cells", "samples")}
    finally:
        con.close()
        src.close()


def _line(label: str, value: float, target: float | None) -> str:
    if target is None:
        return f"{label:<44} {value:7.3f} s"
    return f"{label:<44} {value:7.3f} s | target {target:.1f} s, ratio {value / target:.2f}"


def _run(at, page: str) -> float:
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    assert not at.exception, (page, [e.value for e in at.exception])
    assert not [e for e in at.error if "could not be drawn" in e.value], (page, [e.value for e in at.error])
    return seconds


def bench_apptest(db: Path, cache: Path, repeats: int, first: bool, snapshot: Path | None = None) -> dict[str, dict[str, float]]:
    """{page: {"first"?, "cold", "warm"}} in seconds, for the dataset the app opens from `db`
    (or `snapshot`, when given)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard import cache

    runs = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    os.environ.update({"SHAPEBENCH_DB": str(db), "SHAPEBENCH_RUNS": str(runs), "SHAPEBENCH_RUN_LOCK": str(runs / "lock"),
                       "SHAPEBENCH_CACHE": str(cache)})
    for key in ("SHAPEBENCH_SNAPSHOT", "SHAPEBENCH_HOSTED"):
        os.environ.pop(key, None)
    if snapshot is not None:
        os.environ["SHAPEBENCH_SNAPSHOT"] = str(snapshot)
    st.cache_data.clear()
    st.cache_resource.clear()  # connections too: this dataset opens afresh
    out: dict[str, dict[str, float]] = {}
    for name, path in PAGES.items():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
        if name != "overview":
            at.switch_page(path)
        result = {}
        if first:
            result["first"] = _run(at, name)
        else:
            at.run()  # nothing timed: makes sure the derived results are kept (a no-op when they are)
        st.cache_data.clear()  # cold: every query and derived result loaded again (connections kept)
        cache.clear_results()
        result["cold"] = _run(at, name)
        result["warm"] = statistics.median(_run(at, name) for _ in range(repeats))
        out[name] = result
    shutil.rmtree(runs, ignore_errors=True)
    return out


def report(dataset: str, timings: dict[str, dict[str, float]], repeats: int) -> list[str]:
    """Print the timings; return the lines above a target."""
    print(f"\n== {dataset}: AppTest script run time (app.py + page) ==")
    over = []
    for name, t in timings.items():
        if "first" in t:
            print(_line(f"{name}: first visit, nothing kept", t["first"], None))
        for kind, target in (("cold", TARGET_COLD_S), ("warm", TARGET_WARM_S)):
            label = f"{name}: {kind}" + (f" (median of {repeats})" if kind == "warm" else "")
            line = _line(label, t[kind], target)
            print(line)
            if t[kind] > target:
                over.append(f"{dataset} {line}")
    return over


def _new_tab_to_chart(context, url: str) -> float:
    """Seconds from opening `url` in a new tab of `context` to its first plotly chart drawn."""
    tab = context.new_page()
    start = time.perf_counter()
    tab.goto(url)
    tab.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=300_000)
    took = time.perf_counter() - start
    tab.close()
    return took


def bench_browser(db: Path, cache: Path) -> None:
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SHAPEBENCH_DB": str(db), "SHAPEBENCH_RUNS": tempfile.mkdtemp(), "SHAPEBENCH_CACHE": str(cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://localhost:{port}"
    idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
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
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            page = context.new_page()
            page.goto(base)
            page.wait_for_selector(idle, timeout=300_000)
            for visit in ("first visit", "second visit"):
                for name, link in LINKS.items():
                    page.get_by_role("link", name="Overview").click()
                    page.wait_for_selector(idle, timeout=300_000)
                    landing_chart = page.wait_for_selector(".st-key-overview_seed_pair .main-svg", timeout=300_000)
                    start = time.perf_counter()
                    page.get_by_role("link", name=link).click()
                    page.wait_for_function("el => !el.isConnected", arg=landing_chart, timeout=300_000)
                    page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg", timeout=300_000)
                    print(_line(f"{name}: {visit}", time.perf_counter() - start, TARGET_BROWSER_S))
            print("\n== Browser: deep link in a new tab -> first chart drawn (the server warm) ==")
            for name, path in URL_PATHS.items():  # a new tab of the same browser: its HTTP cache is shared
                print(_line(f"{name}: new tab", _new_tab_to_chart(context, f"{base}/{path}"), TARGET_NEW_TAB_S))
            fresh = browser.new_context(viewport={"width": 1440, "height": 1000})  # nothing cached: a first-ever visit
            print(_line("explore: new browser profile", _new_tab_to_chart(fresh, f"{base}/explore"), TARGET_NEW_TAB_S))
            fresh.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="bundle,x10",
                        help="comma-separated: bundle, x10, or snapshot=DIR (a snapshot exported with `runner snapshot export`)")
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per page (the median is reported)")
    parser.add_argument("--short", action="store_true", help="CI: the bundle only, one warm run, no first-visit timing")
    parser.add_argument("--kept", action="store_true",
                        help="x10: keep the derived results in the store first, as `runner ingest` does")
    parser.add_argument("--cache", help="directory of kept derived results (default: a fresh one per dataset)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a page is above a target")
    parser.add_argument("--browser", action="store_true", help="also time the first chart in Chromium (bundle)")
    parser.add_argument("--json", help="write the timings here")
    args = parser.parse_args(argv)
    datasets = ["bundle"] if args.short else [d.strip() for d in args.data.split(",") if d.strip()]
    repeats = 1 if args.short else args.repeats
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    over, results = [], {}
    try:
        for dataset in datasets:
            cache = Path(args.cache) if args.cache else work / f"derived-{dataset.replace('/', '_')}"
            snapshot = None
            if dataset.startswith("snapshot="):
                db, snapshot = work / "absent.duckdb", Path(dataset.removeprefix("snapshot="))
            elif dataset == "bundle":
                db = work / "absent.duckdb"  # no store file: the dashboard opens the bundled snapshot
            elif dataset == "x10":
                db = work / "x10.duckdb"
                start = time.perf_counter()
                counts = build_x10(db)
                print(f"x10 store: {counts['runs']:,} runs, {counts['cells']:,} cells, {counts['samples']:,} samples, "
                      f"built in {time.perf_counter() - start:.1f} s")
                if args.kept:
                    from store.cli import derive_into_store

                    start = time.perf_counter()
                    derive_into_store(db)  # what `runner ingest` does after ingesting
                    print(f"x10 store: derived results kept in {time.perf_counter() - start:.1f} s")
            else:
                parser.error(f"unknown dataset {dataset!r}; allowed: bundle, x10, snapshot=DIR")
            results[dataset] = bench_apptest(db, cache, repeats, first=not args.short and not args.cache, snapshot=snapshot)
            over += report(dataset, results[dataset], repeats)
        if args.browser and Path("/usr/bin/chromium").exists():
            bench_browser(work / "absent.duckdb", work / "derived-bundle")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if over:
        print("\nabove a target:\n" + "\n".join(over))
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
