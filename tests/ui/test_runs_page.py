"""Runs page (AppTest): every run with its environment, and two runs compared cell by cell.

On the bundled snapshot (real H100, H200 and CPU runs; the protocol-1 seed runs compared here
have no rounds, so every comparison says "no CI") and on a store of two protocol-2 runs the real runner made on the
CPU (rounds, so CIs and a verdict per cell). Run ids and counts come from the data.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import duckdb
import pytest

from store.dataset import BUNDLED_SNAPSHOT
from tests.ui.conftest import PAGES, ROOT, assert_clean, copy_runner_store, plotly_specs, texts


def bundled(sql: str, params: list | None = None) -> list[tuple]:
    """A query over the bundled snapshot's Parquet files (runs, cells, samples views)."""
    con = duckdb.connect()
    try:
        for table in ("runs", "cells", "samples"):
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{BUNDLED_SNAPSHOT / (table + '.parquet')}')")
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def open_runs(at):
    at.run()
    at.switch_page(PAGES["runs"]).run()
    assert_clean(at)
    return at


def metric(at, label: str) -> str:
    return next(m.value for m in at.main.metric if m.label == label)


def runs_frame(at):
    return next(df.value for df in at.dataframe if "run_id" in df.value.columns and "host_cpu" in df.value.columns)


def test_runs_page_lists_every_bundled_run_with_plan_status_protocol_and_environment(app_env):
    at = open_runs(app_env())
    assert texts(at, "title") == ["Runs"]
    frame = runs_frame(at).set_index("run_id")
    expected = bundled("SELECT run_id, plan_name, status, environment, protocol_version FROM runs")
    assert sorted(frame.index) == sorted(r[0] for r in expected)
    for column in ("host_cpu", "host_class", "host_fingerprint", "gpu", "driver", "torch", "transformers",
                   "protocol_version", "plan_name", "status"):
        assert column in frame.columns
    for run_id, plan_name, status, environment, protocol_version in expected:
        env = json.loads(environment)
        row = frame.loc[run_id]
        assert (row["plan_name"], row["status"], row["host_cpu"], row["torch"]) == (
            plan_name, status, env.get("cpu_model"), env.get("torch"))
        assert row["protocol_version"] == protocol_version, "each run shows the protocol it was measured with"
        if env.get("gpu"):
            assert (row["gpu"], row["driver"]) == (env["gpu"]["name"], env["gpu"]["driver"])


def test_comparing_two_bundled_seed_runs_shows_every_shared_cell_and_says_no_ci_without_rounds(app_env):
    h100_seed = [r[0] for r in bundled(
        "SELECT run_id FROM runs WHERE plan_name = 'seed' AND regime LIKE 'NVIDIA H100%' ORDER BY started_at")]
    assert len(h100_seed) >= 2, "the bundled snapshot measures the H100 seed plan more than once"
    run_a, run_b = h100_seed[0], h100_seed[-1]
    at = open_runs(app_env())
    at.selectbox(key="runs_a").set_value(run_a).run()
    at.selectbox(key="runs_b").set_value(run_b).run()
    assert_clean(at)
    (shared,) = bundled(
        """SELECT count(*) FROM (
             SELECT DISTINCT c.cell_key, s.phase FROM samples s JOIN cells c USING (cell_id)
             WHERE c.run_id = ? AND c.status = 'ok'
             INTERSECT
             SELECT DISTINCT c.cell_key, s.phase FROM samples s JOIN cells c USING (cell_id)
             WHERE c.run_id = ? AND c.status = 'ok')""", [run_a, run_b])
    assert metric(at, "Cells compared") == f"{shared[0]:,}"
    assert metric(at, "With a CI") == "0"
    assert any("no CI" in t for t in texts(at, "info"))
    spec = plotly_specs(at)[0]
    assert sum(len(trace["customdata"]) for trace in spec["data"] if "customdata" in trace) == shared[0]
    assert {trace["name"] for trace in spec["data"] if "customdata" in trace} == {"no CI"}
    assert spec["layout"]["yaxis"]["type"] == "log"


