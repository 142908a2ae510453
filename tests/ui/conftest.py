"""Fixtures for the dashboard tests: a store made by the real runner on the CPU, variants
of it (failed cells, a run in progress), and an AppTest wired to a given dataset."""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGES = {
    "overview": "app_pages/overview.py", "run": "app_pages/run.py", "explore": "app_pages/explore.py",
    "depth_width": "app_pages/depth_width.py", "inversions": "app_pages/inversions.py",
    "regimes": "app_pages/regimes.py", "why": "app_pages/why.py", "reproducibility": "app_pages/reproducibility.py",
    "snapshots": "app_pages/snapshots.py", "runs": "app_pages/runs.py",
}
APP_TIMEOUT = 60  # s per script run, once the derived results are kept (see derived_cache)
WARM_TIMEOUT = 900  # s for the one-time computation of the bundled data's derived results on a slow, busy CPU
HEAVY_PAGES = ("overview", "depth_width", "inversions", "regimes", "why", "reproducibility")


@pytest.fixture(scope="session", autouse=True)
def derived_cache(tmp_path_factory) -> Path:
    """A private directory of kept derived results, filled once for the bundled data.

    What a first visitor pays once per data version (pooled statistics, regressions per
    run: a minute or more on 2 slow cores) is paid here, with a timeout sized for it; page
    tests and the browser's server then measure what every later visit costs.
    """
    directory = tmp_path_factory.mktemp("derived")
    previous = os.environ.get("SHAPEBENCH_CACHE")
    os.environ["SHAPEBENCH_CACHE"] = str(directory)
    saved = {k: os.environ.pop(k) for k in ("SHAPEBENCH_DB", "SHAPEBENCH_SNAPSHOT", "SHAPEBENCH_HOSTED") if k in os.environ}
    os.environ["SHAPEBENCH_DB"] = str(directory / "absent.duckdb")  # no store file: the bundled snapshot opens
    try:
        at = AppTest.from_file(APP, default_timeout=WARM_TIMEOUT)
        at.run()
        for page in HEAVY_PAGES[1:]:
            at.switch_page(PAGES[page]).run()
            assert not at.exception, (page, [e.value for e in at.exception])
    finally:
        os.environ.pop("SHAPEBENCH_DB", None)
        os.environ.update(saved)
    yield directory
    if previous is None:
        os.environ.pop("SHAPEBENCH_CACHE", None)
    else:
        os.environ["SHAPEBENCH_CACHE"] = previous


@pytest.fixture(scope="session")
def runner_store(tmp_path_factory) -> tuple[Path, Path]:
    """(store file, runs dir) from `python -m runner run plans/smoke-cpu.toml` on the CPU.

    Real models, real timings, real ingestion: 3 shapes x 2 backends, one CPU regime.
    Tests that write (or hold the file in another process) use `copy_store`.
    """
    root = tmp_path_factory.mktemp("runner")
    db, runs = root / "smoke.duckdb", root / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", "plans/smoke-cpu.toml", "--db", str(db), "--runs-dir", str(runs)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return db, runs


def copy_runner_store(runner_store: tuple[Path, Path], root: Path) -> tuple[Path, Path]:
    """The runner store and its runs dir copied under `root`: (root/store.duckdb, root/runs)."""
    db, runs = runner_store
    shutil.copy(db, root / "store.duckdb")
    shutil.copytree(runs, root / "runs")
    return root / "store.duckdb", root / "runs"


