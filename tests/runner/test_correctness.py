"""The static-KV-cache model against HF eager, and the gate that catches a wrong backend."""
from __future__ import annotations

import torch

from runner import correctness
from runner.backends.hf import HFSession
from runner.backends.static_gpt2 import StaticGPT2, StaticSession
from runner.models import build_model
from runner.models import make_inputs
from tests.runner.helpers import tiny_cell, tiny_spec

# Past 128 generated tokens is where compiled decode over a dynamic cache is known to go wrong.
LONG_GEN = 136


class PerturbedDecode(HFSession):
    """A deliberately wrong backend: correct prefill, decode logits nudged off the model's."""

    def __init__(self, model, scale: float) -> None:
        super().__init__(model)
        self.scale = scale

    def decode(self, tokens):
        logits = super().decode(tokens)
        noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
        return logits + self.scale * logits.abs().mean() * noise


def reference_for(cell, model):
    ids = make_inputs(cell, seed=3)
    return correctness.make_reference(HFSession(model), ids, cell.gen_len)


@torch.inference_mode()
def test_static_cache_model_matches_hf_eager_logits_at_every_step_past_128_tokens():
    spec = tiny_spec(2, 64, 2, n_positions=256)
    cell = tiny_cell(spec=spec, prompt_len=12, gen_len=LONG_GEN, batch_size=2)
    model = build_model(spec, seed=3)
    reference = reference_for(cell, model)

    static = StaticSession(StaticGPT2(model, cell.batch_size, cell.prompt_len + cell.gen_len + 1), cell.prompt_len)
    logits, _ = correctness.greedy_logits(static, reference.input_ids, cell.gen_len, forced=reference.tokens)
    assert logits.shape == reference.logits.shape == (LONG_GEN, 2, spec.vocab_size)
    error = (logits - reference.logits).norm(dim=-1) / reference.logits.norm(dim=-1)
    assert error.max() < 1e-5, f"worst step {int(error.amax(dim=1).argmax())}: {float(error.max()):.2e}"

    # free-running greedy tokens agree all the way (no near-tie cut the check short)
    gate = correctness.compare(static, reference, "float32", "cpu")
    assert gate["ok"] and gate["tokens_match"] and gate["tokens_checked"] == LONG_GEN


@torch.inference_mode()
def test_static_session_prefill_resets_the_cache_position():
    spec = tiny_spec()
    cell = tiny_cell(spec=spec, gen_len=6)
    model = build_model(spec, seed=3)
    reference = reference_for(cell, model)
    static = StaticSession(StaticGPT2(model, 1, cell.prompt_len + cell.gen_len + 1), cell.prompt_len)
    first, _ = correctness.greedy_logits(static, reference.input_ids, cell.gen_len)
    second, _ = correctness.greedy_logits(static, reference.input_ids, cell.gen_len)
    assert torch.equal(first, second)


@torch.inference_mode()
def test_gate_passes_the_eager_backend_against_itself():
    spec = tiny_spec()
    cell = tiny_cell(spec=spec, gen_len=8)
    model = build_model(spec, seed=3)
    gate = correctness.compare(HFSession(model), reference_for(cell, model), "float32", "cpu")
    assert gate == {"ok": True, "max_rel_logit_error": 0.0, "tolerance": 1e-3, "tokens_checked": 8,
                    "tokens_total": 8, "tokens_match": True}


@torch.inference_mode()
def test_gate_catches_a_backend_whose_decode_logits_are_wrong():
    spec = tiny_spec()
    cell = tiny_cell(spec=spec, gen_len=8)
    model = build_model(spec, seed=3)
    gate = correctness.compare(PerturbedDecode(model, scale=0.05), reference_for(cell, model), "float32", "cpu")
    assert gate["ok"] is False
    assert gate["max_rel_logit_error"] > gate["tolerance"]


@torch.inference_mode()
def test_gate_tolerates_rounding_noise_below_the_dtype_tolerance():
    spec = tiny_spec()
    cell = tiny_cell(spec=spec, gen_len=8)
    model = build_model(spec, seed=3)
    gate = correctness.compare(PerturbedDecode(model, scale=1e-6), reference_for(cell, model), "float32", "cpu")
    assert gate["ok"] is True and 0 < gate["max_rel_logit_error"] < 1e-4


@torch.inference_mode()
def test_gate_catches_a_model_with_one_weight_changed():
    spec = tiny_spec()
    cell = tiny_cell(spec=spec, gen_len=6)
    reference = reference_for(cell, build_model(spec, seed=3))
    broken = build_model(spec, seed=3)
    broken.transformer.h[1].mlp.c_proj.weight[0, 0] += 5.0
    gate = correctness.compare(HFSession(broken), reference, "float32", "cpu")
    assert gate["ok"] is False and gate["max_rel_logit_error"] > 1e-3


@torch.inference_mode()
def test_gate_catches_a_different_model_even_when_logit_scales_agree():
    spec = tiny_spec()
    cell = tiny_cell(spec=spec, gen_len=6)
    reference = reference_for(cell, build_model(spec, seed=3))
    gate = correctness.compare(HFSession(build_model(spec, seed=4)), reference, "bfloat16", "cpu")
    assert gate["ok"] is False
