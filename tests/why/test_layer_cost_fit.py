"""Per-layer cost (analysis.why_layers): a planted hand-off, layer read rate and LM head read rate
come back inside their CIs; the calibrated terms use the run's own measured figures and say
"not calibrated" where it has none; weight-read limits at the measured and datasheet bandwidths."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.datasheet import HBM_BANDWIDTH_GB_S, datasheet_bandwidth_gb_s, datasheet_note
from analysis.why import load_profiles
from analysis.why_layers import (MIN_SHAPES, NO_DATASHEET, NOT_CALIBRATED, fit_table, layer_cost, layer_params,
                                 limit_table, shape_table, weight_read_bytes)
from store.db import connect_memory

H100 = "NVIDIA H100 80GB HBM3 | driver 1 | CUDA 13.0"
VOCAB = 50257
# What the planted step costs: c + h x phases + a x layer MB + b x head MB (us, us per MB)
PLANTED = {"intercept_us": 20.0, "handoff_us": 3.0, "layer_us_per_mb": 0.5, "head_us_per_mb": 0.4}
DEPTHS, WIDTHS = (1, 2, 4, 8, 12, 16, 24), (64, 128, 256, 512, 768)
SYNC = {"graph_kernel_us": 0.77, "graph_kernel_pdl_us": 0.50, "counter_handoff_us": 1.06}
CALIBRATION = {"bandwidth_gb_s": 3000.0, "matmul_tflops_float32": 50.0, "launch_us": 5.0, "device": "cuda"}


def _planted_ms(depth: int, width: int, phases: int) -> float:
    read = weight_read_bytes(pd.DataFrame([{"family": "gpt2", "n_layer": depth, "n_embd": width, "n_head": 2,
                                            "n_kv_head": 2, "n_inner": 4 * width, "vocab_size": VOCAB,
                                            "dtype": "float32"}])).iloc[0]
    return (PLANTED["intercept_us"] + PLANTED["handoff_us"] * phases
            + PLANTED["layer_us_per_mb"] * read["layers_bytes"] / 1e6
            + PLANTED["head_us_per_mb"] * read["head_bytes"] / 1e6) / 1e3


def _store(calibration: dict | None = CALIBRATION | SYNC, backend: str = "fused", options: dict | None = None,
           regime: str = H100, cv: float = 0.01, depths=DEPTHS, widths=WIDTHS, seed: int = 0, runs: int = 1):
    """Graph-replayed cells (4 kernels a layer + 1, one graph launch a step) whose decode median is
    the planted cost x (1 + N(0, cv)); `runs` runs of the same shapes."""
    rng = np.random.default_rng(seed)
    con = connect_memory()
    samples = []
    for run in range(runs):
        run_id = f"r{run}"
        con.execute("INSERT INTO runs (run_id, status, regime, device_kind, calibration, protocol_version) "
                    "VALUES (?, 'finished', ?, 'cuda', ?, 2)",
                    [run_id, regime, json.dumps(calibration) if calibration is not None else None])
        for depth in depths:
            for width in widths:
                phases = 4 * depth + 1
                cell_id = f"{run_id}/{depth}x{width}"
                profile = {"device": "cuda", "prefill": {}, "decode": {
                    "kernels": phases, "kernel_launches": 0, "graph_launches": 1, "kernel_time_ms": 0.001 * phases,
                    "profiled_wall_ms": 1.0, "busy_fraction": 0.5}}
                con.execute(
                    "INSERT INTO cells (cell_id, run_id, cell_key, model_name, n_layer, n_embd, n_head, n_inner, "
                    "vocab_size, n_positions, params, backend, backend_options, device, dtype, batch_size, prompt_len, "
                    "gen_len, status, flags, profile) VALUES (?, ?, ?, ?, ?, ?, 2, ?, ?, 1024, ?, ?, ?, 'cuda', "
                    "'float32', 1, 128, 64, 'ok', [], ?)",
                    [cell_id, run_id, f"{depth}x{width}", f"{depth}x{width}", depth, width, 4 * width, VOCAB,
                     VOCAB * width + 1024 * width + depth * 12 * width * width, backend, json.dumps(options or {}),
                     json.dumps(profile)])
                latency = _planted_ms(depth, width, phases) * (1 + rng.normal(0, cv))
                samples += [(cell_id, "decode", 0, step, 0, latency, "cuda_event") for step in range(3)]
    frame = pd.DataFrame(samples, columns=["cell_id", "phase", "rep", "step", "round", "latency_ms", "timer"])  # noqa: F841
    con.execute("INSERT INTO samples BY NAME SELECT * FROM frame")
    return con


def _cost(con, confidence: float = 0.95) -> dict[str, pd.DataFrame]:
    return layer_cost(load_profiles(con), confidence)


def test_fit_recovers_the_planted_handoff_layer_and_head_costs_within_their_cis():
    """One draw, four coefficients: at 99% each, so that the check is of the fit, not of the seed
    (the rate at 95% is the coverage test's)."""
    (fit,) = _cost(_store(), confidence=0.99)["fits"].to_dict("records")
    assert fit["status"] == "ok" and fit["n_shapes"] == len(DEPTHS) * len(WIDTHS)
    for name, planted in PLANTED.items():
        assert fit[f"{name}_ci_low"] <= planted <= fit[f"{name}_ci_high"], (name, fit[name])
    # not by a CI wide enough to hold anything: 1% noise pins the hand-off to within a fifth
    assert fit["handoff_us_ci_high"] - fit["handoff_us_ci_low"] < 0.2 * PLANTED["handoff_us"]
    assert fit["layer_gb_s"] == pytest.approx(1e3 / PLANTED["layer_us_per_mb"], rel=0.1)
    assert fit["head_gb_s"] == pytest.approx(1e3 / PLANTED["head_us_per_mb"], rel=0.1)
    assert fit["phases_per_layer"] == pytest.approx(4)


def test_each_shapes_fitted_layer_and_head_terms_hold_the_planted_ones():
    shapes = _cost(_store(), confidence=0.99)["shapes"]
    per_layer = 4 * PLANTED["handoff_us"] + PLANTED["layer_us_per_mb"] * shapes["layer_bytes"] / 1e6
    head = PLANTED["head_us_per_mb"] * shapes["head_bytes"] / 1e6
    assert ((shapes["per_layer_us_fitted_ci_low"] <= per_layer) & (per_layer <= shapes["per_layer_us_fitted_ci_high"])).all()
    assert ((shapes["head_us_fitted_ci_low"] <= head) & (head <= shapes["head_us_fitted_ci_high"])).all()


def test_the_fits_cis_cover_the_planted_handoff_at_about_their_rate():
    """Over 40 independent draws of 3% noise on 15 shapes, the 95% CI of the hand-off holds the
    planted value in at least 35 (38 expected, binomial SD 1.4)."""
    profiles = load_profiles(_store(cv=0.0, depths=(1, 2, 4, 8, 16), widths=(64, 256, 768)))
    exact = profiles["decode_ms"].to_numpy()
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(40):
        noisy = profiles.assign(decode_ms=exact * (1 + rng.normal(0, 0.03, len(exact))))
        (fit,) = layer_cost(noisy)["fits"].to_dict("records")
        covered += fit["handoff_us_ci_low"] <= PLANTED["handoff_us"] <= fit["handoff_us_ci_high"]
    assert covered >= 35, covered


def test_a_shape_measured_in_several_runs_enters_the_fit_once():
    one, three = _cost(_store(runs=1))["fits"].iloc[0], _cost(_store(runs=3))["fits"].iloc[0]
    assert one["n_shapes"] == three["n_shapes"] == len(DEPTHS) * len(WIDTHS)
    assert three["n_runs"] == 3


def test_calibrated_terms_use_the_handoff_this_backend_pays_and_the_measured_copy_bandwidth():
    cases = {("fused", None): SYNC["graph_kernel_pdl_us"], ("fused", '{"pdl": false}'): SYNC["graph_kernel_us"],
             ("cuda-graph", None): SYNC["graph_kernel_us"]}
    for (backend, options), expected in cases.items():
        shapes = _cost(_store(backend=backend, options=json.loads(options) if options else None))["shapes"]
        assert (shapes["handoff_us"] == expected).all(), backend
        layer_us = 4 * expected + shapes["layer_bytes"] / 3000e9 * 1e6
        np.testing.assert_allclose(shapes["per_layer_us_calibrated"], layer_us)
        np.testing.assert_allclose(shapes["head_us_calibrated"], shapes["head_bytes"] / 3000e9 * 1e6)
        np.testing.assert_allclose(shapes["floor_ms_calibrated"],
                                   shapes["phases"] * expected / 1e3 + shapes["read_bytes"] / 3000e9 * 1e3)


def test_a_persistent_step_is_priced_at_the_counter_hand_off_and_left_out_of_the_fit():
    costs = _cost(_store(options={"persistent": True}))
    assert (costs["shapes"]["handoff_basis"] == "completion-counter hand-off").all()
    assert costs["shapes"]["handoff_us"].eq(SYNC["counter_handoff_us"]).all()
    assert costs["fits"].iloc[0]["status"] == "too_few_shapes"  # its profile counts one kernel a step, not its phases


def test_a_run_without_the_hand_off_probe_says_not_calibrated_and_keeps_its_bandwidth():
    costs = _cost(_store(calibration=CALIBRATION))
    shapes, fits = costs["shapes"], costs["fits"]
    assert (shapes["handoff_basis"] == NOT_CALIBRATED).all() and shapes["per_layer_us_calibrated"].isna().all()
    assert shapes["head_us_calibrated"].notna().all(), "the copy bandwidth was measured: the head's read time stands"
    row = fit_table(fits).iloc[0]
    assert row["hand-off µs, calibrated"] == NOT_CALIBRATED and row["calibrated as"] == "kernel in a CUDA graph with PDL"
    assert (shape_table(shapes)["per layer µs, calibrated"] == NOT_CALIBRATED).all()
    assert fits.iloc[0]["status"] == "ok", "the fit needs no calibration"


def test_an_uncalibrated_run_has_no_measured_limit_but_keeps_the_datasheet_one():
    shapes = _cost(_store(calibration=None))["shapes"]
    assert shapes["ratio"].isna().all() and shapes["ratio_datasheet"].notna().all()
    table = limit_table(shapes)
    assert (table["x limit, measured copy"] == NOT_CALIBRATED).all()
    assert not (table["x limit, datasheet"] == NO_DATASHEET).any()


def test_ratios_to_the_weight_read_limit_at_the_measured_and_the_datasheet_bandwidth():
    shapes = _cost(_store())["shapes"]
    np.testing.assert_allclose(shapes["limit_ms"], shapes["read_bytes"] / 3000e9 * 1e3)
    np.testing.assert_allclose(shapes["ratio"], shapes["decode_ms"] / shapes["limit_ms"])
    np.testing.assert_allclose(shapes["ratio_datasheet"], shapes["decode_ms"] / (shapes["read_bytes"] / 3350e9 * 1e3))
    assert (shapes["ratio_datasheet"] > shapes["ratio"]).all(), "the datasheet is faster than any copy"


def test_a_gpu_without_a_datasheet_figure_says_so():
    shapes = _cost(_store(regime="NVIDIA TEST GPU | driver 1 | CUDA 13.0"))["shapes"]
    assert shapes["ratio_datasheet"].isna().all()
    assert (limit_table(shapes)["x limit, datasheet"] == NO_DATASHEET).all()


def test_too_few_shapes_give_a_message_not_a_fit():
    (fit,) = _cost(_store(depths=(1, 2), widths=(64, 128)))["fits"].to_dict("records")
    assert fit["status"] == "too_few_shapes" and str(MIN_SHAPES) in fit["message"]
    assert fit_table(pd.DataFrame([fit])).iloc[0]["hand-off µs, fitted [95% CI]"] == ""


def test_datasheet_bandwidths_are_the_cited_ones_looked_up_by_device_name():
    assert datasheet_bandwidth_gb_s("NVIDIA H100 80GB HBM3 | driver 580 | CUDA 13.0") == 3350.0
    assert datasheet_bandwidth_gb_s("NVIDIA H200 | driver 580 | CUDA 13.0 | host 5be464da") == 4800.0
    assert datasheet_bandwidth_gb_s("CPU AMD EPYC | 2 threads") is None
    assert all(source.startswith("https://www.nvidia.com/") for _, _, source in HBM_BANDWIDTH_GB_S.values())
    assert "3.35 TB/s" in datasheet_note(H100) and "no datasheet figure" in datasheet_note("CPU AMD EPYC | 2 threads")


@pytest.mark.parametrize("family, tied", [("gpt2", True), ("llama", True), ("llama", False), ("qwen2", False)])
def test_layer_bytes_agree_with_the_runners_parameter_count(family, tied):
    from runner.models import ModelSpec

    spec = ModelSpec(name="x", family=family, n_layer=5, n_embd=256, n_head=8, n_kv_head=2 if family != "gpt2" else None,
                     tie_embeddings=tied)
    per_layer = layer_params(family, spec.n_embd, spec.inner, spec.n_head, spec.kv_heads)
    embeddings = spec.vocab * spec.n_embd * (1 if tied else 2) + (spec.context * spec.n_embd if family == "gpt2" else 0)
    norm = 2 * spec.n_embd if family == "gpt2" else spec.n_embd
    assert spec.n_layer * per_layer + embeddings + norm == spec.approx_params()


def test_the_lm_head_holds_77_percent_of_gpt2_25ms_weights():
    from runner.models import REGISTRY

    spec = REGISTRY["gpt2-25m"]
    read = weight_read_bytes(pd.DataFrame([{"family": "gpt2", "n_layer": spec.n_layer, "n_embd": spec.n_embd,
                                            "n_head": spec.n_head, "n_kv_head": spec.n_head, "n_inner": spec.inner,
                                            "vocab_size": spec.vocab, "dtype": "float32"}])).iloc[0]
    assert read["head_bytes"] / (spec.approx_params() * 4) == pytest.approx(0.77, abs=0.005)
    assert read["head_share"] == pytest.approx(0.78, abs=0.01)  # of the bytes a step reads (no position table)


def test_no_profiled_cells_give_empty_tables_a_page_can_still_select_from():
    from analysis.why_layers import select

    empty = load_profiles(connect_memory())
    costs = layer_cost(empty)
    for frame in costs.values():
        assert select(frame, H100, "float32", (1, 128, 64)).empty
