"""Intervals over the levels of the experiment: what each CI is across, and how it is drawn.

A latency sample sits in a hierarchy: decode steps within a generation (autocorrelated),
generations within a round (autocorrelated too: lag-1 about 0.4-0.5 on GPU eager cells),
rounds within a run (one process, one host state), runs (a process, perhaps a host, each).
Resampling a lower level as if it were independent gives intervals several times too
narrow, so an interval here is built on the *highest level measured* and says which it is:

- `CI_ACROSS_RUNS`: the cell was measured in k >= 2 runs; the units are the runs' log
  medians, and the interval covers the value a new run would be centred on.
- `CI_ACROSS_ROUNDS`: one run, k >= 2 rounds (protocol 2); the units are the rounds' log
  medians, and the interval covers *that run's* value; run-to-run variance is left out.
- `CI_NONE`: one run of one round (every protocol-1 run) or one generation: there is no
  independent unit to compare, so there is no CI (NaN bounds), never a tight one.

The interval is Student's t on the k unit-level log medians, mean +- t_{k-1} s / sqrt(k).
Why t and not a bootstrap of the units: with 2 or 3 units a bootstrap distribution has 3
or 10 distinct values and its percentile interval is roughly mean +- s, which covers about
50% (k = 2) or 75-80% (k = 3) of the time; the t interval is exact when the unit values are
normal, and log medians of many samples are close to normal. `benchmarks/ci_coverage.py`
measures both on the generator of `analysis.synthetic.simulate_experiments`.

The rest of the analysis (ratios, p-values, Benjamini-Hochberg, speed-ups) works on
replicates of each cell's median, so the t interval is handed out as replicates too
(`unit_t_draws`): for a block of cells measured on the same units, replicate b is

    mean_c + sqrt(nu / V_b) * sum_r (x_cr - mean_c) xi_rb / sqrt(k (k - 1)),
    xi_rb ~ N(0, 1), V_b ~ chi^2_nu, nu = k - 1, shared by every cell of the block.

Every linear contrast of the block's cells (log A - log B, a regression coefficient) then
has replicates mean + se T_nu, with se the contrast's own unit-level standard error: its
percentile interval is the paired t interval of that contrast. So a ratio of two cells
measured in the same runs (or rounds) is paired by run (round), and a slow run that slows
both cancels, as it should. Cells on different units get independent replicates.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

CI_ACROSS_RUNS = "across runs"
CI_ACROSS_ROUNDS = "across rounds"
CI_NONE = "none"
CI_KINDS = (CI_NONE, CI_ACROSS_ROUNDS, CI_ACROSS_RUNS)  # weakest first
NO_CI = "no CI"  # what a table, chart or README shows where the kind is CI_NONE
# What a table says next to an interval of each kind (one vocabulary for text, README, UI).
CI_KIND_NOTES = {
    CI_ACROSS_RUNS: "CI across runs (Student t on run medians): includes run-to-run variance",
    CI_ACROSS_ROUNDS: "CI across rounds of one run (Student t on round medians): leaves out run-to-run variance",
    CI_NONE: "no CI: one run of one round has no independent replicate",
}
MIN_UNITS = 2  # a t interval needs one degree of freedom
# Log replicates are clipped here before exp: a t draw on 1 df (two runs) is Cauchy-tailed and
# can pass exp's range; e^300 is far beyond any latency, and a ratio of two clipped draws stays finite.
LOG_LIMIT = 300.0
CHUNK_ELEMENTS = 4_000_000  # cells x units x resamples per batch: bounds memory to ~100 MB


def ci_text(low: float, high: float, kind: str) -> str:
    """An interval as shown: `[low, high]`, or `NO_CI` when there is none."""
    if kind == CI_NONE or not (np.isfinite(low) and np.isfinite(high)):
        return NO_CI
    return f"[{low:.2f}, {high:.2f}]"


def kind_for(n_units: int, level: str) -> str:
    """The CI kind of a cell with `n_units` units at `level` (CI_ACROSS_RUNS or CI_ACROSS_ROUNDS)."""
    if level not in (CI_ACROSS_RUNS, CI_ACROSS_ROUNDS):
        raise ValueError(f"level must be {CI_ACROSS_RUNS!r} or {CI_ACROSS_ROUNDS!r}, got {level!r}")
    return level if n_units >= MIN_UNITS else CI_NONE


def weakest_kind(kinds: Iterable[str]) -> str:
    """The weakest of some CI kinds: a ratio or a fit is only as replicated as its least replicated cell."""
    ranks = [CI_KINDS.index(k) for k in kinds]
    if not ranks:
        return CI_NONE
    return CI_KINDS[min(ranks)]


def block_rng(seed: int, units: Iterable[str]) -> np.random.Generator:
    """The random stream of one block of units (the runs or rounds its cells share), seeded by
    the seed and the units' names: a cell's replicates then depend on its own units only, so
    adding a run of another regime, or any cell outside the block, never moves its CI (with
    one stream shared in block order, every block sorted before it would shift it)."""
    digest = hashlib.sha256("\x1f".join(map(str, units)).encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def unit_t_draws(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Log-scale replicates of the mean of each row's unit values, one shared draw per block.

    `values` is (..., cells, k): row c holds cell c's log medians on the block's k units
    (runs or rounds), in the same unit order for every row; leading axes are independent
    blocks (the coverage benchmark passes 1,000 experiments at once). Returns (..., cells,
    n_resamples); every linear contrast of one block's rows has Student-t replicates on
    k - 1 degrees of freedom around its mean (module docstring). Needs k >= 2.
    """
    values = np.asarray(values, dtype=np.float64)
    *batch, cells, k = values.shape
    if k < MIN_UNITS:
        raise ValueError(f"a t interval needs at least {MIN_UNITS} units, got {k}")
    nu = k - 1
    centre = values.mean(axis=-1, keepdims=True)
    resid = (values - centre) / np.sqrt(k * nu)
    xi = rng.standard_normal((*batch, k, n_resamples))
    scale = np.sqrt(nu / rng.chisquare(nu, (*batch, 1, n_resamples)))
    if batch:
        return centre + (resid @ xi) * scale
    out = np.empty((cells, n_resamples))
    step = max(1, CHUNK_ELEMENTS // max(1, k * n_resamples))
    for lo in range(0, cells, step):
        out[lo:lo + step] = centre[lo:lo + step] + (resid[lo:lo + step] @ xi) * scale
    return out


def to_latency(log_draws: np.ndarray) -> np.ndarray:
    """exp of log replicates, clipped to +-`LOG_LIMIT` first so that no replicate or ratio of two overflows."""
    return np.exp(np.clip(log_draws, -LOG_LIMIT, LOG_LIMIT))


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The closed-form t interval of the mean of each row's unit values (rows x k, k >= 2)."""
    from scipy import stats as sps

    values = np.asarray(values, dtype=np.float64)
    k = values.shape[-1]
    if k < MIN_UNITS:
        raise ValueError(f"a t interval needs at least {MIN_UNITS} units, got {k}")
    half = sps.t.ppf(0.5 + confidence / 2, k - 1) * values.std(axis=-1, ddof=1) / np.sqrt(k)
    mean = values.mean(axis=-1)
    return mean - half, mean + half


def t_factor(n_units: int, confidence: float = 0.95) -> float:
    """(t_{k-1} / z)^2 at `confidence`: what a covariance estimated from k units is scaled by so that
    normal-quantile intervals (statsmodels' HC3 machinery) become Student-t intervals."""
    from scipy import stats as sps

    if n_units < MIN_UNITS:
        raise ValueError(f"a t interval needs at least {MIN_UNITS} units, got {n_units}")
    q = 0.5 + confidence / 2
    return float((sps.t.ppf(q, n_units - 1) / sps.norm.ppf(q)) ** 2)
