"""Does a round's latency follow the host's speed in that round? Per backend, from one run.

A protocol-2 cell records the host's launch cost before and after each round
(`host_launch_us`, a tiny-op loop on the pinned core). If host-bound decode moves with it
inside one pinned process, the variance that moves runs is the host's speed in time, not
the placement pinning fixes. Per cell-round: x = log(mean launch cost of the round / the
cell's geometric mean), y = log(round decode median / the cell's geometric mean); prints
per backend the correlation of y with x, the SD of y, and the SD of x.

    PYTHONPATH=. python -m benchmarks.host_speed_vs_latency RUN_DIR [--phase decode]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from runner.runfiles import RunDir, units_by_round


def round_points(record: dict, phase: str) -> list[tuple[float, float]]:
    """(log host launch cost, log phase median) per round of one cell, centred on the cell."""
    by_round = units_by_round(phase, record.get(phase) or [], record.get(f"{phase}_round"))
    launch = record.get("host_launch_us") or []  # protocol 1: none, so no points
    points = []
    for rnd, vals in by_round.items():
        pair = launch[2 * rnd: 2 * rnd + 2]
        if len(pair) == 2 and all(v > 0 for v in pair) and all(v > 0 for v in vals):
            points.append((math.log(sum(pair) / 2), math.log(statistics.median(vals))))
    if len(points) < 2:
        return []
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    return [(x - mx, y - my) for x, y in points]


def backend_points(run_dir: Path, phase: str) -> dict[str, list[tuple[float, float]]]:
    """Every ok cell's round points of one run, grouped by backend."""
    by_backend: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in RunDir(run_dir).readable_cell_records():
        if record.get("status") == "ok":
            by_backend[record["cell"]["backend"]].extend(round_points(record, phase))
    return {backend: points for backend, points in by_backend.items() if points}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--phase", default="decode", choices=["prefill", "decode", "e2e"])
    args = parser.parse_args(argv)
    meta = RunDir(args.run_dir).readable_meta() if args.run_dir.is_dir() else None
    if meta is None:
        print(f"error: {args.run_dir} is not a run directory (no readable meta.json)", file=sys.stderr)
        return 2
    by_backend = backend_points(args.run_dir, args.phase)
    if not by_backend:
        print(f"{meta['run_id']}: no ok cell with 2 or more rounds and launch probes: nothing to correlate")
        return 0
    print(f"{meta['run_id']} ({meta['regime']}), {args.phase}: per cell-round deviations from the cell's mean")
    print(f"{'backend':<15} {'cell-rounds':>11} {'corr':>6} {'SD latency':>10} {'SD host':>8}")
    for backend, points in sorted(by_backend.items()):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        corr = statistics.correlation(xs, ys) if len(points) > 2 and statistics.pstdev(xs) > 0 and statistics.pstdev(ys) > 0 else math.nan
        print(f"{backend:<15} {len(points):>11} {corr:>6.2f} {statistics.pstdev(ys):>10.3f} {statistics.pstdev(xs):>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
