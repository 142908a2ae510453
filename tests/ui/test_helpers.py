"""The dashboard's UI-free helpers: filters <-> URL, plan builder, run control, ingestion."""
from __future__ import annotations

import tomllib

import subprocess
import sys
import time

from dashboard import data, filters as flt, plan_builder, runs
from tests.ui.conftest import fake_running_run

FORM = dict(reference=["tiny-gpt2"], depths="", widths="", backends=["hf-eager"], dtypes=["float32"],
            batch_sizes="1", prompt_lens="16", gen_lens="8", device="cpu", prefill_reps=5, decode_reps=2, e2e_reps=2)


def test_filters_round_trip_through_query_params_and_drop_junk():
    query = {"backend": ["hf-sdpa"], "batch": ["1", "x", "8"]}
    selection = flt.from_query(lambda k: query.get(k, []))
    assert selection["batch_size"] == [1, 8] and selection["backend"] == ["hf-sdpa"]
    assert flt.to_query(selection) == {"backend": ["hf-sdpa"], "batch": ["1", "8"]}
    assert flt.sanitize(selection, {"backend": ["hf-eager"], "batch_size": [1]})["batch_size"] == [1]
    assert flt.as_filters(selection) == {"backend": ["hf-sdpa"], "batch_size": [1, 8]}


def test_plan_builder_makes_the_runners_plan_and_toml():
    built = plan_builder.build(FORM)
    assert built.ok and len(built.cells) == 1
    assert tomllib.loads(built.toml)["models"]["reference"] == ["tiny-gpt2"] and built.estimate_s > 0


def test_plan_builder_puts_each_message_on_its_input():
    assert "depths" in plan_builder.build(FORM | {"depths": "1, x", "widths": "64"}).errors
    assert "widths" in plan_builder.build(FORM | {"depths": "1, 2"}).errors
    assert "prompt_lens" in plan_builder.build(FORM | {"prompt_lens": "1000", "gen_lens": "100"}).errors
    assert "checkpoint" in plan_builder.build(FORM | {"checkpoint": "/nonexistent"}).errors
    assert "models" in plan_builder.build(FORM | {"reference": []}).errors
    assert "backends" in plan_builder.build(FORM | {"backends": []}).errors


def test_progress_reads_done_failed_current_and_eta_from_events(tmp_path):
    run = runs.RunDir(fake_running_run(tmp_path, None))
    p = runs.progress(run)
    assert (p["done"], p["total"], p["failed"]) == (2, 5, 1)
    assert p["current"].startswith("gpt2-5m") and 30 < p["eta_s"] < 60  # 10 s a cell, 3 to go
    assert any("out of memory" in line for line in p["recent"])


def test_lock_of_a_dead_process_is_stale(tmp_path):
    lock = tmp_path / "run.lock"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    lock.write_text('{"pid": %d}' % proc.pid)
    assert runs.read_lock(lock) is None


def test_cancel_terminates_the_process_tree(tmp_path):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(0.5)
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    assert runs.cancel(proc.pid, grace_s=5).startswith("cancelled")
    assert proc.wait(timeout=5) is not None
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_ingest_changed_is_incremental_and_idempotent(runner_store, tmp_path):
    from store.db import connect

    _, runs_dir = runner_store
    con = connect(tmp_path / "s.duckdb")
    seen: dict = {}
    first = data.ingest_changed(con, runs_dir, seen)
    assert first["cells_added"] == 6 and first["runs"] == 1
    assert data.ingest_changed(con, runs_dir, seen) == {"runs": 0, "cells_added": 0, "samples_added": 0, "errors": 0}
    seen.clear()
    assert data.ingest_changed(con, runs_dir, seen)["cells_added"] == 0
    con.close()
