"""A run's busy-machine verdict (meta.json's machine_load) goes into the store with the run and
reads back in the runs table; snapshots and stores made before it read as "not sampled"."""
from __future__ import annotations

import json

from analysis.run_compare import busy_verdict, environment_differences, run_table
from store.dataset import BUNDLED_SNAPSHOT
from store.db import connect
from store.ingest import ingest_run_dir
from store.schema import ADDED_COLUMNS
from store.snapshot import export_snapshot, open_snapshot
from tests.runner.helpers import one_cell_run
from vocabulary import BUSY_MACHINE_FLAG

BUSY = {"busy": True, "samples": 4, "busy_samples": 1,
        "worst": {"competing_cores": 1.9, "busy": True, "reasons": ["other processes use 1.9 cores: ffmpeg (1.9 cores)"]}}


def test_the_runs_verdict_is_stored_with_it_and_read_back_in_the_runs_table(tmp_path):
    run = one_cell_run(tmp_path / "runs")
    recorded = run.read_meta()["machine_load"]
    assert recorded["samples"] >= 2, "the direct executor samples the machine before and around every round"
    con = connect(tmp_path / "store.duckdb")
    try:
        ingest_run_dir(con, run.path)
        [(stored,)] = con.execute("SELECT machine_load FROM runs").fetchall()
        assert json.loads(stored) == recorded
        [row] = run_table(con).to_dict("records")
        assert row["busy_machine"] == ("yes" if recorded["busy"] else "no")
        assert row["machine_load"].startswith(f"{recorded['busy_samples']} of {recorded['samples']} load samples busy")

        run.update_meta(machine_load=BUSY)  # the same run judged busy: a new ingest replaces the runs row
        ingest_run_dir(con, run.path)
        [row] = run_table(con).to_dict("records")
        assert row["busy_machine"] == "yes"
        assert row["machine_load"] == "1 of 4 load samples busy; at worst other processes use 1.9 cores: ffmpeg (1.9 cores)"
        export_snapshot(con, tmp_path / "snap.zip")
    finally:
        con.close()
    again = open_snapshot(tmp_path / "snap.zip")
    try:
        assert run_table(again)["busy_machine"].tolist() == ["yes"], "exported and read back"
    finally:
        again.close()


def test_runs_from_before_the_sampler_read_as_not_sampled_not_as_quiet():
    assert "machine_load" in ADDED_COLUMNS["runs"]
    con = open_snapshot(BUNDLED_SNAPSHOT)
    try:
        runs = run_table(con)
        stored = dict(con.execute("SELECT run_id, machine_load FROM runs").fetchall())
        before = runs[runs["run_id"].map(lambda run_id: stored[run_id] is None)]
        assert len(before) >= 2, "the bundled data holds runs from before the load sampler"
        assert before["busy_machine"].isna().all() and before["machine_load"].isna().all()
        assert (before["busy_cells"] == 0).all()
        a, b = before["run_id"].iloc[:2]
        assert "busy_machine" not in environment_differences(runs, a, b)["field"].tolist()
        sampled = runs[runs["run_id"].map(lambda run_id: stored[run_id] is not None)]
        assert sampled["busy_machine"].isin(["yes", "no"]).all()  # a sampled run says which
    finally:
        con.close()


def test_a_verdict_names_the_ray_drivers_machine_and_flagged_cells_without_one_say_busy():
    driver = BUSY | {"worst": BUSY["worst"] | {"machine": "driver"}}
    assert busy_verdict(json.dumps(driver), 0)[1].startswith("1 of 4 load samples busy on the Ray driver's machine")
    assert busy_verdict(json.dumps(BUSY | {"busy": False, "busy_samples": 0}), 0) == ("no", "0 of 4 load samples busy")
    assert busy_verdict(None, 3) == ("yes", "3 cells flagged busy"), "stored before the column: the flags still tell"
    assert busy_verdict(None, 0) == (None, None)


def test_a_store_made_before_schema_5_read_only_shows_runs_unsampled(tmp_path):
    import duckdb

    run = one_cell_run(tmp_path / "runs")
    path = tmp_path / "old.duckdb"
    con = connect(path)
    ingest_run_dir(con, run.path)
    con.close()
    old = duckdb.connect(str(path))  # as schema 4 left it: no machine_load column
    old.execute("ALTER TABLE runs DROP COLUMN machine_load")
    old.execute("UPDATE schema_info SET schema_version = 4")
    old.close()
    flagged = any(BUSY_MACHINE_FLAG in (r.get("flags") or []) for r in run.cell_records())  # this machine may be busy
    read_only = connect(path, read_only=True)
    try:
        assert run_table(read_only)["busy_machine"].tolist() == ["yes" if flagged else None], "the flags alone tell"
    finally:
        read_only.close()
    upgraded = connect(path)
    try:
        ingest_run_dir(upgraded, run.path)  # opened to write: the column is added, the run's verdict arrives
        assert run_table(upgraded)["busy_machine"].tolist() == [("yes" if run.read_meta()["machine_load"]["busy"] else "no")]
    finally:
        upgraded.close()
