"""Run-to-run variance: do repeat runs of the same cells agree, and what do verdicts say across runs?

A cell's CI within a run (analysis.stats: across its rounds, or none) covers at most what
moves between rounds of one process. Repeat runs (`repeats = N` in a plan: runs sharing a series id and cell keys) show a second
component: the same configuration on the same regime lands on a different median from run
to run (clocks, host load, allocator state, library versions). This module measures that
component and carries it into the CIs that verdicts use.

A *repeat unit* is one (regime, cell, phase) measured in more than one run. By default
(`by="shape"`, `POOL_COLUMNS`) a cell is its configuration without its name: the shape
(family, depth, width, query and KV heads), parameter count, backend and its options,
device, dtype, batch, prompt and generation length. The reference family and the grid name
one shape twice (gpt2-50m is the grid's 8x512) and their `cells.cell_key` differ (the key
hashes where the model came from), so pooling by cell key left two rows for one shape in a
group and counted each of its pairs twice; cells that differ in anything that changes
latency (batch, prompt, options, the architecture or its KV heads at one depth and width)
are never pooled. `by="cell_key"` (the stored hash) and `by="config"` (the configuration
with the name) are kept for comparison.

Between-run variance, per unit: a one-way random-effects model on the per-run log medians,
fitted as a random-effects meta-analysis (statsmodels `combine_effects`, Paule-Mandel
tau^2) with each run's within-run variance taken from its own bootstrap of the median:

    log median_r = mu + u_r + e_r,   u_r ~ N(0, tau^2),   e_r ~ N(0, s_r^2 known)

Chosen over MixedLM on raw log samples because (1) it models the statistic we report (the
median) with the uncertainty we already trust for it, where MixedLM models means and
assumes iid normal samples within a run, which decode steps of one generation are not;
(2) with the usual 2-5 runs per cell MixedLM's REML often sits on the boundary and warns,
while the moment-style estimate is defined for any k >= 2; (3) it is closed form, so a
store with thousands of repeated cells costs milliseconds, not a fit per cell. Cochran's Q
(homogeneity test) asks whether run medians differ more than their within-run CIs allow;
a unit is *irreproducible* when that test is significant after Benjamini-Hochberg across
all units (so a large store does not flag 5% of its cells by chance) and the run medians
differ by at least `MIN_SPREAD`.

CIs that include it: a Student-t interval on the runs' log medians (`analysis.intervals`,
`ci_kind` "across runs"): the runs are the independent units, and their sample variance
already holds both components (each run median carries its within-run noise). It is exact
for normal run medians with any k >= 2; a bootstrap of 2 runs covers about 50%, of 3-4 runs
about 75-85% (the scale-up by sqrt(k/(k-1)) used before does not fix that), which is why
it is not used. The interval is handed out as replicates shared by the cells measured in
the same runs, so a ratio of two pooled medians is paired by run (a slow run that slows
every cell cancels in a ratio, as it should). The random-effects fit (`re_ci_low/high`,
also t with k-1 df, with the within-run variances as weights) stays in `repeat_table` as
the meta-analytic view of the same question.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests

from analysis.bootstrap import percentile_ci
from analysis.intervals import CI_ACROSS_RUNS, MIN_UNITS, block_rng, to_latency, unit_t_draws
from analysis.inversions import pair_ratios
from analysis.load import add_group_id, run_environments, with_family
from analysis.regression import fit_group
from analysis.stats import CellStats, add_throughput

# The configuration of a cell (everything but the run), for `by="config"`.
CONFIG_COLUMNS = ("model_name", "family", "n_layer", "n_embd", "n_head", "n_kv_head", "backend", "device", "dtype",
                  "batch_size", "prompt_len", "gen_len")
# What makes two cells the same measurement (module docstring): the configuration without the model's name.
POOL_COLUMNS = tuple(c for c in CONFIG_COLUMNS if c != "model_name") + ("params", "backend_options")
POOL_BY = "shape"  # the default repeat key: POOL_COLUMNS
NAME_SEPARATOR = " = "  # between the names one pooled shape carries (gpt2-50m = 8x512)
REPEAT_KEYS = {"shape": POOL_COLUMNS, "config": CONFIG_COLUMNS, "cell_key": ("cell_key",)}
UNIT_KEYS = ("regime", "repeat_key", "phase")
FDR = 0.05  # Benjamini-Hochberg level for "run medians differ beyond their within-run CIs"
MIN_SPREAD = 1.02  # max/min of run medians: below 2% a difference is too small to act on
RE_METHOD = "iterated"  # Paule-Mandel tau^2: less biased than DerSimonian-Laird for small k
MIN_LOG_VAR = 1e-12  # floor for a within-run variance: quantised timers can give zero
CELL_CHUNK = 500  # units per batch of pooled replicates: bounds memory to ~50 MB at k = 5
NO_REPEATS_MESSAGE = (
    "no repeated cells: every configuration was measured in one run, so run-to-run variance "
    "cannot be estimated and the CIs cover within-run noise only; run the plan with repeats = N "
    "(N >= 3, better 5) to measure it"
)


def with_repeat_key(frame: pd.DataFrame, by: str = POOL_BY) -> pd.DataFrame:
    """A copy of a stats frame with `repeat_key` (what identifies a cell across runs) and `repeat_id`."""
    if by not in REPEAT_KEYS:
        raise ValueError(f"by must be one of {', '.join(map(repr, REPEAT_KEYS))}, got {by!r}")
    frame = with_family(frame).copy()  # a frame from before families is GPT-2: its key holds gpt2 too
    if by == "cell_key":
        frame["repeat_key"] = frame["cell_key"].astype(str)
    else:
        columns = frame[list(REPEAT_KEYS[by])]
        if "backend_options" in columns:  # no options recorded (older stores) are the backend's defaults
            columns = columns.assign(backend_options=columns["backend_options"].fillna("{}"))
        # (pandas returns a frame, not a series, when it joins the rows of an empty frame)
        frame["repeat_key"] = columns.astype(str).agg("/".join, axis=1) if len(frame) else pd.Series(dtype=str)
    frame["repeat_id"] = frame["regime"].astype(str) + " / " + frame["repeat_key"]
    return frame


def has_repeats(stats: CellStats, by: str = POOL_BY) -> bool:
    """Whether any (regime, cell, phase) of `stats` was measured in more than one run."""
    if stats.frame.empty:
        return False
    frame = with_repeat_key(stats.frame, by)
    return bool((frame.groupby(list(UNIT_KEYS))["run_id"].nunique() > 1).any())


def _units(frame: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each unit, ordered by run_id inside a unit, units in key order."""
    order = frame.sort_values(list(UNIT_KEYS) + ["run_id"]).index.to_numpy()
    keyed = frame.loc[order, list(UNIT_KEYS)]
    codes = keyed.groupby(list(UNIT_KEYS), sort=False).ngroup().to_numpy()
    return np.split(order, np.flatnonzero(np.diff(codes)) + 1) if len(order) else []


