"""The charts and helpers the pages lay out, checked on their figure data: no repeated legend
names, readable log ticks, bars that agree with their verdict, and tables without raw
None / nan / 2.51e-243."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.figures import coefficient_plot, shape_latencies, spaced_log_ticks, why_components
from analysis.regression import GroupFit, newest_current_group
from analysis.why import MOSTLY_UNEXPLAINED, fit_launch_overhead, launch_floor, paid_split
from dashboard.text import MISSING, interval, p_value, table_text


def _comparison(phase: str, batch: int, levels: list[str]) -> dict:
    return {"status": "ok", "factor": "regime",
            "comparison": {"backend": "hf-eager", "phase": phase, "dtype": "float32", "batch_size": batch, "prompt_len": 128},
            "levels": [{"level": level, "n_cells": 7, "depth_effect": 0.3 + i / 10, "depth_ci_low": 0.2 + i / 10,
                        "depth_ci_high": 0.4 + i / 10} for i, level in enumerate(levels)]}


def test_coefficient_plot_names_each_level_once_and_gives_each_group_its_own_row():
    regimes = ["NVIDIA H100 80GB HBM3 | driver 1", "NVIDIA H200 | driver 1"]
    comparisons = [_comparison(phase, batch, regimes) for phase in ("decode", "prefill", "e2e") for batch in (1, 8)]
    fig = coefficient_plot(comparisons)
    names = [t.name for t in fig.data]
    assert sorted(names) == sorted(regimes), "one legend entry per regime, not one per comparison group"
    rows = {y for t in fig.data for y in t.y}
    assert len(rows) == len(comparisons), "every comparison group on a row of its own"
    assert fig.layout.scattermode == "group", "the levels of a row side by side, not on top of each other"


def test_shape_latencies_lists_each_shape_once_per_group_and_leaves_absurd_cis_undrawn():
    cells = pd.DataFrame({
        "group": ["hf-eager float32 b1 p8 g4"] * 2, "regime": ["CPU test | 2 threads"] * 2,
        "shape": ["1x32 (1 x 32, 0.05M)", "2x64 (2 x 64, 0.2M)"], "ms_per_token": [8.0, 15.0],
        "ci_low": [6.5, 3.8e-7], "ci_high": [10.7, 4.7e6],
    })
    fig = shape_latencies(cells)
    (trace,) = fig.data
    assert list(trace.y) == list(cells["shape"])
    assert list(trace.marker.symbol) == ["circle", "circle-open"], "the 1e-7..1e6 ms CI is hollow, not drawn"
    assert trace.error_x.array[1] == 0 and trace.error_x.arrayminus[1] == 0
    ticks = fig.layout.xaxis.tickvals
    assert min(ticks) >= 1 and max(ticks) <= 100, "the axis spans the measurements, not the absurd interval"


def test_spaced_log_ticks_keep_one_and_never_crowd():
    candidates = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
    ticks = spaced_log_ticks(0.05, 20.0, candidates)
    assert 1.0 in ticks
    gaps = np.diff(np.log10(ticks))
    assert (gaps >= np.log10(20.0 / 0.05) / 8 - 1e-12).all()


def _launch_bound_floor() -> pd.DataFrame:
    """Eager cells over 6 depths x 2 widths, each launch really costing 30 us (the calibration's
    empty kernel: 9 us), and one large shape where the weights' bytes dominate."""
    rows = []
    for depth in (1, 2, 3, 4, 6, 8):
        for width in (64, 256):
            params = 50257 * width + depth * 12 * width * width
            kernels = 10 + 14 * depth
            rows.append({
                "cell_id": f"r1/{depth}x{width}", "model_name": f"{depth}x{width}", "n_layer": depth, "n_embd": width,
                "params": params, "backend": "hf-eager", "device": "cuda", "dtype": "float32", "regime": "GPU test",
                "batch_size": 1, "prompt_len": 128, "gen_len": 64, "kernels": kernels, "launches": kernels,
                "graph_launches": 0, "bandwidth_gb_s": 3000.0, "launch_us": 9.0, "matmul_tflops": 50.0,
                "decode_ms": kernels * 0.030 + params * 4 / 3e12 * 1e3 * (1 + 0.01 * depth),
            })
    return launch_floor(pd.DataFrame(rows))


def test_why_bars_priced_at_the_fitted_launch_cost_agree_with_the_verdict():
    floor = _launch_bound_floor()
    split = paid_split(floor, fit_launch_overhead(floor))
    eager = split[split["backend"] == "hf-eager"]
    assert (eager["launch_basis"] == "fitted cost per launch").all()
    # the cells were made at 30 us per launch: the floor's 9 us left most of the step unexplained
    assert (eager["unexplained_ms"] > eager[["launch_ms", "memory_ms", "compute_ms"]].max(axis=1)).all()
    assert (eager["rest_ms"] < 0.05 * eager["decode_ms"]).all()
    for row in split.itertuples():
        parts = {"launch-bound": row.launch_paid_ms, "memory-bound": row.memory_ms, "compute-bound": row.compute_ms}
        if row.paid_verdict == MOSTLY_UNEXPLAINED:
            assert row.rest_ms > max(parts.values())
        else:
            assert parts[row.paid_verdict] == max(parts.values()) >= row.rest_ms, "the verdict is the tallest bar"
    fig = why_components(eager)
    assert [t.name for t in fig.data][-2] == "not explained"
    stacked = sum(np.asarray(t.y) for t in fig.data[:4])
    assert (stacked <= eager.sort_values(["n_layer", "n_embd"])["decode_ms"].to_numpy() + 1e-9).all()


