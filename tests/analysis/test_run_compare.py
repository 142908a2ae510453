"""Comparing two runs cell by cell: agreement inside CIs when nothing differs, none with an offset."""
from __future__ import annotations

import pytest

from analysis.run_compare import compare_runs, summarize_comparison, within_runs_range
from analysis.synthetic import SyntheticPlan, depth_width_law

from .conftest import make_stats

SHAPES = tuple((d, w) for d in (1, 2, 4, 8) for w in (64, 256, 512))


def _stats(offsets):
    plan = SyntheticPlan(law=depth_width_law(), shapes=SHAPES, phases=("prefill", "decode"), reps=10,
                         noise_cv=0.05, seed=11, n_runs=2, run_offsets=offsets)
    return make_stats(plan)


def test_two_runs_of_one_distribution_mostly_agree_within_their_cis():
    table = compare_runs(_stats((1.0, 1.0)), "run-0", "run-1")
    assert len(table) == len(SHAPES) * 2
    summary = summarize_comparison(table).set_index("group")
    assert summary.loc["all", "cis_overlap"] >= 0.9
    assert summary.loc["all", "b_in_a_ci"] >= 0.7
    assert summary.loc["all", "median_ratio"] == pytest.approx(1.0, abs=0.02)
    assert set(summary.index) == {"all", "prefill", "decode"}


def test_a_planted_offset_puts_every_median_outside_the_other_runs_ci():
    table = compare_runs(_stats((1.0, 1.3)), "run-0", "run-1")
    summary = summarize_comparison(table, by=None).set_index("group")
    assert summary.loc["all", "b_in_a_ci"] == 0.0
    assert summary.loc["all", "cis_overlap"] == 0.0
    assert summary.loc["all", "median_ratio"] == pytest.approx(1.3, rel=0.03)


def test_an_unknown_run_is_refused_by_name():
    with pytest.raises(ValueError, match="run 'run-9' has no ok cell"):
        compare_runs(_stats((1.0, 1.0)), "run-0", "run-9")


def _three_run_stats(offsets):
    plan = SyntheticPlan(law=depth_width_law(), shapes=SHAPES, phases=("decode",), reps=10, noise_cv=0.05,
                         seed=12, n_runs=4, run_offsets=offsets)
    return make_stats(plan)


def test_a_run_like_the_others_lands_inside_their_range_about_as_often_as_expected():
    table = within_runs_range(_three_run_stats((1.0, 1.0, 1.0, 1.0)), "run-3", ["run-0", "run-1", "run-2"])
    assert len(table) == len(SHAPES)
    assert table["expected_inside"].iat[0] == pytest.approx(0.5)
    assert 0.15 <= table["inside"].mean() <= 0.85


def test_a_shifted_run_lands_outside_the_range_of_the_others():
    table = within_runs_range(_three_run_stats((1.0, 1.02, 0.98, 1.5)), "run-3", ["run-0", "run-1", "run-2"])
    assert not table["inside"].any()


def test_a_range_needs_two_other_runs():
    with pytest.raises(ValueError, match="at least two"):
        within_runs_range(_three_run_stats((1.0, 1.0, 1.0, 1.0)), "run-3", ["run-0"])
