"""Ingestion takes its columns from the store's tables (schema.sql), not from a list of its
own: a run-file field named like a column is stored, JSON and timestamps by the column's
type, and a column no run file carries is NULL. Torch-free: the run directory is written
through runner.runfiles by hand."""
from __future__ import annotations

import json
from datetime import datetime

from runner.runfiles import CellResult, RunDir, cell_record, planned_cell, run_meta
from store.db import connect_memory
from store.ingest import ingest_run_dir

RUN_ID = "20261201-000000-aaaaaa"
CELL = {"model": {"name": "tiny", "source": "grid", "n_layer": 2, "n_embd": 64, "n_head": 2,
                  "vocab_size": 128, "n_positions": 64},
        "backend": "hf-eager", "device": "cpu", "dtype": "float32", "batch_size": 1, "prompt_len": 8, "gen_len": 2}


def write_run(root, *, meta_extra: dict | None = None, record_extra: dict | None = None) -> RunDir:
    entry = planned_cell("k1", 0, CELL)
    plan = {"name": "tiny", "seed": 0, "measure": {"rounds": 1}}
    run = RunDir(root / RUN_ID)
    run.create(run_meta(run_id=RUN_ID, series_id=None, plan=plan, started_at="2026-12-01T10:00:00.000+01:00",
                        environment={"host": "h"}, regime="cpu-x", device_kind="cpu", tool_version="0",
                        git_revision=None, shuffle_seed=1, cells=[entry], protocol_version=2,
                        calibration={}, **(meta_extra or {})))
    result = CellResult(status="ok", params=1000, flags=["high_cv"], prefill=[1.0, 2.0], decode=[[0.5, 0.6]],
                        e2e=[3.0], prefill_round=[0, 0], decode_round=[0], e2e_round=[0], worker=[42])
    record = cell_record(entry, result, "2026-12-01T10:00:01.000+01:00", "2026-12-01T10:00:02.000+01:00")
    run.write_cell("k1", record | (record_extra or {}))
    return run


def test_a_column_added_to_the_schema_reaches_ingest_without_a_hand_list(tmp_path):
    con = connect_memory()
    con.execute("ALTER TABLE runs ADD COLUMN host_note VARCHAR")
    con.execute("ALTER TABLE cells ADD COLUMN compile_s DOUBLE")
    con.execute("ALTER TABLE samples ADD COLUMN clock_mhz INTEGER")
    run = write_run(tmp_path, meta_extra={"host_note": "quiet"}, record_extra={"compile_s": 1.5})
    ingest_run_dir(con, run.path)
    assert con.execute("SELECT host_note FROM runs").fetchall() == [("quiet",)]
    assert con.execute("SELECT compile_s FROM cells").fetchall() == [(1.5,)]
    # a samples column no sample carries is NULL in every row
    assert con.execute("SELECT count(*), count(clock_mhz) FROM samples").fetchall() == [(5, 0)]


def test_values_are_stored_by_their_columns_type(tmp_path):
    con = connect_memory()
    ingest_run_dir(con, write_run(tmp_path).path)
    started, plan, calibration, protocol = con.execute(
        "SELECT started_at, plan, calibration, protocol_version FROM runs").fetchall()[0]
    assert started == datetime(2026, 12, 1, 9, 0)  # naive UTC, the store's convention
    assert json.loads(plan)["name"] == "tiny"
    assert calibration is None and protocol == 2  # an empty calibration measured nothing
    flags, options, correctness, n_inner = con.execute(
        "SELECT flags, backend_options, correctness, n_inner FROM cells").fetchall()[0]
    assert flags == ["high_cv"] and json.loads(options) == {} and correctness is None and n_inner == 256
    rows = con.execute("SELECT phase, round, worker FROM samples ORDER BY phase, rep, step").fetchall()
    assert rows == [("decode", 0, 42), ("decode", 0, 42), ("e2e", 0, 42), ("prefill", 0, 42), ("prefill", 0, 42)]


def test_a_column_no_run_file_carries_is_null(tmp_path):
    con = connect_memory()
    ingest_run_dir(con, write_run(tmp_path).path)  # a CPU cell before the trackers: no resources
    assert con.execute("SELECT weight_bytes, energy_source, resources, telemetry FROM cells").fetchall() == [
        (None, None, None, None)]
