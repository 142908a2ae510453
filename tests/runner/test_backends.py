"""Each CPU-capable backend measured end to end on a tiny shape; refusals stored with a reason."""
from __future__ import annotations

import math

import pytest

from runner.backends import get_backend
from runner.protocol import ReferenceCache, measure_cell
from tests.runner.helpers import fast_settings, tiny_cell

GEN_LEN = 4
SETTINGS = fast_settings()


def assert_measured(result, settings=SETTINGS, gen_len=GEN_LEN):
    """What every ok cell must hold: each phase with its sample count, sane numbers, a passed gate."""
    assert result.status == "ok", result.error
    assert result.error is None
    assert result.timer == "perf_counter_ns"
    assert len(result.prefill) == settings.prefill_reps
    assert len(result.decode) == settings.decode_reps
    assert all(len(rep) == gen_len for rep in result.decode)
    assert len(result.e2e) == settings.e2e_reps
    samples = result.prefill + [v for rep in result.decode for v in rep] + result.e2e + [result.cold_ms]
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in samples)
    for seconds in (result.setup_s, result.warmup_s, result.measured_s, result.check_s):
        assert seconds is not None and math.isfinite(seconds) and seconds >= 0
    assert result.warmup_iters >= settings.warmup_min_iters
    assert result.params > 0
    # a whole generation costs more than one of its decode steps
    assert min(result.e2e) > min(v for rep in result.decode for v in rep)
    gate = result.correctness
    assert gate["ok"] is True and gate["tokens_match"] is True
    assert gate["tokens_total"] == gen_len and gate["max_rel_logit_error"] <= gate["tolerance"]
    assert "output_mismatch" not in result.flags
    assert result.telemetry is None  # nvml only on the GPU


@pytest.mark.parametrize("backend", ["hf-eager", "hf-sdpa"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hf_backend_measures_every_phase_and_passes_the_gate(backend, dtype):
    result = measure_cell(tiny_cell(backend, dtype, gen_len=GEN_LEN), SETTINGS, seed=5, references=ReferenceCache())
    assert_measured(result)
    assert result.params == 2 * (12 * 64 * 64 + 13 * 64) + (1024 + 128) * 64 + 2 * 64


def test_batched_cell_runs_and_passes_the_gate():
    result = measure_cell(tiny_cell("hf-sdpa", batch_size=3), SETTINGS, seed=5, references=ReferenceCache())
    assert_measured(result)


def test_eager_cell_is_bit_identical_to_its_reference():
    result = measure_cell(tiny_cell("hf-eager"), SETTINGS, seed=5, references=ReferenceCache())
    assert result.correctness["max_rel_logit_error"] == 0.0


def test_sample_counts_follow_the_settings():
    settings = fast_settings(prefill_reps=5, decode_reps=3, e2e_reps=4)
    result = measure_cell(tiny_cell("hf-eager", gen_len=6), settings, seed=1, references=ReferenceCache())
    assert_measured(result, settings, gen_len=6)


def test_without_correctness_check_no_gate_is_stored():
    settings = fast_settings(check_correctness=False)
    result = measure_cell(tiny_cell("hf-eager"), settings, seed=1, references=ReferenceCache())
    assert result.status == "ok" and result.correctness is None and result.check_s is None


@pytest.mark.slow
def test_torch_compile_compiles_once_measures_every_phase_and_matches_eager():
    result = measure_cell(tiny_cell("torch-compile", "float32", gen_len=GEN_LEN), SETTINGS, seed=5,
                          references=ReferenceCache())
    assert_measured(result)
    # compiling both graphs is setup: it must not leak into the cold sample or the phases
    assert result.setup_s * 1000 > 10 * max(result.prefill)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cuda_graph_on_the_cpu_is_stored_as_unsupported_with_a_reason(dtype):
    result = measure_cell(tiny_cell("cuda-graph", dtype), SETTINGS, seed=0, references=ReferenceCache())
    assert result.status == "unsupported"
    assert result.error == "cuda-graph runs on cuda, not cpu"
    assert result.prefill == [] and result.decode == [] and result.e2e == [] and result.params is None


@pytest.mark.parametrize("backend", ["hf-eager", "hf-sdpa", "torch-compile"])
def test_float16_on_the_cpu_is_unsupported_with_a_reason(backend):
    result = measure_cell(tiny_cell(backend, "float16"), SETTINGS, seed=0, references=ReferenceCache())
    assert result.status == "unsupported"
    assert "float16" in result.error and "bfloat16" in result.error


def test_torch_compile_mode_that_needs_a_gpu_is_unsupported_on_the_cpu():
    result = measure_cell(tiny_cell("torch-compile", mode="reduce-overhead"), SETTINGS, seed=0)
    assert result.status == "unsupported" and "needs a GPU" in result.error


def test_unknown_torch_compile_mode_is_unsupported_naming_the_modes():
    result = measure_cell(tiny_cell("torch-compile", mode="turbo"), SETTINGS, seed=0)
    assert result.status == "unsupported" and "'turbo'" in result.error and "max-autotune" in result.error


def test_cuda_device_without_a_gpu_is_unsupported():
    cell = tiny_cell("hf-eager").model_copy(update={"device": "cuda"})
    result = measure_cell(cell, SETTINGS, seed=0)
    assert result.status == "unsupported" and "CUDA" in result.error


def test_unknown_backend_name_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        get_backend("tensorrt")
