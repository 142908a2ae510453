"""Plans: validation errors that name the field, [[also]] sweeps, TOML round trip."""
from __future__ import annotations

import tomllib

import pytest

from runner.plan import Cell, Plan, PlanError, expand, load_plan, parse_plan, plan_to_toml
from tomli_w import dumps
from tests.runner.helpers import REPO_ROOT, TINY_SHAPE, plan_dict, write_plan


def plan_error(tmp_path, **overrides) -> str:
    with pytest.raises(PlanError) as info:
        load_plan(write_plan(tmp_path / "plan.toml", **overrides))
    return str(info.value)


def test_valid_plan_loads_and_expands_to_its_factorial(tmp_path):
    plan = load_plan(write_plan(tmp_path / "plan.toml"))
    cells = expand(plan)
    assert len(cells) == 4
    assert {(c.model.name, c.backend) for c in cells} == {
        ("1x32", "hf-eager"), ("1x32", "hf-sdpa"), ("2x64", "hf-eager"), ("2x64", "hf-sdpa")}
    assert {c.device for c in cells} == {"cpu"}
    assert len({c.key for c in cells}) == 4


def test_unknown_backend_names_the_field_and_the_allowed_values(tmp_path):
    message = plan_error(tmp_path, backends=["hf-eager", "tensorrt"])
    assert message.startswith("backends:")
    assert "unknown backend 'tensorrt'" in message and "hf-sdpa" in message


def test_unknown_dtype_names_the_field_and_the_allowed_values(tmp_path):
    message = plan_error(tmp_path, dtypes=["fp8"])
    assert message.startswith("dtypes:") and "unknown dtype 'fp8'" in message and "bfloat16" in message


@pytest.mark.parametrize("axis", ["models", "backends", "dtypes", "batch_sizes", "prompt_lens", "gen_lens"])
def test_missing_axis_is_named(axis):
    data = plan_dict()
    del data[axis]
    with pytest.raises(PlanError, match=f"plan is missing: {axis}"):
        parse_plan(data)


