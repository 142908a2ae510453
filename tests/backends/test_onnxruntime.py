"""onnxruntime end to end on a tiny shape through the real protocol; refusals with a reason."""
from __future__ import annotations

import math

import pytest

from runner.protocol import ReferenceCache, measure_cell
from tests.runner.helpers import fast_settings, tiny_cell

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements.txt)")

SETTINGS = fast_settings()
GEN_LEN = 4


@pytest.mark.parametrize("batch_size", [1, 2])
def test_onnxruntime_cell_measures_every_phase_and_matches_hf_eager(batch_size):
    cell = tiny_cell("onnxruntime", batch_size=batch_size, gen_len=GEN_LEN)
    result = measure_cell(cell, SETTINGS, seed=7, references=ReferenceCache())
    assert result.status == "ok", result.error
    assert result.timer == "perf_counter_ns"
    assert len(result.prefill) == SETTINGS.prefill_reps
    assert len(result.decode) == SETTINGS.decode_reps and all(len(rep) == GEN_LEN for rep in result.decode)
    assert len(result.e2e) == SETTINGS.e2e_reps
    samples = result.prefill + [v for rep in result.decode for v in rep] + result.e2e + [result.cold_ms]
    assert all(math.isfinite(v) and v > 0 for v in samples)
    assert result.setup_s > 0  # export + session creation, never in a phase
    gate = result.correctness
    assert gate["ok"] and gate["tokens_match"] and gate["tokens_checked"] == GEN_LEN
    assert gate["max_rel_logit_error"] <= gate["tolerance"]
    assert "output_mismatch" not in result.flags


def test_onnxruntime_refuses_bfloat16_with_reason():
    result = measure_cell(tiny_cell("onnxruntime", dtype="bfloat16"), SETTINGS, seed=7)
    assert result.status == "unsupported"
    assert "float32" in result.error and "bfloat16" in result.error
    assert result.prefill == [] and result.decode == [] and result.e2e == []


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has the CUDA provider")
def test_onnxruntime_refuses_cuda_without_the_cuda_provider():
    cell = tiny_cell("onnxruntime").model_copy(update={"device": "cuda"})
    result = measure_cell(cell, SETTINGS, seed=7)
    assert result.status == "unsupported"
    assert "CUDAExecutionProvider" in result.error and "onnxruntime-gpu" in result.error
    assert result.prefill == []


def test_capabilities_list_the_engine_backends():
    from runner.capabilities import backend_capabilities

    rows = {row["backend"]: row for row in backend_capabilities()}
    assert rows["onnxruntime"]["dtypes"] == ["float32"]
    assert "vllm" in rows
