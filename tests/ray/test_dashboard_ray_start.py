"""The Run page's Ray choice: the dashboard's start() passes --ray to the runner subprocess."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("ray")

from dashboard import runs  # noqa: E402
from runner.runfiles import list_run_dirs  # noqa: E402
from tests.runner.helpers import plan_dict  # noqa: E402
from tomli_w import dumps  # noqa: E402


def test_a_run_started_from_the_dashboard_with_a_ray_address_runs_on_ray(tmp_path):
    plan = dumps(plan_dict())
    info = runs.start(plan, "ray-from-dashboard", tmp_path / "runs", lock=tmp_path / "run.lock", ray_address="local")
    deadline = time.time() + 240
    while time.time() < deadline and runs.read_lock(tmp_path / "run.lock"):
        time.sleep(1)
    log = open(info["log"]).read()
    (run,) = list_run_dirs(tmp_path / "runs")
    meta = run.read_meta()
    assert meta.get("executor") == "ray", log[-2000:]
    assert meta["status"] == "finished", log[-2000:]
    assert len(run.finished_keys()) == meta["n_cells_planned"] > 0