def pooled_stats(stats: CellStats, by: str = POOL_BY, seed: int | None = None) -> CellStats:
    """One row per (regime, cell, phase) pooled over its runs, with run-level replicates.

    The pooled median is the geometric mean of the run medians (each run one vote: runs are
    the replication unit). Its CI is the t interval across runs (module docstring), handed
    out as `draws` shared by units measured in the same runs, so `inversions.pair_ratios(
    pooled)` gets ratio CIs paired by run. A unit measured once keeps its run's row and
    draws (across rounds, or no CI). Frame: the first run's configuration columns, `cell_id`
    = `repeat_id`, n (all samples), n_runs, run_ids, cell_ids, run_median_min/max, median,
    ci_kind, median_ci_low/high, model_names (every name the unit was measured under; `model_name`
    joins them with NAME_SEPARATOR), unit_ids / unit_log_medians (the runs and their log medians
    where pooled), log_median_se (across runs where pooled), run_log_median_se (one run's
    within-run SE, RMS over its runs), ci_includes_between_run_variance, tokens/s, group_id.
    """
    frame = with_repeat_key(stats.frame.reset_index(drop=True), by)
    n_resamples = stats.draws.shape[1] if stats.draws.ndim == 2 else 0
    if frame.empty:
        return CellStats(frame=frame.assign(n_runs=pd.Series(dtype="int64")), draws=np.empty((0, n_resamples)),
                         confidence=stats.confidence, seed=stats.seed)
    units = _units(frame)
    log_median = np.log(frame["median"].to_numpy(np.float64))
    run_ids = frame["run_id"].to_numpy()
    out = np.empty((len(units), n_resamples))
    seed = stats.seed if seed is None else seed
    # Units measured in the same runs share their draws (pairing for ratios), from a stream of their own.
    patterns: dict[tuple[str, ...], list[int]] = {}
    for u, rows in enumerate(units):
        patterns.setdefault(tuple(run_ids[rows]), []).append(u)
    for pattern in sorted(patterns):
        members = patterns[pattern]
        rows = np.stack([units[u] for u in members])  # units x k
        if len(pattern) < MIN_UNITS:
            out[members] = stats.draws[rows[:, 0]]
        else:
            out[members] = to_latency(unit_t_draws(log_median[rows], n_resamples, block_rng(seed, pattern)))
    first = frame.loc[[rows[0] for rows in units]].reset_index(drop=True)
    pooled = first.drop(columns=[c for c in ("run_id", "series_id", "cell_key", "group_id") if c in first])
    pooled["cell_id"] = first["repeat_id"]
    pooled["cell_key"] = first["cell_key"]
    pooled["n"] = [int(frame["n"].to_numpy()[rows].sum()) for rows in units]
    pooled["n_runs"] = [len(rows) for rows in units]
    pooled["run_ids"] = [list(run_ids[rows]) for rows in units]
    pooled["cell_ids"] = [list(frame["cell_id"].to_numpy()[rows]) for rows in units]
    # A shape pooled under several names keeps them all, reference-family names before the grid's "LxW".
    names = frame["model_name"].astype(str).to_numpy()
    pooled["model_names"] = [sorted(set(names[rows]), key=lambda n, lw=f"{layers}x{width}": (n == lw, n))
                             for rows, layers, width in zip(units, first["n_layer"], first["n_embd"])]
    pooled["model_name"] = pooled["model_names"].map(NAME_SEPARATOR.join)
    pooled["series_ids"] = [sorted({str(s) for s in frame["series_id"].to_numpy()[rows] if s is not None and s == s}) for rows in units]
    pooled["run_median_min"] = [float(np.exp(log_median[rows].min())) for rows in units]
    pooled["run_median_max"] = [float(np.exp(log_median[rows].max())) for rows in units]
    pooled["median"] = [float(np.exp(log_median[rows].mean())) for rows in units]
    if "protocol_version" in frame:  # the oldest protocol among the runs: a pool is only as controlled as its least
        protocols = frame["protocol_version"].to_numpy()
        pooled["protocol_version"] = [int(protocols[rows].min()) for rows in units]
    repeated = pooled["n_runs"].to_numpy() >= MIN_UNITS
    pooled["ci_kind"] = np.where(repeated, CI_ACROSS_RUNS, first["ci_kind"].to_numpy())
    pooled["unit_ids"] = [list(run_ids[rows]) if len(rows) >= MIN_UNITS else first["unit_ids"].iat[u]
                          for u, rows in enumerate(units)]
    pooled["unit_log_medians"] = [[float(v) for v in log_median[rows]] if len(rows) >= MIN_UNITS
                                  else first["unit_log_medians"].iat[u] for u, rows in enumerate(units)]
    pooled["log_median_se"] = [float(np.std(log_median[rows], ddof=1) / np.sqrt(len(rows))) if len(rows) >= MIN_UNITS
                               else float(first["log_median_se"].iat[u]) for u, rows in enumerate(units)]
    # One run's within-run noise (RMS over the runs): what a re-run adds besides its run effect (analysis.rerun).
    run_se = frame["log_median_se"].to_numpy(np.float64)
    pooled["run_log_median_se"] = [float(np.sqrt(np.mean(run_se[rows] ** 2))) for rows in units]
    with np.errstate(invalid="ignore"):
        low, high = percentile_ci(out, stats.confidence)
    pooled["median_ci_low"], pooled["median_ci_high"] = low, high
    # Sample moments do not pool across runs; the per-run rows keep them.
    for col in ("mean", "std", "cv", "p5", "p95"):
        if col in pooled:
            pooled[col] = np.where(pooled["n_runs"] > 1, np.nan, pooled[col])
    pooled["ci_includes_between_run_variance"] = pooled["ci_kind"] == CI_ACROSS_RUNS
    pooled = add_group_id(add_throughput(pooled))
    return CellStats(frame=pooled, draws=out, confidence=stats.confidence, seed=stats.seed)


