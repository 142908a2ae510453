"""Where a chart puts its titles and legend, checked in the figure's layout: each seed-pair
panel's regime title in a strip of its own above the panel at any number of regimes, and a
coefficient plot's legend at the top (a row when short, a column at the right when long),
one entry per level, coloured as the side-by-side chart colours it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.figures import (
    LEGEND_ROW_PX, coefficient_plot, legend_above, level_colors, regime_comparison, seed_pair_ratios,
)

# A 13 px title is about 17 px tall: the strip above a panel must hold that much.
TITLE_TEXT_PX = 17


def seed_pairs(rows_per_regime: list[int]) -> pd.DataFrame:
    """A seed-pair frame (analysis.headline's columns) with the given rows per regime, the
    regimes named as long as real ones."""
    combos = [("hf-eager", "float32"), ("hf-sdpa", "float32"), ("cuda-graph", "bfloat16"), ("cuda-graph", "float32"),
              ("torch-compile", "float32"), ("fused", "bfloat16")]
    rows = []
    for index, n in enumerate(rows_per_regime):
        for backend, dtype in combos[:n]:
            rows.append({"regime": f"NVIDIA H{100 + index} 80GB HBM3 | driver 580.159.04 | CUDA 13.0 | host {index:08x}",
                         "backend": backend, "dtype": dtype, "ratio": 1.5 + index / 10, "ratio_ci_low": 1.2,
                         "ratio_ci_high": 1.9, "ci_kind": "across runs", "n_runs_a": 2, "n_runs_b": 2})
    return pd.DataFrame(rows)


def title_strips(layout: dict, n_regimes: int) -> list[tuple[float, float]]:
    """Per regime title (the first annotations): (its y minus the top of its panel, in paper
    units; the pixels between it and the panel above, or the plot area's top). `layout` is a
    figure's layout as JSON (plotly's to_plotly_json, or the spec Streamlit sends)."""
    margin = {"t": 100, "b": 80} | layout.get("margin", {})  # plotly.js' defaults where a figure sets none
    plot_px = layout["height"] - margin["t"] - margin["b"]
    strips, ceiling = [], 1.0
    for row, annotation in enumerate(layout["annotations"][:n_regimes], start=1):
        low, high = layout[f"yaxis{'' if row == 1 else row}"]["domain"]
        assert annotation["yref"] == "paper" and annotation["yanchor"] == "bottom"
        strips.append((annotation["y"] - high, (ceiling - annotation["y"]) * plot_px))
        ceiling = low
    return strips


@pytest.mark.parametrize("rows_per_regime", [[1], [2, 2], [2, 2, 2, 2, 4], [2, 2, 2, 2, 4, 6, 1],
                                             [2] * 12, [1] * 20, [6] * 9])
def test_every_regime_title_sits_above_its_panel_in_a_strip_of_its_own(rows_per_regime):
    fig = seed_pair_ratios(seed_pairs(rows_per_regime))
    layout = fig.to_plotly_json()["layout"]
    regimes = sorted(seed_pairs(rows_per_regime)["regime"].unique())
    assert [a["text"] for a in layout["annotations"][:len(regimes)]] == regimes
    for offset, room_px in title_strips(layout, len(regimes)):
        assert offset == pytest.approx(0.0, abs=1e-9), "the title's bottom is its panel's top: never over a row"
        assert room_px >= TITLE_TEXT_PX, "the title fits below the panel above (or the plot area's top)"
    assert layout["annotations"][0]["y"] < 1.0, "the first title is inside the plot area, clear of the chart's title"


def test_a_level_named_once_in_a_legend_at_the_top_as_a_row_when_short_and_a_column_when_long():
    def comparison(levels: list[str], batch: int) -> dict:
        return {"status": "ok", "factor": "backend",
                "comparison": {"regime": "NVIDIA H200", "phase": "decode", "dtype": "float32", "batch_size": batch},
                "levels": [{"level": level, "n_cells": 7, "depth_effect": 0.3, "depth_ci_low": 0.2,
                            "depth_ci_high": 0.4} for level in levels]}

    short = coefficient_plot([comparison(["hf-eager", "hf-sdpa", "cuda-graph"], b) for b in (1, 8, 16)])
    assert sorted(t.name for t in short.data) == ["cuda-graph", "hf-eager", "hf-sdpa"], "each level once"
    assert short.layout.legend.orientation == "h" and short.layout.legend.y >= 1 and short.layout.legend.yanchor == "bottom"
    assert legend_above(short) and short.layout.margin.t >= 60 + LEGEND_ROW_PX, "the margin holds the title and the row"

    regimes = [f"NVIDIA H{100 + i} 80GB HBM3 | driver 580.159.04 | CUDA 13.0 | host {i:08x}" for i in range(7)]
    tall = coefficient_plot([dict(comparison(regimes, b), factor="regime") for b in range(1, 40)])
    legend = tall.layout.legend
    assert len({t.name for t in tall.data}) == len(tall.data) == len(regimes), "each regime once, however many groups"
    assert legend.orientation == "v" and legend.x >= 1 and legend.y == 1 and legend.yanchor == "top", \
        "a column at the top right, beside the first rows, not thousands of pixels below"
    assert not legend_above(tall)
    colors = level_colors(regimes)
    assert [t.marker.color for t in tall.data] == [colors[t.name] for t in tall.data]


def test_side_by_side_chart_colours_each_level_as_the_coefficient_plot_does():
    levels = ["cuda-graph", "hf-eager", "hf-sdpa", "torch-compile"]
    stats = pd.DataFrame({"cell_id": ["a", "b", "c", "d"], "model_name": ["1x32", "2x64"] * 2, "n_layer": [1, 2] * 2,
                          "n_embd": [32, 64] * 2, "params": [5e4, 1.7e5] * 2, "median": [1.0, 2.0, 1.5, 2.5],
                          "median_ci_low": [0.9, 1.8, 1.4, 2.3], "median_ci_high": [1.1, 2.2, 1.6, 2.7],
                          "backend": ["hf-sdpa", "hf-sdpa", "torch-compile", "torch-compile"], "phase": ["decode"] * 4})
    fig = regime_comparison(stats, "backend", levels)
    colors = level_colors(levels)
    assert {t.name: t.marker.color for t in fig.data} == {"hf-sdpa": colors["hf-sdpa"],
                                                          "torch-compile": colors["torch-compile"]}
    assert fig.layout.legend.y >= 1, "the legend at the top, above the plot"
    assert len(fig.layout.yaxis.tickvals) >= 2, "medians within one decade still read against labelled ticks"
    assert np.unique([t.name for t in fig.data]).size == len(fig.data)
