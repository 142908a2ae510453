"""The fused backend's llama block (llama, and qwen2 with its QKV bias) against the eager
static model and hf-eager, and what it refuses.

As in test_fused.py, the kernels run through Triton's interpreter without a GPU (conftest.py)
and compiled with one. HF initialises norm weights to ones and biases to zeros, which would
hide a norm weight or a bias the kernels dropped: every test model gets random ones. The
shapes are tiny: 2 layers x 64 with 4 query heads on 2 KV heads (1 for qwen2), and an odd
one (6 heads on 2 KV heads, a group of 3 padded to 4; head size 12; MLP 100; vocabulary 300)
with a prompt long enough for two flash-decoding splits.
"""
from __future__ import annotations

import copy

import pytest
import torch

from runner.backends import Unsupported, get_backend
from runner.backends.static_gpt2 import StaticSession
from runner.backends.static_model import static_model
from runner.correctness import TOLERANCE, compare, make_reference
from runner.models import ModelSpec, build_model
from runner.protocol import measure_cell
from tests.runner.helpers import fast_settings, tiny_cell

pytest.importorskip("triton", reason="the fused backend needs triton (requirements-dev.txt)")
pytest.importorskip("numpy", reason="Triton's interpreter needs numpy")

GQA = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64)
ODD = dict(n_layer=2, n_embd=72, n_head=6, n_kv_head=2, n_inner=100, vocab_size=300, n_positions=96)
# the error left when only summation order differs; bf16 rounds weights, activations and the KV cache
KERNEL_TOLERANCE = {"float32": 1e-5, "bfloat16": TOLERANCE["bfloat16"]}


@pytest.fixture(scope="module")
def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _spec(family: str, **shape) -> ModelSpec:
    return ModelSpec(name=f"{family}-tiny", family=family, **shape)


def _randomise_norms_and_biases(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.5 * torch.randn(param.shape, generator=generator))
            elif name.endswith(".bias"):
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))


def _model(spec, dtype, device, seed=3):
    model = build_model(spec, dtype=dtype, device=device, seed=seed)
    _randomise_norms_and_biases(model, seed)
    return model


def _sessions(spec, dtype, batch, prompt_len, gen_len, device, **options):
    """A fused session and the eager static model it must match: the same weights, upcast."""
    from runner.backends.fused import FusedSession

    model = _model(spec, dtype, device)
    reference = copy.deepcopy(model).float()
    max_len = prompt_len + gen_len + 1
    fused = FusedSession(static_model(model, batch, max_len), batch, prompt_len, **options)
    eager = StaticSession(static_model(reference, batch, max_len), prompt_len)
    return fused, eager


