"""How long the analysis takes on a realistic store of about a million raw samples.

Store: 3 regimes x 2 backends x 40 shapes (depths 1..32 x widths 64..1024) = 240 cells, each
with decode 64 steps x 64 reps, prefill 64 reps and e2e 64 reps (4,224 samples per cell).
Measured, after one burn-in call each (first-call times printed on their own):

- all cell statistics (DuckDB aggregates + bootstrap CI of every median); target < 1 s
- one regime: its cell statistics, every group's regressions and the inversion table;
  target < 2 s
- the whole headless report (`analyze`) on the full store, for reference (no target)

Run: python -m benchmarks.bench_analysis [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from analysis.inversions import find_inversions
from analysis.regression import fit_all
from analysis.report import analyze
from analysis.stats import compute_cell_stats
from analysis.synthetic import SyntheticPlan, build_store, depth_width_law

REGIMES = ("NVIDIA H100 80GB HBM3 x1", "NVIDIA H200 x1", "CPU Xeon 16 threads")
SHAPES = tuple((d, w) for d in (1, 2, 4, 8, 12, 16, 24, 32) for w in (64, 128, 256, 512, 1024))
TARGET_STATS_S = 1.0
TARGET_REGIME_S = 2.0


def _time(fn, repeats: int) -> tuple[float, list[float]]:
    """First call (burn-in), then `repeats` measured calls."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, times


def _report(label: str, first: float, times: list[float], target: float | None) -> None:
    med = statistics.median(times)
    line = f"{label:<58} first {first:6.3f} s | median {med:6.3f} s (min {min(times):.3f}, max {max(times):.3f}, n={len(times)})"
    if target is not None:
        line += f" | target {target:.1f} s, ratio {med / target:.2f}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    plan = SyntheticPlan(
        law=depth_width_law(), regimes=REGIMES, backends=("hf-eager", "torch-compile"), shapes=SHAPES,
        gen_len=64, reps=64, noise_cv=0.05, cell_cv=0.03, seed=0,
    )
    start = time.perf_counter()
    con = build_store(plan)
    n = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    cells = con.execute("SELECT count(*) FROM cells").fetchone()[0]
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"store: {n:,} samples, {cells} cells, built in {time.perf_counter() - start:.2f} s; "
          f"{os.cpu_count()} CPUs, duckdb threads {threads}")

    first, times = _time(lambda: compute_cell_stats(con), args.repeats)
    _report("all cell statistics (720 cell-phases, 2000 resamples)", first, times, TARGET_STATS_S)

    regime = REGIMES[0]

    def one_regime() -> None:
        stats = compute_cell_stats(con, {"regime": regime})
        fit_all(stats.frame)
        find_inversions(stats)

    first, times = _time(one_regime, args.repeats)
    _report("one regime: stats + all regressions + inversion table", first, times, TARGET_REGIME_S)

    stats = compute_cell_stats(con, {"regime": regime})
    first, times = _time(lambda: fit_all(stats.frame), args.repeats)
    _report("  of which: regressions (6 groups x 6 fits + bands)", first, times, None)
    first, times = _time(lambda: find_inversions(stats), args.repeats)
    _report("  of which: inversion table", first, times, None)

    first, times = _time(lambda: analyze(con), max(1, args.repeats // 2))
    _report("full report analyze() on the whole store", first, times, None)


if __name__ == "__main__":
    main()
