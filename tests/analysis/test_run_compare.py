"""Comparing two runs cell by cell: agreement inside CIs when nothing differs, none with an offset;
round-level CIs under protocol 2, "no CI" without rounds; the run table."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.run_compare import (CI_ACROSS_ROUNDS, CI_NONE, compare_runs, compare_runs_by_round, comparison_summary,
                                  ratio_figure, regressions, run_table, summarize_comparison, welch_log_ratio, within_runs_range)
from analysis.synthetic import SyntheticPlan, depth_width_law

from .conftest import make_stats

SHAPES = tuple((d, w) for d in (1, 2, 4, 8) for w in (64, 256, 512))


def _stats(offsets):
    """Two protocol-2 runs (3 rounds each): the cell CIs of analysis.stats rest on rounds."""
    plan = SyntheticPlan(law=depth_width_law(), shapes=SHAPES, phases=("prefill", "decode"), reps=12,
                         noise_cv=0.05, seed=11, n_runs=2, run_offsets=offsets, rounds=3, round_cv=0.02)
    return make_stats(plan)


def test_two_runs_of_one_distribution_mostly_agree_within_their_cis():
    table = compare_runs(_stats((1.0, 1.0)), "run-0", "run-1")
    assert len(table) == len(SHAPES) * 2
    summary = summarize_comparison(table).set_index("group")
    assert summary.loc["all", "cis_overlap"] >= 0.9
    assert summary.loc["all", "b_in_a_ci"] >= 0.7
    assert summary.loc["all", "median_ratio"] == pytest.approx(1.0, abs=0.02)
    assert set(summary.index) == {"all", "prefill", "decode"}


def test_a_planted_offset_puts_nearly_every_median_outside_the_other_runs_ci():
    table = compare_runs(_stats((1.0, 1.3)), "run-0", "run-1")
    summary = summarize_comparison(table, by=None).set_index("group")
    # Student t on 3 rounds (2 degrees of freedom) is wide: a rare cell's CI still reaches 1.3x away
    assert summary.loc["all", "b_in_a_ci"] <= 0.1
    # two such intervals overlap more often than one holds the other's median (2 or 3 of 16 cells)
    assert summary.loc["all", "cis_overlap"] <= 0.2
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


# --- comparison by rounds (protocol 2) and the run table ------------------------------------

ROUNDS = 3


def _store_with_rounds(offsets, round_cv: float = 0.02, rounds_in=("run-0", "run-1"), seed: int = 21):
    """A real in-memory store of two runs whose samples carry their round (rep % ROUNDS), each
    (cell, round) shifted by its own lognormal offset: the variance rounds exist to capture.
    Runs not in `rounds_in` keep round NULL, as protocol 1 stores them."""
    from analysis.synthetic import build_store

    plan = SyntheticPlan(law=depth_width_law(), shapes=SHAPES, phases=("prefill", "decode"), reps=6,
                         noise_cv=0.05, seed=seed, n_runs=2, run_offsets=offsets)
    con = build_store(plan)
    samples = con.execute("SELECT s.*, c.run_id FROM samples s JOIN cells c USING (cell_id)").df()
    rng = np.random.default_rng(seed)
    samples["round"] = (samples["rep"] % ROUNDS).where(samples["run_id"].isin(rounds_in))
    keys = samples["cell_id"] + "/" + samples["rep"].mod(ROUNDS).astype(str)
    offsets_by_key = {k: float(np.exp(round_cv * rng.standard_normal())) for k in sorted(keys.unique())}
    samples["latency_ms"] *= keys.map(offsets_by_key)
    samples = samples.drop(columns="run_id").astype({"round": "Int32"})
    con.execute("DELETE FROM samples")
    con.register("with_rounds", samples)
    con.execute("INSERT INTO samples BY NAME SELECT * FROM with_rounds")
    con.unregister("with_rounds")
    return con


def test_the_ratio_ci_is_welchs_t_interval_on_the_rounds_log_medians():
    """Against scipy's Welch test: the interval of the difference of means, exponentiated, and its p-value."""
    from scipy import stats as sps

    rng = np.random.default_rng(3)
    log_a, log_b = rng.normal(0.0, 0.05, 3), rng.normal(0.2, 0.1, 4)
    test = sps.ttest_ind(log_b, log_a, equal_var=False)
    low, high = test.confidence_interval(0.95)
    assert welch_log_ratio(log_a, log_b) == pytest.approx((np.exp(low), np.exp(high), test.pvalue))