@pytest.mark.parametrize("axis", ["batch_sizes", "prompt_lens", "gen_lens"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_length_is_refused_naming_the_axis(tmp_path, axis, value):
    message = plan_error(tmp_path, **{axis: [4, value]})
    assert message.startswith(f"{axis}:") and "positive" in message


def test_prompt_plus_generation_beyond_the_context_is_refused_naming_the_model(tmp_path):
    plan = load_plan(write_plan(tmp_path / "plan.toml", prompt_lens=[100], gen_lens=[64]))
    with pytest.raises(PlanError, match=r"prompt_lens/gen_lens: 100 \+ 64 tokens exceed model '1x32' context of 128"):
        expand(plan)


def test_unknown_reference_model_is_refused_naming_the_field(tmp_path):
    message = plan_error(tmp_path, models={"reference": ["gpt2-7m"]})
    assert message.startswith("models.reference:") and "gpt2-7m" in message


def test_bad_custom_shape_names_its_place_in_the_plan(tmp_path):
    message = plan_error(tmp_path, models={"custom": [
        {"name": "bad", "n_layer": 2, "n_embd": 50, "n_head": 4, **TINY_SHAPE}]})
    assert message.startswith("models.custom.0:") and "divisible by n_head" in message


def test_misspelt_key_is_refused_naming_it(tmp_path):
    message = plan_error(tmp_path, backend=["hf-eager"])
    assert "backend:" in message and "Extra inputs are not permitted" in message


def test_plan_with_no_model_is_refused_on_expansion(tmp_path):
    plan = load_plan(write_plan(tmp_path / "plan.toml", models={}))
    with pytest.raises(PlanError, match="models: the plan names no model"):
        expand(plan)


def test_invalid_toml_is_a_plan_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nbackends = ["hf-eager"\n')
    with pytest.raises(PlanError, match=r"broken.toml: not valid TOML"):
        load_plan(path)


def test_missing_file_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError, match=r"plan file '.*nowhere.toml' does not exist"):
        load_plan(tmp_path / "nowhere.toml")


def test_plan_error_is_a_value_error_for_callers_that_catch_those():
    assert issubclass(PlanError, ValueError)


def test_also_sweeps_add_cells_and_duplicates_collapse():
    data = plan_dict(also=[
        # a longer prompt for eager only: 2 new cells
        {"backends": ["hf-eager"], "prompt_lens": [32]},
        # the main sweep again for one model: no new cell
        {"models": {"custom": [{"name": "2x64", "n_layer": 2, "n_embd": 64, "n_head": 2, **TINY_SHAPE}]}},
        # the same shape under another name is the same cell
        {"models": {"custom": [{"name": "renamed", "n_layer": 1, "n_embd": 32, "n_head": 2, **TINY_SHAPE}]},
         "backends": ["hf-eager"], "prompt_lens": [32]},
    ])
    cells = expand(parse_plan(data))
    combos = sorted((c.model.n_layer, c.backend, c.prompt_len) for c in cells)
    assert combos == [(1, "hf-eager", 8), (1, "hf-eager", 32), (1, "hf-sdpa", 8),
                      (2, "hf-eager", 8), (2, "hf-eager", 32), (2, "hf-sdpa", 8)]
    assert len({c.key for c in cells}) == len(cells) == 6


def test_also_sweep_inherits_backend_options():
    data = plan_dict(backends=["torch-compile"], backend_options={"torch-compile": {"mode": "max-autotune"}},
                     also=[{"gen_lens": [16]}])
    cells = expand(parse_plan(data))
    assert len(cells) == 4
    assert all(c.backend_options == {"mode": "max-autotune"} for c in cells)


def test_also_sweep_is_validated_like_the_main_one():
    with pytest.raises(PlanError, match=r"also\.0\.backends: .*unknown backend 'xla'"):
        parse_plan(plan_dict(also=[{"backends": ["xla"]}]))


def test_cell_key_is_stable_and_ignores_the_name():
    cell = expand(parse_plan(plan_dict()))[0]
    renamed = Cell.model_validate(cell.model_dump() | {"model": cell.model.model_copy(update={"name": "other"})})
    longer = Cell.model_validate(cell.model_dump() | {"gen_len": cell.gen_len + 1})
    assert renamed.key == cell.key
    assert longer.key != cell.key
    assert Cell.model_validate(cell.model_dump(mode="json")).key == cell.key


ROUND_TRIP_PLANS = {
    "minimal": plan_dict(),
    "everything": plan_dict(
        description='quotes " and \\ backslashes, unicode: µs',
        repeats=3,
        backends=["hf-eager", "torch-compile"],
        dtypes=["float32", "bfloat16"],
        backend_options={"torch-compile": {"mode": "max-autotune", "fullgraph": True}},
        models={"reference": ["tiny-gpt2", "gpt2-5m"], "grid": {"depths": [1, 2], "widths": [64, 128], "n_head": 4},
                "custom": [{"name": "wide", "n_layer": 1, "n_embd": 96, "n_head": 3, "n_inner": 200, **TINY_SHAPE}],
                "checkpoints": ["/models/my-gpt2"], "hub": ["Crusadersk/gpt2-25m"]},
        measure={"prefill_reps": 7, "warmup_tolerance": 0.025, "cv_threshold": 1e-05, "check_correctness": False},
        also=[{"backends": ["hf-eager"], "prompt_lens": [64]},
              {"models": {"reference": "all"}, "gen_lens": [1, 2]}],
    ),
}


@pytest.mark.parametrize("name", list(ROUND_TRIP_PLANS))
def test_plan_to_toml_round_trips_to_an_equal_plan(name):
    plan = parse_plan(ROUND_TRIP_PLANS[name])
    text = plan_to_toml(plan)
    again = Plan.model_validate(tomllib.loads(text))
    assert again == plan
    assert plan_to_toml(again) == text


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "plans").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_plans_load_expand_and_round_trip(path):
    plan = load_plan(path)
    cells = expand(plan, device="cpu", resolve_remote=False)
    assert cells
    assert Plan.model_validate(tomllib.loads(plan_to_toml(plan))) == plan


def test_backend_options_for_an_unknown_backend_are_refused_naming_it():
    data = plan_dict(backends=["torch-compile"], backend_options={"torch-compil": {"mode": "max-autotune"}})
    with pytest.raises(PlanError, match="backend_options.*torch-compil"):
        parse_plan(data)


def test_plan_with_a_non_ascii_option_name_round_trips():
    plan = parse_plan(plan_dict(backend_options={"hf-eager": {"größe": 1}}))
    assert Plan.model_validate(tomllib.loads(plan_to_toml(plan))) == plan
