"""Ingesting run directories into a real DuckDB file: idempotent, and incremental for a run
that is still going."""
from __future__ import annotations

import json

import pytest

from runner.executor import continue_run, execute, start_run
from runner.plan import parse_plan
from runner.runfiles import RunDir
from store.db import connect
from store.ingest import ingest_run_dir, ingest_runs
from tests.runner.helpers import plan_dict, store_rows

SAMPLES_PER_CELL = 3 + 2 * 4 + 2  # prefill_reps + decode_reps x gen_len + e2e_reps


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> RunDir:
    """One finished 4-cell CPU run (an unsupported cuda-graph cell among them)."""
    models = {"custom": plan_dict()["models"]["custom"][:1]}
    plan = parse_plan(plan_dict(backends=["hf-eager", "hf-sdpa", "cuda-graph"], models=models, gen_lens=[4],
                                also=[{"backends": ["hf-eager"], "batch_sizes": [2]}]))
    [run] = execute(plan, tmp_path_factory.mktemp("runs"))
    return run


def test_ingesting_twice_adds_nothing_the_second_time(finished_run, tmp_path):
    con = connect(tmp_path / "store.duckdb")
    first = ingest_run_dir(con, finished_run.path)
    before = store_rows(con)
    second = ingest_run_dir(con, finished_run.path)
    assert (first.runs, first.cells_added, first.samples_added) == (1, 4, 3 * SAMPLES_PER_CELL)
    assert (second.cells_added, second.samples_added) == (0, 0)
    assert store_rows(con) == before


def test_two_stores_ingesting_the_same_run_hold_the_same_rows(finished_run, tmp_path):
    stores = [connect(tmp_path / f"{name}.duckdb") for name in ("a", "b")]
    ingest_run_dir(stores[0], finished_run.path)
    ingest_runs(stores[1], finished_run.path.parent)  # via the folder of runs
    ingest_runs(stores[1], finished_run.path.parent)
    a, b = (store_rows(con) for con in stores)
    assert a == b and len(a["samples"]) == 3 * SAMPLES_PER_CELL


def test_ingested_rows_carry_the_cell_files_exactly(finished_run, tmp_path):
    con = connect(tmp_path / "store.duckdb")
    ingest_run_dir(con, finished_run.path)
    run_id = finished_run.run_id
    meta = finished_run.read_meta()
    assert con.execute("SELECT run_id, status, n_cells_planned, regime, shuffle_seed FROM runs").fetchall() == [
        (run_id, "finished", 4, meta["regime"], meta["shuffle_seed"])]
    for record in finished_run.cell_records():
        cell_id = f"{run_id}/{record['cell_key']}"
        row = con.execute("""SELECT status, error, params, batch_size, backend, order_index, flags, correctness
                             FROM cells WHERE cell_id = ?""", [cell_id]).fetchone()
        status, error, params, batch, backend, order_index, flags, gate = row
        assert (status, error, params) == (record["status"], record["error"], record["params"])
        assert (batch, backend, order_index) == (record["cell"]["batch_size"], record["cell"]["backend"],
                                                 record["order_index"])
        assert list(flags) == record["flags"]
        assert (json.loads(gate) if gate else None) == record["correctness"]
        samples = con.execute("""SELECT phase, rep, step, latency_ms, timer FROM samples WHERE cell_id = ?
                                 ORDER BY phase, rep, step""", [cell_id]).fetchall()
        expected = sorted(
            [("decode", rep, step, v, "perf_counter_ns") for rep, steps in enumerate(record["decode"])
             for step, v in enumerate(steps)]
            + [("e2e", rep, 0, v, "perf_counter_ns") for rep, v in enumerate(record["e2e"])]
            + [("prefill", rep, 0, v, "perf_counter_ns") for rep, v in enumerate(record["prefill"])])
        assert samples == expected
        assert len(samples) == (SAMPLES_PER_CELL if status == "ok" else 0)
    unsupported = con.execute("SELECT backend, status, error FROM cells WHERE status <> 'ok'").fetchall()
    assert unsupported == [("cuda-graph", "unsupported", "cuda-graph runs on cuda, not cpu")]


def test_running_run_reingested_adds_only_new_cells_and_updates_its_status(tmp_path):
    db = tmp_path / "store.duckdb"
    run = start_run(parse_plan(plan_dict()), tmp_path / "runs")
    seen = []

    def ingest_as_the_dashboard_does(event):  # while the run is still going
        if event["event"] == "cell_finished" and event["done"] in (1, 3):
            con = connect(db)
            try:
                report = ingest_run_dir(con, run.path)
                seen.append((report.cells_added,
                             con.execute("SELECT status, finished_at FROM runs").fetchone(),
                             con.execute("SELECT count(*) FROM cells").fetchone()[0]))
            finally:
                con.close()

    continue_run(run, ingest_as_the_dashboard_does)
    assert seen == [(1, ("running", None), 1), (2, ("running", None), 3)]

    con = connect(db)
    final = ingest_run_dir(con, run.path)
    assert (final.cells_added, final.samples_added) == (1, SAMPLES_PER_CELL)
    status, finished_at = con.execute("SELECT status, finished_at FROM runs").fetchone()
    assert status == "finished" and finished_at is not None
    assert con.execute("SELECT count(*), count(DISTINCT cell_key) FROM cells").fetchone() == (4, 4)
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 4 * SAMPLES_PER_CELL
    assert con.execute("""SELECT count(*) FROM (SELECT cell_id, phase, rep, step FROM samples
                          GROUP BY ALL HAVING count(*) > 1)""").fetchone()[0] == 0


def test_ingesting_a_folder_that_is_not_a_run_is_refused(tmp_path):
    con = connect(tmp_path / "store.duckdb")
    with pytest.raises(ValueError, match="not a run directory"):
        ingest_run_dir(con, tmp_path)
