"""Intervals over the hierarchy: 95% CIs cover the truth 95% of the time at every number of runs,
a cell measured in one round has no CI, and the store's pipeline computes the intervals the
coverage simulation checks."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.intervals import (
    CI_ACROSS_ROUNDS, CI_ACROSS_RUNS, CI_NONE, t_interval, unit_t_draws, weakest_kind,
)
from analysis.bootstrap import percentile_ci
from analysis.inversions import pair_ratios
from analysis.reproducibility import pooled_stats
from analysis.stats import compute_cell_stats
from analysis.synthetic import (
    SyntheticPlan, build_store, ci_coverage, experiment_frames, insert, simulate_experiments, unit_log_medians,
)
from store.db import connect_memory

from .conftest import ROUNDS, TEST_RESAMPLES, make_stats

EXPERIMENTS = 1000
ROUNDS_PER_RUN = 3
# 95% nominal; with 1,000 experiments the binomial SD of a coverage is 0.7 points, so an
# exact interval lands in 93-97% with probability ~99.5%.
COVERAGE_BAND = (0.93, 0.97)


@pytest.mark.parametrize("n_runs", [1, 2, 3, 5])
def test_cis_of_a_median_and_a_ratio_cover_the_truth_in_95_percent_of_experiments(n_runs):
    """1 run: the interval is across its rounds and its truth is that run's value; 2+ runs:
    across runs, and the truth is the value a new run is centred on (run variance included)."""
    experiments = simulate_experiments(n_experiments=EXPERIMENTS, n_runs=n_runs, n_rounds=ROUNDS_PER_RUN, seed=n_runs)
    coverage = ci_coverage(experiments, seed=n_runs)
    assert coverage["kind"] == (CI_ACROSS_ROUNDS if n_runs == 1 else CI_ACROSS_RUNS)
    low, high = COVERAGE_BAND
    assert low <= coverage["median"] <= high, coverage
    assert low <= coverage["ratio"] <= high, coverage


def test_a_bootstrap_of_two_runs_would_cover_about_half_the_time():
    """Why the interval is Student t and not a bootstrap of the units."""
    coverage = ci_coverage(simulate_experiments(n_experiments=EXPERIMENTS, n_runs=2, seed=9), compare=True)
    assert coverage["median_boot"] < 0.6 and coverage["median"] > 0.93


def test_t_replicates_give_the_closed_form_t_interval():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        values = rng.normal(size=(4, k))
        low, high = percentile_ci(unit_t_draws(values, 200_000, np.random.default_rng(k)))
        t_low, t_high = t_interval(values)
        half = (t_high - t_low) / 2
        np.testing.assert_allclose(low, t_low, atol=0.05 * half.max())
        np.testing.assert_allclose(high, t_high, atol=0.05 * half.max())


def test_a_cell_measured_in_one_round_has_no_ci_and_its_pairs_are_never_significant():
    # protocol 1: one round, many generations; a 3x inversion that sample noise could never explain
    def law(cells):
        return np.where(cells["n_layer"] == 1, 3.0, 1.0) * (1 + cells["n_layer"].to_numpy())

    stats = make_stats(SyntheticPlan(law=law, shapes=((1, 64), (2, 128), (4, 256)), phases=("decode",), reps=8))
    frame = stats.frame
    assert (frame["ci_kind"] == CI_NONE).all() and (frame["n_rounds"] == 1).all()
    assert frame["median_ci_low"].isna().all() and frame["median_ci_high"].isna().all()
    assert frame["tokens_per_s_ci_low"].isna().all()
    pairs = pair_ratios(stats, inversions_only=False)
    assert (pairs["ci_kind"] == CI_NONE).all() and pairs["ratio_ci_low"].isna().all()
    assert pairs["p_value"].isna().all() and not pairs["significant"].any()
    assert (pairs.loc[pairs["model_name_a"] == "1x64", "ratio"] > 1).all()  # the point estimate is still there


def test_rounds_give_a_ci_across_rounds_paired_by_round():
    stats = make_stats(SyntheticPlan(shapes=((1, 64), (2, 128)), phases=("decode",), reps=6, **ROUNDS))
    frame = stats.frame
    assert (frame["ci_kind"] == CI_ACROSS_ROUNDS).all() and (frame["n_rounds"] == 3).all()
    for row in frame.itertuples():
        low, high = t_interval(np.array([row.unit_log_medians]))
        assert np.log(row.median_ci_low) == pytest.approx(low[0], abs=0.15 * (high[0] - low[0]))
        assert np.log(row.median_ci_high) == pytest.approx(high[0], abs=0.15 * (high[0] - low[0]))
    (pair,) = pair_ratios(stats, inversions_only=False).itertuples()
    assert pair.paired and pair.ci_kind == CI_ACROSS_ROUNDS
    a, b = (np.array(frame.set_index("model_name").loc[m, "unit_log_medians"]) for m in ("1x64", "2x128"))
    low, high = t_interval((a - b)[None])  # the paired t interval of the per-round log ratios
    assert np.log(pair.ratio_ci_low) == pytest.approx(low[0], abs=0.15 * (high[0] - low[0]))
    assert np.log(pair.ratio_ci_high) == pytest.approx(high[0], abs=0.15 * (high[0] - low[0]))


@pytest.mark.parametrize("n_runs", [1, 3])
def test_the_store_pipeline_rests_on_the_units_the_coverage_simulation_checks(n_runs):
    experiments = simulate_experiments(n_experiments=4, n_runs=n_runs, n_rounds=ROUNDS_PER_RUN, seed=3)
    kind, units = unit_log_medians(experiments)
    con = connect_memory()
    insert(con, *experiment_frames(experiments))
    stats = compute_cell_stats(con, n_resamples=TEST_RESAMPLES)
    cells = pooled_stats(stats).frame if n_runs > 1 else stats.frame
    cells = cells.sort_values(["regime", "n_embd"])
    assert (cells["ci_kind"] == kind).all()
    np.testing.assert_allclose(np.stack(cells["unit_log_medians"].to_numpy()), units.reshape(-1, units.shape[-1]))


def test_a_ratio_is_only_as_replicated_as_its_less_replicated_cell():
    assert weakest_kind([CI_ACROSS_RUNS, CI_ACROSS_ROUNDS]) == CI_ACROSS_ROUNDS
    assert weakest_kind([CI_ACROSS_RUNS, CI_NONE]) == CI_NONE
    # 2x128 measured in three runs, 1x64 in one (protocol 2): the pair's CI is across rounds at best
    con = build_store(SyntheticPlan(shapes=((1, 64), (2, 128)), phases=("decode",), reps=6, n_runs=3, **ROUNDS))
    con.execute("DELETE FROM samples WHERE cell_id LIKE 'run-1/%1x64%' OR cell_id LIKE 'run-2/%1x64%'")
    con.execute("DELETE FROM cells WHERE cell_id LIKE 'run-1/%1x64%' OR cell_id LIKE 'run-2/%1x64%'")
    pooled = pooled_stats(compute_cell_stats(con, n_resamples=TEST_RESAMPLES))
    kinds = dict(zip(pooled.frame["model_name"], pooled.frame["ci_kind"]))
    assert kinds == {"1x64": CI_ACROSS_ROUNDS, "2x128": CI_ACROSS_RUNS}
    (pair,) = pair_ratios(pooled, inversions_only=False).itertuples()
    assert pair.ci_kind == CI_ACROSS_ROUNDS and not pair.paired


def test_adding_a_run_of_another_regime_never_moves_a_cells_ci(bundled_con):
    """Each block of units draws from its own stream: a cell's CI, pooled or per run, is a
    function of its own runs and rounds, not of what else the store holds."""
    regimes = sorted(r for (r,) in bundled_con.execute("SELECT DISTINCT regime FROM runs").fetchall())
    assert len(regimes) > 1, "the bundle holds several regimes"
    everything = compute_cell_stats(bundled_con)
    pooled_everything = pooled_stats(everything)
    compared_with_ci = 0
    for regime in regimes:
        alone = compute_cell_stats(bundled_con, {"regime": [regime]})
        for one, every in ((alone, everything), (pooled_stats(alone), pooled_everything)):
            mine = every.frame[every.frame["regime"] == regime].set_index(["cell_id", "phase"])
            own = one.frame.set_index(["cell_id", "phase"]).loc[mine.index]
            compared_with_ci += int(own["median_ci_low"].notna().sum())
            np.testing.assert_array_equal(own["median_ci_low"], mine["median_ci_low"])
            np.testing.assert_array_equal(own["median_ci_high"], mine["median_ci_high"])
    assert compared_with_ci > 0, "some of the compared cells have a CI"
