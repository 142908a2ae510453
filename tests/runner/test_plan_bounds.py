"""Plans without bounds are refused before anything runs: empty axes, counts and times past
their caps, seeds the store cannot hold, shapes that do not divide, cells that cannot fit in
memory; every message one line naming the field."""
from __future__ import annotations

import pytest

from runner.models import ModelSpec
from runner.plan import (
    MAX_CELLS, Cell, PlanError, check_memory, estimate_cell_bytes, expand, load_plan, parse_plan,
)
from tests.runner.helpers import TINY_SHAPE, plan_dict, run_cli, write_plan


def plan_error(tmp_path, text: str | None = None, **overrides) -> str:
    path = tmp_path / "plan.toml"
    if text is None:
        write_plan(path, **overrides)
    else:
        path.write_text(text)
    with pytest.raises(PlanError) as info:
        expand(load_plan(path))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("axis", ["backends", "dtypes", "batch_sizes", "prompt_lens", "gen_lens"])
def test_an_empty_axis_is_refused_naming_it(tmp_path, axis):
    assert plan_error(tmp_path, **{axis: []}).startswith(f"{axis}: must not be empty")


def test_an_empty_axis_in_an_also_sweep_is_refused(tmp_path):
    assert plan_error(tmp_path, also=[{"backends": []}]).startswith("also.0.backends: must not be empty")


@pytest.mark.parametrize(("axis", "value", "cap"), [
    ("batch_sizes", 1_000_000_000, 1024), ("gen_lens", 10**6, 8192), ("prompt_lens", 10**7, 131072)])
def test_axis_values_past_their_cap_are_refused(tmp_path, axis, value, cap):
    assert plan_error(tmp_path, **{axis: [1, value]}) == f"{axis}: every value must be at most {cap}"


@pytest.mark.parametrize(("field", "value"), [
    ("prefill_reps", 10**12), ("decode_reps", 10**6), ("e2e_reps", 10**6), ("warmup_max_iters", 10**9),
    ("warmup_min_s", 86_400.0), ("cv_threshold", 1e9), ("warmup_tolerance", 5.0)])
def test_measure_counts_and_times_past_their_cap_are_refused(tmp_path, field, value):
    measure = plan_dict()["measure"] | {field: value}
    message = plan_error(tmp_path, measure=measure)
    assert message.startswith(f"measure.{field}: Input should be less than or equal to")


@pytest.mark.parametrize("literal", ["inf", "nan", "+inf"])
def test_an_infinite_or_nan_time_is_refused(tmp_path, literal):
    write_plan(tmp_path / "base.toml")
    text = (tmp_path / "base.toml").read_text().replace("warmup_min_s = 0.0", f"warmup_min_s = {literal}")
    assert f"warmup_min_s = {literal}" in text
    assert plan_error(tmp_path, text).startswith("measure.warmup_min_s: ")


@pytest.mark.parametrize("seed", [-1, 2**63 - 3, 2**40])
def test_a_seed_the_store_cannot_hold_with_repeats_is_refused(tmp_path, seed):
    assert plan_error(tmp_path, seed=seed, repeats=5).startswith("seed: Input should be")


def test_the_largest_allowed_seed_with_the_most_repeats_fits_a_bigint():
    plan = parse_plan(plan_dict(seed=2**32 - 1, repeats=100))
    assert plan.seed + plan.repeats < 2**63


def test_a_grid_width_not_divisible_by_n_head_is_one_line(tmp_path):
    models = {"grid": {"depths": [1, 2], "widths": [64, 100], "n_head": 8}}
    message = plan_error(tmp_path, models=models)
    assert message == "models.grid: widths [100] are not divisible by n_head (8)"


def test_a_plan_that_expands_past_the_cell_cap_is_refused(tmp_path):
    models = {"grid": {"depths": list(range(1, 101)), "widths": [64, 128], "n_head": 2}}
    message = plan_error(tmp_path, models=models, batch_sizes=list(range(1, 51)), repeats=3)
    assert message.startswith(f"the plan expands past {MAX_CELLS} cells")


def _cell(spec: ModelSpec, **kw) -> Cell:
    return Cell(model=spec, backend=kw.pop("backend", "hf-eager"), device="cuda", dtype=kw.pop("dtype", "float32"),
                batch_size=kw.pop("batch_size", 1), prompt_len=kw.pop("prompt_len", 128), gen_len=kw.pop("gen_len", 4))


def test_a_19b_model_does_not_fit_an_80gb_gpu_and_the_message_names_it():
    big = ModelSpec(name="gpt2-19b", n_layer=48, n_embd=5632, n_head=44)
    assert 18e9 < big.approx_params() < 20e9
    with pytest.raises(PlanError) as info:
        check_memory([_cell(ModelSpec(name="small", n_layer=2, n_embd=64, n_head=2)), _cell(big)], 80 * 10**9)
    message = str(info.value)
    assert message.startswith("models/batch_sizes/prompt_lens: cell 'gpt2-19b hf-eager float32 b1 p128 g4' needs about")
    assert "weights 74.3 GB" in message and "more than 90% of the 80.0 GB free on cuda" in message and "\n" not in message


def test_small_cells_fit_and_unknown_free_memory_checks_nothing():
    cell = _cell(ModelSpec(name="gpt2-5m", n_layer=12, n_embd=80, n_head=2))
    check_memory([cell], 80 * 10**9)
    check_memory([_cell(ModelSpec(name="huge", n_layer=48, n_embd=5632, n_head=44))], None)


def test_the_kv_cache_and_activations_grow_with_batch_and_prompt():
    spec = ModelSpec(name="gpt2-100m", n_layer=8, n_embd=768, n_head=2)
    small, large = estimate_cell_bytes(_cell(spec)), estimate_cell_bytes(_cell(spec, batch_size=64, prompt_len=512))
    assert small["weights"] == large["weights"]
    assert large["kv_cache"] > 60 * small["kv_cache"] and large["activations"] > 200 * small["activations"]


def test_cli_plan_and_run_refuse_a_cell_that_cannot_fit_before_building_anything(tmp_path):
    huge = {"name": "wide", "n_layer": 40, "n_embd": 6144, "n_head": 48, "vocab_size": 50257, "n_positions": 8192}
    plan = write_plan(tmp_path / "plan.toml", models={"custom": [huge]}, backends=["hf-sdpa"],
                      batch_sizes=[1024], prompt_lens=[4096])
    for args in (("plan", plan), ("run", plan, "--runs-dir", tmp_path / "runs", "--db", tmp_path / "s.duckdb")):
        done = run_cli(*args)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: models/batch_sizes/prompt_lens: cell 'wide hf-sdpa")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path / "s.duckdb").exists()


def test_tiny_cpu_plans_still_pass_the_memory_check():
    plan = parse_plan(plan_dict())
    check_memory(expand(plan), 2 * 10**9)
    assert TINY_SHAPE["n_positions"] == 128
