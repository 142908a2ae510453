"""Does running a plan through Ray change what it measures? (issue 8's GPU check)

Compares a run made with `--ray` against the same plan run directly, cell by cell: is each
median inside the other run's 95% bootstrap CI? Two direct runs of a plan already disagree
beyond those CIs on many eager cells (run-to-run variance, analysis.reproducibility), so
`--baseline A B` prints the same figures for two ordinary runs; Ray is fine when its
disagreement is no larger than that baseline's.

A second yardstick that includes run-to-run variance: `--direct-runs A B [C...]`, two or more
direct runs of the plan on the regime; the Ray run's median should land inside their range
about as often as one more direct run would, (k - 1) / (k + 1) of the time.

    python -m benchmarks.ray_vs_direct --db store.duckdb RAY_RUN DIRECT_RUN [--baseline A B] \
        [--direct-runs A B C]
"""
from __future__ import annotations

import argparse

import duckdb
import pandas as pd

from analysis.run_compare import compare_runs, summarize_comparison, within_runs_range
from analysis.stats import compute_cell_stats


def _print(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title}: {len(table)} cell-phases in both runs (ratio = second / first median)")
    summary = summarize_comparison(table)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    by_backend = summarize_comparison(table, by="backend")
    print(by_backend[by_backend["group"] != "all"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("ray_run")
    parser.add_argument("direct_run")
    parser.add_argument("--baseline", nargs=2, metavar=("RUN_A", "RUN_B"), help="two direct runs of the same plan")
    parser.add_argument("--direct-runs", nargs="+", default=[], help="two or more direct runs for the range check")
    parser.add_argument("--show", type=int, default=0, help="also print the N largest disagreements")
    args = parser.parse_args()
    runs = [args.direct_run, args.ray_run] + (args.baseline or []) + args.direct_runs
    con = duckdb.connect(args.db, read_only=True)
    try:
        stats = compute_cell_stats(con, {"run_id": runs})
    finally:
        con.close()
    try:
        table = compare_runs(stats, args.direct_run, args.ray_run)
        ranged = within_runs_range(stats, args.ray_run, args.direct_runs) if args.direct_runs else None
        baseline = compare_runs(stats, *args.baseline) if args.baseline else None
    except ValueError as error:  # a misspelt run id: say which, no traceback
        raise SystemExit(f"error: {error}") from None
    _print(f"direct {args.direct_run} vs Ray {args.ray_run}", table)
    if baseline is not None:
        _print(f"baseline: direct {args.baseline[0]} vs direct {args.baseline[1]}", baseline)
    if ranged is not None:
        print(f"\nRay {args.ray_run} inside the range of {len(args.direct_runs)} direct runs: "
              f"{ranged['inside'].mean():.3f} of {len(ranged)} cell-phases "
              f"(one more exchangeable run: {ranged['expected_inside'].iat[0]:.3f})")
        by = ranged.groupby("backend")["inside"].mean()
        print("  by backend: " + ", ".join(f"{k} {v:.3f}" for k, v in by.items()))
    if args.show:
        worst = table.assign(off=(table["ratio"].apply(lambda r: max(r, 1 / r)))).nlargest(args.show, "off")
        print(worst[["phase", "model_name", "backend", "dtype", "median_a", "ci_low_a", "ci_high_a", "median_b",
                     "ratio"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