def _fit(group_id: str, n_shapes: int, status: str = "ok") -> GroupFit:
    return GroupFit(group={}, group_id=group_id, status=status, message="", n_cells=n_shapes, n_shapes=n_shapes)


def test_depth_width_opens_on_the_newest_current_protocol_group():
    pooled = pd.DataFrame({
        "group_id": ["old-p1", "old-p1", "p2-a", "p2-a", "p2-b", "p2-b"],
        "protocol_version": [1, 1, 2, 2, 2, 2],
        "run_ids": [["r1"], ["r1"], ["r2"], ["r2"], ["r3"], ["r2", "r3"]],
    })
    started = {"r1": "2026-01-01T00:00:00", "r2": "2026-02-01T00:00:00", "r3": "2026-03-01T00:00:00"}
    fits = [_fit("old-p1", 40), _fit("p2-a", 12), _fit("p2-b", 7)]
    assert newest_current_group(fits, pooled, started) == "p2-b"
    assert newest_current_group([_fit("old-p1", 40)], pooled, started) is None
    assert newest_current_group([_fit("p2-b", 7, status="too_few_shapes"), _fit("p2-a", 6)], pooled, started) == "p2-a"


def test_tables_show_dashes_and_readable_p_values_never_raw_floats():
    frame = pd.DataFrame({"estimate": [1.234567, None, np.nan], "p_value": [2.51e-243, 0.031, None],
                          "note": ["fit", None, "nan"], "runs": [[1, 2], [], ["r"]]})
    shown = table_text(frame, p_columns=("p_value",))
    assert shown["estimate"].tolist() == ["1.235", MISSING, MISSING]
    assert shown["p_value"].tolist() == ["<0.001", "0.031", MISSING]
    assert shown["note"].tolist() == ["fit", MISSING, MISSING]
    assert shown["runs"].tolist() == ["1, 2", MISSING, "r"]
    assert p_value(0.5) == "0.5" and p_value(0.0042) == "0.0042" and p_value(0.001) == "0.001"
    assert interval(6.5, 10.66) == "6.5-10.7"
    assert interval(3.8e-7, 4.7e6) == "too wide to tell"
    assert interval(None, 1.0) == MISSING


def test_combined_view_holds_the_reference_and_the_store_once_each(tmp_path):
    from store.combined import combine
    from store.dataset import BUNDLED_SNAPSHOT
    from store.snapshot import open_snapshot

    reference = open_snapshot(BUNDLED_SNAPSHOT)
    both = combine(reference, reference)  # a store that imported the reference counts its runs once
    for table in ("runs", "cells", "samples"):
        count = f"SELECT count(*) FROM {table}"
        assert both.execute(count).fetchall() == reference.execute(count).fetchall()


def test_latency_charts_leave_a_two_round_cells_absurd_ci_undrawn():
    from analysis.figures import latency_vs_depth

    stats = pd.DataFrame({"cell_id": ["a", "b"], "model_name": ["1x32", "2x64"], "n_layer": [1, 2], "n_embd": [32, 64],
                          "params": [5e4, 1.7e5], "median": [8.0, 15.0], "median_ci_low": [6.5, 3.8e-7],
                          "median_ci_high": [10.7, 4.7e6], "phase": ["decode"] * 2})
    fig = latency_vs_depth(stats)
    assert list(fig.data[0].error_y.array) == pytest.approx([2.7, 0.0])
    assert max(fig.layout.yaxis.tickvals) <= 100, "the axis holds the medians, not 1e6 ms"


def test_sortable_tables_keep_numbers_and_leave_absent_values_to_the_placeholder():
    from dashboard.text import table_frame

    frame = pd.DataFrame({"protocol": [2, 1], "gpu_count": [1.0, np.nan], "gpu": ["NVIDIA H200", None],
                          "note": ["nan", ""], "q_value": [2.51e-243, np.nan],
                          "runs": [np.array(["r1", "r2"]), np.array([], dtype=object)]})
    shown = table_frame(frame, p_columns=("q_value",))
    assert shown["protocol"].tolist() == [2, 1], "a numeric column stays numeric (sortable)"
    assert shown["gpu_count"].iloc[0] == 1.0 and np.isnan(shown["gpu_count"].iloc[1]), "absent: the table's placeholder"
    assert shown["gpu"].tolist() == ["NVIDIA H200", None] and shown["note"].tolist() == [None, None]
    assert shown["q_value"].tolist() == ["<0.001", MISSING]
    assert shown["runs"].tolist() == ["r1, r2", None]
    assert frame["note"].tolist() == ["nan", ""], "the frame itself is left as it is"
