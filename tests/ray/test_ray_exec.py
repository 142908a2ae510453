"""Ray execution on a real local Ray instance with CPU workers: the same cells as without
Ray, a dying worker marks its cells failed, an unschedulable pin is refused up front."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import psutil
import pytest

ray = pytest.importorskip("ray")

from runner import ray_exec  # noqa: E402
from runner.executor import RunError, execute  # noqa: E402
from runner.plan import parse_plan  # noqa: E402
from runner.runfiles import RunDir, list_run_dirs  # noqa: E402
from store.db import connect as connect_store  # noqa: E402
from store.ingest import ingest_run_dir  # noqa: E402
from tests.runner.helpers import TINY_SHAPE, only_run_dir, plan_dict, run_cli, start_cli, wait_for, write_plan  # noqa: E402

from tests.ray.crash_hook import CRASH_MODEL  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance for the module; its workers install the test's crash hook."""
    ray_exec.connect("local", num_cpus=2, include_dashboard=False,
                     runtime_env={"worker_process_setup_hook": "tests.ray.crash_hook.install"})
    yield
    ray.shutdown()


def sample_counts(run: RunDir) -> dict[str, tuple]:
    return {r["cell_key"]: (r["status"], len(r["prefill"]), sum(map(len, r["decode"])), len(r["e2e"]))
            for r in run.cell_records()}


def stored_samples(tmp_path, run: RunDir, name: str) -> dict[str, int]:
    con = connect_store(tmp_path / f"{name}.duckdb")
    ingest_run_dir(con, run.path)
    rows = con.execute("SELECT c.cell_key, count(s.cell_id) FROM cells c LEFT JOIN samples s USING (cell_id) "
                       "GROUP BY c.cell_key").fetchall()
    con.close()
    return dict(rows)


def test_plan_split_across_tasks_gives_the_same_cells_and_samples_as_without_ray(tmp_path):
    plan = parse_plan(plan_dict(gen_lens=[4, 2]))  # 2 models x 2 backends x 2 gen lens: 4 tasks of 2 cells
    [local] = execute(plan, tmp_path / "local")
    events = []
    [run] = ray_exec.execute_ray(plan, tmp_path / "ray", progress=events.append)

    meta = run.read_meta()
    assert meta["status"] == "finished" and meta["executor"] == "ray"
    assert meta["regime"].startswith("CPU ") and meta["environment"]["device_kind"] == "cpu"
    assert [e["key"] for e in meta["cells"]] == [e["key"] for e in local.read_meta()["cells"]]  # same shuffle
    assert sample_counts(run) == sample_counts(local)
    assert all(status == "ok" for status, *_ in sample_counts(run).values())
    assert stored_samples(tmp_path, run, "ray") == stored_samples(tmp_path, local, "local")
    [submitted] = [e for e in events if e["event"] == "ray_submitted"]
    assert (submitted["tasks"], submitted["cells"]) == (4, 8)
    [finished] = [e for e in events if e["event"] == "ray_finished"]
    assert sum(finished["nodes"].values()) == 8
    assert [e["done"] for e in run.events() if e["event"] == "cell_finished"] == list(range(1, 9))


def test_killed_worker_marks_its_cells_failed_and_the_other_cells_are_kept(tmp_path):
    crash = {"name": CRASH_MODEL, "n_layer": 1, "n_embd": 32, "n_head": 2, **TINY_SHAPE}
    ok = {"name": "2x64", "n_layer": 2, "n_embd": 64, "n_head": 2, **TINY_SHAPE}
    plan = parse_plan(plan_dict(models={"custom": [crash, ok]}))
    [run] = ray_exec.execute_ray(plan, tmp_path / "runs")

    meta = run.read_meta()
    assert meta["status"] == "finished" and run.finished_keys() == {e["key"] for e in meta["cells"]}
    records = {(r["cell"]["model"]["name"], r["cell"]["backend"]): r for r in run.cell_records()}
    for backend in ("hf-eager", "hf-sdpa"):
        failed, kept = records[(CRASH_MODEL, backend)], records[("2x64", backend)]
        assert failed["status"] == "failed" and failed["prefill"] == []
        assert "WorkerCrashedError" in failed["error"] and "retried once" in failed["error"]
        assert kept["status"] == "ok" and kept["error"] is None and len(kept["prefill"]) == 3
    samples = stored_samples(tmp_path, run, "store")
    assert sorted(samples.values())[:2] == [0, 0] and min(sorted(samples.values())[2:]) > 0


