"""Re-run intervals of ratios (analysis.rerun): a ratio of two medians re-measured in new runs lands
inside its re-run interval at the stated rate, both for two cells of one run (an inversion, the seed
pair) and for one cell in two runs (`runner compare`); "no history" where the store has none."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.inversions import pair_ratios
from analysis.rerun import (NO_HISTORY, RERUN_COLUMNS, add_pair_rerun_intervals, add_rerun_intervals,
                            between_run_history, ratio_rerun_intervals)
from analysis.stats import CellStats, compute_cell_stats
from analysis.synthetic import SyntheticPlan, VarianceComponents, build_store, experiment_frames, insert, simulate_experiments

EXPERIMENTS = 400  # independent regimes: the binomial SD of a 95% coverage is then 1.1 points
CONFIDENCE = 0.95
TOLERANCE = 3 * np.sqrt(CONFIDENCE * (1 - CONFIDENCE) / EXPERIMENTS)
# Run effects of each cell alone (no offset shared by a run's cells): the case the ratio interval
# is exact for. Between-run SD 0.1 per cell; rounds, generations and steps as measured on GPUs.
PER_CELL = VarianceComponents(run=0.0, run_cell=0.10)


def _stats(components: VarianceComponents, n_runs: int, seed: int) -> CellStats:
    from store.db import connect_memory

    experiments = simulate_experiments((4.0, 2.5), components, n_experiments=EXPERIMENTS, n_runs=n_runs, n_rounds=3,
                                       seed=seed)
    con = connect_memory()
    try:
        insert(con, *experiment_frames(experiments))
        return compute_cell_stats(con, n_resamples=50, seed=0)
    finally:
        con.close()


@pytest.fixture(scope="module")
def per_cell_runs() -> CellStats:
    return _stats(PER_CELL, n_runs=4, seed=21)


@pytest.fixture(scope="module")
def shared_runs() -> CellStats:
    return _stats(VarianceComponents(), n_runs=3, seed=22)


def _run_index(frame: pd.DataFrame) -> np.ndarray:
    return frame["run_id"].str.rsplit("-", n=1).str[-1].astype(int).to_numpy()


def _one_run(stats: CellStats, run: int) -> CellStats:
    rows = _run_index(stats.frame) == run
    return CellStats(stats.frame[rows].reset_index(drop=True), stats.draws[rows], stats.confidence, stats.seed)


def _pair_ratio(frame: pd.DataFrame) -> pd.Series:
    """Per regime: the smaller (1 x 64) cell's median over the larger's, the pair of `pair_ratios`."""
    medians = frame.pivot_table(index="regime", columns="n_embd", values="median")
    return medians[64] / medians[128]


def _within_run_coverage(stats: CellStats) -> tuple[float, pd.DataFrame]:
    """History from runs 0 and 1; run 0's pair gets its re-run interval through pair_ratios; is
    run 2's ratio (runs the history never saw) inside it?"""
    history = between_run_history(stats.frame[_run_index(stats.frame) < 2])
    run0 = _one_run(stats, 0)
    cells = add_rerun_intervals(run0.frame, history, confidence=CONFIDENCE)
    pairs = add_pair_rerun_intervals(pair_ratios(run0, inversions_only=False), cells, confidence=CONFIDENCE)
    assert len(pairs) == EXPERIMENTS
    truth = _pair_ratio(stats.frame[_run_index(stats.frame) == 2]).reindex(pairs["regime"]).to_numpy()
    covered = (pairs["rerun_ci_low"].to_numpy() <= truth) & (truth <= pairs["rerun_ci_high"].to_numpy())
    return float(covered.mean()), pairs


def test_pair_ratio_rerun_interval_covers_the_next_runs_ratio_at_the_nominal_rate(per_cell_runs):
    """Run effects of each cell alone (between-run SD 0.1 per cell): the interval from both cells'
    re-run variances holds the ratio a third run measures 95% of the time, within 3 binomial SDs."""
    coverage, pairs = _within_run_coverage(per_cell_runs)
    assert abs(coverage - CONFIDENCE) < TOLERANCE, coverage
    assert (pairs["rerun_basis"] != NO_HISTORY).all()
    # the across-rounds interval of the ratio (this run) holds a re-run far less often: why this one exists
    truth = _pair_ratio(per_cell_runs.frame[_run_index(per_cell_runs.frame) == 2]).reindex(pairs["regime"]).to_numpy()
    this_run = (pairs["ratio_ci_low"].to_numpy() <= truth) & (truth <= pairs["ratio_ci_high"].to_numpy())
    assert this_run.mean() < CONFIDENCE - 5 * TOLERANCE


