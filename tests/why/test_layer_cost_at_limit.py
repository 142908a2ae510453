"""What a layer costs at the limit: planted kernels per layer and a planted cost per kernel come
back out for `fused` and the graph backend beside it; groups without a fused sibling stay out."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.at_limit import layer_cost_text, layer_costs
from analysis.regression import fit_all
from analysis.stats import compute_cell_stats
from analysis.why import launch_floor, load_profiles
from store.db import connect_memory

REGIME = "NVIDIA TEST GPU | driver 1 | CUDA 13.0"
CALIBRATION = {"bandwidth_gb_s": 3000.0, "matmul_tflops_float32": 50.0, "matmul_tflops_bfloat16": 700.0,
               "launch_us": 2.0, "device": "cuda"}
# backend -> (kernels per layer, fixed kernels per step); both pay the same planted cost per kernel
PLANTED = {"fused": (4, 3), "cuda-graph": (17, 9)}
US_PER_KERNEL = 4.0


def _store(backends=tuple(PLANTED), dtypes=("float32",), seed: int = 0):
    """Graph-replayed cells (one graph launch a step) whose decode step costs kernels x
    US_PER_KERNEL and nothing else (a layer's weight reads would enter its depth coefficient
    as an average over widths), three rounds each."""
    rng = np.random.default_rng(seed)
    con = connect_memory()
    con.execute("INSERT INTO runs (run_id, status, regime, device_kind, calibration, protocol_version) "
                "VALUES ('r1', 'finished', ?, 'cuda', ?, 2)", [REGIME, json.dumps(CALIBRATION)])
    samples = []
    for backend in backends:
        per_layer, fixed = PLANTED[backend]
        for dtype in dtypes:
            for depth in (1, 2, 4, 8, 16, 24):
                for width in (64, 256, 768):
                    params = 50257 * width + 1024 * width + depth * 12 * width * width
                    kernels = fixed + per_layer * depth
                    cell_id = f"r1/{backend}/{dtype}/{depth}x{width}"
                    profile = {"device": "cuda", "prefill": {}, "decode": {
                        "kernels": kernels, "kernel_launches": 1, "graph_launches": 1,
                        "kernel_time_ms": 0.001 * kernels, "profiled_wall_ms": 1.0, "busy_fraction": 0.5}}
                    con.execute(
                        "INSERT INTO cells (cell_id, run_id, cell_key, model_name, n_layer, n_embd, n_head, n_inner, "
                        "vocab_size, n_positions, params, backend, device, dtype, batch_size, prompt_len, gen_len, "
                        "status, flags, profile) VALUES (?, 'r1', ?, ?, ?, ?, 2, ?, 50257, 1024, ?, ?, 'cuda', ?, "
                        "1, 128, 64, 'ok', [], ?)",
                        [cell_id, cell_id, f"{depth}x{width}", depth, width, 4 * width, params, backend, dtype,
                         json.dumps(profile)])
                    step_ms = kernels * US_PER_KERNEL / 1e3
                    for round_id in range(3):
                        for step in range(16):
                            samples.append((cell_id, "decode", round_id, step, round_id,
                                            step_ms * (1 + rng.normal(0, 0.004)), "cuda_event"))
    frame = pd.DataFrame(samples, columns=["cell_id", "phase", "rep", "step", "round", "latency_ms", "timer"])  # noqa: F841
    con.execute("INSERT INTO samples BY NAME SELECT * FROM frame")
    return con


def _costs(con) -> pd.DataFrame:
    fits = fit_all(compute_cell_stats(con, {"phase": "decode"}).frame)
    return layer_costs(fits, launch_floor(load_profiles(con)))


def test_planted_kernels_per_layer_and_cost_per_kernel_come_back_for_each_graph_backend():
    costs = _costs(_store()).set_index("backend")
    assert set(costs.index) == set(PLANTED)
    for backend, (per_layer, _) in PLANTED.items():
        row = costs.loc[backend]
        assert row["kernels_per_layer"] == pytest.approx(per_layer)
        assert row["us_per_layer_kernel_ci_low"] <= US_PER_KERNEL <= row["us_per_layer_kernel_ci_high"]
        assert row["ms_per_layer"] == pytest.approx(per_layer * US_PER_KERNEL / 1e3, rel=0.05)


def test_a_layer_at_the_limit_costs_less_than_a_layer_of_the_graph_backend_beside_it():
    costs = _costs(_store()).set_index("backend")
    assert costs.loc["fused", "ms_per_layer_ci_high"] < costs.loc["cuda-graph", "ms_per_layer_ci_low"]


def test_groups_without_a_fused_sibling_are_left_out():
    assert _costs(_store(backends=("cuda-graph",))).empty


def test_each_backend_gets_one_sentence_naming_its_ci_kind():
    costs = _costs(_store())
    text = layer_cost_text(costs)
    assert len(text) == len(costs)
    assert all("across rounds" in line and "us per kernel" in line for line in text)


def test_the_calibrated_hand_off_floor_sits_beside_the_fitted_cost_per_kernel():
    con = _store()
    floor_us = 1.0  # the run's calibration: an empty kernel in a graph
    con.execute("UPDATE runs SET calibration = ?", [json.dumps(CALIBRATION | {"graph_kernel_us": floor_us})])
    costs = _costs(con).set_index("backend")
    for backend, (per_layer, _) in PLANTED.items():
        assert costs.loc[backend, "graph_kernel_us"] == floor_us
        assert costs.loc[backend, "floor_ms_per_layer"] == pytest.approx(per_layer * floor_us / 1e3)
    text = " ".join(layer_cost_text(costs.reset_index()))
    assert "An empty kernel in a graph costs 1.0 us" in text and "a floor of 4.0 us a layer" in text


def test_runs_calibrated_before_the_hand_off_probe_leave_the_floor_out():
    costs = _costs(_store())
    assert costs["graph_kernel_us"].isna().all()
    assert not any("empty kernel" in line for line in layer_cost_text(costs))
