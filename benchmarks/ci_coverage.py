"""Coverage of the analysis's 95% CIs on a generator with known variance components.

    PYTHONPATH=. python -m benchmarks.ci_coverage [--experiments 1000] [--rounds 3] [--seed 0]

For 1, 2, 3 and 5 runs of 3 rounds (4 generations of 16 autocorrelated steps per round,
two cells), simulates independent experiments (`analysis.synthetic.simulate_experiments`,
default components: run 10%, run x cell 10%, round 3%, generation 3%, step 5% with lag-1
0.45) and counts how often each interval covers its truth: the cell median and the ratio
of the two cells' medians. Columns:

- `t (ours)`: the analysis's interval (Student t on the highest level's log medians, as
  replicates from `analysis.intervals.unit_t_draws`); for 1 run it is across rounds and its
  truth is that run's value, for 2+ runs across runs and the truth is the population value.
- `bootstrap of units`: a percentile bootstrap of the same units (what a two-stage
  bootstrap is at its top level): why the analysis does not use it with few units.
- `iid samples`: with 1 run, the order-statistic bootstrap of all samples as if
  independent (the interval reported before): against the run's own value.
- `across rounds vs population`: with 1 run, how often the across-rounds interval covers
  the value other runs are centred on: what it would claim if it were read as across runs.

Prints a Markdown table, and the wall time.
"""
from __future__ import annotations

import argparse
import time

from analysis.synthetic import VarianceComponents, ci_coverage, simulate_experiments

RUNS = (1, 2, 3, 5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    c = VarianceComponents()
    print(f"{args.experiments} simulated experiments per row, {args.rounds} rounds per run; log-scale SDs: run {c.run}, "
          f"run x cell {c.run_cell}, round {c.round}, generation {c.generation}, step {c.sample} (lag-1 {c.autocorrelation})")
    print()
    print("| runs x rounds | CI kind | median: t (ours) | ratio: t (ours) | median: bootstrap of units | "
          "ratio: bootstrap of units | median: iid samples | median: across rounds vs population |")
    print("|---|---|---|---|---|---|---|---|")
    for n_runs in RUNS:
        experiments = simulate_experiments(n_experiments=args.experiments, n_runs=n_runs, n_rounds=args.rounds,
                                           seed=args.seed + n_runs)
        cov = ci_coverage(experiments, seed=args.seed + n_runs, compare=True)
        iid = f"{cov['median_iid']:.1%}" if "median_iid" in cov else "-"
        population = f"{cov['median_population']:.1%}" if "median_population" in cov else "-"
        print(f"| {n_runs} x {args.rounds} | {cov['kind']} | {cov['median']:.1%} | {cov['ratio']:.1%} | "
              f"{cov['median_boot']:.1%} | {cov['ratio_boot']:.1%} | {iid} | {population} |")
    print()
    print(f"wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