def test_two_runs_of_one_distribution_do_not_move_beyond_their_round_noise():
    con = _store_with_rounds((1.0, 1.0))
    table = compare_runs_by_round(con, "run-0", "run-1")
    assert len(table) == len(SHAPES) * 2
    assert (table["ci_kind"] == CI_ACROSS_ROUNDS).all()
    assert (table["rounds_a"] == ROUNDS).all() and (table["rounds_b"] == ROUNDS).all()
    assert table["moved"].sum() <= 1  # BH at 5% over 24 null cells: nearly never one
    inside = (table["ratio_ci_low"] <= 1.0) & (table["ratio_ci_high"] >= 1.0)
    assert inside.mean() >= 0.75


def test_a_planted_slowdown_moves_every_cell_and_reads_as_slower():
    con = _store_with_rounds((1.0, 1.3))
    table = compare_runs_by_round(con, "run-0", "run-1")
    assert table["moved"].all()
    assert (table["direction"] == "slower").all()
    assert table["ratio"].median() == pytest.approx(1.3, rel=0.03)
    assert (table["ratio_ci_low"] > 1.0).all()
    summary = comparison_summary(table)
    assert summary == {**summary, "n": len(table), "with_ci": len(table), "moved": len(table), "slower": len(table),
                       "faster": 0, "no_ci": 0}


def test_with_the_stores_statistics_each_ratio_gets_a_rerun_interval_wider_than_its_rounds_ci():
    """The two runs are the store's history: run-to-run variance (here the planted 1.3x shift)
    widens the re-run interval of every cell's ratio beyond its CI across the two runs' rounds."""
    from analysis.rerun import NO_HISTORY
    from analysis.stats import compute_cell_stats

    con = _store_with_rounds((1.0, 1.3))
    cells = compute_cell_stats(con, n_resamples=20).frame
    table = compare_runs_by_round(con, "run-0", "run-1", cells=cells)
    assert (table["rerun_basis"] != NO_HISTORY).all() and table["rerun_basis"].str.startswith("across 2 runs").all()
    assert ((table["rerun_ci_low"] < table["ratio_ci_low"]) & (table["ratio_ci_high"] < table["rerun_ci_high"])).all()
    assert ((table["rerun_ci_low"] < table["ratio"]) & (table["ratio"] < table["rerun_ci_high"])).all()
    plain = compare_runs_by_round(con, "run-0", "run-1")
    assert "rerun_ci_low" not in plain  # without the store's statistics, no history is guessed


def test_a_store_whose_cells_were_never_repeated_gives_no_history():
    from analysis.rerun import NO_HISTORY
    from analysis.stats import compute_cell_stats

    con = _store_with_rounds((1.0, 1.3))
    cells = compute_cell_stats(con, n_resamples=20).frame
    only_a = cells[cells["run_id"] == "run-0"]  # a history that never saw a cell twice
    table = compare_runs_by_round(con, "run-0", "run-1", cells=only_a)
    assert (table["rerun_basis"] == NO_HISTORY).all() and table["rerun_ci_low"].isna().all()


def test_a_run_without_rounds_gives_no_ci_and_no_verdict_but_still_its_ratio():
    con = _store_with_rounds((1.0, 1.3), rounds_in=("run-0",))
    table = compare_runs_by_round(con, "run-0", "run-1")
    assert (table["ci_kind"] == CI_NONE).all()
    assert table["ratio_ci_low"].isna().all() and table["moved"].isna().all()
    assert table["ratio"].median() == pytest.approx(1.3, rel=0.03)
    assert comparison_summary(table)["moved"] == 0


def test_comparison_follows_the_filters_and_refuses_what_it_cannot_compare():
    con = _store_with_rounds((1.0, 1.0))
    decode = compare_runs_by_round(con, "run-0", "run-1", {"phase": ["decode"]})
    assert set(decode["phase"]) == {"decode"} and len(decode) == len(SHAPES)
    with pytest.raises(ValueError, match="run 'run-9' has no ok cell"):
        compare_runs_by_round(con, "run-0", "run-9")


