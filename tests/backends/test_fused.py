"""The fused backend's Triton kernels against the eager static model, and what it refuses.

Without a GPU the kernels run through Triton's interpreter (TRITON_INTERPRET=1, numpy on the
CPU; conftest.py sets the flag before triton is imported). With a GPU the same tests run
the compiled kernels (and a captured CUDA graph) on it. The shapes are tiny
and odd on purpose: a width, head size and vocabulary that are not powers of two exercise
every mask, and the interpreter costs about a millisecond per program and operation.
"""
from __future__ import annotations

import pytest
import torch

from runner.backends import get_backend
from runner.backends.static_gpt2 import StaticGPT2, StaticSession
from runner.correctness import TOLERANCE, compare, make_reference
from runner.models import build_model
from runner.protocol import measure_cell
from tests.runner.helpers import fast_settings, tiny_cell, tiny_spec

pytest.importorskip("triton", reason="the fused backend needs triton (requirements-dev.txt)")
pytest.importorskip("numpy", reason="Triton's interpreter needs numpy")

# width 48 with 2 heads: head size 24 and vocabulary 300 are not powers of two
ODD = dict(n_embd=48, n_head=2, vocab_size=300, n_positions=96)
# the error left when only summation order differs; bf16 rounds weights and the KV cache
KERNEL_TOLERANCE = {"float32": 1e-5, "bfloat16": TOLERANCE["bfloat16"]}


@pytest.fixture(scope="module")
def device():
    """cuda with a GPU; else the CPU, through the interpreter that conftest.py switched on."""
    if torch.cuda.is_available():
        return "cuda"
    if not _interpreted():
        pytest.fail("Triton kernels on the CPU need TRITON_INTERPRET=1 set before triton is imported "
                    "(tests/backends/conftest.py sets it)")
    return "cpu"


def _interpreted() -> bool:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    from runner.backends import fused_kernels

    # Triton's own library (tl.sum) is decorated when triton is first imported, ours on import
    return all(isinstance(f, InterpretedFunction) for f in (tl.standard.sum, fused_kernels.qkv_kernel))


