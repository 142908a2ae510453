"""Progress of a protocol-2 run counts cell-rounds: its rounds interleave, so no cell finishes
before the last round, yet the bar moves from the first round on, with an ETA. Checked on the
bundled protocol-2 runs, cut where their first round was half done and where they ended."""
from __future__ import annotations

import json
import shutil

from dashboard import runs
from runner.runfiles import RunDir


def multi_round_runs(root) -> list[RunDir]:
    found = [RunDir(p.parent) for p in sorted(root.glob("*/meta.json"))]
    return [run for run in found if int(run.read_meta().get("rounds") or 1) > 1 and run.events()]


def cut_events(run: RunDir, target, keep: int) -> RunDir:
    """A copy of `run` whose log stops after its first `keep` events: the run as it stood then."""
    copy = RunDir(shutil.copytree(run.path, target / run.run_id))
    events = run.events()[:keep]
    copy.events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    copy.update_meta(status="running")
    return copy


def test_half_way_through_the_first_round_progress_counts_cell_rounds_and_has_an_eta(bundled_v2_runs, tmp_path):
    checked = 0
    for run in multi_round_runs(bundled_v2_runs):
        events = run.events()
        finishes = [i for i, e in enumerate(events) if e["event"] == "round_finished"]
        first_cell_done = next((i for i, e in enumerate(events) if e["event"] == "cell_finished" and e["status"] == "ok"),
                               None)
        if first_cell_done is None or not finishes:
            continue  # nothing measured: no first round to cut
        keep = finishes[len([i for i in finishes if i < first_cell_done]) // 4] + 1
        partial = cut_events(run, tmp_path, keep)
        settled = {(e["key"], e["round"]) for e in events[:keep] if e["event"] == "round_finished"}
        unfinished = {e["key"] for e in events[:keep] if e["event"] == "cell_finished"}  # refused before measuring
        meta = run.read_meta()
        p = runs.progress(partial, now=events[keep - 1]["ts"] + 1.0)
        assert p["units_total"] == meta["n_cells_planned"] * meta["rounds"]
        assert p["units_done"] == len(settled) + len(unfinished) * meta["rounds"]
        assert p["done"] == len(unfinished) and p["units_done"] > 0 and p["eta_s"] is not None
        assert 0 < p["fraction"] < 1
        assert "cell-rounds" in runs.progress_text(p)
        checked += 1
    assert checked, "the bundled protocol-2 runs include runs of several rounds"


def test_a_finished_protocol_2_run_has_every_cell_round_done(bundled_v2_runs):
    for run in multi_round_runs(bundled_v2_runs):
        meta = run.read_meta()
        if meta["status"] != "finished":
            continue
        p = runs.progress(run)
        assert p["units_done"] == p["units_total"] == meta["n_cells_planned"] * meta["rounds"]
        assert p["fraction"] == 1.0 and p["eta_s"] is None
