"""`python -m runner` end to end, as a real subprocess: run, plan, list, bad plans, and runs
that are killed (-9) or interrupted (Ctrl-C) and then resumed into the store."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from runner.runfiles import RunDir
from tomli_w import dumps
from store.db import connect
from tests.runner.helpers import (
    REPO_ROOT, cli_env, only_run_dir, plan_dict, run_cli, start_held_cli, wait_for, write_plan,
)

SMOKE = REPO_ROOT / "plans" / "smoke-cpu.toml"


def store_rows(db):
    con = connect(db, read_only=True)
    try:
        runs = con.execute("SELECT run_id, status, finished_at IS NOT NULL, n_cells_planned FROM runs").fetchall()
        cells = con.execute("SELECT cell_key, status FROM cells ORDER BY cell_key").fetchall()
        duplicates = con.execute("""SELECT cell_id, phase, rep, step, count(*) FROM samples
                                    GROUP BY cell_id, phase, rep, step HAVING count(*) > 1""").fetchall()
        per_cell = dict(con.execute("SELECT cell_id, count(*) FROM samples GROUP BY cell_id").fetchall())
        return runs, cells, duplicates, per_cell
    finally:
        con.close()


def test_smoke_plan_runs_end_to_end_into_the_store(tmp_path):
    db, runs_dir = tmp_path / "store.duckdb", tmp_path / "runs"
    done = run_cli("run", SMOKE, "--db", db, "--runs-dir", runs_dir)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    assert (runs_dir / run_id / "meta.json").exists()
    assert "ingested 6 cells" in done.stderr

    con = connect(db, read_only=True)
    try:
        assert con.execute("SELECT run_id, status, plan_name, device_kind FROM runs").fetchall() == [
            (run_id, "finished", "smoke-cpu", "cpu")]
        cells = con.execute("""SELECT model_name, backend, status, params, gen_len, correctness->>'ok'
                               FROM cells ORDER BY ALL""").fetchall()
        assert [(m, b, s) for m, b, s, *_ in cells] == [
            (m, b, "ok") for m in ("1x128", "4x64", "tiny-gpt2") for b in ("hf-eager", "hf-sdpa")]
        assert all(params > 0 and ok == "true" for *_, params, _, ok in cells)
        # 10 prefills + 2 reps x 8 decode steps + 3 generations per cell, all timed on the CPU clock
        counts = con.execute("""SELECT phase, count(*) / 6, min(latency_ms) > 0, any_value(timer)
                                FROM samples GROUP BY phase ORDER BY phase""").fetchall()
        assert counts == [("decode", 16, True, "perf_counter_ns"), ("e2e", 3, True, "perf_counter_ns"),
                          ("prefill", 10, True, "perf_counter_ns")]
    finally:
        con.close()


def test_plan_command_prints_the_cells_and_an_estimate():
    done = run_cli("plan", SMOKE)
    assert done.returncode == 0, done.stderr
    assert "smoke-cpu: 6 cells on cpu" in done.stdout
    for name in ("tiny-gpt2", "4x64", "1x128", "hf-eager", "hf-sdpa"):
        assert name in done.stdout
    assert "rough estimate:" in done.stdout


def test_plan_command_estimates_an_adaptive_plans_rounds_from_earlier_runs_of_each_backend(tmp_path):
    done = run_cli("plan", REPO_ROOT / "plans" / "seed-precision.toml")  # no store here: the bundled data
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "seed-precision: 42 cells on cuda" in text and "precision +-3% of each decode median, 3 to 12 rounds" in text
    for backend in ("hf-eager", "hf-sdpa", "cuda-graph"):
        assert f"{backend}: " in text and "rounds a cell (mean needed by" in text
    assert "rough estimate:" in text and "resume it with --resume" in text
    # a plan of a backend no earlier run measured says what it assumes
    plan = tmp_path / "adaptive.toml"
    write_plan(plan, backends=["hf-sdpa"], measure={"precision": 0.05, "min_rounds": 2, "max_rounds": 6})
    done = run_cli("plan", plan, "--db", tmp_path / "no-store.duckdb")
    assert done.returncode == 0, done.stderr
    assert "hf-sdpa: no earlier runs; assuming 2 to 6 rounds" in " ".join(done.stdout.split())


def test_list_shows_every_backend_and_what_runs_here():
    done = run_cli("list")
    assert done.returncode == 0, done.stderr
    for backend in ("hf-eager", "hf-sdpa", "torch-compile", "cuda-graph"):
        assert backend in done.stdout
    assert "needs cuda" in done.stdout  # cuda-graph on a machine without a GPU
    assert "gpt2-100m" in done.stdout and "96,088,320" in done.stdout


def short_env() -> dict:
    """No COLUMNS: the 80-column width a subprocess without a terminal gets (the dashboard's)."""
    env = cli_env()
    env.pop("COLUMNS")
    return env


def run_here(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=short_env(),
                          capture_output=True, text=True, timeout=60)


def assert_one_line_error(done, expected: str):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]


BAD_PLANS = {  # name -> (file content or None for no file, what the error line says)
    "missing-file": (None, "plan file 'plan.toml' does not exist"),
    "bad-toml": ('name = "x"\nbackends = [\n', "plan.toml: not valid TOML"),
    "zero-gen-len": (dumps(plan_dict(gen_lens=[0])), "gen_lens:"),
    "missing-axis": (dumps({k: v for k, v in plan_dict().items() if k != "dtypes"}), "missing: dtypes"),
}


