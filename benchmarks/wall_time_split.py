"""Where a run's wall time went: setup, warm-up, measured, correctness check, the memory and
energy windows, other.

Reads a run directory (no database needed). Target (issue 3, seed plan): other <= 10%. The
windows are the resource tracking after each round's timed phases (`[measure] energy_window_s`,
1 s per phase and round by default, each window's length recorded as `energy_s`): on the H200
they are most of a protocol-2 cell-round, so they get their own line instead of hiding in other.
"""
from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from runner.runfiles import RunDir


def energy_window_seconds(cell: dict) -> float:
    """Seconds a cell spent in its memory and energy windows, summed over phases and rounds
    (0 for cells from before the windows, or run with `energy_window_s = 0`). A lower bound:
    the wait for the counter's first update before each window is not in `energy_s`."""
    phases = ((cell.get("resources") or {}).get("phases") or {}).values()
    return sum(s for phase in phases for s in (phase.get("energy_s") or []) if s)


def split(run_path: Path) -> dict[str, float]:
    run = RunDir(run_path)
    meta = run.read_meta()
    if not meta.get("finished_at"):
        raise SystemExit(f"{run_path}: run not finished (status {meta.get('status')})")
    wall = run.active_seconds() or (
        datetime.fromisoformat(meta["finished_at"]) - datetime.fromisoformat(meta["started_at"])
    ).total_seconds()
    parts = {"setup": 0.0, "cold sample": 0.0, "warm-up": 0.0, "measured": 0.0, "correctness check": 0.0,
             "energy windows": 0.0}
    for cell in run.cell_records():
        parts["setup"] += cell.get("setup_s") or 0.0
        parts["cold sample"] += (cell.get("cold_ms") or 0.0) / 1e3
        parts["warm-up"] += cell.get("warmup_s") or 0.0
        parts["measured"] += cell.get("measured_s") or 0.0
        parts["correctness check"] += cell.get("check_s") or 0.0
        parts["energy windows"] += energy_window_seconds(cell)
    parts["other"] = wall - sum(parts.values())
    parts["wall"] = wall
    return parts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if RunDir(args.run_dir).readable_meta() is None:
        parser.error(f"{args.run_dir}: not a run directory (no readable meta.json)")
    parts = split(args.run_dir)
    wall = parts.pop("wall")
    print(f"wall_time_split {args.run_dir.name}: {wall:.1f} s")
    for name, seconds in parts.items():
        print(f"  {name:18s} {seconds:8.1f} s  {100 * seconds / wall:5.1f}%")
    print(f"  other/wall = {parts['other'] / wall:.3f} (target <= 0.10)")


if __name__ == "__main__":
    main()