def test_plan_pinned_to_a_resource_no_node_has_is_refused_before_anything_runs(tmp_path):
    plan = parse_plan(plan_dict())
    with pytest.raises(RunError, match="no node of the Ray cluster has the resource 'H100'"):
        ray_exec.execute_ray(plan, tmp_path / "runs", resource="H100")
    assert not (tmp_path / "runs").exists()


def test_resume_measures_only_the_cells_without_a_file(tmp_path):
    [run] = ray_exec.execute_ray(parse_plan(plan_dict()), tmp_path / "runs")
    kept = sorted(run.cells_dir.glob("*.json"))
    removed, untouched = kept[:2], kept[2:]
    stamps = {p.name: p.stat().st_mtime_ns for p in untouched}
    for path in removed:
        path.unlink()
    run.update_meta(status="interrupted")

    [again] = ray_exec.continue_ray_run(run)
    assert again.read_meta()["status"] == "finished" and len(run.finished_keys()) == 4
    assert {p.name: p.stat().st_mtime_ns for p in untouched} == stamps
    [submitted] = [e for e in again.events() if e["event"] == "segment_started" and e.get("executor")][-1:]
    assert submitted["done"] == 2


def test_cells_of_another_regime_go_to_a_cloned_run_never_mixed(tmp_path):
    run = RunDir(tmp_path / "runs" / "primary")
    entries = [{"key": k, "order_index": i, "cell": {}} for i, k in enumerate("abcd")]
    run.create({"run_id": "primary", "regime": ray_exec.PENDING_REGIME, "environment": {}, "cells": entries,
                "n_cells_planned": 4, "status": "running", "plan": {"name": "p"}})
    regimes = ray_exec.RegimeRuns(run)
    env_a, env_b = {"device_kind": "cpu", "host": "a"}, {"device_kind": "cpu", "host": "b"}

    assert regimes.run_for("A", env_a) is run and run.read_meta()["regime"] == "A"
    clone = regimes.run_for("B", env_b)
    assert clone is not run and regimes.run_for("B", env_b) is clone
    clone.write_cell("c", {"cell_key": "c"})
    regimes.record(clone, "c")
    run.write_cell("a", {"cell_key": "a"})
    regimes.record(run, "a")
    runs = regimes.split_planned()

    assert runs == [run, clone]
    clone_meta, meta = clone.read_meta(), run.read_meta()
    assert clone_meta["regime"] == "B" and clone_meta["environment"] == env_b
    assert clone_meta["cloned_from"] == "primary" and clone_meta["plan"] == {"name": "p"}
    assert [e["key"] for e in clone_meta["cells"]] == ["c"] and clone_meta["n_cells_planned"] == 1
    assert [e["key"] for e in meta["cells"]] == ["a", "b", "d"] and meta["n_cells_planned"] == 3


def test_the_address_probe_takes_a_real_ray_gcs_at_once():
    import time

    started = time.monotonic()
    ray_exec.check_reachable(ray.get_runtime_context().gcs_address)  # raises RunError if refused
    assert time.monotonic() - started < 2


def test_groups_are_one_per_model_and_backend_in_the_shuffled_order():
    def entry(i, name, backend):
        return {"key": f"k{i}", "order_index": i, "cell": {"model": {"name": name}, "backend": backend}}

    entries = [entry(3, "m1", "eager"), entry(0, "m2", "eager"), entry(1, "m1", "eager"), entry(2, "m1", "sdpa")]
    groups = ray_exec.group_entries(entries)
    assert [[e["key"] for e in g] for g in groups] == [["k0"], ["k1", "k3"], ["k2"]]


def test_cli_refuses_an_unschedulable_pin_with_a_clear_message(tmp_path):
    plan = write_plan(tmp_path / "plan.toml")
    result = run_cli("run", plan, "--ray", "local", "--ray-resource", "H100", "--runs-dir", tmp_path / "runs",
                     "--no-ingest")
    assert result.returncode == 2, result.stderr
    assert "error: no node of the Ray cluster has the resource 'H100'" in result.stderr
    assert not (tmp_path / "runs").exists() or not list_run_dirs(tmp_path / "runs")


def test_cli_runs_a_plan_on_ray_and_prints_the_cells_per_node(tmp_path):
    plan = write_plan(tmp_path / "plan.toml")
    result = run_cli("run", plan, "--ray", "local", "--runs-dir", tmp_path / "runs", "--db", tmp_path / "s.duckdb")
    assert result.returncode == 0, result.stderr
    [run] = list_run_dirs(tmp_path / "runs")
    assert result.stdout.strip().splitlines()[-1] == run.run_id  # after the results table
    assert "4 cells on " in result.stderr and "ingested 4 cells" in result.stderr
    assert json.loads(run.meta_file.read_text())["status"] == "finished"


