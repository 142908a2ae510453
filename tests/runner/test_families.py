"""Model families: llama and qwen2 shapes with grouped-query attention, built from transformers'
config classes, the cited catalogue, depth x width x KV-heads grids (at a parameter budget
too), checkpoints of these architectures, KV-cache bytes, and every bad input refused before
anything is built with one line naming the field."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runner.models import CATALOGUE, ModelSpec, build_model, count_params, get_registered, spec_from_checkpoint
from runner.plan import PlanError, check_memory, estimate_cell_bytes, expand, parse_plan
from runner.trackers import cell_resources
from tests.runner.helpers import fast_settings, plan_dict, tiny_cell

# A tiny GQA shape: 4 query heads share 2 KV heads (head_dim 16), small vocabulary and context.
TINY_GQA = dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, vocab_size=256, n_positions=64)


def gqa(family: str = "llama", **extra) -> ModelSpec:
    return ModelSpec(name=f"{family}-tiny", family=family, **(TINY_GQA | extra))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_gqa_shape_builds_from_its_family_config_with_the_heads_it_names(family):
    spec = gqa(family)
    model = build_model(spec)
    config = model.config
    assert config.model_type == family
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size, config.max_position_embeddings) == (
        2, 64, 4, 2, spec.inner, 256, 64)
    attention = model.model.layers[0].self_attn
    assert attention.k_proj.weight.shape == (spec.kv_width, 64) == (2 * 16, 64)
    assert (attention.q_proj.bias is not None) == (family == "qwen2")  # Qwen2's QKV bias
    assert not model.training


@settings(max_examples=10, deadline=None)
@given(family=st.sampled_from(["llama", "qwen2"]), n_layer=st.integers(1, 3), kv=st.integers(1, 3),
       groups=st.integers(1, 3), half_head=st.integers(1, 6), n_inner=st.none() | st.integers(1, 40),
       vocab_size=st.integers(2, 300), tied=st.booleans())
def test_closed_form_count_equals_the_built_count_for_any_family_shape(family, n_layer, kv, groups, half_head,
                                                                       n_inner, vocab_size, tied):
    n_head = kv * groups
    spec = ModelSpec(name="h", family=family, n_layer=n_layer, n_embd=n_head * 2 * half_head, n_head=n_head,
                     n_kv_head=kv, n_inner=n_inner, vocab_size=vocab_size, n_positions=32, tie_embeddings=tied)
    assert spec.approx_params() == count_params(build_model(spec))


def test_catalogue_holds_the_published_shapes_and_its_counts_match_the_cited_ones():
    shapes = {name: (s.family, s.n_layer, s.n_embd, s.n_head, s.kv_heads, s.inner, s.vocab, s.tie_embeddings)
              for name, s in CATALOGUE.items()}
    assert shapes == {
        "SmolLM2-135M": ("llama", 30, 576, 9, 3, 1536, 49152, True),
        "MobileLLM-125M": ("llama", 30, 576, 9, 3, 1536, 32000, True),
        "SmolLM2-360M": ("llama", 32, 960, 15, 5, 2560, 49152, True),
        "Qwen2.5-0.5B": ("qwen2", 24, 896, 14, 2, 4864, 151936, True),
        "TinyLlama-1.1B": ("llama", 22, 2048, 32, 4, 5632, 32000, False),
        "Llama-3.2-1B": ("llama", 16, 2048, 32, 8, 8192, 128256, True),
    }
    # the counts the cited sources state: SmolLM2-360M's 361,821,120; MobileLLM-125M's card 124.6M
    assert CATALOGUE["SmolLM2-360M"].approx_params() == 361_821_120
    assert round(CATALOGUE["MobileLLM-125M"].approx_params() / 1e6, 1) == 124.6
    assert all(get_registered(name) is spec for name, spec in CATALOGUE.items())


def test_a_catalogue_shape_counts_as_its_build_does():
    """The catalogue's counts come from the closed form; one real build (the smallest) checks it."""
    spec = CATALOGUE["MobileLLM-125M"]
    assert count_params(build_model(spec)) == spec.approx_params()


def test_gpt2_cell_keys_are_those_they_had_before_families():
    """Computed with the code before families: resumed runs and run comparisons still match."""
    assert tiny_cell("hf-eager").key == "8117e103cef9"
    assert tiny_cell("torch-compile", batch_size=2, mode="default").key == "1c7bf798780d"
    assert tiny_cell("hf-eager", spec=gqa()).key != tiny_cell("hf-eager", spec=gqa("qwen2")).key