def repeat_table(
    stats: CellStats,
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    by: str = POOL_BY,
    pooled: CellStats | None = None,
    fdr: float = FDR,
    min_spread: float = MIN_SPREAD,
) -> pd.DataFrame:
    """Per repeat unit (measured in >= 2 runs): run spread, variance components, the flag.

    Columns: repeat_id, regime, repeat_key, phase, group_id, the configuration, n_runs,
    run_ids, run_medians, run_median_min/max, spread_ratio (max / min), between_run_sd (SD
    of log run medians), within_run_se (RMS of the runs' `log_median_se`: across rounds where
    a run has rounds, else an i.i.d. bootstrap's, a lower bound), tau (random-
    effects between-run SD on the log scale, net of within-run noise), i2, q, p_value,
    q_value (BH), cis_overlap (every pair of run CIs overlaps; None when a run has no CI),
    irreproducible, median, median_ci_low/high and ci_kind (pooled: t across runs),
    within_ci_width (mean width of the run CIs; NaN without them), ci_widening (pooled CI
    width / within_ci_width), re_median, re_ci_low/high, and
    environment_diff (with `con`: the run environment entries that differ, else None).
    """
    frame = with_repeat_key(stats.frame.reset_index(drop=True), by)
    pooled = pooled if pooled is not None else pooled_stats(stats, by)
    units = [rows for rows in _units(frame) if len(rows) > 1]
    if not units:
        return pd.DataFrame(columns=["repeat_id", "n_runs", "irreproducible"])
    log_var = np.maximum(frame["log_median_se"].to_numpy(np.float64) ** 2, MIN_LOG_VAR)
    log_median = np.log(frame["median"].to_numpy(np.float64))
    low, high = frame["median_ci_low"].to_numpy(), frame["median_ci_high"].to_numpy()
    alpha = 1 - stats.confidence
    records = []
    for rows in units:
        k = len(rows)
        res = combine_effects(log_median[rows], log_var[rows], method_re=RE_METHOD, use_t=True, alpha=alpha)
        re_low, re_high = res.conf_int(alpha=alpha, use_t=True)[1]
        homogeneity = res.test_homogeneity()
        medians = np.exp(log_median[rows])
        records.append({
            "repeat_id": frame["repeat_id"].iat[rows[0]],
            "phase": frame["phase"].iat[rows[0]],
            "n_runs": k,
            "run_ids": list(frame["run_id"].to_numpy()[rows]),
            "run_medians": [float(m) for m in medians],
            "run_median_min": float(medians.min()),
            "run_median_max": float(medians.max()),
            "spread_ratio": float(medians.max() / medians.min()),
            "between_run_sd": float(np.std(log_median[rows], ddof=1)),
            "within_run_se": float(np.sqrt(log_var[rows].mean())),
            "tau": float(np.sqrt(max(res.tau2, 0.0))),
            "i2": float(res.i2),
            "q": float(homogeneity.statistic),
            "p_value": float(homogeneity.pvalue),
            # Runs without a within-run CI (one round) cannot be said to overlap or not.
            "cis_overlap": bool(low[rows].max() <= high[rows].min()) if np.isfinite(low[rows]).all() else None,
            "within_ci_width": float((high[rows] - low[rows]).mean()),
            "re_median": float(np.exp(res.mean_effect_re)),
            "re_ci_low": float(np.exp(re_low)),
            "re_ci_high": float(np.exp(re_high)),
        })
    table = pd.DataFrame(records)
    table["q_value"] = multipletests(table["p_value"].to_numpy(), alpha=fdr, method="fdr_bh")[1]
    table["irreproducible"] = (table["q_value"] < fdr) & (table["spread_ratio"] >= min_spread)
    keep = ["cell_id", "phase", "regime", "repeat_key", "group_id", *CONFIG_COLUMNS, "params", "median", "median_ci_low",
            "median_ci_high", "ci_kind"]
    pooled_cols = pooled.frame[[c for c in keep if c in pooled.frame]].rename(columns={"cell_id": "repeat_id"})
    table = table.merge(pooled_cols, on=["repeat_id", "phase"], how="left", validate="one_to_one")
    table["ci_widening"] = (table["median_ci_high"] - table["median_ci_low"]) / table["within_ci_width"]
    table["environment_diff"] = None
    if con is not None:
        diffs = load_environments(con, sorted({r for ids in table["run_ids"] for r in ids}))
        table["environment_diff"] = [_diff_of(diffs, ids) for ids in table["run_ids"]]
    return table


