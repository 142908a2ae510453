"""One measuring run per machine: a second `runner run` while one measures is refused at once,
in one line naming the holder, and measures nothing; the lock goes with its process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from runner.runlock import RunLocked, lock_path, machine_lock
from tests.runner.helpers import REPO_ROOT, cli_env, plan_dict, run_cli, write_plan

HOLD = """
import sys, time
from runner.runlock import machine_lock
with machine_lock("plan held-by-test"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the machine lock (as a measuring run does), under a test lock path."""
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc, env
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_second_run_is_refused_in_one_line_and_measures_nothing(holder, tmp_path):
    proc, env = holder
    plan = write_plan(tmp_path / "plan.toml")
    done = run_cli("run", plan, "--runs-dir", tmp_path / "runs", "--no-ingest", env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: another run is measuring on this machine: pid ")
    assert f"pid {proc.pid} (plan held-by-test" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_lock_goes_with_its_process_even_on_kill_9(holder, tmp_path):
    proc, env = holder
    path = lock_path(env)
    with pytest.raises(RunLocked):
        with machine_lock("second", path):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with machine_lock("after the kill", path):  # no stale lock to clean up
        pass


def test_runs_one_after_the_other_both_measure(tmp_path):
    env = cli_env() | {"SHAPEBENCH_RUN_LOCK": str(tmp_path / "run.lock")}
    models = {"custom": plan_dict()["models"]["custom"][:1]}
    plan = write_plan(tmp_path / "plan.toml", models=models, backends=["hf-eager"], gen_lens=[2])
    for _ in range(2):
        done = run_cli("run", plan, "--runs-dir", tmp_path / "runs", "--no-ingest", env=env)
        assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_the_lock_sits_beside_the_dashboards_lock(tmp_path):
    assert lock_path({"SHAPEBENCH_RUN_LOCK": str(tmp_path / "x.lock")}) == tmp_path / "x.lock.measure"