@pytest.mark.parametrize(("fields", "named"), [
    (dict(family="mistral"), "family"),
    (dict(n_embd=60, n_head=8, n_kv_head=4), "n_embd (60) must be divisible by n_head (8)"),
    (dict(n_kv_head=3), "n_kv_head: 3 key/value heads do not divide the 4 query heads"),
    (dict(n_embd=12, n_head=4, n_kv_head=2), "n_head: head_dim n_embd / n_head = 3 must be even"),
    (dict(vocab_size=10**7), "vocab_size"),
    (dict(n_positions=10**7), "n_positions"),
])
def test_a_bad_shape_is_refused_before_anything_is_built_naming_the_field(fields, named):
    with pytest.raises(ValidationError) as info:
        ModelSpec(name="bad", family=fields.pop("family", "llama"), **(TINY_GQA | fields))
    assert named in str(info.value)


def test_gpt2_refuses_fewer_kv_heads_pointing_to_llama():
    with pytest.raises(ValidationError, match="n_kv_head: gpt2 has full multi-head attention"):
        ModelSpec(name="bad", n_layer=2, n_embd=64, n_head=4, n_kv_head=2)


@pytest.mark.parametrize(("custom", "named"), [
    (dict(family="gemma"), "models.custom.0.family: Input should be 'gpt2', 'llama' or 'qwen2'"),
    (dict(n_kv_head=3), "models.custom.0: n_kv_head: 3 key/value heads do not divide the 4 query heads"),
    (dict(vocab_size=2_000_000), "models.custom.0.vocab_size: Input should be less than or equal to 1000000"),
])
def test_a_bad_custom_family_shape_in_a_plan_is_one_line_naming_its_place(custom, named):
    data = plan_dict(models={"custom": [{"name": "x", "family": "llama", **TINY_GQA, **custom}]})
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_a_context_that_cannot_hold_prompt_and_generation_is_refused_naming_it():
    plan = parse_plan(plan_dict(models={"custom": [{"name": "x", "family": "llama", **TINY_GQA}]}, prompt_lens=[60]))
    with pytest.raises(PlanError, match="prompt_lens/gen_lens: 60 \\+ 4 tokens exceed model 'x' context of 64"):
        expand(plan)


def test_catalogue_names_work_as_reference_names_and_as_a_catalogue_list():
    by_reference = expand(parse_plan(plan_dict(models={"reference": ["SmolLM2-135M", "tiny-gpt2"]}, prompt_lens=[8])))
    assert {c.model.name: c.model.family for c in by_reference} == {"SmolLM2-135M": "llama", "tiny-gpt2": "gpt2"}
    everything = expand(parse_plan(plan_dict(models={"catalogue": "all"}, backends=["hf-eager"])))
    assert [c.model.name for c in everything] == list(CATALOGUE)
    with pytest.raises(PlanError, match="models.catalogue: .*unknown model 'SmolLM3'"):
        parse_plan(plan_dict(models={"catalogue": ["SmolLM3"]}))


def test_a_grid_expands_over_depth_width_and_kv_heads():
    grid = {"family": "llama", "depths": [1, 2], "widths": [64, 128], "n_head": 4, "kv_heads": [1, 2, 4],
            "vocab_size": 256, "n_positions": 64}
    cells = expand(parse_plan(plan_dict(models={"grid": grid}, backends=["hf-eager"])))
    shapes = {(c.model.n_layer, c.model.n_embd, c.model.kv_heads) for c in cells}
    assert shapes == {(d, w, k) for d in (1, 2) for w in (64, 128) for k in (1, 2, 4)}
    assert {c.model.name for c in cells} >= {"1x64-kv1", "2x128-kv4"}