@pytest.mark.parametrize("command", ["run", "plan"])
@pytest.mark.parametrize("bad", list(BAD_PLANS))
def test_bad_plan_exits_non_zero_with_a_one_line_error_and_no_traceback(tmp_path, command, bad):
    content, expected = BAD_PLANS[bad]
    if content is not None:
        (tmp_path / "plan.toml").write_text(content)
    assert_one_line_error(run_here(tmp_path, command, "plan.toml"), expected)


def test_long_plan_error_stays_on_one_line(tmp_path):
    (tmp_path / "plan.toml").write_text(dumps(plan_dict(backends=["hf-eager", "tensorrt"])))
    assert_one_line_error(run_here(tmp_path, "plan", "plan.toml"), "unknown backend 'tensorrt'")


def test_plan_error_with_brackets_is_printed_verbatim(tmp_path):
    models = {"custom": [{"name": "a[/b]", "n_layer": 1, "n_embd": 50, "n_head": 4}]}
    (tmp_path / "plan.toml").write_text(dumps(plan_dict(models=models)))
    assert_one_line_error(run_here(tmp_path, "plan", "plan.toml"), "'a[/b]'")


def test_resuming_an_unknown_run_is_a_one_line_error(tmp_path):
    done = run_here(tmp_path, "run", "plan.toml", "--resume", "no-such-run", "--runs-dir", "runs", "--no-ingest")
    assert_one_line_error(done, "no run 'no-such-run' under runs")


PLANNED = 4


def slow_plan(tmp_path):
    """4 cells; the signal tests run it held after the first cell (start_held_cli), so the
    signal always lands mid-run, however fast or busy the machine."""
    return write_plan(tmp_path / "plan.toml")


def assert_store_complete(db, run_id, planned: int):
    runs, cells, duplicates, per_cell = store_rows(db)
    assert runs == [(run_id, "finished", True, planned)]
    assert len(cells) == planned and len({key for key, _ in cells}) == planned
    assert {status for _, status in cells} == {"ok"}
    assert duplicates == []
    # each cell: 3 prefills + 2 reps x 4 decode steps + 2 generations, nothing twice
    assert list(per_cell.values()) == [3 + 2 * 4 + 2] * planned


def test_kill_9_mid_run_then_resume_completes_with_no_duplicate_rows(tmp_path):
    plan, runs_dir, db = slow_plan(tmp_path), tmp_path / "runs", tmp_path / "store.duckdb"
    held = tmp_path / "held"
    proc = start_held_cli(held, "run", plan, "--runs-dir", runs_dir, "--no-ingest")
    try:
        wait_for(held.exists, timeout=300, proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    run = RunDir(only_run_dir(runs_dir))
    meta = run.read_meta()
    assert meta["status"] == "running" and meta["finished_at"] is None  # nobody got to say otherwise
    finished_before = run.finished_keys()
    assert 1 <= len(finished_before) < meta["n_cells_planned"] == PLANNED

    done = run_cli("run", plan, "--resume", run.run_id, "--runs-dir", runs_dir, "--db", db)
    assert done.returncode == 0, done.stderr
    assert run.read_meta()["status"] == "finished"
    assert run.finished_keys() == {entry["key"] for entry in meta["cells"]}
    resumed = [e["key"] for e in run.events() if e["event"] == "cell_started"]
    # the resumed segment measured only what had no file (the killed cell in flight is redone)
    second_segment = resumed[len(resumed) - (PLANNED - len(finished_before)):]
    assert not set(second_segment) & finished_before
    assert_store_complete(db, run.run_id, PLANNED)


def test_ctrl_c_mid_run_marks_it_interrupted_and_resume_finishes_it(tmp_path):
    plan, runs_dir, db = slow_plan(tmp_path), tmp_path / "runs", tmp_path / "store.duckdb"
    held = tmp_path / "held"
    proc = start_held_cli(held, "run", plan, "--runs-dir", runs_dir, "--db", db)
    try:
        wait_for(held.exists, timeout=300, proc=proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr

    run = RunDir(only_run_dir(runs_dir))
    assert run.read_meta()["status"] == "interrupted"
    partial = len(run.finished_keys())
    assert 1 <= partial < PLANNED
    assert any(e["event"] == "run_interrupted" for e in run.events())
    # what had finished was ingested on the way out, with the run marked interrupted
    runs, cells, _, _ = store_rows(db)
    assert runs == [(run.run_id, "interrupted", False, PLANNED)] and len(cells) == partial

    done = run_cli("run", plan, "--resume", run.run_id, "--runs-dir", runs_dir, "--db", db)
    assert done.returncode == 0, done.stderr
    assert_store_complete(db, run.run_id, PLANNED)


def test_sigterm_from_the_dashboard_cancel_behaves_like_ctrl_c(tmp_path):
    plan, runs_dir = slow_plan(tmp_path), tmp_path / "runs"
    held = tmp_path / "held"
    proc = start_held_cli(held, "run", plan, "--runs-dir", runs_dir, "--no-ingest")
    try:
        wait_for(held.exists, timeout=300, proc=proc)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert RunDir(only_run_dir(runs_dir)).read_meta()["status"] == "interrupted"
