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


def adaptive_run(root, events: list[dict], status: str = "running", **meta) -> RunDir:
    """A run directory of 3 planned cells under `[measure] precision = 0.03` (min 2, max 6 rounds,
    a 100 s budget), as far as `events` take it."""
    run = RunDir(root / "20261208-000000-abcdef")
    measure = {"precision": 0.03, "min_rounds": 2, "max_rounds": 6, "budget_s": 100.0}
    run.create({"run_id": run.run_id, "status": status, "plan_name": "p", "plan": {"measure": measure},
                "n_cells_planned": 3, "rounds": 6, "cells": [{"key": k} for k in "abc"], **meta})
    run.events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def test_an_adaptive_run_shows_cell_rounds_and_cells_at_target_with_an_eta_inside_its_budget(tmp_path):
    events = [{"ts": 0.0, "event": "segment_started", "done": 0, "total": 3}]
    events += [{"ts": 1.0 + i, "event": "round_finished", "key": k, "round": r}
               for i, (k, r) in enumerate([(k, r) for r in (0, 1) for k in "abc"] + [("b", 2)])]
    events += [{"ts": 6.5, "event": "cell_finished", "key": "a", "status": "ok", "done": 1, "total": 3,
                "rounds_used": 2, "precision_reached": True, "stop_reason": "precision"}]
    p = runs.progress(adaptive_run(tmp_path, events), now=8.0)
    # 7 cell-rounds done; a stopped after 2, b has 3 (4 expected), c has 2 (3 expected)
    assert (p["units_done"], p["units_total"], p["reached"]) == (7, 9, 1)
    assert 0 < p["fraction"] < 1 and p["eta_s"] is not None and p["eta_s"] <= 92.0
    assert runs.progress_text(p).startswith("cell-round 7 · 1/3 cells at ±3% · 1 / 3 cells finished · ETA")


def test_an_adaptive_run_its_budget_stopped_says_so_and_offers_a_resume(tmp_path):
    events = [{"ts": 0.0, "event": "segment_started", "done": 0, "total": 3},
              {"ts": 1.0, "event": "round_finished", "key": "a", "round": 0},
              {"ts": 2.0, "event": "budget_spent", "budget_s": 100.0, "done": 0, "total": 3},
              {"ts": 2.5, "event": "run_interrupted", "done": 0, "total": 3, "reason": "budget"}]
    p = runs.progress(adaptive_run(tmp_path, events, status="interrupted", stop_reason="budget"))
    assert p["status"] == "interrupted" and p["stop_reason"] == "budget"
    assert runs.progress_text(p).endswith("budget spent: resume to measure further")
    assert any("budget of 100.0 s spent" in line for line in p["recent"])