def _sessions(spec, dtype, batch, prompt_len, gen_len, device):
    """A fused session and the eager static model it must match: the same weights, upcast."""
    from runner.backends.fused import FusedSession

    model = build_model(spec, dtype=dtype, device=device, seed=3)
    reference = build_model(spec, dtype=dtype, device=device, seed=3).float()
    max_len = prompt_len + gen_len + 1
    fused = FusedSession(StaticGPT2(model, batch, max_len), batch, prompt_len)
    eager = StaticSession(StaticGPT2(reference, batch, max_len), prompt_len)
    return fused, eager


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("dtype,batch", [(torch.float32, 2), (torch.bfloat16, 1)])
def test_decode_steps_match_the_eager_static_model(device, dtype, batch):
    spec = tiny_spec(n_layer=2, **ODD)
    prompt_len, steps = 7, 3
    fused, eager = _sessions(spec, dtype, batch, prompt_len, steps, device)
    ids = torch.randint(0, spec.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        fused.prefill(ids)
        token = eager.prefill(ids).argmax(-1, keepdim=True)
        for _ in range(steps):
            fused.buffers["logits"].fill_(float("nan"))  # every logit must be written by the step
            got = fused.decode(token)
            want = eager.decode(token)
            assert torch.isfinite(got).all()
            assert _relative_error(got, want) <= KERNEL_TOLERANCE[str(dtype).removeprefix("torch.")]
            token = want.argmax(-1, keepdim=True)
    assert fused.pos == eager.pos == prompt_len + steps


def test_attention_split_along_a_long_cache_matches(device):
    # 70 positions with head size 24 (blocks of 64 positions): two flash-decoding splits to merge
    from runner.backends.fused_kernels import DecodePlan

    spec = tiny_spec(n_layer=1, **ODD)
    prompt_len, steps = 70, 2
    fused, eager = _sessions(spec, torch.float32, 1, prompt_len, steps, device)
    assert fused.plan.S == 2 and fused.plan.S * fused.plan.CHUNK >= prompt_len + steps
    ids = torch.randint(0, spec.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(2)).to(device)
    with torch.inference_mode():
        fused.prefill(ids)
        token = eager.prefill(ids).argmax(-1, keepdim=True)
        for _ in range(steps):
            want = eager.decode(token)
            assert _relative_error(fused.decode(token), want) <= KERNEL_TOLERANCE["float32"]
            token = want.argmax(-1, keepdim=True)
    assert isinstance(fused.plan, DecodePlan)


def test_fused_session_passes_the_correctness_gate_against_hf_eager(device):
    from runner.backends.fused import Fused
    from runner.backends.hf import HFSession

    spec = tiny_spec(n_layer=2, **ODD)
    cell = tiny_cell("fused", spec=spec, prompt_len=6, gen_len=3).model_copy(update={"device": device})
    ids = torch.randint(0, spec.vocab_size, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        reference = make_reference(HFSession(build_model(spec, device=device, seed=5)), ids.to(device), cell.gen_len)
        session = Fused().prepare(build_model(spec, device=device, seed=5), cell)
        gate = compare(session, reference, "float32", device)
    assert gate["ok"] and gate["tokens_match"], gate
    assert gate["max_rel_logit_error"] <= gate["tolerance"]


def test_a_step_is_four_kernels_a_layer_plus_the_head(device):
    from runner.backends.fused import FusedSession

    model = build_model(tiny_spec(n_layer=3, **ODD), device=device)
    session = FusedSession(StaticGPT2(model, 1, 8), 1, 4, use_graph=False)
    assert session.kernels_per_step == 13


def test_decode_plan_caps_the_splits_and_covers_the_cache():
    from runner.backends.fused_kernels import MAX_SPLITS, DecodePlan

    for max_len, width, heads in [(193, 384, 2), (1025, 768, 2), (577, 80, 2), (20, 512, 8)]:
        plan = DecodePlan(n_embd=width, n_head=heads, n_inner=4 * width, vocab=50257, max_len=max_len, batch=1)
        assert 1 <= plan.S <= MAX_SPLITS and plan.S * plan.CHUNK >= max_len
        assert plan.CHUNK % plan.BL == 0
        for cols in (plan.qkv_cols, plan.out_cols, plan.mlp_cols):
            assert plan.BLOCK_E * cols <= 8192


SETTINGS = fast_settings()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_on_the_cpu_is_unsupported_with_a_reason(dtype):
    result = measure_cell(tiny_cell("fused", dtype), SETTINGS, seed=0)
    assert result.status == "unsupported" and result.error == "fused runs on cuda, not cpu"


def _cuda_cell(**changes):
    cell = tiny_cell("fused").model_copy(update={"device": "cuda"})
    return cell.model_copy(update=changes)


@pytest.mark.parametrize("changes,needle", [
    (dict(dtype="float16"), "float32, bfloat16, not float16"),
    (dict(batch_size=9), "batch sizes up to 8, not 9"),
    (dict(model=tiny_spec(n_embd=2048, n_head=2)), "n_embd up to 1024, not 2048"),
    (dict(model=tiny_spec(n_inner=8192)), "MLP size up to 4096, not 8192"),
    (dict(prompt_len=120, gen_len=8), "does not fit the model's 128 positions"),
])
def test_fused_refuses_what_its_kernels_do_not_cover(changes, needle):
    reason = get_backend("fused").unsupported_reason(_cuda_cell(**changes))
    assert reason is not None and needle in reason


def test_fused_accepts_small_batches_in_both_dtypes_on_cuda():
    backend = get_backend("fused")
    assert backend.availability() is None
    for dtype in ("float32", "bfloat16"):
        assert backend.unsupported_reason(_cuda_cell(dtype=dtype, batch_size=4)) is None


def test_fused_refuses_a_config_its_kernels_do_not_implement():
    from runner.backends.fused import config_reason
    from runner.models import hf_config

    config = hf_config(tiny_spec())
    assert config_reason(config) is None
    config.activation_function = "relu"
    assert "activation_function 'relu'" in config_reason(config)
    config.activation_function = "gelu_new"
    config.scale_attn_by_inverse_layer_idx = True
    assert "1/sqrt(head_dim)" in config_reason(config)
