"""runlock.holder: who measures on this machine, asked without taking the lock (the Run page
asks it on every poll, and must never be why a run that starts at that moment is refused)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runner import runlock
from tests.runner.helpers import REPO_ROOT, cli_env


def test_holder_names_the_process_and_plan_that_measure_and_none_once_it_ends(tmp_path):
    path = tmp_path / "run.lock.measure"
    assert runlock.holder(path) is None, "never held: no file"
    with runlock.machine_lock("plan seed", path):
        who = runlock.holder(path)
        assert who.startswith(f"pid {os.getpid()} (plan seed, since ")
    assert runlock.holder(path) is None


def test_a_lock_file_left_by_a_killed_run_is_free(tmp_path):
    path = tmp_path / "run.lock.measure"
    path.write_text(json.dumps({"pid": 999999, "what": "plan killed", "since": 0}))  # kill -9 leaves its record
    assert runlock.holder(path) is None


def test_holder_sees_a_run_of_another_process(tmp_path):
    path = tmp_path / "run.lock.measure"
    code = ("import sys; from pathlib import Path; from runner.runlock import machine_lock\n"
            f"with machine_lock('plan from a terminal', Path({str(path)!r})):\n"
            "    print('held', flush=True); sys.stdin.readline()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=cli_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert runlock.holder(path).startswith(f"pid {proc.pid} (plan from a terminal, since ")
        with pytest.raises(runlock.RunLocked, match="plan from a terminal"):
            with runlock.machine_lock("ours", path):  # asking took nothing: the other run still holds it
                pass
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert runlock.holder(path) is None