@pytest.fixture(scope="module")
def two_run_store(runner_store, tmp_path_factory):
    """The runner store plus a second run of the same smoke plan: two protocol-2 runs, 3 rounds each."""
    db, runs = copy_runner_store(runner_store, tmp_path_factory.mktemp("two-runs"))
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", "plans/smoke-cpu.toml", "--db", str(db), "--runs-dir", str(runs)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return db, runs


def test_two_protocol_2_runs_compare_with_cis_across_rounds_and_a_verdict_per_cell(app_env, two_run_store, tmp_path):
    from analysis.run_compare import compare_runs_by_round

    db, runs = two_run_store
    private = tmp_path / "store.duckdb"
    shutil.copy(db, private)
    con = duckdb.connect(str(private), read_only=True)
    try:
        run_ids = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY started_at").fetchall()]
        assert len(run_ids) == 2
        expected = compare_runs_by_round(con, *run_ids)
    finally:
        con.close()
    at = open_runs(app_env(db=private, runs=runs))
    assert (at.selectbox(key="runs_a").value, at.selectbox(key="runs_b").value) == tuple(run_ids), \
        "opens on the newest run against the earlier run of the same plan and regime"
    assert metric(at, "Cells compared") == f"{len(expected):,}"
    assert metric(at, "With a CI") == f"{int((expected['ci_kind'] == 'across rounds').sum()):,}"
    assert int((expected["ci_kind"] == "across rounds").sum()) > 0, "the smoke plan measures in rounds"
    assert metric(at, "Moved beyond noise") == f"{int(expected['moved'].fillna(False).sum()):,}"
    spec = plotly_specs(at)[0]
    errors = [trace for trace in spec["data"] if trace.get("error_y", {}).get("visible")]
    assert errors, "ratios with a CI carry error bars"
    moved = int(expected["moved"].fillna(False).sum())
    headings = [t for t in texts(at, "markdown") if "moved beyond" in t]
    assert headings == [f"**Cells that moved beyond noise ({moved})**" if moved else "**No cell moved beyond the rounds' noise.**"]


def test_runs_table_says_which_run_was_measured_on_a_busy_machine(app_env, copy_store):
    db, runs = copy_store
    verdict = {"busy": True, "samples": 6, "busy_samples": 2,
               "worst": {"busy": True, "reasons": ["other processes use 1.9 cores: ffmpeg (1.9 cores)"]}}
    from runner.runfiles import RunDir

    con = duckdb.connect(str(db))
    try:
        [(run_id, recorded)] = con.execute("SELECT run_id, machine_load FROM runs").fetchall()
        assert json.loads(recorded)["samples"] >= 2, "the runner's meta verdict is stored with its run"
        con.execute("UPDATE runs SET machine_load = ?", [json.dumps(verdict)])
    finally:
        con.close()
    RunDir(runs / run_id).update_meta(machine_load=verdict)  # as a run beside ffmpeg records it (and is ingested again)
    at = open_runs(app_env(db=db, runs=runs))
    row = runs_frame(at).set_index("run_id").loc[run_id]
    assert row["busy_machine"] == "yes"
    assert row["machine_load"] == "2 of 6 load samples busy; at worst other processes use 1.9 cores: ffmpeg (1.9 cores)"
    assert any("1 run(s) measured on a busy machine" in w and run_id in w for w in texts(at, "warning"))


def test_bundled_runs_from_before_the_sampler_show_a_dash_not_a_verdict(app_env):
    at = open_runs(app_env())
    table = next(df for df in at.dataframe if "busy_machine" in df.value.columns)
    unsampled = table.value["machine_load"].isna()
    assert unsampled.sum() >= 2, "the bundled data holds runs from before the load sampler"
    assert table.value.loc[unsampled, "busy_machine"].isna().all(), "not sampled, which is not 'no'"
    assert table.value.loc[~unsampled, "busy_machine"].isin(["yes", "no"]).all()
    assert table.proto.placeholder == "—"
    assert not [w for w in texts(at, "warning") if "busy machine" in w]
