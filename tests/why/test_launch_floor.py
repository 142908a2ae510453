"""The launch-floor model: components, verdicts, a planted per-launch overhead recovered."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.why import explain_pair, fit_launch_overhead, launch_floor, load_profiles
from store.db import connect_memory

REGIME = "NVIDIA TEST GPU | driver 1 | CUDA 13.0"
CALIBRATION = {"bandwidth_gb_s": 3000.0, "matmul_tflops_float32": 50.0, "matmul_tflops_bfloat16": 700.0,
               "launch_us": 5.0, "device": "cuda"}


def _store(per_launch_us: float, noise_ms: float = 0.002, seed: int = 0):
    """Cells whose decode latency is launches x per_launch_us + weights / bandwidth + noise."""
    rng = np.random.default_rng(seed)
    con = connect_memory()
    con.execute(
        "INSERT INTO runs (run_id, status, regime, device_kind, calibration) VALUES (?, 'finished', ?, 'cuda', ?)",
        ["r1", REGIME, json.dumps(CALIBRATION)],
    )
    samples = []
    for depth in (1, 2, 4, 8, 12, 16, 24):
        for width in (64, 256, 768):
            params = 50257 * width + 1024 * width + depth * 12 * width * width
            launches = 10 + 14 * depth
            cell_id = f"r1/{depth}x{width}"
            profile = {"device": "cuda", "prefill": {}, "decode": {
                "kernels": launches, "kernel_launches": launches, "graph_launches": 0,
                "kernel_time_ms": 0.01 * depth, "profiled_wall_ms": 1.0, "busy_fraction": 0.1}}
            con.execute(
                "INSERT INTO cells (cell_id, run_id, cell_key, model_name, n_layer, n_embd, n_head, n_inner, "
                "vocab_size, n_positions, params, backend, device, dtype, batch_size, prompt_len, gen_len, "
                "status, flags, profile) VALUES (?, 'r1', ?, ?, ?, ?, 2, ?, 50257, 1024, ?, 'hf-eager', 'cuda', "
                "'float32', 1, 128, 64, 'ok', [], ?)",
                [cell_id, f"{depth}x{width}", f"{depth}x{width}", depth, width, 4 * width, params, json.dumps(profile)],
            )
            memory_ms = params * 4 / 3000e9 * 1e3
            for step in range(20):
                latency = launches * per_launch_us / 1e3 + memory_ms + rng.normal(0, noise_ms)
                samples.append((cell_id, "decode", 0, step, latency, "cuda_event"))
    frame = pd.DataFrame(samples, columns=["cell_id", "phase", "rep", "step", "latency_ms", "timer"])  # noqa: F841
    con.execute("INSERT INTO samples BY NAME SELECT * FROM frame")
    return con


def test_planted_per_launch_overhead_is_recovered_inside_its_ci():
    floor = launch_floor(load_profiles(_store(per_launch_us=27.0)))
    (fit,) = fit_launch_overhead(floor, confidence=0.99)
    assert fit["status"] == "ok"
    low, high = fit["per_launch_us_ci"]
    assert low <= 27.0 <= high
    assert high - low < 2.0


def test_small_models_with_many_launches_are_launch_bound():
    floor = launch_floor(load_profiles(_store(per_launch_us=27.0)))
    assert (floor["verdict"] == "launch-bound").all()
    components = floor[["launch_ms", "memory_ms", "compute_ms"]].sum(axis=1)
    assert np.allclose(components, floor["predicted_ms"])
    # the calibration's 5 us floor is below the 27 us actually paid: the model says so
    assert (floor["measured_over_predicted"] > 1).all()


def test_too_few_distinct_launch_counts_gives_a_message_not_a_fit():
    con = _store(per_launch_us=10.0)
    con.execute("DELETE FROM samples WHERE cell_id NOT IN ('r1/1x64', 'r1/2x64', 'r1/4x64')")
    con.execute("DELETE FROM cells WHERE cell_id NOT IN ('r1/1x64', 'r1/2x64', 'r1/4x64')")
    (fit,) = fit_launch_overhead(launch_floor(load_profiles(con)))
    assert fit["status"] == "too_few_shapes"
    assert "at least 4" in fit["message"]


def test_an_inversion_is_explained_by_its_launch_counts():
    floor = launch_floor(load_profiles(_store(per_launch_us=27.0)))
    by_name = {row["model_name"]: row for _, row in floor.iterrows()}
    text = explain_pair(by_name["24x64"], by_name["2x768"])
    assert "24 layers" in text and "2 layers" in text
    assert "launch-bound" in text


def test_cells_without_a_profile_are_left_out():
    con = _store(per_launch_us=5.0)
    con.execute("UPDATE cells SET profile = NULL WHERE n_layer = 1")
    frame = load_profiles(con)
    assert not (frame["n_layer"] == 1).any()
    assert len(frame) == 18


@pytest.mark.parametrize("backend_error", ['{"error": "CUPTI unavailable"}'])
def test_a_failed_profile_is_skipped(backend_error):
    con = _store(per_launch_us=5.0)
    con.execute("UPDATE cells SET profile = ? WHERE n_layer = 2", [backend_error])
    assert not (load_profiles(con)["n_layer"] == 2).any()


def test_a_profiled_run_without_calibration_keeps_its_counts_and_has_no_ceilings():
    """As a run made through Ray: profiles on every cell, no calibration on the run."""
    con = _store(per_launch_us=5.0)
    con.execute("INSERT INTO runs (run_id, status, regime, device_kind) VALUES ('r2', 'finished', ?, 'cuda')", [REGIME])
    con.execute("INSERT INTO cells SELECT * REPLACE ('r2/' || cell_key AS cell_id, 'r2' AS run_id) FROM cells")
    con.execute("INSERT INTO samples SELECT * REPLACE ('r2/' || split_part(cell_id, '/', 2) AS cell_id) FROM samples")
    frame = load_profiles(con)
    uncalibrated = frame[frame["cell_id"].str.startswith("r2/")]
    assert len(uncalibrated) == 21 and uncalibrated["launches"].notna().all()
    assert uncalibrated["bandwidth_gb_s"].isna().all()
    assert (frame[frame["cell_id"].str.startswith("r1/")]["bandwidth_gb_s"] == 3000.0).all()


def test_cells_of_an_uncalibrated_run_get_no_verdict_and_stay_out_of_the_fit():
    con = _store(per_launch_us=27.0)
    con.execute("INSERT INTO runs (run_id, status, regime, device_kind) VALUES ('r2', 'finished', ?, 'cuda')", [REGIME])
    con.execute("INSERT INTO cells SELECT * REPLACE ('r2/' || cell_key AS cell_id, 'r2' AS run_id) FROM cells")
    con.execute("INSERT INTO samples SELECT * REPLACE ('r2/' || split_part(cell_id, '/', 2) AS cell_id) FROM samples")
    floor = launch_floor(load_profiles(con))
    uncalibrated = floor[floor["cell_id"].str.startswith("r2/")]
    assert uncalibrated["verdict"].isna().all() and uncalibrated["predicted_ms"].isna().all()
    assert floor[floor["cell_id"].str.startswith("r1/")]["verdict"].notna().all()
    (fit,) = fit_launch_overhead(floor)
    assert fit["n_cells"] == 21 and fit["per_launch_us"] == pytest.approx(27.0, abs=0.1)