def test_a_run_effect_the_two_cells_share_cancels_in_their_ratio_so_the_interval_is_conservative(shared_runs):
    """With a run offset shared by both cells (SD 0.1, beside 0.1 per cell), the history's
    between-run variance holds the shared part that the ratio does not carry: coverage is above
    the stated rate, never below it (what docs/statistics.md says of within-run ratios)."""
    coverage, _ = _within_run_coverage(shared_runs)
    assert coverage > CONFIDENCE + TOLERANCE, coverage


def test_ratio_of_one_cell_in_two_runs_covers_a_repeat_of_both_runs_at_the_nominal_rate(per_cell_runs):
    """`runner compare`'s ratio run 1 / run 0 of a cell; a repeat of the comparison is run 3 / run 2.
    Two runs never share a run effect, so the interval is exact here, shared offsets or not."""
    frame = per_cell_runs.frame
    runs = _run_index(frame)
    history = between_run_history(frame[runs < 2])
    sides = [add_rerun_intervals(frame[runs == r], history, confidence=CONFIDENCE).set_index(["regime", "cell_key"])
             for r in range(4)]
    a, b = sides[0], sides[1].reindex(sides[0].index)
    ratio = b["median"].to_numpy() / a["median"].to_numpy()
    judged = ratio_rerun_intervals(np.log(ratio), b, a, confidence=CONFIDENCE)
    repeat = (sides[3]["median"].reindex(a.index) / sides[2]["median"].reindex(a.index)).to_numpy()
    covered = (judged["rerun_ci_low"].to_numpy() <= repeat) & (repeat <= judged["rerun_ci_high"].to_numpy())
    # 2 cells per regime share the regime's history: 800 checks, 400 independent histories
    assert abs(covered.mean() - CONFIDENCE) < TOLERANCE, covered.mean()


def test_a_ratios_re_run_variance_adds_both_cells_run_effects_to_its_own_round_noise(per_cell_runs):
    """Two cells of one run: each side's 2 tau^2, plus twice the variance of the ratio's own
    log mean over the rounds they share (paired, as its this-run CI is); so the re-run interval
    is wider than the ratio's this-run CI."""
    run0 = _one_run(per_cell_runs, 0)
    cells = add_rerun_intervals(run0.frame, between_run_history(per_cell_runs.frame), confidence=CONFIDENCE)
    pairs = add_pair_rerun_intervals(pair_ratios(run0, inversions_only=False), cells, confidence=CONFIDENCE)
    side = cells.set_index("cell_id")
    a, b = side.reindex(pairs["cell_id_a"]), side.reindex(pairs["cell_id_b"])
    rounds = [np.subtract(x, y) for x, y in zip(a["unit_log_medians"], b["unit_log_medians"])]
    paired_se2 = np.array([d.var(ddof=1) / len(d) for d in rounds])
    expected = np.sqrt(2 * a["rerun_tau2"].to_numpy() + 2 * b["rerun_tau2"].to_numpy() + 2 * paired_se2)
    np.testing.assert_allclose(pairs["rerun_sd"], expected)
    # the this-run CI of the ratio in closed form: Student t on the rounds' log ratios
    this_run = sps.t.ppf(0.5 + CONFIDENCE / 2, [len(d) - 1 for d in rounds]) * np.sqrt(paired_se2)
    rerun = np.log(pairs["rerun_ci_high"] / pairs["ratio"]).to_numpy()
    assert (rerun > this_run).all()


def test_a_store_without_repeated_runs_gives_its_ratios_no_history():
    con = build_store(SyntheticPlan(shapes=((1, 64), (2, 128), (4, 256)), rounds=3, round_cv=0.01))
    try:
        stats = compute_cell_stats(con, n_resamples=50)
    finally:
        con.close()
    cells = add_rerun_intervals(stats.frame)
    pairs = add_pair_rerun_intervals(pair_ratios(stats, inversions_only=False), cells)
    assert len(pairs) and set(RERUN_COLUMNS) <= set(pairs.columns)
    assert (pairs["rerun_basis"] == NO_HISTORY).all()
    assert pairs["rerun_ci_low"].isna().all() and pairs["rerun_ci_high"].isna().all()


def test_pooled_rows_are_judged_against_the_mean_of_their_runs(per_cell_runs):
    """A pooled median averages k runs: a next run differs from it by (1 + 1/k)(tau^2 + se^2),
    narrower than a single run's 2 (tau^2 + se^2)."""
    from analysis.reproducibility import pooled_stats

    history = between_run_history(per_cell_runs.frame)
    pooled = add_rerun_intervals(pooled_stats(per_cell_runs).frame, history)
    single = add_rerun_intervals(_one_run(per_cell_runs, 0).frame, history)
    assert (pooled["rerun_k"] == 4).all() and (single["rerun_k"] == 1).all()
    assert pooled["rerun_sd"].median() < single["rerun_sd"].median()
    expected = np.sqrt(1.25 * (pooled["rerun_tau2"] + pooled["rerun_se2"]))
    np.testing.assert_allclose(pooled["rerun_sd"], expected)
