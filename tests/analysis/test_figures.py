"""Figures: checked on the figure object, traces and data, no browser."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pandas as pd

from analysis.figures import (
    WEBGL_THRESHOLD, coefficient_plot, inversion_heatmap, latency_vs_depth, latency_vs_params,
    regime_comparison, sample_distributions,
)
from analysis.inversions import pair_ratios
from analysis.load import load_samples
from analysis.regimes import compare
from analysis.regression import fit_group


def _decode(stats):
    return stats.frame[stats.frame["phase"] == "decode"]


def test_latency_vs_params_has_points_with_ci_bars_and_a_fitted_band(depth_stats):
    cells = _decode(depth_stats)
    fig = latency_vs_params(cells, fit_group(cells).bands)
    points = fig.data[0]
    assert isinstance(points, go.Scatter) and points.mode == "markers"
    np.testing.assert_allclose(points.y, cells["median"])
    np.testing.assert_allclose(points.error_y.array, cells["median_ci_high"] - cells["median"])
    assert list(points.customdata[:, 0]) == list(cells["cell_id"])
    np.testing.assert_array_equal(points.marker.color, cells["n_embd"])
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    names = [t.name for t in fig.data]
    assert "params-only fit (log)" in names and any(t.fill == "tonexty" for t in fig.data)


def test_latency_vs_depth_draws_one_fitted_line_per_width(depth_stats):
    cells = _decode(depth_stats)
    fig = latency_vs_depth(cells, fit_group(cells).bands)
    lines = [t for t in fig.data if t.name and t.name.startswith("depth + width fit") and t.mode == "lines" and t.fill is None and t.showlegend is not False]
    assert len(lines) == cells["n_embd"].nunique()
    np.testing.assert_array_equal(fig.data[0].x, cells["n_layer"])


def test_many_points_switch_to_webgl(depth_stats):
    cells = _decode(depth_stats)
    many = pd.concat([cells] * (WEBGL_THRESHOLD // len(cells) + 1), ignore_index=True)
    assert isinstance(latency_vs_params(many).data[0], go.Scattergl)


def test_coefficient_plot_shows_each_regime_with_its_ci(two_regime_stats):
    comps = [c for c in compare(two_regime_stats.frame, "regime") if c["status"] == "ok"]
    fig = coefficient_plot(comps)
    assert [t.name for t in fig.data] == ["fast-launch", "slow-launch"], "one trace (legend entry) per regime"
    for trace in fig.data:
        levels = [next(lv for lv in c["levels"] if lv["level"] == trace.name) for c in comps]
        assert len(trace.y) == len(comps), "a point per comparison group"
        np.testing.assert_allclose(trace.x, [lv["depth_effect"] for lv in levels])
        np.testing.assert_allclose(trace.error_x.array, [lv["depth_ci_high"] - lv["depth_effect"] for lv in levels])


def test_inversion_heatmap_rows_smaller_columns_larger_and_marks_significant(depth_stats):
    cells = depth_stats.frame[depth_stats.frame["phase"] == "decode"]
    pairs = pair_ratios(depth_stats, inversions_only=False)
    pairs = pairs[pairs["group_id"] == cells["group_id"].iloc[0]]
    fig = inversion_heatmap(pairs)
    heat, marks = fig.data
    assert isinstance(heat, go.Heatmap)
    row, col = list(heat.y).index("24x64"), list(heat.x).index("1x128")
    expected = pairs[(pairs["model_name_a"] == "24x64") & (pairs["model_name_b"] == "1x128")]["ratio"].iloc[0]
    assert heat.text[row][col] == expected > 1
    assert heat.z[row][col] == np.log2(expected)  # colour on a log scale centred on ratio 1
    assert heat.zmid == 0
    assert len(marks.x) == int(pairs["significant"].sum()) > 0


def test_sample_distributions_one_box_per_phase_with_cell_ids(depth_store):
    samples = load_samples(depth_store, {"n_layer": 1})
    fig = sample_distributions(samples)
    assert {t.name for t in fig.data} == {"prefill", "decode", "e2e"}
    assert all(isinstance(t, go.Box) for t in fig.data)
    assert sum(len(t.y) for t in fig.data) == len(samples)
    assert set(fig.data[0].customdata[:, 0]) <= set(samples["cell_id"])
    assert isinstance(sample_distributions(samples, kind="violin").data[0], go.Violin)


def test_regime_comparison_has_one_trace_per_regime(two_regime_stats):
    fig = regime_comparison(two_regime_stats.frame[two_regime_stats.frame["backend"] == "hf-eager"])
    assert [t.name for t in fig.data] == ["fast-launch", "slow-launch"]


def test_a_decode_latency_axis_says_ms_per_token():
    from analysis.figures import latency_axis_title

    assert latency_axis_title(["decode", "decode"]) == "median decode latency (ms per token)"
    assert latency_axis_title(["prefill"]) == "median prefill latency (ms)"
    assert "per token" in latency_axis_title(["prefill", "decode"])


def test_a_cell_point_hover_names_its_regime_backend_dtype_phase_family_and_kv_heads():
    import pandas as pd

    from analysis.figures import latency_vs_params

    stats = pd.DataFrame({"cell_id": ["r/a"], "model_name": ["SmolLM2-135M"], "n_layer": [30], "n_embd": [576],
                          "params": [134.5e6], "median": [1.0], "median_ci_low": [0.9], "median_ci_high": [1.1],
                          "backend": ["hf-eager"], "dtype": ["bfloat16"], "phase": ["decode"],
                          "regime": ["NVIDIA H200 | host 5be464da"], "ci_kind": ["across runs"],
                          "family": ["llama"], "n_head": [9], "n_kv_head": [3]})
    [point] = [t for t in latency_vs_params(stats).data if t.mode == "markers"]
    row = list(point.customdata[0])
    assert row[0] == "r/a" and row[4:8] == ["hf-eager", "bfloat16", "decode", "NVIDIA H200 | host 5be464da"]
    assert row[8:] == ["llama", 9, 3, "across runs"]
    assert all(f"customdata[{i}]" in point.hovertemplate for i in range(1, 12))


def test_seed_pair_chart_has_one_panel_per_regime_with_each_ratio_and_its_ci(bundled_con):
    from analysis.figures import seed_pair_ratios
    from analysis.headline import headline_for

    seed = headline_for(bundled_con).seed_pairs
    fig = seed_pair_ratios(seed)
    regimes = sorted(seed["regime"].unique())
    assert [t.name for t in fig.data] == regimes, "one trace (panel) per regime, in name order"
    assert [a.text for a in fig.layout.annotations][:len(regimes)] == regimes, "each panel titled with its full regime"
    for trace in fig.data:
        rows = seed[seed["regime"] == trace.name].sort_values(["backend", "dtype"])
        np.testing.assert_allclose(trace.x, rows["ratio"])
        assert list(trace.y) == list(rows["backend"] + " " + rows["dtype"])
        has_ci = rows["ratio_ci_low"].notna().to_numpy()
        np.testing.assert_allclose(np.asarray(trace.error_x.array)[has_ci], (rows["ratio_ci_high"] - rows["ratio"])[has_ci])
        np.testing.assert_allclose(np.asarray(trace.error_x.arrayminus)[has_ci], (rows["ratio"] - rows["ratio_ci_low"])[has_ci])
        assert np.all(np.asarray(trace.error_x.array)[~has_ci] == 0), "no bars where there is no CI"
        assert list(np.asarray(trace.marker.symbol)) == ["circle" if c else "circle-open" for c in has_ci]
    assert fig.layout.xaxis.type == "log" and "1x" in fig.layout.xaxis.ticktext, "labelled ratios around 1x"


def test_log_axes_label_decades_or_measured_depths_never_bare_minor_digits(depth_stats):
    cells = _decode(depth_stats)
    from analysis.figures import log_ticks

    by_params = latency_vs_params(cells)
    y = by_params.layout.yaxis
    assert list(y.ticktext) == [f"{v:g}" for v in y.tickvals], "every label a full value"
    assert all(f"{v:g}"[0] in "125" for v in y.tickvals), "at 1-2-5 steps (or decades)"
    low, high = cells["median_ci_low"].min(), cells["median_ci_high"].max()
    assert min(y.tickvals) <= low * 1.5 and max(y.tickvals) >= high / 1.5, "labels span the data"
    assert log_ticks([0.001, 1000]) == [0.001, 0.01, 0.1, 1, 10, 100, 1000], "decades when 1-2-5 would crowd"
    by_depth = latency_vs_depth(cells)
    depths = sorted({int(d) for d in cells["n_layer"]})
    assert list(by_depth.layout.xaxis.tickvals) == depths, "the depth axis names the measured depths"
    assert latency_vs_depth(cells, scale="linear").layout.xaxis.type == "linear"


def test_each_width_fit_line_has_the_colour_of_its_points(depth_stats):
    from plotly.colors import sample_colorscale

    from analysis.figures import WIDTH_COLORSCALE

    cells = _decode(depth_stats)
    fig = latency_vs_depth(cells, fit_group(cells).bands)
    points = fig.data[0]
    low, high = cells["n_embd"].min(), cells["n_embd"].max()
    lines = [t for t in fig.data if t.name and t.name.startswith("depth + width fit, width") and t.fill is None
             and t.showlegend is not False and not t.name.endswith("CI")]
    assert lines
    for line in lines:
        width = float(line.name.rsplit(" ", 1)[1])
        assert line.line.color == sample_colorscale(WIDTH_COLORSCALE, [(width - low) / (high - low)])[0]
    assert points.marker.colorscale is not None and list(points.marker.color) == list(cells["n_embd"])
