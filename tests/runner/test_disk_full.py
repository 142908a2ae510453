"""Disk full under the runs folder: one line saying so, the run marked interrupted, no temp file
left behind (even from an earlier kill), and a resume that finishes the run.

The first tests refuse one write; those on `small_disk` fill a real filesystem (a tmpfs of a
few MiB) to its last byte, so every write after that fails, the run's end included: the space
each running run holds for its end is what lets it still be marked interrupted."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner import runfiles
from runner.executor import RunError, continue_run, start_run
from tests.runner.helpers import REPO_ROOT, cli_env, fill_disk_after, plan_dict, run_cli, small_plan, write_plan


def temp_files(run) -> list:
    return sorted(p.name for p in run.path.rglob("*.tmp"))


def test_disk_full_ends_in_one_line_marks_the_run_and_leaves_no_temp_file(tmp_path, monkeypatch):
    run = start_run(small_plan(), tmp_path / "runs")
    fill_disk_after(monkeypatch, cells_ok=1)
    with pytest.raises(RunError) as info:
        continue_run(run)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write the run directory {run.path}: No space left on device")
    assert "marked interrupted" in message and f"--resume {run.run_id}" in message
    assert run.read_meta()["status"] == "interrupted"
    assert temp_files(run) == []
    assert len(run.finished_keys()) == 1

    monkeypatch.undo()  # space freed: the resume measures the last cell and ends the run
    continue_run(run)
    assert run.read_meta()["status"] == "finished" and len(run.finished_keys()) == 2
    assert temp_files(run) == []


def test_a_resume_removes_temp_files_an_earlier_kill_left(tmp_path):
    run = start_run(small_plan(), tmp_path / "runs")
    (run.cells_dir / ".abc.json.4242.tmp").write_bytes(b"")
    (run.path / ".meta.json.4242.tmp").write_bytes(b'{"run_')
    continue_run(run)
    assert temp_files(run) == []
    assert run.read_meta()["status"] == "finished"


def test_cli_run_on_a_full_disk_prints_one_line(tmp_path):
    plan = write_plan(tmp_path / "plan.toml", models={"custom": plan_dict()["models"]["custom"][:1]}, gen_lens=[2])
    runs_dir = tmp_path / "runs"
    # The CLI as `python -m runner run`, with the same patched write installed first.
    script = textwrap.dedent(f"""
        import errno, json, sys
        from runner import runfiles
        real = json.dump
        def dump(data, handle, **kw):
            if "/cells/" in handle.name:
                handle.write("{{")
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(data, handle, **kw)
        runfiles.json.dump = dump
        from runner.cli import app
        sys.exit(app(["run", {str(plan)!r}, "--runs-dir", {str(runs_dir)!r}, "--no-ingest"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in done.stderr
    [run_path] = list(runs_dir.iterdir())
    run = runfiles.RunDir(run_path)
    assert run.read_meta()["status"] == "interrupted"
    assert temp_files(run) == []


@pytest.fixture
def small_disk(tmp_path):
    """A real 16 MiB filesystem (tmpfs), mounted for the test; skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Fill `disk` to its last byte with one file; returns it (unlink it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\xff" * chunk)
                except OSError as error:
                    assert error.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_a_disk_filled_to_the_last_byte_mid_run_still_ends_the_run_interrupted(tmp_path, small_disk):
    run = start_run(small_plan(), small_disk / "runs")
    filled = []

    def fill_after_first_cell(event: dict) -> None:
        if event["event"] == "cell_finished" and not filled:
            assert run.reserve_file.stat().st_size > run.meta_file.stat().st_size  # held while running
            filled.append(fill(small_disk))

    with pytest.raises(RunError) as info:
        continue_run(run, fill_after_first_cell)
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message, message
    assert "the run is marked interrupted" in message and f"--resume {run.run_id}" in message
    meta = run.read_meta()
    assert meta["status"] == "interrupted" and len(run.finished_keys()) == 1
    assert not run.reserve_file.exists() and temp_files(run) == []
    assert run.events()[-1]["event"] == "run_interrupted"
    assert run.events()[-1]["reason"] == "No space left on device"

    # the store takes the interrupted run as it is (the store lives on another disk)
    from store.db import connect as connect_store
    from store.ingest import ingest_run_dir

    con = connect_store(tmp_path / "store.duckdb")
    ingest_run_dir(con, run.path)
    assert con.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
    assert con.execute("SELECT count(*) FROM cells").fetchone() == (1,)
    con.close()

    # a resume on the still-full disk is refused in one line and leaves the run as it was
    with pytest.raises(RunError) as info:
        continue_run(run)
    assert "\n" not in str(info.value) and "the run is left interrupted" in str(info.value)
    assert run.read_meta()["status"] == "interrupted" and not run.reserve_file.exists()

    filled[0].unlink()  # space freed: the resume finishes the run and gives its reserve back
    continue_run(run)
    assert run.read_meta()["status"] == "finished" and len(run.finished_keys()) == 2
    assert not run.reserve_file.exists() and temp_files(run) == []


def test_a_full_disk_refuses_a_new_run_in_one_line_and_leaves_nothing(small_disk):
    runs_dir = small_disk / "runs"
    runs_dir.mkdir()
    fill(small_disk)
    with pytest.raises(RunError) as info:
        start_run(small_plan(), runs_dir)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot create a run directory under {runs_dir}: No space left on device")
    assert list(runs_dir.iterdir()) == []


def test_cli_run_on_a_disk_filled_to_the_last_byte_prints_one_line_and_the_run_can_be_ingested(tmp_path, small_disk):
    plan = write_plan(tmp_path / "plan.toml", models={"custom": plan_dict()["models"]["custom"][:1]}, gen_lens=[2])
    runs_dir = small_disk / "runs"
    # The CLI as `python -m runner run`; once its first cell is written (and its round files
    # gone), the disk is filled by another file (the run's own writes are not touched).
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from runner import runfiles
        from tests.runner.test_disk_full import fill
        clear_rounds = runfiles.RunDir.clear_rounds
        def clear_then_fill(self, key):
            clear_rounds(self, key)
            fill(Path({str(small_disk)!r}))
        runfiles.RunDir.clear_rounds = clear_then_fill
        from runner.cli import app
        sys.exit(app(["run", {str(plan)!r}, "--runs-dir", {str(runs_dir)!r}, "--no-ingest"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in done.stderr
    assert "marked interrupted" in errors[0]
    [run_path] = list(runs_dir.iterdir())
    run = runfiles.RunDir(run_path)
    assert json.loads(run.meta_file.read_bytes())["status"] == "interrupted"
    assert temp_files(run) == [] and not run.reserve_file.exists()

    ingested = run_cli("ingest", run_path, "--db", tmp_path / "store.duckdb", "--no-derive")
    assert ingested.returncode == 0, ingested.stderr