def test_a_budget_grid_gives_each_depth_the_width_closest_to_the_budget():
    grid = {"family": "llama", "depths": [6, 12, 30], "param_budget": 125_000_000, "head_dim": 64,
            "kv_heads": [1, 3], "vocab_size": 32000}
    specs = parse_plan(plan_dict(models={"grid": grid})).models.specs()
    assert len(specs) == 6
    for spec in specs:
        step = 64 * spec.kv_heads if spec.kv_heads > 1 else 64  # heads must hold whole KV groups
        assert spec.n_embd % step == 0 and spec.n_head == spec.n_embd // 64
        assert spec.n_head % spec.kv_heads == 0
        neighbours = [spec.model_copy(update={"n_embd": spec.n_embd + d, "n_head": (spec.n_embd + d) // 64})
                      for d in (-step, step)]
        assert all(abs(spec.approx_params() - 125e6) <= abs(n.approx_params() - 125e6) for n in neighbours)
    widths = {s.n_layer: s.n_embd for s in specs if s.kv_heads == 3}
    assert widths[6] > widths[12] > widths[30] == 576  # deeper is thinner at one budget: MobileLLM's shape


@pytest.mark.parametrize(("grid", "named"), [
    ({"depths": [1], "widths": [64], "kv_heads": [1]}, "kv_heads: gpt2 has full multi-head attention"),
    ({"family": "llama", "depths": [1], "widths": [64], "n_head": 4, "kv_heads": [3]}, "kv_heads [3] do not divide n_head (4)"),
    ({"family": "llama", "depths": [1], "widths": [64], "param_budget": 10**6}, "give widths or param_budget"),
    ({"family": "llama", "depths": [1], "widths": [96], "head_dim": 64}, "widths [96] are not multiples of head_dim (64)"),
])
def test_a_bad_grid_is_refused_naming_the_field(grid, named):
    with pytest.raises(PlanError) as info:
        parse_plan(plan_dict(models={"grid": grid}))
    assert named in str(info.value) and str(info.value).startswith("models.grid")


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_saved_checkpoint_directory_loads_and_matches_its_config(tmp_path, family):
    spec = gqa(family, tie_embeddings=False)
    saved = build_model(spec, seed=5)
    saved.save_pretrained(tmp_path, safe_serialization=True)
    read = spec_from_checkpoint(tmp_path, name="ckpt")
    assert (read.family, read.n_layer, read.n_embd, read.n_head, read.kv_heads, read.inner, read.vocab, read.context,
            read.tie_embeddings) == (family, 2, 64, 4, 2, spec.inner, 256, 64, False)
    loaded = build_model(read)
    assert type(loaded) is type(saved)
    assert count_params(loaded) == count_params(saved) == read.approx_params()
    assert torch.equal(loaded.model.layers[1].mlp.up_proj.weight, saved.model.layers[1].mlp.up_proj.weight)


def test_a_checkpoint_that_asks_for_remote_code_is_refused_naming_the_field(tmp_path):
    import json

    build_model(gqa()).save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}))
    with pytest.raises(ValueError, match="config.json field auto_map asks for remote code"):
        spec_from_checkpoint(tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kv_cache_bytes_follow_kv_heads_times_head_dim(dtype):
    spec = gqa()
    cell = tiny_cell("hf-eager", dtype, spec=spec, batch_size=3, prompt_len=10, gen_len=5)
    element = 4 if dtype == "float32" else 2
    formula = 2 * spec.n_layer * spec.kv_heads * spec.head_dim * (10 + 5) * 3 * element
    assert cell_resources(cell, 1000, [])["kv_cache_bytes"] == formula == 2 * 2 * 2 * 16 * 15 * 3 * element
    assert estimate_cell_bytes(cell)["kv_cache"] == formula
    full = tiny_cell("hf-eager", dtype, spec=gqa(n_kv_head=4), batch_size=3, prompt_len=10, gen_len=5)
    assert cell_resources(full, 1000, [])["kv_cache_bytes"] == 2 * formula  # twice the KV heads, twice the bytes


def test_the_memory_check_knows_a_family_by_its_kv_cache():
    """Llama-3.2-1B at a long context: its 8 KV heads of 64 need a quarter of what 32 heads would."""
    spec = CATALOGUE["Llama-3.2-1B"]
    cell = tiny_cell("hf-eager", "bfloat16", spec=spec, batch_size=8, prompt_len=32768, gen_len=64)
    kv = estimate_cell_bytes(cell)["kv_cache"]
    assert kv == 2 * 16 * 8 * 64 * (32768 + 64) * 8 * 2
    with pytest.raises(PlanError, match="cell 'Llama-3.2-1B hf-eager bfloat16 b8 p32768 g64' needs about"):
        check_memory([cell], 16 * 10**9)


def test_the_smoke_plan_of_families_expands_to_gqa_shapes_of_both_families():
    from runner.plan import load_plan
    from tests.runner.helpers import REPO_ROOT

    cells = expand(load_plan(REPO_ROOT / "plans" / "families-smoke-cpu.toml"), device="cpu")
    assert {c.model.family for c in cells} == {"llama", "qwen2"}
    assert any(c.model.kv_heads < c.model.n_head for c in cells)
    assert {c.backend for c in cells} == {"hf-eager", "hf-sdpa", "torch-compile", "onnxruntime", "vllm"}


def test_runner_list_shows_every_family_and_the_catalogue_with_its_counts():
    from tests.runner.helpers import run_cli

    done = run_cli("list", "models")
    assert done.returncode == 0, done.stderr
    for family in ("gpt2", "llama", "qwen2"):
        assert family in done.stdout
    for name, spec in CATALOGUE.items():
        assert name in done.stdout and f"{spec.approx_params():,}" in done.stdout
    assert "9 / 3" in done.stdout and "gpt2-100m" in done.stdout
