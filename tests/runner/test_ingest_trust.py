"""Run directories are checked, not trusted: ingest accepts exactly what a snapshot import
accepts, a run id is its directory's name and is never claimed twice, only regular files of a
bounded size are read (before the store's writer lock), and a resume stays inside --runs-dir
and is held to a fresh run's checks. Each refusal is one line; the store stays as it was."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from dashboard import data
from runner.executor import execute
from runner.runfiles import RunDir
from store.db import connect
from store.ingest import IngestError, ingest_run_dir, ingest_runs
from store.snapshot import export_snapshot_bytes, open_snapshot_bytes
from tests.runner.helpers import cli_env, one_cell_run, run_cli, store_rows


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> RunDir:
    return one_cell_run(tmp_path_factory.mktemp("runs"))


def copy_run(run: RunDir, root: Path, name: str | None = None, **meta_changes) -> RunDir:
    target = RunDir(root / (name or run.run_id))
    shutil.copytree(run.path, target.path)
    target.write_meta(target.read_meta() | meta_changes)
    return target


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_run_id_other_than_the_directory_name_is_refused(one_run, tmp_path):
    run = copy_run(one_run, tmp_path, "20261201-000000-renamed")
    con = connect(tmp_path / "store.duckdb")
    with pytest.raises(IngestError) as info:
        ingest_run_dir(con, run.path)
    assert "not the directory's name" in _one_line(info.value)
    assert con.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]


def test_two_directories_claiming_one_run_id_are_never_merged(one_run, tmp_path):
    first = copy_run(one_run, tmp_path / "a")
    second = copy_run(one_run, tmp_path / "b", started_at="2026-12-01T10:00:00+00:00", shuffle_seed=99)
    con = connect(tmp_path / "store.duckdb")
    ingest_run_dir(con, first.path)
    before = store_rows(con)
    with pytest.raises(IngestError) as info:
        ingest_run_dir(con, second.path)
    assert "already in the store from another run directory" in _one_line(info.value)
    assert store_rows(con) == before
    assert ingest_run_dir(con, first.path).cells_added == 0  # the same directory again: idempotent


def _edit_cell(run: RunDir, change) -> None:
    [path] = sorted(run.cells_dir.glob("*.json"))
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("latency", [0.0, -5.0, float("inf")])
def test_a_latency_import_would_refuse_is_refused_at_ingest(one_run, tmp_path, latency):
    run = copy_run(one_run, tmp_path)
    _edit_cell(run, lambda r: r["prefill"].__setitem__(0, latency))
    con = connect(tmp_path / "store.duckdb")
    with pytest.raises(IngestError) as info:
        ingest_run_dir(con, run.path)
    assert "samples.latency_ms" in _one_line(info.value) and "must be a finite latency > 0 ms" in str(info.value)
    assert con.execute("SELECT count(*) FROM samples").fetchall() == [(0,)]


def test_what_ingest_stores_can_be_exported_and_imported(one_run, tmp_path):
    con = connect(tmp_path / "store.duckdb")
    assert ingest_run_dir(con, copy_run(one_run, tmp_path / "runs").path).cells_added == 1
    assert open_snapshot_bytes(export_snapshot_bytes(con)).execute("SELECT count(*) FROM cells").fetchall() == [(1,)]


def test_a_cell_file_linked_to_dev_zero_is_refused_and_the_folder_goes_on(one_run, tmp_path):
    root = tmp_path / "runs"
    bad = copy_run(one_run, root, "20261201-000000-aaaaaa", run_id="20261201-000000-aaaaaa")
    (bad.cells_dir / "zzzz.json").symlink_to("/dev/zero")
    good = copy_run(one_run, root)
    con = connect(tmp_path / "store.duckdb")
    report = ingest_runs(con, root)
    assert report.runs == 1 and report.cells_added == 1
    [line] = report.skipped
    assert "20261201-000000-aaaaaa" in line and "not a regular file" in line and "\n" not in line
    assert [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()] == [good.run_id]


def _within(seconds: float, work):
    """work() in a thread; fail (not hang) if it has not returned in time."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked on a FIFO"
    return out["value"]


def test_a_meta_json_that_is_a_fifo_is_refused_at_once_before_the_store_is_locked(one_run, tmp_path):
    root = tmp_path / "runs"
    run = copy_run(one_run, root)
    run.meta_file.unlink()
    os.mkfifo(run.meta_file)
    [(_, problem)] = _within(30, lambda: data.read_changed(root, {}))
    assert isinstance(problem, IngestError) and "not a regular file" in _one_line(problem)
    con = connect(tmp_path / "store.duckdb")
    report = _within(30, lambda: ingest_runs(con, root))
    assert report.runs == 0 and len(report.skipped) == 1


def test_resume_with_a_path_is_refused_and_writes_nothing_outside(one_run, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    elsewhere = copy_run(one_run, tmp_path / "elsewhere")
    before = sorted(p.name for p in elsewhere.path.rglob("*"))
    plan = tmp_path / "plan.toml"
    plan.write_text('name = "x"\n')
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    done = run_cli("run", plan, "--runs-dir", runs, "--no-ingest", "--resume", f"../elsewhere/{one_run.run_id}", env=env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: --resume:") and "is not a run id" in line
    assert sorted(p.name for p in elsewhere.path.rglob("*")) == before
    assert not any(runs.iterdir())


@pytest.mark.parametrize("edit, why", [
    (lambda m: m.update(rounds=1000), "rounds where its plan has"),
    (lambda m: m["cells"][0]["cell"].update(batch_size=100_000), "has batch_sizes 100000, which its plan does not"),
    (lambda m: m["plan"]["measure"].update(rounds=10_000), "its recorded plan does not validate"),
])
def test_a_resume_of_an_edited_meta_is_held_to_a_fresh_runs_checks(one_run, tmp_path, edit, why):
    runs = tmp_path / "runs"
    run = copy_run(one_run, runs, status="interrupted")
    for path in run.cells_dir.glob("*.json"):
        path.unlink()  # nothing finished: the resume would measure
    meta = run.read_meta()
    edit(meta)
    run.write_meta(meta)
    plan = tmp_path / "plan.toml"
    plan.write_text('name = "x"\n')
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    done = run_cli("run", plan, "--runs-dir", runs, "--no-ingest", "--resume", run.run_id, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and why in lines[0], done.stderr
    assert not any(run.cells_dir.iterdir())


def test_a_resume_on_other_hardware_is_refused_and_measures_nothing(one_run, tmp_path):
    runs = tmp_path / "runs"
    run = copy_run(one_run, runs, status="interrupted", regime="NVIDIA H200 | driver 580.159.04 | CUDA 13.0 | host 5be464da")
    for path in run.cells_dir.glob("*.json"):
        path.unlink()  # nothing finished: the resume would measure
    plan = tmp_path / "plan.toml"
    plan.write_text('name = "x"\n')
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    done = run_cli("run", plan, "--runs-dir", runs, "--no-ingest", "--resume", run.run_id, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "was measured on NVIDIA H200" in line and "would mix two regimes" in line
    assert not any(run.cells_dir.iterdir())
