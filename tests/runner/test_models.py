"""Model shapes: the reference registry, grids, refused shapes, checkpoints and hub ids."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runner.models import (
    MAX_PARAMS, REGISTRY, ModelSpec, build_model, count_params, get_registered, grid,
    spec_from_checkpoint,
)
from tests.runner.helpers import REPO_ROOT, TINY_SHAPE, cli_env, tiny_spec

# Counted from models built with transformers (tied input/output embedding once).
REFERENCE_PARAMS = {
    "tiny-gpt2": 102_714,
    "gpt2-5m": 5_036_720,
    "gpt2-25m": 25_016_064,
    "gpt2-45m": 45_171_200,
    "gpt2-50m": 51_475_968,
    "gpt2-75m": 74_824_704,
    "gpt2-100m": 96_088_320,
}
REFERENCE_SHAPES = {  # name -> (n_layer, n_embd, n_head), from DESIGN.md
    "tiny-gpt2": (2, 2, 2), "gpt2-5m": (12, 80, 2), "gpt2-25m": (3, 384, 2),
    "gpt2-45m": (6, 512, 8), "gpt2-50m": (8, 512, 2), "gpt2-75m": (5, 768, 2),
    "gpt2-100m": (8, 768, 2),
}


def test_registry_holds_exactly_the_reference_family_of_the_design():
    assert set(REGISTRY) == set(REFERENCE_SHAPES)
    for name, (n_layer, n_embd, n_head) in REFERENCE_SHAPES.items():
        spec = get_registered(name)
        assert (spec.n_layer, spec.n_embd, spec.n_head) == (n_layer, n_embd, n_head)
        assert (spec.vocab_size, spec.n_positions, spec.inner) == (50257, 1024, 4 * n_embd)
        assert spec.source == "registry"


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_reference_model_built_has_its_parameter_count_and_closed_form_agrees(name):
    spec = get_registered(name)
    model = build_model(spec)
    built = count_params(model)
    assert built == REFERENCE_PARAMS[name]
    assert spec.approx_params() == built
    config = model.config
    assert (config.n_layer, config.n_embd, config.n_head) == (spec.n_layer, spec.n_embd, spec.n_head)
    assert not model.training
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0


@settings(max_examples=12, deadline=None)
@given(n_layer=st.integers(1, 3), n_head=st.integers(1, 4), head_dim=st.integers(1, 12),
       n_inner=st.none() | st.integers(1, 40), vocab_size=st.integers(2, 300), n_positions=st.integers(1, 64))
def test_closed_form_count_equals_the_built_count_for_any_shape(n_layer, n_head, head_dim, n_inner,
                                                                vocab_size, n_positions):
    spec = ModelSpec(name="h", n_layer=n_layer, n_embd=n_head * head_dim, n_head=n_head, n_inner=n_inner,
                     vocab_size=vocab_size, n_positions=n_positions)
    assert spec.approx_params() == count_params(build_model(spec))


def test_tied_embedding_is_counted_once():
    model = build_model(tiny_spec())
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    naive = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert count_params(model) == naive - model.lm_head.weight.numel()


def test_build_is_reproducible_from_the_seed_and_casts_from_the_same_float32_weights():
    spec = tiny_spec()
    a, b = build_model(spec, seed=3), build_model(spec, seed=3)
    c = build_model(spec, seed=4)
    bf16 = build_model(spec, seed=3, dtype=torch.bfloat16)
    wa, wb, wc = (m.transformer.h[0].mlp.c_fc.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert bf16.transformer.wte.weight.dtype == torch.bfloat16
    assert torch.equal(bf16.transformer.h[0].mlp.c_fc.weight, wa.to(torch.bfloat16))


def test_unknown_reference_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'gpt2-7m'.*gpt2-5m"):
        get_registered("gpt2-7m")


def test_grid_is_the_full_depth_by_width_factorial():
    specs = grid([1, 2, 4], [64, 128], n_head=4)
    assert [(s.n_layer, s.n_embd) for s in specs] == [
        (1, 64), (1, 128), (2, 64), (2, 128), (4, 64), (4, 128)]
    assert [s.name for s in specs][:2] == ["1x64", "1x128"]
    assert {s.n_head for s in specs} == {4} and {s.source for s in specs} == {"grid"}


def test_grid_refuses_a_width_its_heads_do_not_divide():
    with pytest.raises(ValidationError, match="n_embd .*divisible by n_head"):
        grid([1], [64, 66], n_head=4)


def test_width_not_divisible_by_heads_is_refused_naming_both_fields():
    with pytest.raises(ValidationError) as info:
        ModelSpec(name="odd", n_layer=2, n_embd=100, n_head=3)
    assert "n_embd (100)" in str(info.value) and "n_head (3)" in str(info.value)


@pytest.mark.parametrize("field", ["n_layer", "n_embd", "n_head", "n_inner", "vocab_size", "n_positions"])
@pytest.mark.parametrize("value", [0, -4])
def test_non_positive_size_is_refused_naming_the_field(field, value):
    shape = dict(name="bad", n_layer=2, n_embd=64, n_head=2) | {field: value}
    with pytest.raises(ValidationError) as info:
        ModelSpec(**shape)
    assert info.value.errors()[0]["loc"] == (field,)
    assert field in str(info.value)


def test_absurd_size_is_refused_before_anything_is_built():
    with pytest.raises(ValidationError, match=r"parameters \(n_layer=512, n_embd=16384\).*limit"):
        ModelSpec(name="huge", n_layer=512, n_embd=16384, n_head=16)
    just_under = ModelSpec(name="big", n_layer=96, n_embd=4096, n_head=32)
    assert just_under.approx_params() < MAX_PARAMS


def test_unknown_spec_field_is_refused():
    with pytest.raises(ValidationError, match="n_layers"):
        ModelSpec(name="typo", n_layers=2, n_layer=2, n_embd=64, n_head=2)


def test_safetensors_checkpoint_loads_with_its_spec_and_weights(tmp_path):
    original = build_model(tiny_spec(3, 48, 4, n_inner=96), seed=11)
    original.save_pretrained(tmp_path / "my-gpt2", safe_serialization=True)

    spec = spec_from_checkpoint(tmp_path / "my-gpt2")
    assert (spec.name, spec.source, spec.path) == ("my-gpt2", "checkpoint", str(tmp_path / "my-gpt2"))
    assert (spec.n_layer, spec.n_embd, spec.n_head, spec.n_inner) == (3, 48, 4, 96)
    assert (spec.vocab_size, spec.n_positions) == (TINY_SHAPE["vocab_size"], TINY_SHAPE["n_positions"])

    loaded = build_model(spec, seed=999)  # the checkpoint's weights, not a fresh init
    assert count_params(loaded) == count_params(original) == spec.approx_params()
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoint_with_only_a_pickle_bin_is_refused(tmp_path):
    model = build_model(tiny_spec())
    # transformers 5 writes only safetensors: lay out the old pickle format by hand
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / "pytorch_model.bin").exists() and not list(tmp_path.glob("*.safetensors"))
    with pytest.raises(ValueError, match="no .safetensors weights"):
        spec_from_checkpoint(tmp_path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=2)
    MistralForCausalLM(config).save_pretrained(tmp_path, safe_serialization=True)
    with pytest.raises(ValueError, match="model_type 'mistral' is not one of gpt2, llama, qwen2"):
        spec_from_checkpoint(tmp_path)


def test_path_without_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a directory with a config.json"):
        spec_from_checkpoint(tmp_path / "missing")


def test_hub_id_offline_and_not_cached_gives_a_clear_value_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    from runner.models import resolve_hub_id

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # huggingface_hub reads both at import time; it is already imported by transformers
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ValueError, match="hub model 'nobody/gpt2-none' could not be downloaded .*not in the local"):
        resolve_hub_id("nobody/gpt2-none")


def test_hub_id_in_a_fresh_offline_process_fails_fast_with_one_message(tmp_path):
    env = cli_env() | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    code = ("from runner.models import resolve_hub_id\n"
            "try:\n    resolve_hub_id('nobody/gpt2-none')\n"
            "except ValueError as e:\n    print('refused:', e)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: hub model 'nobody/gpt2-none'")