@pytest.mark.parametrize("family,shape,dtype,batch,prompt_len", [
    ("llama", dict(GQA, n_kv_head=2), torch.float32, 2, 7),
    ("llama", dict(GQA, n_kv_head=2), torch.bfloat16, 1, 7),
    ("qwen2", dict(GQA, n_kv_head=1, tie_embeddings=False), torch.float32, 1, 7),
    ("qwen2", dict(GQA, n_kv_head=1), torch.bfloat16, 2, 7),
    ("llama", ODD, torch.float32, 1, 70),
], ids=["llama-f32-b2", "llama-bf16", "qwen2-kv1-untied-f32", "qwen2-kv1-bf16-b2", "llama-odd-two-splits"])
def test_llama_decode_steps_match_the_eager_static_model(device, family, shape, dtype, batch, prompt_len):
    from runner.backends.fused_kernels import pdl_unsupported_reason

    spec = _spec(family, **shape)
    steps = 3
    fused, eager = _sessions(spec, dtype, batch, prompt_len, steps, device)
    capability = torch.cuda.get_device_capability() if device == "cuda" else None
    assert fused.pdl == (pdl_unsupported_reason(capability) is None)  # asked by default, run where it can
    if prompt_len > 64:
        assert fused.plan.S == 2  # the merge of flash-decoding splits is exercised
    ids = torch.randint(0, spec.vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        fused.prefill(ids)
        token = eager.prefill(ids).argmax(-1, keepdim=True)
        for _ in range(steps):
            fused.buffers["logits"].fill_(float("nan"))  # every logit must be written by the step
            got = fused.decode(token).float()
            want = eager.decode(token)
            assert torch.isfinite(got).all()
            assert ((got - want).norm() / want.norm()).item() <= KERNEL_TOLERANCE[str(dtype).removeprefix("torch.")]
            token = want.argmax(-1, keepdim=True)
    assert fused.pos == eager.pos == prompt_len + steps


def test_pdl_off_runs_the_same_llama_step(device):
    spec = _spec("llama", **GQA, n_kv_head=2)
    fused, eager = _sessions(spec, torch.float32, 1, 5, 1, device, pdl=False)
    assert fused.pdl is False
    ids = torch.randint(0, spec.vocab, (1, 5), generator=torch.Generator().manual_seed(2)).to(device)
    with torch.inference_mode():
        fused.prefill(ids)
        token = eager.prefill(ids).argmax(-1, keepdim=True)
        got, want = fused.decode(token), eager.decode(token)
    assert ((got - want).norm() / want.norm()).item() <= KERNEL_TOLERANCE["float32"]


@pytest.mark.parametrize("family,kv,dtype", [("llama", 2, "float32"), ("qwen2", 1, "bfloat16")])
def test_fused_llama_session_passes_the_correctness_gate_against_hf_eager(device, family, kv, dtype):
    from runner.backends.fused import Fused
    from runner.backends.hf import HFSession

    spec = _spec(family, **GQA, n_kv_head=kv)
    cell = tiny_cell("fused", dtype, spec=spec, prompt_len=6, gen_len=3).model_copy(update={"device": device})
    ids = torch.randint(0, spec.vocab, (1, 6), generator=torch.Generator().manual_seed(4)).to(device)
    with torch.inference_mode():
        reference = make_reference(HFSession(_model(spec, torch.float32, device, seed=5)), ids, cell.gen_len)
        session = Fused().prepare(_model(spec, getattr(torch, dtype), device, seed=5), cell)
        gate = compare(session, reference, dtype, device)
    assert gate["ok"] and gate["tokens_match"], gate
    assert gate["max_rel_logit_error"] <= gate["tolerance"]


def test_a_llama_step_is_four_kernels_a_layer_plus_the_head(device):
    from runner.backends.fused import FusedSession

    model = build_model(_spec("llama", **dict(GQA, n_layer=3), n_kv_head=2), device=device)
    session = FusedSession(static_model(model, 1, 8), 1, 4, use_graph=False)
    assert session.kernels_per_step == session.phases_per_step == 13
    # one attention program per KV head and split: each KV head is read once for its group
    assert session.plan.items()["attention"] == 2 * session.plan.S


def test_the_gqa_plan_covers_the_cache_and_pads_the_group():
    from runner.backends.fused_kernels import MAX_SPLITS, TILE, DecodePlan

    # SmolLM2-135M (9 heads on 3), Qwen2.5-0.5B (14 on 2), and a GQA group of one
    for width, heads, kv, max_len in [(576, 9, 3, 193), (896, 14, 2, 1025), (64, 4, 4, 20)]:
        plan = DecodePlan(n_embd=width, n_head=heads, n_inner=3 * width, vocab=49152, max_len=max_len, batch=1,
                          block="llama", n_kv_head=kv)
        assert plan.BG >= heads // kv and plan.BG & (plan.BG - 1) == 0
        assert 1 <= plan.S <= MAX_SPLITS and plan.S * plan.CHUNK >= max_len and plan.CHUNK % plan.BL == 0
        assert plan.BLOCK_E * 2 * plan.qkv_pairs <= TILE
        assert plan.items()["qkv"] * plan.qkv_pairs * 2 >= (heads + 2 * kv) * width // heads


def test_a_plan_refuses_a_block_the_kernels_do_not_implement():
    from runner.backends.fused_kernels import DecodePlan

    with pytest.raises(ValueError, match="block: the kernels implement gpt2, llama, not 'mamba'"):
        DecodePlan(n_embd=64, n_head=4, n_inner=256, vocab=256, max_len=8, batch=1, block="mamba")
    with pytest.raises(ValueError, match="n_kv_head"):
        DecodePlan(n_embd=64, n_head=4, n_inner=256, vocab=256, max_len=8, batch=1, n_kv_head=2)


def test_the_persistent_step_refuses_llama_with_a_one_line_reason(device):
    from runner.backends.fused import PERSISTENT_GPT2_ONLY, FusedSession

    assert "\n" not in PERSISTENT_GPT2_ONLY and "persistent = false" in PERSISTENT_GPT2_ONLY
    model = build_model(_spec("llama", **GQA, n_kv_head=2), device=device)
    with pytest.raises(Unsupported, match="persistent step implements GPT-2's block only"):
        FusedSession(static_model(model, 1, 8), 1, 4, persistent=True)
    for family in ("llama", "qwen2"):
        cell = _cuda_cell(family, persistent=True)
        assert get_backend("fused").unsupported_reason(cell) == PERSISTENT_GPT2_ONLY


def _cuda_cell(family: str, **options):
    spec = _spec(family, **GQA, n_kv_head=2)
    return tiny_cell("fused", spec=spec, **options).model_copy(update={"device": "cuda"})


def test_fused_accepts_llama_and_qwen2_cells_on_cuda_with_and_without_pdl():
    backend = get_backend("fused")
    for family in ("llama", "qwen2"):
        for options in ({}, dict(pdl=False), dict(pdl=True)):
            for dtype in ("float32", "bfloat16"):
                cell = _cuda_cell(family, **options).model_copy(update={"dtype": dtype})
                assert backend.unsupported_reason(cell) is None


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_llama_cell_of_fused_on_the_cpu_is_unsupported_with_a_reason(family):
    cell = tiny_cell("fused", spec=_spec(family, **GQA, n_kv_head=2), batch_size=2)
    result = measure_cell(cell, fast_settings(), seed=7)
    assert result.status == "unsupported" and result.error == "fused runs on cuda, not cpu"
    assert result.prefill == [] and result.decode == []


def test_fused_refuses_a_llama_config_its_kernels_do_not_implement():
    from runner.backends.fused import config_reason
    from runner.models import hf_config

    for family in ("llama", "qwen2"):
        assert config_reason(hf_config(_spec(family, **GQA, n_kv_head=2))) is None
    config = hf_config(_spec("llama", **GQA, n_kv_head=2))
    config.hidden_act = "gelu"
    assert "hidden_act 'gelu'" in config_reason(config)
    config.hidden_act = "silu"
    config.mlp_bias = True
    assert "mlp_bias" in config_reason(config)
    config.mlp_bias = False
    config.head_dim = 32
    assert "head_dim x heads" in config_reason(config)
    qwen = hf_config(_spec("qwen2", **GQA, n_kv_head=2))
    qwen.layer_types = ["sliding_attention"] * 2
    assert "sliding-window" in config_reason(qwen)
    config.model_type = "mistral"
    assert "GPT-2, llama and qwen2, not model_type 'mistral'" in config_reason(config)


COMPILE_FOR_HOPPER = '''
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from runner.backends import fused_kernels as fk

# SmolLM2-135M: 576 wide, 9 query heads on 3 KV heads, MLP 1536
plan = fk.DecodePlan(n_embd=576, n_head=9, n_inner=1536, vocab=49152, max_len=193, batch=1, block="llama",
                     n_kv_head=3)
CONSTANTS = {"S": plan.S, "CHUNK": plan.CHUNK, "BL": plan.BL, "BLOCK_D": plan.BLOCK_D, "BLOCK_E": plan.BLOCK_E,
             "BG": plan.BG, "BP": plan.qkv_pairs, "BN": plan.out_cols, "BH": plan.mlp_cols, "BV": plan.head_rows,
             "MODE": 1, "EMBED": False, "HAS_BIAS": True}
INTS = ("tok_ptr", "pos_ptr")
FLOAT32 = ("x_ptr", "x_a_ptr", "x_b_ptr", "x_in_ptr", "q_ptr", "part_acc_ptr", "part_ml_ptr", "logits_ptr")

def signature(kernel):
    sig = {}
    for name in kernel.arg_names:
        if name in CONSTANTS:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*i64" if name in INTS else "*fp32" if name in FLOAT32 else "*bf16"
        else:
            sig[name] = "fp32" if name in ("eps", "scale") else "i32"
    return sig

found = {}
for kernel in (fk.llama_qkv_kernel, fk.gqa_attention_kernel, fk.llama_out_kernel, fk.swiglu_kernel,
               fk.llama_head_kernel):
    constants = {k: v for k, v in CONSTANTS.items() if k in kernel.arg_names}
    ptx = triton.compile(ASTSource(kernel, signature(kernel), constants), target=GPUTarget("cuda", 90, 32),
                         options={"num_warps": 8, "launch_pdl": True}).asm["ptx"]
    found[kernel.fn.__name__] = "griddepcontrol.wait" in ptx and "griddepcontrol.launch_dependents" in ptx
print(json.dumps(found))
'''


def test_llama_kernels_compile_for_hopper_with_pdl_without_a_gpu():
    """The interpreter never compiles: Triton's bundled ptxas does, for sm90 with no GPU, the
    five llama kernels in bfloat16 at SmolLM2-135M's shape, each waiting and releasing in
    griddepcontrol."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    nvidia = pytest.importorskip("triton.backends.nvidia", reason="this Triton has no NVIDIA backend")
    if not (Path(nvidia.__file__).parent / "bin" / "ptxas").exists():
        pytest.skip("this Triton ships no ptxas")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {name: True for name in ("llama_qkv_kernel", "gqa_attention_kernel", "llama_out_kernel",
                                             "swiglu_kernel", "llama_head_kernel")}
