"""The round_shift flag means something: on the bundled protocol-2 H200 runs, cell-phases it
flags in one run moved more in the other run of the same plan than those it did not flag.

Flags are recomputed with today's rule from each run's raw cell records (the files keep
what the runner of their day wrote), so the test follows the rule, not a stored label.
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import fields
from pathlib import Path

import pytest

from runner.plan import MeasureSettings
from runner.runfiles import CellResult, integrity_flags, units_by_round
from tests.runner.helpers import REPO_ROOT

BUNDLED_V2 = REPO_ROOT / "data" / "runs-v2"
# Flagged cell-phases must have moved at least this many times more, as a median, than unflagged ones.
SEPARATION = 2.0


@pytest.fixture(scope="module")
def finished_pairs(bundled_v2_runs) -> list[tuple[Path, Path]]:
    """Pairs of finished GPU runs of one plan on one regime, from the bundled run archives."""
    root = bundled_v2_runs
    groups: dict[tuple, list[Path]] = {}
    for meta_path in sorted(root.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        # GPU pairs only: on the 2-core CPU machine a whole-machine shift between runs moved
        # every cell, flagged or not (README "Protocol 2"), so the flag predicts nothing there
        if meta["status"] == "finished" and (meta.get("rounds") or 1) > 1 and meta["device_kind"] == "cuda":
            groups.setdefault((meta["plan_name"], meta["regime"]), []).append(meta_path.parent)
    return [pair for runs in groups.values() for pair in itertools.combinations(runs, 2)]


def run_cell_phases(run: Path) -> dict[tuple[str, str], tuple[float, set[str]]]:
    """(cell_key, phase) -> (geometric mean of round medians, today's flags of the cell)."""
    settings = MeasureSettings.model_validate(json.loads((run / "meta.json").read_text())["plan"]["measure"])
    names = {f.name for f in fields(CellResult)}
    out = {}
    for path in sorted((run / "cells").glob("*.json")):
        record = json.loads(path.read_text())
        if record["status"] != "ok":
            continue
        result = CellResult(**{k: v for k, v in record.items() if k in names})
        flags = set(integrity_flags(result, settings))
        for phase in ("prefill", "decode", "e2e"):
            by_round = units_by_round(phase, getattr(result, phase), getattr(result, f"{phase}_round"))
            logs = [math.log(statistics.median(v)) for v in by_round.values()]
            out[(record["cell_key"], phase)] = (math.exp(statistics.fmean(logs)), flags)
    return out


def test_the_bundle_holds_a_pair_of_finished_multi_round_runs(finished_pairs):
    assert finished_pairs, f"no two finished protocol-2 runs of one plan and regime under {BUNDLED_V2}"


@pytest.mark.parametrize("phase", ["decode", "e2e"])
def test_cell_phases_flagged_round_shift_move_more_between_runs_than_unflagged_ones(finished_pairs, phase):
    """Per pair with at least 5 flagged and 5 unflagged cell-phases: a pair whose cells are all
    flagged (seed-many-rounds: 2 hf-eager cells) has nothing to separate and says nothing."""
    tested = []
    for run_a, run_b in finished_pairs:
        a, b = run_cell_phases(run_a), run_cell_phases(run_b)
        moved = {True: [], False: []}
        for key in a.keys() & b.keys():
            if key[1] != phase:
                continue
            (median_a, flags_a), (median_b, _) = a[key], b[key]
            moved[f"round_shift_{phase}" in flags_a].append(abs(math.log(median_b / median_a)))
        if len(moved[True]) < 5 or len(moved[False]) < 5:
            continue
        tested.append((run_a.name, run_b.name))
        flagged, unflagged = statistics.median(moved[True]), statistics.median(moved[False])
        assert flagged > SEPARATION * unflagged, (run_a.name, run_b.name, phase, flagged, unflagged)
    assert tested, f"no bundled pair has 5 flagged and 5 unflagged {phase} cell-phases"
