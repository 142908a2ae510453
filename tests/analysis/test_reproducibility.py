"""Run-to-run variance: planted between-run offsets are recovered, CIs widen only when they should,
verdicts that hold in one run only are called not reproducible, single runs get a message."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.figures import run_medians_figure
from analysis.inversions import pair_ratios
from analysis.regression import fit_group
from analysis.report import analyze, format_text
from analysis.reproducibility import (
    NO_REPEATS_MESSAGE, environment_diff, has_repeats, inversions_across_runs, pooled_stats,
    regressions_across_runs, repeat_table, reproducibility_summary, run_medians, variance_components,
)
from analysis.stats import compute_cell_stats
from analysis.synthetic import SyntheticPlan, build_store, depth_width_law, params_law

from .conftest import ROUNDS, TEST_RESAMPLES, make_stats

SHAPES = tuple((d, w) for d in (1, 2, 4, 8, 16) for w in (64, 128, 256, 512))  # 20 shapes
PLANTED_SD = 0.10  # between-run SD of log latency per cell: ~10% run to run
ENVS = [{"host": f"node-{i}", "torch": "2.8.0" if i == 0 else "2.9.0", "gpu": {"driver": "580.65"}} for i in range(3)]


def _plan(**kw):
    base = dict(law=depth_width_law(), shapes=SHAPES, phases=("decode",), reps=10, cell_cv=0.01, seed=5, n_runs=3, **ROUNDS)
    return SyntheticPlan(**{**base, **kw})


@pytest.fixture(scope="module")
def drift_stats():
    """3 runs; each (run, cell) off by a factor exp(0.1 z): eager-backend drift."""
    return make_stats(_plan(run_cell_cv=PLANTED_SD))


@pytest.fixture(scope="module")
def steady_stats():
    """3 runs with no between-run effect: runs differ by sample noise only."""
    return make_stats(_plan())


def test_repeat_runs_share_cell_keys_and_a_series():
    con = build_store(_plan(environments=ENVS))
    runs = con.execute("SELECT run_id, series_id, shuffle_seed FROM runs ORDER BY run_id").fetchall()
    assert [r[0] for r in runs] == ["run-0", "run-1", "run-2"] and {r[1] for r in runs} == {"synthetic"}
    keys = con.execute("SELECT cell_key, count(*) FROM cells GROUP BY cell_key").fetchall()
    assert len(keys) == len(SHAPES) and {n for _, n in keys} == {3}
    diff = environment_diff(con, ["run-0", "run-1", "run-2"])
    assert set(diff) == {"host", "torch"}  # the driver is equal, so not listed
    assert diff["torch"] == {"run-0": "2.8.0", "run-1": "2.9.0", "run-2": "2.9.0"}


def test_planted_between_run_sd_is_recovered_within_its_ci(drift_stats):
    table = repeat_table(drift_stats)
    assert len(table) == len(SHAPES) and (table["n_runs"] == 3).all()
    comp = variance_components(table).iloc[0]
    assert comp["between_run_sd_ci_low"] <= PLANTED_SD <= comp["between_run_sd_ci_high"]
    assert abs(comp["between_run_sd"] - PLANTED_SD) < 0.03
    # Within-run noise is far below the planted drift, so most cells are flagged.
    assert comp["within_run_se"] < 0.02
    assert table["irreproducible"].mean() > 0.7
    assert (table.loc[table["irreproducible"], "q_value"] < 0.05).all()


def test_cis_widen_with_between_run_variance(drift_stats):
    table = repeat_table(drift_stats)
    assert table["ci_widening"].median() > 3
    pooled = pooled_stats(drift_stats)
    assert pooled.frame["ci_includes_between_run_variance"].all()
    # The random-effects interval (t, k - 1 df, within-run variances as weights) answers the same
    # question over the same runs: about as wide as the pooled t interval, never the narrow
    # within-run one (which the first assertion shows is several times narrower).
    re_width = (table["re_ci_high"] - table["re_ci_low"]).median()
    pooled_width = (table["median_ci_high"] - table["median_ci_low"]).median()
    assert 0.8 < re_width / pooled_width < 1.25


def test_without_between_run_variance_cis_do_not_widen_much(steady_stats):
    table = repeat_table(steady_stats)
    comp = variance_components(table).iloc[0]
    assert comp["between_run_sd"] < 0.01
    assert table["ci_widening"].median() < 1.3
    assert table["irreproducible"].sum() <= 1


def test_a_slow_run_cancels_in_inversion_ratios():
    """A run that slows every cell by 40% flags every cell, yet ratios keep their pairing."""
    stats = make_stats(_plan(run_offsets=(1.0, 1.4, 0.8)))
    table = repeat_table(stats)
    assert table["irreproducible"].all()
    assert table["spread_ratio"].min() > 1.6
    pooled = pooled_stats(stats)
    pairs = pair_ratios(pooled, inversions_only=False)
    run0 = pair_ratios(make_stats(_plan(n_runs=1)), inversions_only=False)
    width = (pairs["ratio_ci_high"] / pairs["ratio_ci_low"]).median()
    assert width < 1.5 * (run0["ratio_ci_high"] / run0["ratio_ci_low"]).median()


def test_inversion_significant_in_one_run_only_is_not_reproducible():
    def law(cells):
        base = 1.5 ** cells["params"].rank(method="dense").to_numpy()  # monotone in params
        # Run 0 only: 2x64 becomes 3x slower, past several larger models.
        spike = (cells["model_name"] == "2x64") & (cells["repeat"] == 0)
        return np.where(spike, 3.0 * base, base)

    stats = make_stats(_plan(law=law, shapes=SHAPES[:12], cell_cv=0.0))
    inv = inversions_across_runs(stats)
    assert len(inv) and set(inv["model_name_a"]) == {"2x64"}
    assert (inv["runs_significant"].map(tuple) == ("run-0",)).all()
    assert (inv["verdict"] == "not reproducible").all() and not inv["significant"].any()
    assert inv["ci_includes_between_run_variance"].all()
    summary = reproducibility_summary(stats)
    assert summary["inversions"]["n_not_reproducible"] == len(inv)
    assert summary["inversions"]["n_reproducible"] == 0


def test_inversion_present_in_every_run_is_reproducible():
    def law(cells):
        base = 1.5 ** cells["params"].rank(method="dense").to_numpy()
        return np.where(cells["model_name"] == "2x64", 3.0 * base, base)

    inv = inversions_across_runs(make_stats(_plan(law=law, shapes=SHAPES[:12], cell_cv=0.0)))
    assert len(inv) and (inv["verdict"] == "reproducible").all()
    assert (inv["runs_significant"].map(len) == 3).all()


def test_regression_verdict_that_differs_between_runs_is_not_reproducible():
    # depth alone (no width term): the seed form's verdict is "depth", not "both"
    depth, params = depth_width_law(c=0.0), params_law(a=1.0, k=0.2)

    def law(cells):
        return np.where(cells["repeat"] == 0, depth(cells), params(cells))

    stats = make_stats(_plan(law=law, n_runs=2))
    (reg,) = regressions_across_runs(stats)
    assert {r["run_id"]: r["winner"] for r in reg["per_run"]} == {"run-0": "depth", "run-1": "params"}
    assert reg["reproducibility"] == "not reproducible"
    assert reg["ci_includes_between_run_variance"] and reg["message"].startswith("across runs")


def test_regression_cis_include_between_run_variance():
    # depth alone (no width term): the seed form's verdict is "depth", not "both"
    drift_stats = make_stats(_plan(law=depth_width_law(c=0.0), run_cell_cv=PLANTED_SD))
    pooled = pooled_stats(drift_stats)
    (reg,) = regressions_across_runs(drift_stats, pooled)
    plain = fit_group(pooled.frame.drop(columns=["unit_ids", "unit_log_medians", "ci_kind"])).to_dict()  # HC3 alone

    def depth_ci(record):
        model = next(m for m in record["models"] if m["scale"] == "log" and m["model"] == "depth+width")
        c = next(c for c in model["coefficients"] if c["term"] == "log_depth")
        return c["ci_high"] - c["ci_low"], model["cov_type"]

    wide, cov_type = depth_ci(reg)
    narrow, _ = depth_ci(plain)
    assert wide > narrow and "between-run" in cov_type and reg["ci_kind"] == "across runs"
    assert reg["reproducibility"] == "reproducible" and reg["verdict"]["winner"] == "depth"


def test_single_run_gives_a_message_not_an_exception():
    stats = make_stats(_plan(n_runs=1))
    assert not has_repeats(stats)
    assert reproducibility_summary(stats) == {"has_repeats": False, "message": NO_REPEATS_MESSAGE}
    assert repeat_table(stats).empty and run_medians(stats).empty
    pooled = pooled_stats(stats)
    # each unit is one run's row, unchanged (units come in key order, rows in cell order)
    rows = stats.frame.reset_index(drop=True).reset_index().set_index(["cell_id", "phase"])["index"]
    order = rows.loc[list(zip(pooled.frame["cell_ids"].str[0], pooled.frame["phase"]))].to_numpy()
    np.testing.assert_allclose(pooled.frame["median"], stats.frame["median"].to_numpy()[order])
    np.testing.assert_allclose(pooled.draws, stats.draws[order])
    assert not pooled.frame["ci_includes_between_run_variance"].any()
    assert len(run_medians_figure(run_medians(stats)).data) == 0


def test_config_columns_identify_the_same_cells_as_cell_keys(drift_stats):
    by_key, by_config = repeat_table(drift_stats), repeat_table(drift_stats, by="config")
    np.testing.assert_allclose(np.sort(by_key["tau"]), np.sort(by_config["tau"]))


def test_run_medians_figure_puts_runs_side_by_side_and_marks_irreproducible(drift_stats):
    table = repeat_table(drift_stats)
    runs = run_medians(drift_stats, table)
    fig = run_medians_figure(runs)
    run_traces = [t for t in fig.data if t.name.startswith("run-")]
    assert [t.name for t in run_traces] == ["run-0", "run-1", "run-2"]
    assert fig.layout.scattermode == "group"
    first = runs[runs["run_id"] == "run-0"].sort_values(["params", "model_name"])
    np.testing.assert_allclose(run_traces[0].y, first["median"])
    np.testing.assert_allclose(run_traces[0].error_y.array, first["median_ci_high"] - first["median"])
    assert list(run_traces[0].customdata[:, 0]) == list(first["cell_id"])
    marks = next(t for t in fig.data if t.name == "irreproducible")
    assert len(marks.x) == int(table["irreproducible"].sum())
    assert all(x.endswith("!") for x in marks.x)


def test_report_pools_repeats_and_says_so():
    con = build_store(_plan(run_cell_cv=PLANTED_SD, environments=ENVS))
    result = analyze(con, n_resamples=300)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert result["cell_stats"]["n_cells"] == 3 * len(SHAPES)  # per run, unchanged
    rep = result["reproducibility"]
    assert rep["has_repeats"] and rep["n_irreproducible"] > 0
    assert set(rep["irreproducible"][0]["environment_diff"]) == {"host", "torch"}
    assert result["inversions"]["ci_includes_between_run_variance"]
    assert all(r["ci_includes_between_run_variance"] for r in result["regressions"])
    assert result["regressions"][0]["n_cells"] == len(SHAPES)  # one row per configuration
    text = format_text(result)
    assert "== Reproducibility (run to run) ==" in text and "irreproducible" in text
    assert "CIs include between-run variance" in text


def test_report_without_repeats_has_a_short_reproducibility_message(depth_store):
    result = analyze(depth_store, n_resamples=100, phase="decode")
    assert result["reproducibility"] == {"has_repeats": False, "message": NO_REPEATS_MESSAGE}
    assert not result["inversions"]["ci_includes_between_run_variance"]
    assert NO_REPEATS_MESSAGE in format_text(result)


def test_pooled_stats_of_a_filtered_store_keep_one_row_per_configuration():
    con = build_store(_plan(run_cell_cv=PLANTED_SD))
    stats = compute_cell_stats(con, {"n_layer": [1, 2]}, n_resamples=TEST_RESAMPLES)
    pooled = pooled_stats(stats)
    assert len(pooled.frame) == 8 and (pooled.frame["n_runs"] == 3).all()
    assert pooled.draws.shape == (8, TEST_RESAMPLES)


def test_the_between_run_spread_says_what_its_interval_is_across():
    from analysis.reproducibility import SPREAD_CI_KIND, variance_components

    table = pd.DataFrame({
        "group_id": ["g"] * 3, "n_runs": [2, 2, 3], "between_run_sd": [0.2, 0.1, 0.3],
        "within_run_se": [0.01, 0.02, 0.01], "spread_ratio": [1.3, 1.1, 1.5], "irreproducible": [True, False, True],
    })
    [row] = variance_components(table).to_dict("records")
    assert row["between_run_sd_ci_kind"] == SPREAD_CI_KIND and row["between_run_sd_ci_low"] <= row["between_run_sd"]
    [single] = variance_components(table.iloc[:1]).to_dict("records")
    assert single["between_run_sd_ci_kind"] == "none" and math.isnan(single["between_run_sd_ci_low"])
