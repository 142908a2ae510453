"""The seed study's form, log latency ~ log params + log n_layer: planted elasticities come back."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.regression import LEVERAGE_LIMIT, MODELS, SEED_FORM, fit_all, seed_winner
from analysis.report import analyze
from analysis.synthetic import SyntheticPlan, build_store

from .conftest import make_stats

# The reference family of DESIGN.md (n_layer, n_embd): tiny-gpt2 sits far from the rest.
REFERENCE_FAMILY = ((2, 2), (12, 80), (3, 384), (6, 512), (8, 512), (5, 768), (8, 768))


def _power_law(params_elasticity: float, depth_elasticity: float):
    """latency = 0.5 ms x (params / 1M)^p x n_layer^d: the seed form holds exactly."""
    return lambda cells: 0.5 * (cells["params"].to_numpy() / 1e6) ** params_elasticity * cells["n_layer"].to_numpy() ** depth_elasticity


def _seed(params_elasticity, depth_elasticity, **plan):
    stats = make_stats(SyntheticPlan(law=_power_law(params_elasticity, depth_elasticity), phases=("decode",),
                                     cell_cv=0.02, seed=11, **plan))
    fits = fit_all(stats.frame)
    assert len(fits) == 1 and fits[0].status == "ok"
    return fits[0]


@pytest.mark.parametrize(
    ("params_elasticity", "depth_elasticity", "winner"),
    [(0.3, 0.6, "both"), (0.0, 0.7, "depth"), (0.8, 0.0, "params")],
)
def test_seed_form_recovers_planted_elasticities_inside_their_cis(params_elasticity, depth_elasticity, winner):
    fit = _seed(params_elasticity, depth_elasticity)
    seed = fit.seed_form
    assert seed["coef_log_params_lo"] <= params_elasticity <= seed["coef_log_params_hi"]
    assert seed["coef_log_n_layer_lo"] <= depth_elasticity <= seed["coef_log_n_layer_hi"]
    assert abs(seed["coef_log_params"] - params_elasticity) < 0.05
    assert abs(seed["coef_log_n_layer"] - depth_elasticity) < 0.05
    assert seed["winner"] == winner and fit.verdict["winner"] == winner
    assert seed["r2"] > 0.95 and seed["n_shapes"] == 40


def test_seed_form_sits_beside_the_other_log_models_and_is_identifiable_on_a_grid():
    assert MODELS[SEED_FORM[0]][SEED_FORM[1]] == "log_latency ~ log_params + log_depth"
    seed = _seed(0.3, 0.6).seed_form
    assert abs(seed["corr_log_params_log_n_layer"]) < 0.9
    assert seed["max_leverage"] < LEVERAGE_LIMIT and seed["refit"] is None


def test_high_leverage_shape_is_reported_and_the_fit_refitted_without_it():
    seed = _seed(0.3, 0.6, shapes=REFERENCE_FAMILY, reps=3).seed_form
    assert seed["n_high_leverage"] >= 1
    top = seed["leverage"][0]
    assert (top["n_layer"], top["n_embd"]) == (2, 2) and top["leverage"] > 0.9
    refit = seed["refit"]
    assert refit["status"] == "ok" and "2 x 2" in refit["dropped"] and refit["n"] == 7 - seed["n_high_leverage"]
    assert refit["verdict_changed"] == (refit["winner"] != seed["winner"])


def test_verdict_says_when_dropping_high_leverage_changes_it():
    # Depth only on the six ordinary shapes; tiny-gpt2 alone makes parameter count look like it matters.
    def law(cells):
        base = 0.5 * cells["n_layer"].to_numpy() ** 0.7
        return np.where(cells["n_embd"].to_numpy() == 2, base / 20, base)

    stats = make_stats(SyntheticPlan(law=law, shapes=REFERENCE_FAMILY, phases=("decode",), reps=3, cell_cv=0.01, seed=12))
    fit = fit_all(stats.frame)[0]
    refit = fit.seed_form["refit"]
    assert refit["status"] == "ok"
    if refit["verdict_changed"]:
        assert "the verdict changes to" in fit.verdict["text"]
    else:
        assert "unchanged without the shapes of leverage" in fit.verdict["text"]


def test_seed_winner_names_which_cis_exclude_zero():
    assert seed_winner(0.1, 0.3, 0.5, 0.9) == "both"
    assert seed_winner(-0.1, 0.3, 0.5, 0.9) == "depth"
    assert seed_winner(0.1, 0.3, -0.5, 0.9) == "params"
    assert seed_winner(-0.1, 0.3, -0.5, 0.9) == "inconclusive"


def test_analyze_json_gives_the_seed_form_per_group_beside_its_keys():
    con = build_store(SyntheticPlan(law=_power_law(0.3, 0.6), phases=("decode",), cell_cv=0.02, seed=13))
    rows = analyze(con, n_resamples=200)["seed_form"]
    assert len(rows) == 1
    row = rows[0]
    for key in ("regime", "backend", "phase", "dtype", "batch_size", "prompt_len", "coef_log_params", "coef_log_n_layer",
                "coef_log_params_lo", "coef_log_params_hi", "coef_log_n_layer_lo", "coef_log_n_layer_hi", "n_shapes", "r2"):
        assert key in row, key
    assert row["coef_log_params_lo"] <= 0.3 <= row["coef_log_params_hi"]
    assert row["phase"] == "decode" and row["n_shapes"] == 40
