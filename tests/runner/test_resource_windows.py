"""Memory and energy windows once per cell (in its last round) unless the plan asks for energy:
the windows cost more wall time than the timed samples, and only energy's CI needs one per round."""
from __future__ import annotations

import json

import pytest

from runner.executor import execute
from runner.plan import MeasureSettings, parse_plan
from tests.runner.helpers import plan_dict


def run_cells(tmp_path, **measure) -> tuple[list[dict], dict]:
    """A real CPU run of one tiny hf-eager cell in two rounds: its cell records and its meta."""
    models = {"custom": plan_dict()["models"]["custom"][:1]}
    plan = parse_plan(plan_dict(models=models, backends=["hf-eager"], measure=plan_dict()["measure"] | {"rounds": 2, **measure}))
    [run] = execute(plan, tmp_path)
    cells = [json.loads(p.read_text()) for p in sorted((run.path / "cells").glob("*.json"))]
    return cells, json.loads((run.path / "meta.json").read_text())


def tracked_rounds(cell: dict) -> set[int]:
    """How many rounds' windows each phase of a cell holds (one energy entry per tracked round)."""
    return {len(phase["energy_j"]) for phase in cell["resources"]["phases"].values()}


@pytest.mark.parametrize("processes", [False, True], ids=["one-process", "worker-per-round"])
def test_a_plan_that_does_not_ask_for_energy_tracks_memory_once_per_cell_in_its_last_round(tmp_path, processes):
    """With a fresh worker per round too: the worker of the last round knows the others' rounds from their files."""
    cells, meta = run_cells(tmp_path, processes=processes)
    assert cells and all(c["status"] == "ok" for c in cells)
    assert all(tracked_rounds(c) == {1} for c in cells)
    assert all(c["resources"]["peak_rss_bytes"] > 0 for c in cells)  # the peaks are still measured
    assert meta["plan"]["measure"]["resource_windows"] == "last-round"


def test_a_plan_that_sets_energy_window_s_keeps_a_window_in_every_round(tmp_path):
    cells, meta = run_cells(tmp_path, energy_window_s=0.1)
    assert all(tracked_rounds(c) == {2} for c in cells)
    assert meta["plan"]["measure"]["resource_windows"] == "every-round"


@pytest.mark.parametrize("measure, expected", [
    ({}, "last-round"),
    ({"energy_window_s": 1.0}, "every-round"),
    ({"energy_window_s": 0}, "last-round"),  # no energy asked for: the peaks once per cell
    ({"energy_window_s": 1.0, "resource_windows": "last-round"}, "last-round"),
    ({"resource_windows": "every-round"}, "every-round"),
])
def test_the_default_resolves_when_the_plan_is_read_and_survives_a_round_trip(measure, expected):
    settings = MeasureSettings(**measure)
    assert settings.resource_windows == expected
    # a resumed run reads its settings back from meta.json: the resolved value, not the default again
    assert MeasureSettings.model_validate(json.loads(settings.model_dump_json())).resource_windows == expected
