"""The run lock is kept where only this user can reach it and is trusted only as far as this
server's own doing: a planted link is refused rather than followed and truncated, and a
record naming a process or a log this server did not start is ignored, so the Run page never
kills that pid nor shows that file."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from dashboard import runs
from runner.runlock import RunLocked, lock_path, machine_lock, open_lock_file, private_dir, record_path
from tests.runner.helpers import cli_env, run_cli, write_plan


def test_the_default_lock_lives_in_a_private_directory(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "runtime")}
    assert record_path(env) == tmp_path / "runtime" / "shapebench" / "run.lock"
    assert lock_path(env) == tmp_path / "runtime" / "shapebench" / "run.lock.measure"
    assert stat.S_IMODE(os.stat(tmp_path / "runtime" / "shapebench").st_mode) == 0o700


def test_a_loose_private_directory_is_tightened_and_a_link_refused(tmp_path):
    loose = tmp_path / "runtime" / "shapebench"
    loose.mkdir(parents=True)
    loose.chmod(0o777)
    private_dir({"XDG_RUNTIME_DIR": str(tmp_path / "runtime")})
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o700
    (tmp_path / "other").mkdir()
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "shapebench").symlink_to(tmp_path / "other")
    with pytest.raises(RunLocked, match="not a directory of this user"):
        private_dir({"XDG_RUNTIME_DIR": str(tmp_path / "linked")})


def test_a_lock_planted_as_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    planted = tmp_path / "run.lock.measure"
    planted.symlink_to(victim)
    with pytest.raises(RunLocked, match="is a symbolic link; refused"):
        with machine_lock("plan x", planted):
            pass
    assert victim.read_text() == "keep me"


def test_the_runner_refuses_a_planted_lock_in_one_line(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (tmp_path / "run.lock.measure").symlink_to(victim)
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    done = run_cli("run", write_plan(tmp_path / "plan.toml"), "--runs-dir", tmp_path / "runs", "--no-ingest", env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a symbolic link; refused" in lines[0], done.stderr
    assert victim.read_text() == "keep me"


def test_a_fifo_at_the_lock_path_is_refused_at_once(tmp_path):
    fifo = tmp_path / "run.lock"
    os.mkfifo(fifo)
    with pytest.raises(RunLocked, match="not a regular file"):
        open_lock_file(fifo)
    assert runs.read_lock(fifo) is None


@pytest.fixture
def started(tmp_path):
    """A run the dashboard started (a stand-in interpreter that only waits), cancelled after."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    lock = tmp_path / "run.lock"
    info = runs.start('name = "x"\n', "x", tmp_path / "runs", lock=lock, python=str(fake))
    yield lock, info
    runs.cancel(info["pid"], grace_s=5)


def test_the_record_of_a_run_this_server_started_is_read_back(started):
    lock, info = started
    assert runs.read_lock(lock) == info
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600


def test_a_record_edited_to_name_another_pid_or_log_is_ignored(started, tmp_path):
    lock, info = started
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for forged in ({**info, "log": "/etc/passwd"}, {**info, "pid": other.pid}):
            lock.write_text(json.dumps(forged))
            assert runs.read_lock(lock) is None, forged
        assert other.poll() is None  # nothing here ever signalled it
    finally:
        other.kill()
        other.wait()
    lock.write_text(json.dumps(info))
    assert runs.read_lock(lock) == info


def test_a_record_written_by_anyone_else_is_ignored(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "run.lock"
        lock.write_text(json.dumps({"pid": other.pid, "log": "/etc/passwd", "plan_name": "x"}))
        assert runs.read_lock(lock) is None
    finally:
        other.kill()
        other.wait()


def test_starting_over_a_planted_link_is_refused_before_anything_runs(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    lock = tmp_path / "run.lock"
    lock.symlink_to(victim)
    with pytest.raises(RunLocked, match="symbolic link"):
        runs.start('name = "x"\n', "x", tmp_path / "runs", lock=lock, python="/nonexistent/python")
    assert victim.read_text() == "keep me"
