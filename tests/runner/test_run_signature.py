"""A run directory's signature says when a poller (the dashboard's ingest) has to read it
again: a new cell file or a rewritten meta.json changes it, a kept round does not (rounds
are not stored). Torch-free: the run files are written through runner.runfiles alone."""
from __future__ import annotations

import os

from runner.runfiles import RunDir, changed_run_dirs, list_run_dirs


def new_run(root, run_id: str = "20261201-000000-aaaaaa") -> RunDir:
    run = RunDir(root / run_id)
    run.create({"run_id": run_id, "status": "running"})
    return run


def test_signature_changes_when_a_cell_file_is_added(tmp_path):
    run = new_run(tmp_path)
    before = run.signature()
    run.write_cell("k1", {"cell_key": "k1", "status": "ok"})
    after = run.signature()
    assert after != before and after.n_cells == before.n_cells + 1 == 1


def test_signature_changes_when_meta_is_rewritten(tmp_path):
    run = new_run(tmp_path)
    stat = run.meta_file.stat()
    os.utime(run.meta_file, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))  # an older write
    before = run.signature()
    run.update_meta(status="finished")
    assert run.signature().meta_mtime_ns > before.meta_mtime_ns


def test_a_kept_round_or_an_event_leaves_the_signature_as_it_was(tmp_path):
    run = new_run(tmp_path)
    before = run.signature()
    run.write_round("k1", 0, {"prefill": [1.0]})
    run.event("round_done", cell="k1")
    assert run.signature() == before


def test_changed_run_dirs_lists_only_runs_whose_signature_moved(tmp_path):
    first, second = new_run(tmp_path, "20261201-000000-aaaaaa"), new_run(tmp_path, "20261201-000001-bbbbbb")
    (tmp_path / "not-a-run").mkdir()  # no meta.json: never listed
    assert [r.path for r in list_run_dirs(tmp_path)] == [first.path, second.path]
    seen = {str(run.path): sig for run, sig in changed_run_dirs(tmp_path, {})}
    assert len(seen) == 2 and changed_run_dirs(tmp_path, seen) == []
    second.write_cell("k1", {"cell_key": "k1", "status": "ok"})
    [(run, sig)] = changed_run_dirs(tmp_path, seen)
    assert run.path == second.path and sig == second.signature()


def test_a_missing_runs_folder_has_no_runs(tmp_path):
    assert changed_run_dirs(tmp_path / "absent", {}) == []
