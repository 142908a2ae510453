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
# A median or a ratio can carry two intervals, named apart everywhere they show: its CI ("this
# run" when across the rounds of one run; across runs when pooled), and its re-run interval
# (analysis.rerun: where another run's value is expected).
THIS_RUN = "this run"
RERUN_HEADER = "95% re-run interval"
CI_KIND_NOTES = {
    CI_ACROSS_RUNS: "95% CI across runs (Student t on run medians): the value runs centre on, run-to-run variance included",
    CI_ACROSS_ROUNDS: (f"95% CI, {THIS_RUN}: across the rounds of one run (Student t on round medians): where this "
                       "run's own value lies, run-to-run variance left out"),
    CI_NONE: "no CI: one run of one round has no independent replicate",
}
# A CI kind as a tooltip or a table cell names it: which interval, not only what it is across.
INTERVAL_OF = {CI_ACROSS_RUNS: CI_ACROSS_RUNS, CI_ACROSS_ROUNDS: f"{CI_ACROSS_ROUNDS} ({THIS_RUN})", CI_NONE: NO_CI}


def interval_of(kind: object) -> str:
    """`INTERVAL_OF` of a CI kind (an unknown or missing kind reads as NO_CI)."""
    return INTERVAL_OF.get(kind, NO_CI) if isinstance(kind, str) else NO_CI


RERUN_NOTE = ("95% re-run interval: where the value of another run is expected to fall, this run's interval widened by "
              "the between-run variance of the store's repeated runs of the backend on the regime (a ratio: of both "
              "its sides); 'no history' where the store has no repeated runs to learn it from")
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


# An interval whose high bound is more than this many times its low bound spans an order of
# magnitude: it cannot tell a 1 ms cell from a 10 ms one, so its bounds mean nothing and are
# not shown (`interval_text` says "too noisy" and how many units would be needed instead).
NOISY_RATIO = 10.0
# `rounds_needed` aims at a 95% CI of the median within +-10% (a relative half-width of
# 0.10 on the log scale): narrow enough to tell apart shapes whose latencies differ by 25%.
TARGET_HALF_WIDTH = 0.10
MAX_UNITS_NEEDED = 10_000  # beyond this the answer is "measure differently", not a number


def rounds_needed(unit_log_medians, target: float = TARGET_HALF_WIDTH, confidence: float = 0.95) -> int | None:
    """How many units (rounds, or runs) a t interval would need for a relative half-width of `target`.

    The interval is mean +- t_{k-1} s / sqrt(k) on the units' log medians, so with the spread
    s observed across the units measured so far, k units give a half-width of
    t_{k-1,(1+confidence)/2} s / sqrt(k) on the log scale; the answer is the smallest k >= 2
    with t_{k-1} s / sqrt(k) <= log(1 + target) (found from the normal approximation
    k = (z s / log(1 + target))^2 upwards, since t > z), capped at MAX_UNITS_NEEDED. None
    with fewer than two units (no spread observed)."""
    from scipy import stats as sps

    if not isinstance(unit_log_medians, (list, tuple, np.ndarray)):
        return None  # a missing value (NaN, None): no units recorded
    values = np.asarray(unit_log_medians, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < MIN_UNITS:
        return None
    spread = float(values.std(ddof=1))
    half = float(np.log1p(target))
    q = 0.5 + confidence / 2
    if spread == 0.0:
        return MIN_UNITS
    k = max(MIN_UNITS, int(np.ceil((sps.norm.ppf(q) * spread / half) ** 2)))
    while k < MAX_UNITS_NEEDED and sps.t.ppf(q, k - 1) * spread / np.sqrt(k) > half:
        k += 1
    return k


def too_noisy(low: float, high: float) -> bool:
    """An interval too wide to mean anything: high / low above NOISY_RATIO (or a bound not positive)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return False
    return low <= 0 or high / low > NOISY_RATIO


def interval_text(low: float, high: float, kind: str, unit_log_medians=None, digits: int = 4) -> str:
    """An interval as every table shows it: `[low, high]`; `NO_CI` when there is none; and
    "too noisy (N rounds would be needed)" when it spans more than NOISY_RATIO, N from
    `rounds_needed` on the units it rests on ("runs" for an interval across runs)."""
    if kind == CI_NONE or not (np.isfinite(low) and np.isfinite(high)):
        return NO_CI
    if too_noisy(low, high):
        needed = rounds_needed(unit_log_medians)
        unit = "runs" if kind == CI_ACROSS_RUNS else "rounds"
        if needed is None:
            return "too noisy"
        more = "or more " if needed >= MAX_UNITS_NEEDED else ""
        return f"too noisy ({more}{needed} {unit} would be needed)"
    return f"[{low:.{digits}g}, {high:.{digits}g}]"


def interval_texts(frame) -> list[str]:
    """`interval_text` of every row of a statistics frame (median_ci_low, median_ci_high,
    ci_kind and, where present, unit_log_medians): the column tables show instead of bounds."""
    units = frame["unit_log_medians"] if "unit_log_medians" in frame else [None] * len(frame)
    return [interval_text(low, high, kind, u) for low, high, kind, u
            in zip(frame["median_ci_low"], frame["median_ci_high"], frame["ci_kind"], units)]


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


def relative_half_width(unit_log_medians, confidence: float = 0.95) -> float | None:
    """The relative half-width of the t interval of a cell's median over its units: exp(h) - 1
    with h the half-width of `t_interval` on the units' log medians, i.e. the "+-3%" a cell
    reads at (0.03). The runner's adaptive rounds stop a cell on this figure, so a cell stops
    where the interval the analysis draws over its rounds is as narrow as the plan asked
    (`rounds_needed` solves the same inequality for k). None with fewer than two finite units."""
    values = np.asarray(unit_log_medians, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < MIN_UNITS:
        return None
    low, high = t_interval(values[None, :], confidence)
    return float(np.expm1((high[0] - low[0]) / 2))


def t_factor(n_units: int, confidence: float = 0.95) -> float:
    """(t_{k-1} / z)^2 at `confidence`: what a covariance estimated from k units is scaled by so that
    normal-quantile intervals (statsmodels' HC3 machinery) become Student-t intervals."""
    from scipy import stats as sps

    if n_units < MIN_UNITS:
        raise ValueError(f"a t interval needs at least {MIN_UNITS} units, got {n_units}")
    q = 0.5 + confidence / 2
    return float((sps.t.ppf(q, n_units - 1) / sps.norm.ppf(q)) ** 2)
