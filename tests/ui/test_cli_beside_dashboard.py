"""The CLI beside an open dashboard: the dashboard holds no DuckDB lock on the store while idle.

The dashboard here is an AppTest in this process that has opened the store (a real one, made
by the runner on the CPU) and drawn its pages; the CLI is the real `python -m runner` in a
child process, as a user types it in a second terminal.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.ui.conftest import PAGES, ROOT, assert_clean


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def sidebar_metric(at, label: str) -> int:
    return int(next(m.value for m in at.sidebar.metric if m.label == label).replace(",", ""))


def open_dashboard(app_env, db, runs):
    at = app_env(db=db, runs=runs)
    at.run()
    assert_clean(at)
    assert any(f"store file {db}" in c for c in (str(e.value) for e in at.sidebar.caption))
    at.switch_page(PAGES["explore"]).run()  # a page that queries the store, not only the sidebar
    assert_clean(at)
    return at


def test_analyze_report_and_export_run_while_the_dashboard_has_the_store_open(app_env, copy_store, tmp_path):
    db, runs = copy_store
    at = open_dashboard(app_env, db, runs)

    analyzed = cli("analyze", "--db", str(db), "--json")
    assert analyzed.returncode == 0, analyzed.stderr[-1500:]
    assert json.loads(analyzed.stdout)["dataset"] == f"store file {db}"

    report = cli("report", "--db", str(db), "--out", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-1500:]
    assert (tmp_path / "report.html").stat().st_size > 0

    exported = cli("snapshot", "export", "--db", str(db), "--out", str(tmp_path / "snap.zip"))
    assert exported.returncode == 0, exported.stderr[-1500:]

    at.run()  # the dashboard still reads the store after the CLI's reads
    assert_clean(at)


def test_a_cli_import_and_ingest_beside_the_dashboard_write_and_the_dashboard_shows_the_new_runs(
        app_env, copy_store, tmp_path):
    from store.dataset import BUNDLED_SNAPSHOT

    db, runs = copy_store
    at = open_dashboard(app_env, db, runs)
    runs_before = sidebar_metric(at, "Runs")
    bundled_runs = json.loads((BUNDLED_SNAPSHOT / "manifest.json").read_text())["row_counts"]["runs"]

    imported = cli("snapshot", "import", str(BUNDLED_SNAPSHOT), "--db", str(db), "--runs-dir", str(runs))
    assert imported.returncode == 0, imported.stderr[-1500:]
    ingested = cli("ingest", str(runs), "--db", str(db))
    assert ingested.returncode == 0, ingested.stderr[-1500:]

    at.run()  # the file changed on disk: the dashboard's data version follows it
    assert_clean(at)
    assert sidebar_metric(at, "Runs") == runs_before + bundled_runs


def test_while_another_process_writes_the_store_the_dashboard_says_so_and_reads_it_once_released(app_env, copy_store):
    """The other side: a CLI writer (here a process holding the file read-write, as `ingest` does
    while it runs) makes the dashboard wait briefly, then say who holds the file; no traceback."""
    db, runs = copy_store
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "sys.stdin.readline(); con.close()", str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        at = app_env(db=db, runs=runs)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("another process is writing" in w for w in (str(e.value) for e in at.warning)), \
            [e.value for e in at.warning]
        assert not [i.value for i in at.info if "store is empty" in str(i.value)], "a held store is not called empty"
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    at.run()
    assert_clean(at)
    assert not [w for w in (str(e.value) for e in at.warning) if "another process" in w]
    assert sidebar_metric(at, "Runs") > 0
