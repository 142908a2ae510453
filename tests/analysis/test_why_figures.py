"""Why-slow figures: checked on the figure data, from a launch floor built by analysis.why."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from analysis.figures import kernels_vs_depth, why_components
from analysis.why import launch_floor


def _floor() -> pd.DataFrame:
    """Two backends x a depth-width grid given out of order; latency = 30 us per launch + weights / bandwidth."""
    rows = []
    for backend, graphed in (("hf-eager", False), ("cuda-graph", True)):
        for depth, width in ((8, 64), (2, 256), (2, 64), (8, 256), (4, 128)):
            params = 50257 * width + depth * 12 * width * width
            kernels = 10 + 14 * depth
            launches = 3 if graphed else kernels
            rows.append({
                "cell_id": f"r1/{backend}-{depth}x{width}", "model_name": f"{depth}x{width}", "n_layer": depth,
                "n_embd": width, "params": params, "backend": backend, "device": "cuda", "dtype": "float32",
                "batch_size": 1, "prompt_len": 128, "gen_len": 64, "kernels": kernels, "launches": launches,
                "graph_launches": 1 if graphed else 0, "bandwidth_gb_s": 3000.0, "launch_us": 9.0,
                "matmul_tflops": 50.0, "decode_ms": kernels * 0.030 + params * 4 / 3e12 * 1e3,
            })
    rows[0]["model_name"] = "gpt2-tiny"  # a named model keeps its shape in the label
    return launch_floor(pd.DataFrame(rows))


def test_why_components_stacks_the_four_terms_per_shape_sorted_by_depth_then_width():
    floor = _floor()
    eager = floor[floor["backend"] == "hf-eager"]
    fig = why_components(eager)
    assert fig.layout.barmode == "stack"
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert [t.name.split(" ")[0] for t in bars] == ["launch", "memory", "compute", "unexplained"]
    assert list(bars[0].x) == ["2x64", "2x256", "4x128", "gpt2-tiny (8x64)", "8x256"]
    ordered = eager.sort_values(["n_layer", "n_embd"])
    for trace, column in zip(bars, ("launch_ms", "memory_ms", "compute_ms", "unexplained_ms")):
        np.testing.assert_allclose(trace.y, ordered[column])
    stacked = sum(np.asarray(t.y) for t in bars)
    np.testing.assert_allclose(stacked, np.maximum(ordered["decode_ms"], ordered["predicted_ms"]))
    measured = next(t for t in fig.data if t.name == "measured median")
    np.testing.assert_allclose(measured.y, ordered["decode_ms"])
    assert list(bars[0].customdata[:, 0]) == list(ordered["cell_id"])


def test_why_components_labels_a_repeated_shape_apart():
    floor = _floor()
    eager = floor[floor["backend"] == "hf-eager"]
    twice = pd.concat([eager, eager.iloc[[1]].assign(cell_id="r2/hf-eager-8x256")])
    labels = list(why_components(twice).data[0].x)
    assert len(set(labels)) == len(labels) == 6


def test_kernels_vs_depth_draws_one_trace_per_backend_with_kernels_on_y():
    floor = _floor()
    fig = kernels_vs_depth(floor)
    assert [t.name for t in fig.data] == ["cuda-graph", "hf-eager"]
    for trace in fig.data:
        sub = floor[floor["backend"] == trace.name].sort_values(["n_layer", "n_embd"])
        np.testing.assert_array_equal(trace.x, sub["n_layer"])
        np.testing.assert_array_equal(trace.y, sub["kernels"])
        np.testing.assert_array_equal(trace.customdata[:, 3], sub["launches"])
    graph = fig.data[0]
    assert set(graph.customdata[:, 3]) == {3}, "a CUDA graph launches once for many kernels"


def test_kernels_vs_depth_by_width_colours_points_and_rejects_other_colours():
    floor = _floor()
    fig = kernels_vs_depth(floor, color="n_embd")
    (trace,) = fig.data
    np.testing.assert_array_equal(trace.marker.color, floor.sort_values(["n_layer", "n_embd"])["n_embd"])
    with pytest.raises(ValueError, match="color must be"):
        kernels_vs_depth(floor, color="dtype")


def test_the_same_cell_measured_in_two_runs_gets_two_bars_named_by_run():
    """Cell ids are run/cell_key and a repeated cell keeps its key: the run tells them apart."""
    floor = _floor()
    eager = floor[floor["backend"] == "hf-eager"].iloc[[1]]
    twice = pd.concat([eager.assign(cell_id="20261124-221842-178a1a/cfab91624657"),
                       eager.assign(cell_id="20261124-224821-c7e33a/cfab91624657")])
    labels = list(why_components(twice).data[0].x)
    assert labels == ["2x256 [178a1a]", "2x256 [c7e33a]"]
