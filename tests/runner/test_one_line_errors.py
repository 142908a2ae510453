"""Bad input to the CLI and the Overview ends in one true line, before any work: a plan nested
1,000 deep, a plan path that is a device or a FIFO, a grid shape past the model bounds,
`--out` at the store itself or under a file, and a store file that cannot be opened."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from store.snapshot import export_snapshot
from tests.runner.helpers import REPO_ROOT, run_cli, write_plan

REGIME = "CPU Intel(R) Xeon(R) Processor | 2 threads"


def one_error_line(done) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_a_plan_nested_a_thousand_deep_is_refused(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 1000 + "]" * 1000 + "\n")
    assert "nested too deeply" in one_error_line(run_cli("plan", path)) or "not valid TOML" in one_error_line(
        run_cli("plan", path))


@pytest.mark.parametrize("make", ["device", "fifo"])
def test_a_plan_path_that_is_not_a_file_is_refused_at_once(tmp_path, make):
    if make == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "plan.toml"
        os.mkfifo(path)
    line = one_error_line(run_cli("plan", path, timeout=60))
    assert "is not a regular file; refused" in line


def test_a_grid_shape_over_the_parameter_bound_is_one_line(tmp_path):
    plan = write_plan(tmp_path / "plan.toml", models={"grid": {"depths": [512], "widths": [16384], "n_head": 2}})
    line = one_error_line(run_cli("plan", plan))
    assert line.startswith("error: models: ") and "parameters" in line


@pytest.fixture(scope="module")
def small_snapshot(bundled_con, tmp_path_factory) -> Path:
    """One run of the bundled data (about 50 cells on the CPU)."""
    out = tmp_path_factory.mktemp("snap") / "snap"
    [run_id] = bundled_con.execute("SELECT min(run_id) FROM runs WHERE regime = ?", [REGIME]).fetchall()[0]
    export_snapshot(bundled_con, out, run_ids=[run_id])
    return out


def test_export_out_at_the_store_itself_is_refused(small_snapshot, tmp_path):
    store = tmp_path / "store.duckdb"
    assert run_cli("snapshot", "import", small_snapshot, "--db", store).returncode == 0
    before = store.read_bytes()
    line = one_error_line(run_cli("snapshot", "export", "--db", store, "--out", store, "--no-derive"))
    assert "is the file being read" in line
    assert store.read_bytes() == before


@pytest.mark.parametrize("command", [["snapshot", "export", "--no-derive"], ["report"]])
def test_out_under_a_file_is_refused_before_any_work(small_snapshot, tmp_path, command):
    blocker = tmp_path / "a-file.txt"
    blocker.write_text("not a folder")
    args = [*command, "--out", blocker / "out.zip"]
    args += ["--db", tmp_path / "absent.duckdb"] if command[0] == "snapshot" else ["--snapshot", small_snapshot]
    line = one_error_line(run_cli(*args))
    assert "not a writable folder" in line


def test_report_into_a_missing_folder_creates_it(small_snapshot, tmp_path):
    out = tmp_path / "new" / "folder" / "report.html"
    done = run_cli("report", "--snapshot", small_snapshot, "--out", out, timeout=600)
    assert done.returncode == 0, done.stderr
    assert out.read_text().lstrip().lower().startswith("<!doctype html")


def test_overview_of_a_store_that_cannot_be_opened_claims_nothing_about_its_cells(tmp_path, monkeypatch):
    bad = tmp_path / "store.duckdb"
    bad.write_bytes(b"this is not a DuckDB file" * 100)
    for key, value in {"SHAPEBENCH_DB": str(bad), "SHAPEBENCH_CACHE": str(tmp_path / "cache"),
                       "SHAPEBENCH_RUNS": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(key, value)
    for key in ("SHAPEBENCH_HOSTED", "SHAPEBENCH_SNAPSHOT"):
        monkeypatch.delenv(key, raising=False)
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    at.query_params["data"] = "store"  # the user picks their store (the default is the bundled data)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [e.value for e in at.error] + [w.value for w in at.warning]
    assert any("could not open" in text for text in shown), shown
    assert not [s.value for s in at.success if "integrity" in s.value]
