"""Re-run intervals: where the median of the next independent run of a cell is expected to fall.

The across-rounds interval of one run ("this run", `analysis.intervals.CI_ACROSS_ROUNDS`)
covers that run's own value; a re-run lands elsewhere, because runs differ by far more than
rounds (host state, clocks, allocator, code layout). The re-run interval adds that
between-run component, estimated from the store's repeated runs of the same backend on the
same regime class, so a user who runs a plan once learns how far a re-run may move.

Model, on the log scale (log medians are close to normal, `analysis.intervals`): the median
of run r of a cell is m_r = mu + u_r + e_r, u_r ~ N(0, tau^2) the run's effect (shared by
cells or not: a pair of runs differs by both), e_r ~ N(0, se_r^2) the within-run noise of
the median, se_r estimated from the run's rounds (`log_median_se`). The next run's median
m_new differs from this run's m_r by u_new - u_r + e_new - e_r, so

    var(m_new - m_r) = 2 tau^2 + se_r^2 + se_new^2 ~= 2 (tau^2 + se_r^2).

Not tau^2 + se_r^2: that is the variance of m_r around mu, the value runs are centred on
(an interval for mu); the next run carries its own run effect and its own rounds' noise,
so both appear twice. se_new is taken as se_r (the same plan measures the same rounds).

tau^2 per (backend, regime, phase), method of moments: over every repeat unit (one cell-
phase measured in k >= 2 runs, `analysis.reproducibility.with_repeat_key`), the sample
variance of the runs' log medians minus the mean of their se^2 is an unbiased estimate of
tau^2 (the same moment estimate as `reproducibility.variance_components`); units are
weighted by k - 1 and the pooled value is floored at 0 once (flooring each unit first
would bias it upwards). Phase is part of the key because prefill, one decode step and a
whole generation need not move alike between runs; it costs nothing in degrees of freedom,
which come from runs (below), not from cells.

Shrinkage: a regime with few runs says little about its own tau^2, so its estimate is
shrunk towards the backend's estimate pooled over every regime of the store (same phase):

    tau^2 = (df_regime tau^2_regime + SHRINK_DF tau^2_pooled) / (df_regime + SHRINK_DF),

a precision-weighted mean in which the pooled estimate counts as SHRINK_DF runs' worth
(chosen beforehand, not fitted to the coverage benchmark: a variance on 4 df has a relative
SE of sqrt(2/4) = 71%, so below that a regime's own figure is mostly noise).
A regime with no repeated runs uses the pooled value ("backend pooled"); a backend with no
repeated runs anywhere has no re-run interval ("no history", NaN bounds), never a guessed
width.

Degrees of freedom: the cells of one pair of runs share that pair's host-wide shift, so
the units are not independent; the honest count is of runs: df = runs behind the estimate
- 1 (per regime; summed over regimes when pooled), which is conservative when run effects
are mostly per cell. The shrunk tau^2 and the within-run se^2 (k_rounds - 1 df; a cell of
one round has only an i.i.d. bootstrap se, taken as known) are combined by Welch-
Satterthwaite, and the interval is Student t on that df:

    log m_r +- t_{df, (1+c)/2} sqrt(2 tau^2 + 2 se_r^2).

`benchmarks/rerun_coverage.py` checks it leave-one-run-out on the bundled runs.

A row pooled over k runs (`analysis.reproducibility.pooled_stats`: the mean of their log
medians) is judged the same way against the next single run: var = (1 + 1/k)(tau^2 + se^2),
se one run's within-run SE; k = 1 gives the formula above.

Ratios (the seed pair, inversions, `runner compare`'s run b / run a of one cell): re-running
a ratio re-runs both of its medians, so their re-run variances add,

    log r +- t_df sqrt(var_a + var_b),   var_x = (1 + 1/k_x)(tau_x^2 + se_x^2),

with one tau^2 estimate counted once in the df where both sides share a history key. That
is exact when the two sides' run effects are independent (two runs of one cell) and
conservative for two cells of one run: a run effect they share cancels in their ratio, and
the store's history, per cell, does not separate the shared part from the rest
(`tests/analysis/test_rerun_ratios.py` measures both).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.intervals import CI_ACROSS_ROUNDS
from analysis.reproducibility import POOL_BY, with_repeat_key

SHRINK_DF = 4  # the backend's pooled tau^2 counts as 4 runs' df: a regime needs about that many before it leads
NO_HISTORY = "no history"
RERUN_COLUMNS = ("rerun_ci_low", "rerun_ci_high", "rerun_basis")
# the parts of a row's re-run variance (`rerun_components`), kept so that a ratio of two rows can add them
PART_COLUMNS = ("rerun_tau2", "rerun_tau_df", "rerun_se2", "rerun_se_df", "rerun_k", "rerun_key")
HISTORY_KEYS = ("backend", "regime", "phase")


@dataclass(frozen=True)
class RerunHistory:
    """Between-run variance estimates: per (backend, regime, phase) and pooled per (backend, phase).

    `by_regime` columns: backend, regime, phase, tau2 (floored), n_runs, df, n_units;
    `pooled` columns: backend, phase, tau2, n_runs, df, n_regimes, n_units.
    """

    by_regime: pd.DataFrame
    pooled: pd.DataFrame


def between_run_history(frame: pd.DataFrame, by: str = POOL_BY) -> RerunHistory:
    """tau^2 (between-run variance of log medians, net of within-run noise) from the repeat units of `frame`.

    `frame` is a per-run stats frame (`analysis.stats.compute_cell_stats(...).frame`).
    """
    empty_regime = pd.DataFrame(columns=[*HISTORY_KEYS, "tau2", "n_runs", "df", "n_units"])
    empty_pooled = pd.DataFrame(columns=["backend", "phase", "tau2", "n_runs", "df", "n_regimes", "n_units"])
    if frame.empty:
        return RerunHistory(empty_regime, empty_pooled)
    keyed = with_repeat_key(frame, by).assign(
        log_median=np.log(frame["median"].to_numpy(np.float64)),
        se2=frame["log_median_se"].to_numpy(np.float64) ** 2,
    )
    units = keyed.groupby(["regime", "repeat_key", "phase"], sort=False)
    per_unit = units.agg(backend=("backend", "first"), k=("run_id", "nunique"), var=("log_median", "var"),
                         se2=("se2", "mean"), runs=("run_id", lambda s: frozenset(map(str, s)))).reset_index()
    per_unit = per_unit[(per_unit["k"] >= 2) & np.isfinite(per_unit["var"]) & np.isfinite(per_unit["se2"])]
    if per_unit.empty:
        return RerunHistory(empty_regime, empty_pooled)
    per_unit = per_unit.assign(weight=per_unit["k"] - 1, excess=(per_unit["k"] - 1) * (per_unit["var"] - per_unit["se2"]))

    def summarise(group: pd.DataFrame) -> pd.Series:
        runs = frozenset().union(*group["runs"])
        return pd.Series({"tau2": max(group["excess"].sum() / group["weight"].sum(), 0.0), "n_runs": len(runs),
                          "n_units": len(group)})

    by_regime = per_unit.groupby(list(HISTORY_KEYS), sort=True).apply(summarise, include_groups=False).reset_index()
    by_regime["n_runs"] = by_regime["n_runs"].astype(int)
    by_regime["n_units"] = by_regime["n_units"].astype(int)
    by_regime["df"] = by_regime["n_runs"] - 1
    pooled = per_unit.groupby(["backend", "phase"], sort=True).apply(summarise, include_groups=False).reset_index()
    pooled["n_runs"] = pooled["n_runs"].astype(int)
    pooled["n_units"] = pooled["n_units"].astype(int)
    counts = by_regime.groupby(["backend", "phase"]).agg(n_regimes=("regime", "nunique"), df=("df", "sum")).reset_index()
    pooled = pooled.merge(counts, on=["backend", "phase"], how="left")
    return RerunHistory(by_regime, pooled)


def _satterthwaite(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Welch-Satterthwaite df of a sum of variance estimates [(value, df)]; inf df is a known term."""
    total = sum(v for v, _ in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = sum(np.where(np.isfinite(d) & (v > 0), v**2 / np.where(d > 0, d, np.nan), 0.0) for v, d in parts)
        df = np.where(denominator > 0, total**2 / denominator, np.inf)
    return df


def rerun_text(low: float, high: float) -> str:
    """A re-run interval as a table shows it: `[low, high]` (as `intervals.ci_text`), or NO_HISTORY."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NO_HISTORY
    return f"[{low:.2f}, {high:.2f}]"


def rerun_components(frame: pd.DataFrame, history: RerunHistory, *, by: str = POOL_BY) -> pd.DataFrame:
    """The parts of each row's re-run variance, aligned with `frame` (module docstring).

    Columns: tau2 (the shrunk between-run variance), tau_df (its Satterthwaite df), se2 (the
    within-run variance of one run's log median), se_df (rounds - 1, summed over a pooled
    row's runs; inf for a one-round cell's i.i.d. figure), k (runs the row's median averages:
    `n_runs` of a pooled row, else 1), key (the history key, "backend/regime/phase": two rows
    with one key share one tau2 estimate), ok (a history exists) and basis (in words).
    A pooled row (`analysis.reproducibility.pooled_stats`) is the mean of k runs' log medians,
    so its own se is its runs' `run_log_median_se`, not the across-runs `log_median_se`.
    """
    keys = pd.MultiIndex.from_frame(frame[list(HISTORY_KEYS)].astype(str))
    regime = history.by_regime.assign(**{k: history.by_regime[k].astype(str) for k in HISTORY_KEYS}).set_index(list(HISTORY_KEYS))
    pooled = history.pooled.assign(backend=history.pooled["backend"].astype(str),
                                   phase=history.pooled["phase"].astype(str)).set_index(["backend", "phase"])
    own = regime.reindex(keys)
    pool = pooled.reindex(pd.MultiIndex.from_frame(frame[["backend", "phase"]].astype(str)))
    df_r = own["df"].fillna(0).to_numpy(np.float64)
    tau2_r = own["tau2"].fillna(0).to_numpy(np.float64)
    tau2_p = pool["tau2"].to_numpy(np.float64)
    df_p = pool["df"].to_numpy(np.float64)
    has_pool = np.isfinite(tau2_p)
    w_r = df_r / (df_r + SHRINK_DF)
    tau2 = np.where(has_pool, w_r * tau2_r + (1 - w_r) * np.nan_to_num(tau2_p), np.nan)
    # The shrunk tau^2's df: Satterthwaite over its two weighted parts.
    df_tau = _satterthwaite([(w_r * tau2_r, df_r), ((1 - w_r) * np.nan_to_num(tau2_p), np.nan_to_num(df_p))])
    own_se = "run_log_median_se" if "run_log_median_se" in frame else "log_median_se"
    k = frame["n_runs"].to_numpy(np.float64) if "n_runs" in frame else np.ones(len(frame))
    rounds = frame["n_rounds"].to_numpy(np.float64) if "n_rounds" in frame else np.ones(len(frame))
    out = pd.DataFrame({
        "tau2": tau2, "tau_df": df_tau, "se2": frame[own_se].to_numpy(np.float64) ** 2,
        "se_df": np.where(rounds >= 2, k * (rounds - 1), np.inf), "k": k,
        "key": ["/".join(key) for key in keys],
    }, index=frame.index)
    out["ok"] = np.isfinite(out["tau2"]) & np.isfinite(out["se2"]) & np.isfinite(np.log(frame["median"].to_numpy(np.float64)))
    out["basis"] = [_basis(b, r, o, p, ok_row) for b, r, o, p, ok_row in zip(
        frame["backend"].astype(str), frame["regime"].astype(str), own.itertuples(index=False), pool.itertuples(index=False),
        out["ok"])]
    return out


def _half_width(parts: list[tuple[np.ndarray, np.ndarray]], confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(half width, sd, df) of a log interval whose variance is the sum of `parts` [(value, df)]."""
    variance = sum(v for v, _ in parts)
    df = np.maximum(_satterthwaite(parts), 1.0)  # Satterthwaite can go below 1 with one run pair: t_1 is the widest honest quantile
    sd = np.sqrt(variance)
    return sps.t.ppf(0.5 + confidence / 2, df) * sd, sd, df


def add_rerun_intervals(frame: pd.DataFrame, history: RerunHistory | None = None, *, confidence: float = 0.95,
                        by: str = POOL_BY) -> pd.DataFrame:
    """A copy of a stats frame with the re-run interval of each row (module docstring).

    Adds rerun_ci_low, rerun_ci_high (NaN with "no history"), rerun_basis (what the
    between-run variance rests on, in words), rerun_sd (log-scale SD of m_new - m), rerun_df,
    rerun_tau (the shrunk between-run SD used) and the variance's parts (`rerun_components`)
    as rerun_tau2, rerun_tau_df, rerun_se2, rerun_se_df, rerun_k, rerun_key, which a ratio
    of two rows needs (`add_pair_rerun_intervals`). `frame` is per run
    (`compute_cell_stats(...).frame`) or pooled over runs (`pooled_stats(...).frame`: the
    next run is then judged against the mean of k runs, variance (1 + 1/k)(tau^2 + se^2)).
    `history` defaults to the history of `frame` itself (a store's single runs judged by its
    own repeated runs); a pooled frame needs the per-run frame's history.
    """
    out = frame.copy()
    if out.empty:
        for column in (*RERUN_COLUMNS, "rerun_sd", "rerun_df", "rerun_tau", *PART_COLUMNS):
            out[column] = pd.Series(dtype="object" if column in ("rerun_basis", "rerun_key") else "float64")
        return out
    history = history if history is not None else between_run_history(frame, by)
    parts = rerun_components(out, history, by=by)
    scale = 1 + 1 / parts["k"].to_numpy()
    tau2, se2 = np.nan_to_num(parts["tau2"].to_numpy()), parts["se2"].to_numpy()
    half, sd, df = _half_width([(scale * tau2, parts["tau_df"].to_numpy()), (scale * se2, parts["se_df"].to_numpy())],
                               confidence)
    ok = parts["ok"].to_numpy() & np.isfinite(half)
    centre = np.log(out["median"].to_numpy(np.float64))
    out["rerun_ci_low"] = np.where(ok, np.exp(centre - half), np.nan)
    out["rerun_ci_high"] = np.where(ok, np.exp(centre + half), np.nan)
    out["rerun_sd"] = np.where(ok, sd, np.nan)
    out["rerun_df"] = np.where(ok, df, np.nan)
    out["rerun_tau"] = np.sqrt(parts["tau2"].to_numpy())
    out["rerun_basis"] = np.where(ok, parts["basis"], NO_HISTORY)
    for column in PART_COLUMNS:
        out[column] = parts[column.removeprefix("rerun_")].to_numpy()
    return out


def ratio_rerun_intervals(log_ratio: np.ndarray, a: pd.DataFrame, b: pd.DataFrame, *, confidence: float = 0.95,
                          paired_se2: np.ndarray | None = None, paired_df: np.ndarray | None = None) -> pd.DataFrame:
    """The re-run interval of ratios a / b (or b / a: the variance is the same) of two rows each.

    `a` and `b` hold the variance parts of each side (the PART_COLUMNS of
    `add_rerun_intervals`, row i of `a` with row i of `b`). A re-run of the ratio re-runs both
    of its medians, so the variances add: var(log r' - log r) = var_a + var_b, each side's
    (1 + 1/k)(tau^2 + se^2). That treats the two sides' run effects as independent. They are
    for two runs of one cell (`runner compare`); for two cells of the same run (an inversion,
    the seed pair) a run effect they share cancels in the ratio, and the interval is then
    wider than it need be (conservative): the store's history estimates each cell's
    between-run variance, not the part two cells share. Where both sides rest on the same
    history key, their tau^2 is one estimate, counted once in the degrees of freedom.
    `paired_se2` / `paired_df` (where finite): the within-run variance of the log ratio
    itself and its df, for two cells measured in the same rounds of one run: it replaces the
    two sides' se^2, which would ignore how their rounds move together (each run then adds
    2 x paired_se2: this run's and the next run's noise).
    Returns rerun_ci_low, rerun_ci_high, rerun_sd, rerun_df, rerun_basis ("no history" if
    either side has none), aligned with `log_ratio`.
    """
    log_ratio = np.asarray(log_ratio, dtype=np.float64)
    get = lambda side, c: side[c].to_numpy()  # noqa: E731 - the two sides' columns, in order
    scale_a, scale_b = 1 + 1 / get(a, "rerun_k").astype(float), 1 + 1 / get(b, "rerun_k").astype(float)
    tau_a, tau_b = scale_a * np.nan_to_num(get(a, "rerun_tau2").astype(float)), scale_b * np.nan_to_num(get(b, "rerun_tau2").astype(float))
    shared = get(a, "rerun_key") == get(b, "rerun_key")
    paired = np.isfinite(paired_se2) if paired_se2 is not None else np.zeros(len(log_ratio), bool)
    parts = [
        (np.where(shared, tau_a + tau_b, tau_a), get(a, "rerun_tau_df").astype(float)),
        (np.where(shared, 0.0, tau_b), get(b, "rerun_tau_df").astype(float)),
        (np.where(paired, 0.0, scale_a * get(a, "rerun_se2").astype(float)), get(a, "rerun_se_df").astype(float)),
        (np.where(paired, 0.0, scale_b * get(b, "rerun_se2").astype(float)), get(b, "rerun_se_df").astype(float)),
    ]
    if paired.any():
        parts.append((np.where(paired, 2 * np.nan_to_num(paired_se2), 0.0), np.where(paired, paired_df, np.inf)))
    half, sd, df = _half_width(parts, confidence)
    basis_a, basis_b = get(a, "rerun_basis").astype(str), get(b, "rerun_basis").astype(str)
    ok = (basis_a != NO_HISTORY) & (basis_b != NO_HISTORY) & np.isfinite(half) & np.isfinite(log_ratio)
    return pd.DataFrame({
        "rerun_ci_low": np.where(ok, np.exp(log_ratio - half), np.nan),
        "rerun_ci_high": np.where(ok, np.exp(log_ratio + half), np.nan),
        "rerun_sd": np.where(ok, sd, np.nan), "rerun_df": np.where(ok, df, np.nan),
        "rerun_basis": np.where(~ok, NO_HISTORY, np.where(basis_a == basis_b, basis_a,
                                                           np.char.add(np.char.add(basis_a, "; "), basis_b))),
    })


def add_pair_rerun_intervals(pairs: pd.DataFrame, cells: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """A copy of `pairs` (`analysis.inversions.pair_ratios`) with each ratio's re-run interval.

    `cells` is the stats frame the pairs came from with `add_rerun_intervals` applied; a
    pair's sides are found by (cell_id, phase). Two cells measured in the same rounds of one
    run bring the within-run variance of their ratio itself (paired by round, as their CI
    is). Adds rerun_ci_low, rerun_ci_high, rerun_basis, rerun_sd and rerun_df
    (`ratio_rerun_intervals`).
    """
    out = pairs.copy()
    if out.empty:
        for column in (*RERUN_COLUMNS, "rerun_sd", "rerun_df"):
            out[column] = pd.Series(dtype="object" if column == "rerun_basis" else "float64")
        return out
    units = [c for c in ("ci_kind", "unit_ids", "unit_log_medians") if c in cells]
    indexed = cells.set_index(["cell_id", "phase"])[[*PART_COLUMNS, "rerun_basis", *units]]
    a = indexed.reindex(pd.MultiIndex.from_arrays([out["cell_id_a"], out["phase"]]))
    b = indexed.reindex(pd.MultiIndex.from_arrays([out["cell_id_b"], out["phase"]]))
    for side in (a, b):
        side["rerun_basis"] = side["rerun_basis"].fillna(NO_HISTORY)
    paired_se2, paired_df = _paired_round_se2(a, b) if len(units) == 3 else (None, None)
    ratio = ratio_rerun_intervals(np.log(out["ratio"].to_numpy(np.float64)), a, b, confidence=confidence,
                                  paired_se2=paired_se2, paired_df=paired_df)
    for column in ratio:
        out[column] = ratio[column].to_numpy()
    return out


def _paired_round_se2(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per pair of rows measured in the same rounds of one run (both across rounds, same unit
    ids): the squared SE of the mean of their rounds' log ratios and its df (rounds - 1); NaN
    for every other pair."""
    se2, df = np.full(len(a), np.nan), np.full(len(a), np.nan)
    rows = zip(a["ci_kind"], b["ci_kind"], a["unit_ids"], b["unit_ids"], a["unit_log_medians"], b["unit_log_medians"])
    for i, (kind_a, kind_b, units_a, units_b, logs_a, logs_b) in enumerate(rows):
        if kind_a != CI_ACROSS_ROUNDS or kind_b != CI_ACROSS_ROUNDS or list(units_a) != list(units_b):
            continue
        diff = np.asarray(logs_a, dtype=np.float64) - np.asarray(logs_b, dtype=np.float64)
        se2[i], df[i] = diff.var(ddof=1) / len(diff), len(diff) - 1
    return se2, df


def _basis(backend: str, regime: str, own, pool, ok: bool) -> str:
    if not ok:
        return NO_HISTORY
    pooled_text = f"backend pooled ({int(pool.n_regimes)} regime{'s' if pool.n_regimes != 1 else ''}, {int(pool.n_runs)} runs)"
    if not np.isfinite(own.df):
        return pooled_text
    text = f"across {int(own.n_runs)} runs of {backend} on {regime}"
    if pool.n_regimes > 1:
        text += f", shrunk towards {pooled_text}"
    return text


def leave_one_run_out(frame: pd.DataFrame, *, confidence: float = 0.95, by: str = POOL_BY) -> pd.DataFrame:
    """Each repeated run held out in turn: is its median inside the re-run interval of another run?

    For every run h that shares a repeat unit (cell-phase) with another run, the history is
    estimated from `frame` WITHOUT h, and every other run o of each shared unit gives o's
    re-run interval; the check is whether h's median falls inside. One row per (h, o,
    cell-phase): backend, regime, phase, repeat_id, held_out, other_run, held_out_median,
    rerun_ci_low/high, rerun_basis, covered (NaN with no history), width_ratio
    (rerun high / low), this_run_covered (o's across-rounds interval covers h's median: what
    the within-run interval says about a re-run) and this_run_width_ratio.
    """
    keyed = with_repeat_key(frame.reset_index(drop=True), by)
    unit = ["regime", "repeat_key", "phase"]
    keyed = keyed[keyed.groupby(unit)["run_id"].transform("nunique") > 1]
    rows = []
    for held_out in sorted(keyed["run_id"].astype(str).unique()):
        is_held = keyed["run_id"].astype(str) == held_out
        rest = frame[frame["run_id"].astype(str) != held_out]
        history = between_run_history(rest, by)
        held = keyed[is_held].set_index(unit)["median"]
        partners = keyed[~is_held]
        partners = partners[pd.MultiIndex.from_frame(partners[unit]).isin(held.index)]
        if partners.empty:
            continue
        judged = add_rerun_intervals(partners.drop(columns=["repeat_key", "repeat_id"]), history,
                                     confidence=confidence, by=by)
        truth = held.reindex(pd.MultiIndex.from_frame(partners[unit])).to_numpy(np.float64)
        low, high = judged["rerun_ci_low"].to_numpy(), judged["rerun_ci_high"].to_numpy()
        this_low, this_high = partners["median_ci_low"].to_numpy(np.float64), partners["median_ci_high"].to_numpy(np.float64)
        rows.append(pd.DataFrame({
            "backend": partners["backend"].to_numpy(), "regime": partners["regime"].to_numpy(),
            "phase": partners["phase"].to_numpy(), "repeat_id": partners["repeat_id"].to_numpy(),
            "held_out": held_out, "other_run": partners["run_id"].astype(str).to_numpy(), "held_out_median": truth,
            "rerun_ci_low": low, "rerun_ci_high": high, "rerun_basis": judged["rerun_basis"].to_numpy(),
            "covered": np.where(np.isfinite(low), (low <= truth) & (truth <= high), np.nan),
            "width_ratio": high / low,
            "this_run_covered": np.where(np.isfinite(this_low), (this_low <= truth) & (truth <= this_high), np.nan),
            "this_run_width_ratio": this_high / this_low,
        }))
    if not rows:
        return pd.DataFrame(columns=["backend", "regime", "phase", "held_out", "other_run", "covered", "width_ratio"])
    return pd.concat(rows, ignore_index=True)