@pytest.fixture
def copy_store(runner_store, tmp_path):
    """A private copy of the runner store and its runs dir (this test may write to it)."""
    return copy_runner_store(runner_store, tmp_path)


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    """Point the app at a dataset; returns a function making a fresh AppTest."""

    def make(db: Path | None = None, runs: Path | None = None, hosted: bool = False, kind: str | None = None,
             picked: bool = True) -> AppTest:
        """An AppTest on `db`; with a store given it is picked in the sidebar (`picked`), as a
        user does: the dashboard itself always opens the bundled reference first."""
        monkeypatch.setenv("SHAPEBENCH_DB", str(db or tmp_path / "absent.duckdb"))
        monkeypatch.setenv("SHAPEBENCH_RUNS", str(runs or tmp_path / "no-runs"))
        monkeypatch.setenv("SHAPEBENCH_RUN_LOCK", str(tmp_path / "run.lock"))
        monkeypatch.delenv("SHAPEBENCH_SNAPSHOT", raising=False)
        if hosted:
            monkeypatch.setenv("SHAPEBENCH_HOSTED", "1")
        else:
            monkeypatch.delenv("SHAPEBENCH_HOSTED", raising=False)
        at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT)
        if kind is None and db is not None and picked and not hosted:
            kind = "store file"
        if kind:
            at.session_state["_kept_dataset_kind"] = kind
        return at

    return make


def fail_cells(db: Path, model_name: str, error: str) -> None:
    """Mark a model's cells failed, as the runner stores an OOM (no samples kept)."""
    con = duckdb.connect(str(db))
    try:
        ids = [r[0] for r in con.execute("SELECT cell_id FROM cells WHERE model_name = ?", [model_name]).fetchall()]
        con.execute("DELETE FROM samples WHERE cell_id IN (SELECT cell_id FROM cells WHERE model_name = ?)", [model_name])
        con.execute("UPDATE cells SET status = 'failed', error = ? WHERE model_name = ?", [error, model_name])
    finally:
        con.close()
    assert ids


def fake_running_run(runs: Path, lock: Path | None, run_id: str = "20261124-120000-abcdef") -> Path:
    """A run directory mid-way (2 of 5 cells done, one measuring) and, optionally, a lock held by
    a live process, as the dashboard sees a run it started."""
    from runner.runfiles import RunDir

    run = RunDir(runs / run_id)
    run.create({"run_id": run_id, "status": "running", "plan_name": "in-progress", "regime": "CPU test | 2 threads",
                "device_kind": "cpu", "n_cells_planned": 5, "started_at": "2026-11-24T12:00:00+00:00",
                "plan": {"name": "in-progress"}, "environment": {}, "cells": []})
    now = time.time()
    events = [
        {"ts": now - 30, "event": "run_started", "total": 5},
        {"ts": now - 30, "event": "segment_started", "done": 0, "total": 5},
        {"ts": now - 29, "event": "cell_started", "label": "a", "index": 0, "total": 5},
        {"ts": now - 20, "event": "cell_finished", "label": "a", "status": "ok", "done": 1, "total": 5},
        {"ts": now - 19, "event": "cell_started", "label": "b", "index": 1, "total": 5},
        {"ts": now - 10, "event": "cell_finished", "label": "b", "status": "failed", "error": "out of memory", "done": 2, "total": 5},
        {"ts": now - 9, "event": "cell_started", "label": "gpt2-5m hf-eager float32 b1 p16 g8", "index": 2, "total": 5},
    ]
    run.events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    if lock is not None:
        lock.write_text(json.dumps({"pid": os.getpid(), "log": str(runs / "none.log"), "runs_dir": str(runs),
                                    "known_runs": [p.name for p in runs.iterdir() if p.name != run_id], "plan_name": "in-progress", "started": now - 31}))
    return run.path


def open_page(at: AppTest, page: str) -> AppTest:
    """Run the app and switch to `page` (a PAGES key; "overview" is where it opens), checked clean."""
    at.run()
    if page != "overview":
        at.switch_page(PAGES[page]).run()
    assert_clean(at)
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    """The elements' text as a reader sees it: markdown backslash escapes (data text is escaped
    so it can never render as markup) removed."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for e in getattr(at, kind)]


def plotly_specs(at: AppTest) -> list[dict]:
    """Figures on the page: a plotly chart is an UnknownElement holding the JSON spec."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not [t for t in texts(at, "error") if "could not be drawn" in t], texts(at, "error")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright (never a downloaded browser), one per test module."""
    from playwright.sync_api import sync_playwright

    from tests.ui.live_server import CHROMIUM, CHROMIUM_ARGS

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
