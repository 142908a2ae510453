"""One setting, one meaning: SHAPEBENCH_DB and SHAPEBENCH_RUNS mean the same store and runs
folder to `run` (which writes and ingests), `analyze` and the dashboard's helpers."""
from __future__ import annotations

import json

from store.db import connect
from tests.runner.helpers import cli_env, plan_dict, run_cli, write_plan


def test_run_writes_and_ingests_where_the_environment_says_and_analyze_reads_it_there(tmp_path):
    models = {"custom": plan_dict()["models"]["custom"][:1]}
    plan = write_plan(tmp_path / "plan.toml", models=models, backends=["hf-eager"], gen_lens=[2])
    env = cli_env() | {"SHAPEBENCH_DB": str(tmp_path / "elsewhere.duckdb"), "SHAPEBENCH_RUNS": str(tmp_path / "my-runs")}
    done = run_cli("run", plan, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[-1]
    assert (tmp_path / "my-runs" / run_id / "meta.json").exists(), "the run went to SHAPEBENCH_RUNS"
    con = connect(tmp_path / "elsewhere.duckdb", read_only=True)
    assert con.execute("SELECT run_id FROM runs").fetchall() == [(run_id,)], "and was ingested into SHAPEBENCH_DB"
    con.close()
    analyzed = run_cli("analyze", "--json", env=env, timeout=300)
    assert analyzed.returncode == 0, analyzed.stderr
    assert json.loads(analyzed.stdout)["dataset"] == f"store file {tmp_path / 'elsewhere.duckdb'}"


def test_the_dashboard_watches_the_runs_folder_the_cli_writes_to(monkeypatch, tmp_path):
    from dashboard.data import default_runs_dir

    monkeypatch.setenv("SHAPEBENCH_RUNS", str(tmp_path / "my-runs"))
    assert default_runs_dir() == tmp_path / "my-runs"


def test_ingest_into_a_store_another_process_writes_says_so_in_one_line_with_what_to_do(tmp_path):
    import subprocess
    import sys

    from tests.runner.helpers import REPO_ROOT

    db = tmp_path / "held.duckdb"
    connect(db).close()
    holder = subprocess.Popen(  # a writer that keeps the file until told to stop (stdin closes)
        [sys.executable, "-c", f"import duckdb, sys; con = duckdb.connect({str(db)!r}); print('held', flush=True); sys.stdin.read()"],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / "runs").mkdir()
        done = run_cli("ingest", tmp_path / "runs", "--db", db, timeout=120)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert done.returncode == 2
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: cannot open {db}: another process is writing it") and "retry" in line
    assert "Traceback" not in done.stderr