def test_a_run_compared_with_itself_has_every_ratio_1_and_nothing_moved():
    con = _store_with_rounds((1.0, 1.3))
    table = compare_runs_by_round(con, "run-0", "run-0")
    assert len(table) and (table["ratio"] == 1.0).all()
    assert not table["moved"].fillna(False).any() and not regressions(table, 0.0).any()


def test_a_regression_is_a_significant_slowdown_beyond_the_threshold():
    table = compare_runs_by_round(_store_with_rounds((1.0, 1.3)), "run-0", "run-1")
    assert regressions(table, 0.05).all()  # every cell 30% slower, beyond the rounds' noise
    assert not regressions(table, 0.5).any()  # but not by more than 50%
    with pytest.raises(ValueError, match="threshold"):
        regressions(table, -0.1)


def test_ratio_figure_plots_every_compared_cell_on_a_log_axis_with_both_cell_ids():
    con = _store_with_rounds((1.0, 1.3))
    table = compare_runs_by_round(con, "run-0", "run-1")
    fig = ratio_figure(table, "run-0", "run-1")
    assert fig.layout.yaxis.type == "log"
    assert 1.0 in fig.layout.yaxis.tickvals and all(t.endswith("x") for t in fig.layout.yaxis.ticktext), \
        "every tick of the log axis is labelled as a ratio"
    points = [(cd[0], cd[1]) for trace in fig.data for cd in trace.customdata]
    assert sorted(points) == sorted(zip(table["cell_id_a"], table["cell_id_b"]))
    assert {trace.name for trace in fig.data} == {"moved beyond noise"}
    ys = sorted(y for trace in fig.data for y in trace.y)
    assert ys == pytest.approx(sorted(table["ratio"]))


def test_ratio_figure_names_each_cell_on_the_x_axis_and_keeps_log_ticks_apart_under_wide_cis():
    con = _store_with_rounds((1.0, 1.3))
    table = compare_runs_by_round(con, "run-0", "run-1")
    # one cell with a two-round CI from 1e-4x to 1e4x: it must neither flatten the others nor crowd the ticks
    table.loc[table.index[0], ["ratio_ci_low", "ratio_ci_high"]] = [1e-4, 1e4]
    fig = ratio_figure(table, "run-0", "run-1")
    assert fig.layout.xaxis.type == "category"
    names = [x for trace in fig.data for x in trace.x]
    assert len(set(names)) == len(table), "one name per cell"
    assert all(any(str(m) in n for m in table["model_name"]) for n in names), "x labels are cell names"
    low, high = (10 ** v for v in fig.layout.yaxis.range)
    assert high / low < 100, "the absurd CI does not set the axis"
    ticks = np.log10(fig.layout.yaxis.tickvals)
    assert np.all(np.diff(ticks) >= np.log10(high / low) / 8 - 1e-9), "neighbouring labels stay apart"
    assert 1.0 in fig.layout.yaxis.tickvals


def test_run_table_lists_every_run_with_its_environment_and_reads_no_protocol_as_1():
    con = _store_with_rounds((1.0, 1.0))
    con.execute("""UPDATE runs SET protocol_version = 2,
                   environment = '{"cpu_model": "Test CPU", "torch": "2.0", "gpu": {"name": "Test GPU", "driver": "1.2"},
                                   "host_fingerprint": {"model_name": "Test CPU", "flags_sha": "abc", "host_class": "h1"}}',
                   plan = '{"measure": {"rounds": 3}}'
                   WHERE run_id = 'run-1'""")
    runs = run_table(con).set_index("run_id")
    assert sorted(runs.index) == sorted(r[0] for r in con.execute("SELECT run_id FROM runs").fetchall())
    assert runs.loc["run-1", ["protocol_version", "rounds", "host_cpu", "gpu", "driver", "torch", "host_class"]].tolist() == [
        2, 3, "Test CPU", "Test GPU", "1.2", "2.0", "h1"]
    assert "flags abc" in runs.loc["run-1", "host_fingerprint"]
    assert runs.loc["run-0", "protocol_version"] == 1 and runs.loc["run-0", "rounds"] == 1
    cells = dict(con.execute("SELECT run_id, count(*) FROM cells WHERE status = 'ok' GROUP BY 1").fetchall())
    assert runs["cells_ok"].to_dict() == cells
