"""Do re-run intervals predict a re-run? Leave-one-run-out over the bundled repeated runs.

    PYTHONPATH=. python -m benchmarks.rerun_coverage [--snapshot data/snapshot] [--protocol 2|all]

Every run of the store that shares a cell-phase with another run of its regime is held out
in turn; the between-run variance is estimated from the store WITHOUT it
(`analysis.rerun.leave_one_run_out`), and for each cell-phase it shares, every other run's
re-run interval is checked for the held-out run's median. Prints per backend: held-out
runs, checks (held-out x other run x cell-phase), checks without history, the share
covered, the median width of the interval (high / low), and beside them the same for the
other run's across-rounds interval ("this run"), which leaves run-to-run variance out.

Checks of one held-out run share its run effect, so they are not independent: the number
of held-out runs, not of checks, says how firm a coverage figure is.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from analysis.rerun import leave_one_run_out
from analysis.stats import compute_cell_stats
from store.dataset import BUNDLED_SNAPSHOT
from store.snapshot import open_snapshot

N_RESAMPLES = 200  # only the across-rounds bounds are read from the replicates: closed form would not change them


def coverage_table(checks: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of `by`: held-out runs, checks, no-history checks, coverage and median widths."""
    with_history = checks[checks["covered"].notna()]
    table = checks.groupby(by).agg(held_out_runs=("held_out", "nunique"), checks=("covered", "size"),
                                   no_history=("covered", lambda c: int(c.isna().sum())))
    table["coverage"] = with_history.groupby(by)["covered"].mean()
    table["median_width"] = with_history.groupby(by)["width_ratio"].median()
    this_run = checks[checks["this_run_covered"].notna()]
    table["this_run_coverage"] = this_run.groupby(by)["this_run_covered"].mean()
    table["this_run_median_width"] = this_run.groupby(by)["this_run_width_ratio"].median()
    return table.reset_index()


def print_table(table: pd.DataFrame, by: list[str]) -> None:
    def pct(value: float) -> str:
        return "-" if pd.isna(value) else f"{value:.1%}"

    def width(value: float) -> str:
        return "-" if pd.isna(value) else f"{value:.3f}x"

    print("| " + " | ".join(by) + " | held-out runs | checks | no history | re-run: coverage | re-run: median width | "
          "this run: coverage | this run: median width |")
    print("|" + "---|" * (len(by) + 7))
    for row in table.itertuples(index=False):
        keys = " | ".join(str(getattr(row, k)) for k in by)
        print(f"| {keys} | {row.held_out_runs} | {row.checks} | {row.no_history} | {pct(row.coverage)} | "
              f"{width(row.median_width)} | {pct(row.this_run_coverage)} | {width(row.this_run_median_width)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshot", type=Path, default=BUNDLED_SNAPSHOT)
    parser.add_argument("--protocol", choices=["2", "all"], default="2",
                        help="2: runs measured in rounds (the within-run part is measured); all: protocol-1 runs too")
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    con = open_snapshot(args.snapshot)
    try:
        frame = compute_cell_stats(con, n_resamples=N_RESAMPLES, confidence=args.confidence).frame
    finally:
        con.close()
    if args.protocol == "2":
        frame = frame[frame["protocol_version"] == 2]
    checks = leave_one_run_out(frame, confidence=args.confidence)
    if checks.empty:
        raise SystemExit("no run shares a cell-phase with another run of its regime: nothing to hold out")
    shown = os.path.relpath(args.snapshot) if args.snapshot.is_absolute() else args.snapshot
    print(f"{shown}: protocol {args.protocol}, {checks['held_out'].nunique()} runs held out in turn, "
          f"{args.confidence:.0%} intervals; width = high / low")
    print()
    print_table(coverage_table(checks, ["backend"]), ["backend"])
    print()
    print_table(coverage_table(checks, ["backend", "phase"]), ["backend", "phase"])
    print()
    print(f"wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