def run_medians(stats: CellStats, table: pd.DataFrame | None = None, by: str = POOL_BY) -> pd.DataFrame:
    """The per-run rows (median and within-run CI) of every repeat unit, for the figure.

    Adds repeat_key, repeat_id and, given `repeat_table`'s output, `irreproducible`.
    """
    frame = with_repeat_key(stats.frame, by)
    counts = frame.groupby(list(UNIT_KEYS))["run_id"].transform("nunique")
    out = frame[counts > 1].reset_index(drop=True)
    if table is not None and len(table):
        flags = table.set_index(["repeat_id", "phase"])["irreproducible"]
        index = pd.MultiIndex.from_frame(out[["repeat_id", "phase"]])
        out["irreproducible"] = flags.reindex(index).fillna(False).astype(bool).to_numpy()
    else:
        out["irreproducible"] = False
    return out


def load_environments(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each run's environment, flattened ('gpu.driver'), with git revision and tool version."""
    out = {}
    for run_id, environment, git_revision, tool_version in run_environments(con, run_ids):
        env = json.loads(environment) if isinstance(environment, str) else (environment or {})
        flat = dict(_flatten(env))
        flat.setdefault("git_revision", git_revision)
        flat.setdefault("tool_version", tool_version)
        out[run_id] = flat
    return out


def environment_diff(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The environment entries that differ between these runs: {key: {run_id: value}}."""
    return _diff_of(load_environments(con, run_ids), run_ids)


def _diff_of(envs: dict[str, dict[str, Any]], run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    present = [r for r in run_ids if r in envs]
    keys = sorted({k for r in present for k in envs[r]})
    diff = {}
    for key in keys:
        values = {r: envs[r].get(key) for r in present}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            diff[key] = values
    return diff


def _flatten(value: dict[str, Any], prefix: str = ""):
    for key, item in value.items():
        if isinstance(item, dict):
            yield from _flatten(item, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", item


# What the between-run SD's interval is across: the group's cells, which share their runs, so
# it reads narrower than an interval across runs would (said beside every such CI).
SPREAD_CI_KIND = "across cells (they share runs: narrower than across runs)"


def variance_components(table: pd.DataFrame, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per group: the typical between-run SD (log scale, ~relative) with a CI, and flag counts.

    Pools the one-way random-effects moment estimate over the group's units: tau^2 = mean
    over units of (variance of log run medians - mean within-run variance), truncated at 0
    once (truncating each unit first would bias it upwards). Its CI resamples units
    (scipy.stats.bootstrap). Columns: group_id, n_units, n_runs (most runs of a unit),
    between_run_sd, between_run_sd_ci_low/high, between_run_sd_ci_kind, within_run_se,
    median_spread_ratio, max_spread_ratio, n_irreproducible.
    """
    if table.empty:
        return pd.DataFrame(columns=["group_id", "n_units", "between_run_sd"])
    excess = table["between_run_sd"].to_numpy() ** 2 - table["within_run_se"].to_numpy() ** 2
    data = table.assign(_excess=excess)
    rows = []
    for group_id, sub in data.groupby("group_id", sort=True):
        values = sub["_excess"].to_numpy()
        est = float(np.sqrt(max(values.mean(), 0.0)))
        if len(values) > 1 and np.ptp(values) > 0:
            boot = sps.bootstrap((values,), np.mean, confidence_level=confidence, method="percentile",
                                 n_resamples=1000, rng=np.random.default_rng(seed))
            ci = (float(np.sqrt(max(boot.confidence_interval.low, 0.0))), float(np.sqrt(max(boot.confidence_interval.high, 0.0))))
        else:
            ci = (np.nan, np.nan)
        rows.append({
            "group_id": group_id, "n_units": len(sub), "n_runs": int(sub["n_runs"].max()),
            "between_run_sd": est, "between_run_sd_ci_low": ci[0], "between_run_sd_ci_high": ci[1],
            "between_run_sd_ci_kind": SPREAD_CI_KIND if np.isfinite(ci[0]) else "none",
            "within_run_se": float(np.sqrt((sub["within_run_se"] ** 2).mean())),
            "median_spread_ratio": float(sub["spread_ratio"].median()),
            "max_spread_ratio": float(sub["spread_ratio"].max()),
            "n_irreproducible": int(sub["irreproducible"].sum()),
        })
    return pd.DataFrame(rows)


def _run_subsets(stats: CellStats) -> dict[str, CellStats]:
    frame = stats.frame.reset_index(drop=True)
    return {
        str(run_id): CellStats(frame=frame.iloc[rows].reset_index(drop=True), draws=stats.draws[rows],
                               confidence=stats.confidence, seed=stats.seed)
        for run_id, rows in frame.groupby("run_id", sort=True).indices.items()
    }


def inversions_across_runs(stats: CellStats, pooled: CellStats | None = None, by: str = POOL_BY) -> pd.DataFrame:
    """Inversions judged across runs: significant on pooled CIs, or only within single runs.

    Every pair significant in at least one run or in the pooled data, with the pooled ratio
    and its run-level CI, `runs_significant` (runs where the pair is significant on its own),
    `n_runs` (fewest runs of the two cells), `ci_includes_between_run_variance`, and a
    verdict: "reproducible" (pooled CI above 1), "not reproducible" (significant within some
    run, not across runs).
    """
    pooled = pooled if pooled is not None else pooled_stats(stats, by)
    keyed = with_repeat_key(stats.frame, by)
    to_unit = dict(zip(keyed["cell_id"], keyed["repeat_id"]))
    significant_in: dict[tuple[str, str, str], list[str]] = {}
    for run_id, sub in _run_subsets(stats).items():
        pairs = pair_ratios(sub, inversions_only=True)
        for r in pairs[pairs["significant"]].itertuples():
            significant_in.setdefault((r.phase, to_unit[r.cell_id_a], to_unit[r.cell_id_b]), []).append(run_id)
    pairs = pair_ratios(pooled, inversions_only=False)
    if pairs.empty:
        return pairs.assign(runs_significant=None, n_runs=None, verdict=None, ci_includes_between_run_variance=None)
    keys = list(zip(pairs["phase"], pairs["cell_id_a"], pairs["cell_id_b"]))
    pairs["runs_significant"] = [significant_in.get(k, []) for k in keys]
    runs_of = dict(zip(pooled.frame["cell_id"], pooled.frame["n_runs"]))
    pairs["n_runs"] = [min(runs_of[a], runs_of[b]) for a, b in zip(pairs["cell_id_a"], pairs["cell_id_b"])]
    pairs["ci_includes_between_run_variance"] = pairs["n_runs"] > 1
    within = pairs["runs_significant"].map(len) > 0
    pairs = pairs[pairs["significant"] | within].copy()
    pairs["verdict"] = np.where(pairs["significant"], "reproducible", "not reproducible")
    return pairs.sort_values(["verdict", "ratio_ci_low"], ascending=[False, False], ignore_index=True)


def regressions_across_runs(stats: CellStats, pooled: CellStats | None = None, by: str = POOL_BY) -> list[dict[str, Any]]:
    """Depth-vs-width fits on pooled medians with between-run variance in every CI, per group.

    `fit_group` on the pooled cells adds the covariance across runs of cells measured in
    several runs (t-scaled, clustered by run: `analysis.regression.unit_covariances`).
    Each dict is `GroupFit.to_dict()` plus `n_runs`, `per_run` ([{run_id, status, winner}]:
    the same fit on each run alone) and `reproducibility`: "reproducible" (the
    runs that could be fitted all reach the pooled verdict, which is decided), "not
    reproducible" (some run decides, but across runs the verdict differs or is
    inconclusive), "inconclusive" (undecided within runs and across them), or "single run".
    """
    pooled = pooled if pooled is not None else pooled_stats(stats, by)
    frame = pooled.frame.reset_index(drop=True)
    per_run_frames = with_repeat_key(stats.frame, by)
    out = []
    for group_id, rows in frame.groupby("group_id", sort=True).indices.items():
        cells = frame.iloc[rows]
        n_runs = int(cells["n_runs"].max())
        record = fit_group(cells).to_dict()
        record["n_runs"] = n_runs
        runs = per_run_frames[per_run_frames["group_id"] == group_id]
        per_run = []
        for run_id, sub in runs.groupby("run_id", sort=True):
            run_fit = fit_group(sub, bands=False)
            per_run.append({"run_id": str(run_id), "status": run_fit.status, "winner": run_fit.verdict.get("winner")})
        record["per_run"] = per_run
        record["reproducibility"] = _regression_verdict(record, per_run, n_runs)
        out.append(record)
    return out


def _regression_verdict(record: dict[str, Any], per_run: list[dict[str, Any]], n_runs: int) -> str:
    if n_runs < 2:
        return "single run"
    pooled = record.get("verdict", {}).get("winner", "inconclusive")
    decided = [r["winner"] for r in per_run if r["status"] == "ok" and r["winner"] != "inconclusive"]
    if pooled != "inconclusive" and all(w == pooled for w in decided):
        return "reproducible"
    if decided:
        return "not reproducible"
    return "inconclusive"


def reproducibility_summary(
    stats: CellStats,
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    by: str = POOL_BY,
    pooled: CellStats | None = None,
    regressions: list[dict[str, Any]] | None = None,
    max_rows: int = 50,
) -> dict[str, Any]:
    """JSON-ready: whether repeats exist, variance components per group, irreproducible cells
    (with environment differences), and the inversion/regression verdicts that do not hold
    across runs. Without repeats: {"has_repeats": False, "message": ...}. `pooled` and
    `regressions` (from `regressions_across_runs`) may be passed in to avoid recomputing.
    """
    if not has_repeats(stats, by):
        return {"has_repeats": False, "message": NO_REPEATS_MESSAGE}
    pooled = pooled if pooled is not None else pooled_stats(stats, by)
    table = repeat_table(stats, con, by=by, pooled=pooled)
    components = variance_components(table)
    irreproducible = table[table["irreproducible"]].sort_values("spread_ratio", ascending=False)
    inversions = inversions_across_runs(stats, pooled, by)
    regressions = regressions if regressions is not None else regressions_across_runs(stats, pooled, by)
    n_irr = int(table["irreproducible"].sum())
    worst = float(table["spread_ratio"].max())
    cols = ["repeat_id", "phase", "group_id", "model_name", "n_runs", "run_ids", "run_medians", "spread_ratio",
            "between_run_sd", "within_run_se", "tau", "p_value", "q_value", "cis_overlap", "median",
            "median_ci_low", "median_ci_high", "ci_kind", "ci_widening", "environment_diff"]
    inv_cols = ["group_id", "model_name_a", "model_name_b", "ratio", "ratio_ci_low", "ratio_ci_high", "ci_kind", "paired",
                "runs_significant", "n_runs", "verdict"]
    not_repro_inv = inversions[inversions["verdict"] == "not reproducible"] if len(inversions) else inversions
    return {
        "has_repeats": True,
        "by": by,
        "ci_includes_between_run_variance": True,
        "message": (
            f"{len(table)} cell-phases measured in 2-{int(table['n_runs'].max())} runs; {n_irr} irreproducible "
            f"(run medians differ beyond their within-run CIs, BH q < {FDR:g}, spread >= {MIN_SPREAD:g}x); "
            f"largest max/min of run medians {worst:.2f}x. Inversion and regression verdicts below use CIs "
            "that include between-run variance."
        ),
        "n_repeated": int(len(table)),
        "n_irreproducible": n_irr,
        "median_ci_widening": float(table["ci_widening"].median()),
        "groups": _records(components),
        "irreproducible": _records(irreproducible.head(max_rows)[cols]),
        "inversions": {
            "n_reproducible": int((inversions["verdict"] == "reproducible").sum()) if len(inversions) else 0,
            "n_not_reproducible": int(len(not_repro_inv)),
            "not_reproducible": _records(not_repro_inv.head(max_rows)[inv_cols]) if len(not_repro_inv) else [],
        },
        "regressions": [
            {"group_id": r["group_id"], "n_runs": r["n_runs"], "winner": r["verdict"].get("winner") if r["verdict"] else None,
             "per_run": r["per_run"], "reproducibility": r["reproducibility"]}
            for r in regressions
        ],
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]