def test_cli_cancel_stops_the_tasks_and_marks_the_run_interrupted(tmp_path):
    """SIGTERM (the dashboard's Cancel) acts as Ctrl-C: tasks cancelled, run resumable."""
    slow = dict(plan_dict()["measure"], prefill_reps=200, decode_reps=50, e2e_reps=50)
    plan = write_plan(tmp_path / "plan.toml", measure=slow)
    proc = start_cli("run", plan, "--ray", "local", "--runs-dir", tmp_path / "runs", "--no-ingest")
    run_path = wait_for(lambda: only_run_dir(tmp_path / "runs"), 60, proc)
    wait_for(lambda: any(e["event"] == "segment_started" for e in RunDir(run_path).events()), 30, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    run = RunDir(run_path)
    assert run.read_meta()["status"] == "interrupted"
    assert [e["event"] for e in run.events()][-1] == "run_interrupted"
    assert "resume with --resume " + run.run_id in stderr


def test_a_plan_asking_for_calibration_gets_its_nodes_ceilings_through_ray(tmp_path):
    plan = parse_plan(plan_dict(measure={**plan_dict()["measure"], "calibrate": True}))
    [run] = ray_exec.execute_ray(plan, tmp_path / "ray")
    calibration = run.read_meta()["calibration"]
    assert calibration and calibration["bandwidth_gb_s"] > 0 and calibration["launch_us"] > 0
    con = connect_store(tmp_path / "cal.duckdb")
    ingest_run_dir(con, run.path)
    [(stored,)] = con.execute("SELECT calibration FROM runs").fetchall()
    con.close()
    assert json.loads(stored)["bandwidth_gb_s"] == calibration["bandwidth_gb_s"]


def other_program() -> psutil.Process:
    """A CPU-bound process that is no child of this one (the shell that starts it exits at
    once), as another program on the machine: a child of the driver would count as the run's own."""
    from tests.runner.test_machine_load import BUSY_LOOP

    started = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{BUSY_LOOP}" >/dev/null 2>&1 & echo $!'],
                             capture_output=True, text=True, check=True)
    return psutil.Process(int(started.stdout))


def test_ray_run_samples_the_drivers_machine_load_into_its_meta_as_a_direct_run_does(tmp_path):
    from runner.machine_load import RAY_DAEMONS, ray_pids
    from tests.runner.helpers import small_plan

    loops = [other_program(), other_program()]  # two, so the planted load tops the threshold on a busy 2-core machine
    try:
        events = []
        [run] = ray_exec.execute_ray(small_plan(), tmp_path / "runs", progress=events.append)
    finally:
        for loop in loops:
            loop.kill()

    samples = [e for e in run.events() if e["event"] == "machine_load"]
    assert [e["at"] for e in samples][0] == "run_start" and samples[-1]["at"] == "run_end"
    assert [e["at"] for e in samples].count("task_end") == 2, "one after each task's records (one model x 2 backends)"
    assert all(e["sample"]["machine"] == "driver" for e in samples)
    summary = run.read_meta()["machine_load"]
    assert summary["samples"] == len(samples) == len(run.machine_load_samples())
    assert summary["busy"] is True, "the planted loops are seen on the driver's machine"
    planted = {loop.pid for loop in loops}
    assert planted & {p["pid"] for e in samples for p in e["sample"]["competing"]}
    competitors = {p["name"] for e in samples for p in e["sample"]["competing"]}
    assert not {n for n in competitors if n.startswith("ray::") or n in RAY_DAEMONS}, "Ray's workers are the run's own"
    assert ray_pids(), "this host's Ray node is found by its processes"
    assert [e for e in events if e["event"] == "machine_load"] == [
        {"event": "machine_load", **{k: v for k, v in e.items() if k not in ("event", "ts")}} for e in samples]


def test_a_full_disk_under_a_ray_run_ends_in_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    from tests.runner.helpers import fill_disk_after, small_plan

    plan = small_plan()
    fill_disk_after(monkeypatch, cells_ok=0)
    with pytest.raises(RunError) as info:
        ray_exec.execute_ray(plan, tmp_path / "runs")
    message = str(info.value)
    [run] = list_run_dirs(tmp_path / "runs")
    assert "\n" not in message and "No space left on device" in message and f"--resume {run.run_id}" in message
    assert run.read_meta()["status"] == "interrupted"
    assert not list(run.path.rglob("*.tmp")), "no temp file left behind"
    monkeypatch.undo()  # space freed
    ray_exec.continue_ray_run(run)
    assert run.read_meta()["status"] == "finished" and len(run.finished_keys()) == 2
