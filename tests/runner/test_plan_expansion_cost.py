"""A plan costs what it is, not what it weighs: repeated axis values are one value, and the
size of the product is bounded before any model is built or any cell made, from the CLI as
from the Run page (both expand through runner.plan.expand)."""
from __future__ import annotations

import threading

import pytest

from runner import plan as plan_module
from runner.plan import MAX_CELLS, PlanError, expand, parse_plan
from tests.runner.helpers import plan_dict, run_cli, write_plan

COPIES = 400


def _repeated() -> dict:
    one = plan_dict()["models"]["custom"][:1]
    return plan_dict(backends=["hf-eager"] * COPIES, dtypes=["float32"] * COPIES, batch_sizes=[1] * COPIES,
                     prompt_lens=[8] * COPIES, gen_lens=[4] * COPIES,
                     models={"custom": one * COPIES, "grid": {"depths": [1] * COPIES, "widths": [32] * COPIES}})


def _within(seconds: float, work):
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"expansion took over {seconds} s"
    return out["value"]


def test_a_plan_of_repeated_values_expands_to_its_distinct_cells(tmp_path):
    plan = parse_plan(_repeated())
    cells = _within(60, lambda: expand(plan, resolve_remote=False))
    assert len(cells) == 2  # the custom 1x32 and the grid's 1x32 (another source, so another cell)


def test_the_cli_plans_a_repeated_plan_at_once(tmp_path):
    path = tmp_path / "plan.toml"
    from tomli_w import dumps

    path.write_text(dumps(_repeated()))
    done = run_cli("plan", path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ": 2 cells on cpu" in done.stdout


def test_a_product_past_the_cap_is_refused_before_any_shape_is_built(monkeypatch):
    def no_building(*args, **kwargs):
        raise AssertionError("a shape was built before the product was bounded")

    monkeypatch.setattr(plan_module, "grid", no_building)
    plan = parse_plan(plan_dict(models={"grid": {"depths": list(range(1, 1001)), "widths": list(range(64, 2064, 2))}}))
    with pytest.raises(PlanError, match=f"^the plan expands past {MAX_CELLS} cells"):
        expand(plan, resolve_remote=False)


def test_repeated_also_sweeps_count_once(tmp_path):
    data = plan_dict(also=[{"backends": ["hf-sdpa"], "gen_lens": [4]}] * COPIES)
    cells = _within(60, lambda: expand(parse_plan(data), resolve_remote=False))
    assert len(cells) == len(expand(parse_plan(plan_dict()), resolve_remote=False))
