"""How long a run was running, from its events: the segments it ran, never the wait between a
stop and its resume. Torch-free: the events are written as the lifecycle writes them."""
from __future__ import annotations

import json

from runner.runfiles import RunDir


def run_with_events(root, events: list[tuple[float, str]]) -> RunDir:
    run = RunDir(root / "20261201-000000-aaaaaa")
    run.create({"run_id": run.run_id, "status": "running"})
    run.events_file.write_text("".join(json.dumps({"ts": ts, "event": kind}) + "\n" for ts, kind in events))
    return run


def test_a_resumed_run_counts_its_segments_not_the_wait_between_them(tmp_path):
    run = run_with_events(tmp_path, [
        (100.0, "run_started"), (100.0, "segment_started"), (130.0, "cell_finished"), (160.0, "run_interrupted"),
        (10_000.0, "segment_started"), (10_040.0, "cell_finished"), (10_050.0, "run_finished"),
    ])
    assert run.active_seconds() == 60.0 + 50.0


def test_a_segment_killed_without_an_event_counts_up_to_its_last_event(tmp_path):
    run = run_with_events(tmp_path, [
        (0.0, "segment_started"), (20.0, "cell_finished"),  # killed: no run_interrupted
        (500.0, "segment_started"), (530.0, "cell_started"),  # still running
    ])
    assert run.active_seconds() == 20.0 + 30.0


def test_a_run_without_events_ran_for_no_time(tmp_path):
    assert run_with_events(tmp_path, []).active_seconds() == 0.0
