"""Busy-machine detection: the classifier on recorded samples, the sampler on a planted load,
and a real run measured beside a CPU-bound process: flagged in its files, its store rows and
the CLI's output; a run on a quiet machine is not (judged on recorded samples, since the
machine running the tests may itself be busy)."""
from __future__ import annotations

import subprocess
import sys

import duckdb
import psutil
import pytest

from runner.machine_load import BUSY_ADVICE, COMPETING_CORES, LoadSampler, busy_reasons, load_summary
from runner.protocol import merge_rounds
from runner.runfiles import CellResult, RunDir, integrity_flags
from tests.runner.helpers import FAST_MEASURE, fast_settings, only_run_dir, run_cli, wait_for, write_plan
from vocabulary import BUSY_MACHINE_FLAG, INTEGRITY_FLAGS

# Samples as the sampler records them: a quiet machine, and three ways of being busy.
QUIET = {"load_per_core": 0.4, "cores": 16, "steal_fraction": 0.0, "competing_cores": 0.03, "competing": []}
COMPETED = QUIET | {"competing_cores": 1.9, "competing": [{"pid": 42, "name": "ffmpeg", "cores": 1.9}]}
STOLEN = QUIET | {"steal_fraction": 0.12}
LOADED = QUIET | {"load_per_core": 3.5}
BUSY_LOOP = "while True: pass"


def busy_loop(**popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP], **popen)


@pytest.fixture
def busy_loops():
    """Two CPU-bound processes (two, so that the planted load tops the threshold even where
    the test machine's other work takes part of their cores); killed after the test."""
    procs = [busy_loop(), busy_loop()]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_quiet_sample_is_quiet_and_each_kind_of_load_is_busy_with_its_reason():
    assert busy_reasons(QUIET) == []
    assert "ffmpeg (1.9 cores)" in busy_reasons(COMPETED)[0]
    assert "steals 12%" in busy_reasons(STOLEN)[0]
    assert "load 3.5 per core" in busy_reasons(LOADED)[0]


def test_run_of_quiet_samples_is_not_busy_and_one_busy_sample_makes_it_busy():
    quiet = [QUIET | {"busy": False}] * 3
    assert load_summary(quiet)["busy"] is False and load_summary([])["busy"] is False
    summary = load_summary(quiet + [COMPETED | {"busy": True}])
    assert (summary["busy"], summary["busy_samples"], summary["samples"]) == (True, 1, 4)
    assert summary["worst"]["competing_cores"] == 1.9


def test_cell_is_flagged_busy_only_when_a_round_was_measured_on_a_busy_machine():
    def record(round_index: int, busy: bool) -> dict:
        return {"round": round_index, "prefill": [1.0] * 12, "decode": [[1.0] * 4] * 12, "e2e": [4.0] * 12,
                "warmup_iters": 3, "warmup_s": 0.1, "warmup_converged": True, "measured_s": 0.1,
                "machine_load": QUIET | {"busy": busy}}

    for rounds, flagged in (([False, False], False), ([False, True], True)):
        result = CellResult(status="ok")
        merge_rounds(result, [record(i, busy) for i, busy in enumerate(rounds)])
        assert (BUSY_MACHINE_FLAG in integrity_flags(result, fast_settings())) is flagged
    unsampled = CellResult(status="ok")  # a run from before the sampler: nothing known, no flag
    assert BUSY_MACHINE_FLAG not in integrity_flags(unsampled, fast_settings())
    assert BUSY_MACHINE_FLAG in INTEGRITY_FLAGS


def test_sampler_sees_a_planted_busy_loop_and_not_the_runs_own_processes(busy_loops):
    # the "run" is a sleeping process; a busy loop it started is its own, the planted ones are not
    run = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time; "
                            f"subprocess.Popen([sys.executable, '-c', {BUSY_LOOP!r}]); time.sleep(600)"])
    try:
        sampler = LoadSampler(own_pids={run.pid}, listed=1000)
        planted = {proc.pid for proc in busy_loops}

        def sees_planted_load():
            sample = sampler.sample()
            return sample if planted & {p["pid"] for p in sample["competing"]} and sample["busy"] else None

        sample = wait_for(sees_planted_load, timeout=60, interval=0.2)
        own_child = {c.pid for c in psutil.Process(run.pid).children(recursive=True)}
        assert own_child and not own_child & {p["pid"] for p in sample["competing"]}
        assert sample["competing_cores"] >= COMPETING_CORES and any("other processes use" in r for r in sample["reasons"])
    finally:
        for proc in psutil.Process(run.pid).children(recursive=True):
            proc.kill()
        run.kill()
        run.wait()


def test_run_beside_a_busy_loop_is_flagged_in_its_files_its_store_rows_and_the_cli(tmp_path, busy_loops):
    planted = {proc.pid for proc in busy_loops}
    sampler = LoadSampler(own_pids=set(), listed=1000)  # the loops are this process's children: no own pids
    wait_for(lambda: planted & {p["pid"] for p in sampler.sample()["competing"]}, timeout=60, interval=0.2)
    plan = write_plan(tmp_path / "plan.toml", backends=["hf-eager"],
                      models={"custom": [{"name": "1x32", "n_layer": 1, "n_embd": 32, "n_head": 2,
                                          "vocab_size": 1024, "n_positions": 128}]},
                      measure=FAST_MEASURE | {"rounds": 2, "energy_window_s": 0, "check_correctness": False})
    db = tmp_path / "store.duckdb"
    done = run_cli("run", plan, "--runs-dir", tmp_path / "runs", "--db", db, timeout=600)
    assert done.returncode == 0, done.stderr
    output = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines; warnings go to stderr
    assert "warning before the run: the machine is busy" in output
    assert "was measured on a busy machine" in output and " ".join(BUSY_ADVICE.split()) in output

    run = RunDir(only_run_dir(tmp_path / "runs"))
    assert run.read_meta()["machine_load"]["busy"] is True
    assert [s["busy"] for s in run.machine_load_samples()].count(True) >= 1
    [record] = run.cell_records()
    assert record["machine_busy"] is True and BUSY_MACHINE_FLAG in record["flags"]
    with duckdb.connect(str(db), read_only=True) as con:
        [(flags,)] = con.execute("SELECT flags FROM cells").fetchall()
    assert BUSY_MACHINE_FLAG in flags
