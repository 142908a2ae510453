"""Where a run's wall time went, checked on the bundled protocol-2 run files: the memory and
energy windows after each round are accounted for on their own line, not left in "other"."""
from __future__ import annotations

import json
import math

from benchmarks.wall_time_split import energy_window_seconds, split


def test_the_parts_sum_to_the_wall_and_the_energy_windows_outweigh_the_timing_they_follow(bundled_v2_runs):
    """The README's account of protocol 2's wall time: in every bundled run with energy windows
    (1 s per phase and round by default), they took longer than all timed samples together."""
    finished = [p.parent for p in sorted(bundled_v2_runs.glob("*/meta.json"))
                if json.loads(p.read_text())["status"] == "finished"]
    assert finished, "no finished protocol-2 run is bundled"
    with_windows = 0
    for run in finished:
        parts = split(run)
        wall = parts.pop("wall")
        assert math.isclose(sum(parts.values()), wall, rel_tol=1e-9), run.name
        if parts["energy windows"] > 0:
            with_windows += 1
            assert parts["energy windows"] > parts["measured"], (run.name, parts)
    assert with_windows, "no bundled run has energy windows to account for"


def test_a_cell_from_before_the_windows_spent_no_time_in_them():
    assert energy_window_seconds({"status": "ok", "resources": None}) == 0.0
    assert energy_window_seconds({"resources": {"phases": {"decode": {"energy_s": [None, 1.5]}}}}) == 1.5
