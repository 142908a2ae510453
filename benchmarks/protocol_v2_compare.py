"""Do two runs of one plan agree? Coverage and between-run spread per backend, from run files.

    python -m benchmarks.protocol_v2_compare RUN_DIR_A RUN_DIR_B [--phase decode]

Reads each run's finished cells and, for cells still in progress, their kept rounds
(protocol v2 writes one file per round), so a run stopped between rounds still counts with
the rounds it has. Per cell-phase: the run median is the geometric mean of round medians
(rounds are the independent units within a run); run A's 95% CI is a t interval over its
log round medians (k - 1 degrees of freedom; "no CI" with one round). Prints per backend:
cells compared, coverage (share of B's medians inside A's CI), the median |log(B/A)|, and
each run's wall time from its events (the sum of its segments, so resumes do not count the
wait between sessions).
"""
from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from pathlib import Path

from scipy import stats

from runner.runfiles import RunDir, units_by_round


def run_cells(run_dir: Path, phase: str) -> dict[str, dict]:
    """cell_key -> {backend, label, round_medians} for ok cells and cells with kept rounds."""
    run = RunDir(run_dir)
    labels = {e["key"]: e["cell"] for e in run.read_meta()["cells"]}
    out = {}
    for record in run.cell_records():
        if record["status"] != "ok":
            continue
        by_round = units_by_round(phase, record.get(phase) or [], record.get(f"{phase}_round"))
        out[record["cell_key"]] = {"cell": record["cell"], "round_medians": [statistics.median(v) for v in by_round.values() if v]}
    partial: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for key, records in run.round_records().items():  # rounds of cells with no cell file yet
        for index, record in records.items():
            values = [v for unit in units_by_round(phase, record.get(phase) or [], None).values() for v in unit]
            if values:
                partial[key][index] = statistics.median(values)
    for key, rounds in partial.items():
        out[key] = {"cell": labels[key], "round_medians": [rounds[r] for r in sorted(rounds)], "partial": True}
    return out


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    logs = [math.log(v) for v in values]
    centre, sd = statistics.mean(logs), statistics.stdev(logs)
    half = stats.t.ppf(0.5 + confidence / 2, len(logs) - 1) * sd / math.sqrt(len(logs))
    return math.exp(centre - half), math.exp(centre + half)


def wall_s(run_dir: Path) -> float | None:
    """Seconds the run was running (RunDir.active_seconds: resumes do not count the wait between sessions)."""
    return RunDir(run_dir).active_seconds() or None


def compare(a: Path, b: Path, phase: str) -> list[dict]:
    cells_a, cells_b = run_cells(a, phase), run_cells(b, phase)
    per_backend: dict[str, dict] = defaultdict(lambda: {"n": 0, "with_ci": 0, "covered": 0, "log_ratios": []})
    for key in sorted(set(cells_a) & set(cells_b)):
        ra, rb = cells_a[key]["round_medians"], cells_b[key]["round_medians"]
        if not ra or not rb:
            continue
        backend = cells_a[key]["cell"]["backend"]
        row = per_backend[backend]
        ma, mb = geometric_mean(ra), geometric_mean(rb)
        row["n"] += 1
        row["log_ratios"].append(abs(math.log(mb / ma)))
        ci = t_interval(ra)
        if ci is not None:
            row["with_ci"] += 1
            row["covered"] += ci[0] <= mb <= ci[1]
    return [{"backend": k, "cells": v["n"], "with_ci": v["with_ci"],
             "coverage": v["covered"] / v["with_ci"] if v["with_ci"] else None,
             "median_abs_log_ratio": statistics.median(v["log_ratios"]) if v["log_ratios"] else None}
            for k, v in sorted(per_backend.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--phase", default="decode", choices=["prefill", "decode", "e2e"])
    args = parser.parse_args()
    metas = {run: RunDir(run).readable_meta() for run in (args.run_a, args.run_b)}
    for run, meta in metas.items():
        if meta is None:
            parser.error(f"{run}: not a run directory (no readable meta.json)")
    for run, meta in metas.items():
        cells = run_cells(run, args.phase)
        wall = wall_s(run)
        print(f"{meta['run_id']}: {meta['status']}, protocol {meta.get('protocol_version', 1)}, "
              f"{meta.get('rounds', 1)} rounds, {len(cells)} {args.phase} cells "
              f"({sum(1 for c in cells.values() if c.get('partial'))} with only some rounds), "
              f"wall {f'{wall:.0f} s' if wall else 'unknown (no events)'}")
    print(f"{'backend':<15} {'cells':>5} {'with CI':>7} {'coverage':>9} {'median |log(B/A)|':>18}")
    for row in compare(args.run_a, args.run_b, args.phase):
        coverage = f"{row['coverage']:.0%}" if row["coverage"] is not None else "no CI"
        spread = f"{row['median_abs_log_ratio']:.3f}" if row["median_abs_log_ratio"] is not None else "-"
        print(f"{row['backend']:<15} {row['cells']:>5} {row['with_ci']:>7} {coverage:>9} {spread:>18}")


if __name__ == "__main__":
    main()
