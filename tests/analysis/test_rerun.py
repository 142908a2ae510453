"""Re-run intervals (analysis.rerun): where the next independent run's median is expected to fall."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.rerun import NO_HISTORY, RERUN_COLUMNS, add_rerun_intervals, between_run_history, leave_one_run_out
from analysis.stats import compute_cell_stats
from analysis.synthetic import SyntheticPlan, VarianceComponents, build_store, experiment_frames, insert, simulate_experiments

EXPERIMENTS = 400  # independent regimes: the binomial SD of a 95% coverage is then 1.1 points
CONFIDENCE = 0.95


@pytest.fixture(scope="module")
def simulated_runs():
    """Per-run stats of 400 independent regimes, each measured in 3 runs of 3 rounds, with
    known run (10%), run x cell (10%), round (3%), generation (3%) and step (5%) components."""
    from store.db import connect_memory

    experiments = simulate_experiments((4.0, 2.5), VarianceComponents(),
                                       n_experiments=EXPERIMENTS, n_runs=3, n_rounds=3, seed=11)
    con = connect_memory()
    try:
        insert(con, *experiment_frames(experiments))
        return compute_cell_stats(con, n_resamples=50, seed=0).frame
    finally:
        con.close()


def test_rerun_interval_covers_the_next_runs_median_at_the_nominal_rate_on_simulated_runs(simulated_runs):
    """History from runs 0 and 1 of every regime; run 0's re-run interval must hold run 2's median
    (a run the history never saw) about 95% of the time, within 3 binomial SDs over the regimes."""
    frame = simulated_runs
    run_index = frame["run_id"].str.rsplit("-", n=1).str[-1].astype(int)
    history = between_run_history(frame[run_index < 2])
    judged = add_rerun_intervals(frame[run_index == 0], history, confidence=CONFIDENCE)
    held_out = frame[run_index == 2].set_index(["regime", "cell_key", "phase"])["median"]
    truth = held_out.reindex(judged.set_index(["regime", "cell_key", "phase"]).index).to_numpy()
    covered = (judged["rerun_ci_low"].to_numpy() <= truth) & (truth <= judged["rerun_ci_high"].to_numpy())
    tolerance = 3 * np.sqrt(CONFIDENCE * (1 - CONFIDENCE) / EXPERIMENTS)
    assert abs(covered.mean() - CONFIDENCE) < tolerance, covered.mean()
    # the within-run interval, read as if it spoke of a re-run, covers far less: why the re-run interval exists
    this_run = (judged["median_ci_low"].to_numpy() <= truth) & (truth <= judged["median_ci_high"].to_numpy())
    assert this_run.mean() < CONFIDENCE - 5 * tolerance


def test_between_run_sd_is_recovered_from_the_repeated_runs(simulated_runs):
    """tau^2 net of within-run noise: run (0.10) and run x cell (0.10) components give tau ~ 0.141."""
    history = between_run_history(simulated_runs)
    pooled = history.pooled.set_index("phase").loc["decode"]
    components = VarianceComponents()
    assert np.sqrt(pooled["tau2"]) == pytest.approx(np.hypot(components.run, components.run_cell), rel=0.1)
    assert pooled["n_regimes"] == EXPERIMENTS


def test_a_store_without_repeated_runs_has_no_history_and_no_rerun_interval():
    con = build_store(SyntheticPlan(shapes=((1, 64), (2, 128)), rounds=3, round_cv=0.01))
    try:
        frame = add_rerun_intervals(compute_cell_stats(con, n_resamples=50).frame)
    finally:
        con.close()
    assert set(RERUN_COLUMNS) <= set(frame.columns)
    assert (frame["rerun_basis"] == NO_HISTORY).all()
    assert frame["rerun_ci_low"].isna().all() and frame["rerun_ci_high"].isna().all()


def test_a_regime_without_repeats_borrows_the_backends_pooled_estimate_and_says_so():
    shapes = ((1, 64), (2, 128), (4, 256))
    repeated = build_store(SyntheticPlan(regimes=("gpu-a", "gpu-b"), shapes=shapes, n_runs=3, run_cell_cv=0.05,
                                         rounds=3, round_cv=0.01))
    single = build_store(SyntheticPlan(regimes=("gpu-c",), shapes=shapes, rounds=3, round_cv=0.01, seed=5))
    try:
        history = between_run_history(compute_cell_stats(repeated, n_resamples=50).frame)
        judged = add_rerun_intervals(compute_cell_stats(single, n_resamples=50).frame, history)
        own = add_rerun_intervals(compute_cell_stats(repeated, n_resamples=50).frame)
    finally:
        repeated.close()
        single.close()
    assert (judged["rerun_basis"] == "backend pooled (2 regimes, 6 runs)").all()
    assert (judged["rerun_ci_low"] < judged["median"]).all() and (judged["median"] < judged["rerun_ci_high"]).all()
    assert own["rerun_basis"].str.startswith("across 3 runs of hf-eager on gpu-").all()
    assert own["rerun_basis"].str.contains("shrunk towards backend pooled").all()


def test_leave_one_run_out_never_judges_a_run_by_itself_and_holds_out_every_repeated_run():
    con = build_store(SyntheticPlan(regimes=("gpu-a", "gpu-b"), shapes=((1, 64), (2, 128)), n_runs=3,
                                    run_cell_cv=0.05, rounds=3, round_cv=0.01))
    try:
        frame = compute_cell_stats(con, n_resamples=50).frame
    finally:
        con.close()
    checks = leave_one_run_out(frame)
    assert set(checks["held_out"]) == set(frame["run_id"])
    assert (checks["held_out"] != checks["other_run"]).all()
    assert checks["covered"].notna().all()  # the other regime's runs (and its own remaining pair) are history
    # 2 regimes x 3 held-out runs x 2 other runs x 2 shapes x 3 phases
    assert len(checks) == frame["regime"].nunique() * 3 * 2 * 2 * 3


def test_analyze_json_carries_the_rerun_fields_on_every_cell_of_the_bundle(bundled_analysis):
    cells = bundled_analysis["cell_stats"]["cells"]
    assert cells and all(set(RERUN_COLUMNS) <= set(c) for c in cells)
    with_history = [c for c in cells if c["rerun_basis"] != NO_HISTORY]
    assert with_history, "the bundle holds repeated runs, so some cells must have a re-run interval"
    assert all(c["rerun_ci_low"] < c["median"] < c["rerun_ci_high"] for c in with_history)
    assert all(c["rerun_ci_low"] is None and c["rerun_ci_high"] is None for c in cells if c["rerun_basis"] == NO_HISTORY)


def test_analyze_json_gives_every_significant_inversion_its_rerun_interval(bundled_analysis):
    pairs = bundled_analysis["inversions"]["significant"]
    assert pairs and all(set(RERUN_COLUMNS) <= set(p) for p in pairs)
    judged = [p for p in pairs if p["rerun_basis"] != NO_HISTORY]
    assert judged, "the bundle's cuda-graph runs are repeated: their ratios have a history"
    assert all(p["rerun_ci_low"] < p["ratio"] < p["rerun_ci_high"] for p in judged)


@pytest.fixture(scope="module")
def bundled_analysis(bundled_con):
    """`analyze` on the bundled snapshot's cuda-graph decode cells (measured in several runs on each GPU)."""
    from analysis.report import analyze

    return analyze(bundled_con, n_resamples=50, backend="cuda-graph", phase="decode")


def test_on_the_bundled_runs_every_backend_with_history_covers_a_held_out_run_at_least_90_percent(bundled_con):
    """Leave-one-run-out on the bundled protocol-2 runs (benchmarks/rerun_coverage.py): for every
    backend whose held-out runs have history left, at least 90% of their cell-phase medians fall
    inside another run's re-run interval, and the interval is narrower than 2x where the
    backend's runs agree to a few percent (its across-rounds interval is narrower than 1.05x)."""
    frame = compute_cell_stats(bundled_con, n_resamples=50).frame
    frame = frame[frame["protocol_version"] == 2]
    checks = leave_one_run_out(frame)
    assert len(checks), "the bundle holds repeated protocol-2 runs"
    judged = checks[checks["covered"].notna()]
    coverage = judged.groupby("backend")["covered"].mean()
    assert (coverage >= 0.90).all(), coverage.to_dict()
    steady = judged[judged["this_run_width_ratio"] < 1.05]
    assert len(steady) and steady["width_ratio"].median() < 2.0
