"""Disk full under the runs folder: one line saying so, the run marked interrupted, no temp file
left behind (even from an earlier kill), and a resume that finishes the run."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from runner import runfiles
from runner.executor import RunError, continue_run, start_run
from tests.runner.helpers import REPO_ROOT, cli_env, fill_disk_after, plan_dict, small_plan, write_plan


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
