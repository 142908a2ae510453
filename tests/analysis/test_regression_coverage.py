"""Coverage of the regression's depth coefficient CI: simulated groups with a known seed-form law.

Each experiment is one group of a 3 x 3 depth x width grid measured in `RUNS` runs. A run's
log median of a cell is the law (log latency = a + B_PARAMS log params + B_DEPTH log n_layer)
plus a run offset shared by every cell, a run x cell offset and a within-run error, the levels
and sizes of `analysis.synthetic.VarianceComponents` (the bundled GPU eager cells). The cells
reach `fit_group` as `reproducibility.pooled_stats` hands them over (geometric mean of the run
medians, the runs as units, CI kind "across runs"), so the interval tested is the seed form's
coefficient CI that verdicts and the README use: HC3 plus the t-scaled spread over runs.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.intervals import CI_ACROSS_RUNS
from analysis.regression import fit_group
from analysis.synthetic import VarianceComponents, gpt2_params

B_PARAMS, B_DEPTH = 0.3, 0.5  # planted elasticities: both drive latency, as on the bundled GPUs
SHAPES = [(d, w) for d in (2, 4, 8) for w in (128, 256, 512)]  # the smallest grid with 3 residual df to spare
RUNS = 3
# 400 experiments: the binomial SD of a 95% coverage is sqrt(0.95 x 0.05 / 400) = 1.1 points,
# 10 s of fits on a quiet 2-core machine, about 30 s on a busy one.
EXPERIMENTS = 400
NOMINAL = 0.95
SD = math.sqrt(NOMINAL * (1 - NOMINAL) / EXPERIMENTS)
WITHIN_RUN = 0.02  # a run median's own error: round, generation and step noise averaged over its samples


def _group(rng: np.random.Generator, components: VarianceComponents) -> pd.DataFrame:
    depth = np.array([d for d, _ in SHAPES])
    width = np.array([w for _, w in SHAPES])
    params = gpt2_params(depth, width).astype(np.int64)
    law = -3.0 + B_PARAMS * np.log(params) + B_DEPTH * np.log(depth)
    n = len(SHAPES)
    runs = (law + components.run * rng.standard_normal((RUNS, 1)) + components.run_cell * rng.standard_normal((RUNS, n))
            + WITHIN_RUN * rng.standard_normal((RUNS, n)))  # runs x cells, log medians
    run_ids = [f"run-{r}" for r in range(RUNS)]
    return pd.DataFrame({
        "cell_id": [f"{d}x{w}" for d, w in SHAPES], "median": np.exp(runs.mean(axis=0)), "n_layer": depth,
        "n_embd": width, "params": params, "regime": "simulated", "backend": "hf-eager", "phase": "decode",
        "dtype": "float32", "batch_size": 1, "prompt_len": 128, "ci_kind": CI_ACROSS_RUNS,
        "unit_ids": [run_ids] * n, "unit_log_medians": [list(column) for column in runs.T],
    })


def test_the_depth_coefficient_ci_covers_the_planted_elasticity_at_least_95_percent_of_the_time_and_is_not_much_wider():
    """The interval adds the spread over runs to HC3, whose residuals already hold the run x cell
    noise (regression module docstring: conservative), so it covers more than 95%: measured 99.25%
    (397 / 400 at this seed; the exact t interval over the per-run fits covered 95.25%, HC3 alone
    94.25%). So the band is one-sided below, 3 binomial SDs (3.3 points) under nominal, which an
    exact interval fails with probability ~0.1%; above, the price of the double count is bounded
    instead: its median width is 1.18x the exact interval's (asserted below 1.5x)."""
    rng = np.random.default_rng(18)
    components = VarianceComponents()
    t_quantile = sps.t.ppf(0.975, RUNS - 1)
    covered, width_ratio = [], []
    for _ in range(EXPERIMENTS):
        cells = _group(rng, components)
        seed = fit_group(cells, bands=False).seed_form
        low, high = seed["coef_log_n_layer_lo"], seed["coef_log_n_layer_hi"]
        covered.append(low <= B_DEPTH <= high)
        # the exact interval for this design: Student t over the depth coefficients of the per-run fits
        exog = np.column_stack([np.ones(len(cells)), np.log(cells["params"]), np.log(cells["n_layer"])])
        per_run = (np.linalg.pinv(exog) @ np.array(cells["unit_log_medians"].tolist()))[2]
        width_ratio.append((high - low) / (2 * t_quantile * per_run.std(ddof=1) / math.sqrt(RUNS)))
    coverage = float(np.mean(covered))
    assert coverage >= NOMINAL - 3 * SD, f"coverage {coverage:.1%} over {EXPERIMENTS} experiments"
    assert np.median(width_ratio) < 1.5, f"median width {np.median(width_ratio):.2f}x the exact interval's"
