"""Depth vs width: the fits recover a known law and the verdict names what drives latency."""
from __future__ import annotations

from analysis.regression import MIN_SHAPES, MODELS, fit_all
from analysis.synthetic import SyntheticPlan, depth_width_law

from .conftest import DEPTH_LAW, make_stats


def _decode_fit(stats):
    fits = [f for f in fit_all(stats.frame) if f.group["phase"] == "decode"]
    assert len(fits) == 1
    return fits[0]


def _coef(fit, scale, model, term):
    rec = next(m for m in fit.models if m["scale"] == scale and m["model"] == model)
    return next(c for c in rec["coefficients"] if c["term"] == term)


def test_depth_law_yields_depth_verdict(depth_stats):
    # latency = 1 + 0.5 depth + 0.002 width: width costs a little too, so the seed form,
    # which holds depth fixed, finds both; the single-variable models pick depth
    fit = _decode_fit(depth_stats)
    assert fit.status == "ok"
    assert fit.verdict["winner"] == "both"
    assert fit.verdict["single_variable_winner"] == "depth"
    assert "single-variable models: depth explains latency better than parameter count here" in fit.verdict["text"]
    assert all(v["winner"] == "depth" for v in fit.verdicts.values())
    assert fit.seed_form["coef_log_n_layer"] > 5 * fit.seed_form["coef_log_params"] > 0


def test_pure_depth_law_yields_depth_verdict():
    # protocol 1 (one round): HC3 across shapes alone, and the fit says it has no replicated level
    fit = _decode_fit(make_stats(SyntheticPlan(law=depth_width_law(c=0.0), phases=("decode",), cell_cv=0.01, seed=1)))
    assert fit.verdict["winner"] == "depth" and fit.verdict["single_variable_winner"] == "depth"
    assert fit.verdict["text"].startswith("depth drives latency, not parameter count")
    assert fit.ci_kind == "none" and all(m["cov_type"] == "HC3" for m in fit.models)


def test_depth_and_width_coefficients_recovered_inside_their_cis(depth_stats):
    fit = _decode_fit(depth_stats)
    depth = _coef(fit, "linear", "depth+width", "depth")
    width = _coef(fit, "linear", "depth+width", "width")
    assert depth["ci_low"] <= DEPTH_LAW["b"] <= depth["ci_high"]
    assert width["ci_low"] <= DEPTH_LAW["c"] <= width["ci_high"]


def test_params_law_flips_the_verdict_to_params(params_stats):
    fit = _decode_fit(params_stats)
    assert fit.verdict["winner"] == "params" and fit.verdict["single_variable_winner"] == "params"
    assert fit.verdict["text"].startswith("across rounds of one run (CIs leave out run-to-run variance): "
                                          "parameter count drives latency, not depth")
    assert "single-variable models: parameter count explains latency better than depth here" in fit.verdict["text"]


def test_models_compared_on_both_scales_with_ci_adj_r2_and_aic(depth_stats):
    fit = _decode_fit(depth_stats)
    assert {(m["scale"], m["model"]) for m in fit.models} == {(s, n) for s in MODELS for n in MODELS[s]}
    for m in fit.models:
        # 3 rounds per cell: HC3 plus the spread of the fit over rounds, and it says so
        assert m["cov_type"] == "HC3 + between-round (t across rounds)" and m["n"] == fit.n_cells
        assert all(c["ci_low"] <= c["estimate"] <= c["ci_high"] for c in m["coefficients"])
        assert isinstance(m["adj_r2"], float) and isinstance(m["aic"], float)


def test_no_model_puts_log_params_with_both_log_depth_and_log_width():
    # params with depth (the seed form) is identifiable on a grid; with depth and width it is not
    for specs in MODELS.values():
        for formula in specs.values():
            rhs = formula.split("~")[1]
            assert not ("params" in rhs and "depth" in rhs and "width" in rhs), formula


def test_noise_without_a_shape_effect_is_inconclusive():
    flat = SyntheticPlan(law=lambda cells: 5.0 + 0 * cells["n_layer"].to_numpy(), phases=("decode",), noise_cv=0.05, cell_cv=0.05, seed=5)
    fit = _decode_fit(make_stats(flat))
    assert fit.status == "ok"
    assert fit.verdict["winner"] == "inconclusive"
    assert fit.verdict["text"].startswith("inconclusive")


def test_too_few_shapes_gives_a_message_with_how_many_more_not_a_fit():
    plan = SyntheticPlan(shapes=((1, 64), (2, 128), (4, 64), (8, 128)), phases=("decode",), reps=2)
    fit = _decode_fit(make_stats(plan))
    assert fit.status == "too_few_shapes"
    assert "4 distinct shapes" in fit.message and f"measure {MIN_SHAPES - 4} more" in fit.message
    assert fit.models == [] and fit.bands.empty


def test_shapes_on_one_line_in_log_space_are_refused_with_a_reason():
    diagonal = tuple((d, 64 * d) for d in (1, 2, 3, 4, 5, 6, 8))
    fit = _decode_fit(make_stats(SyntheticPlan(shapes=diagonal, phases=("decode",), reps=2)))
    assert fit.status == "too_few_shapes"
    assert "depth and width move together" in fit.message


def test_prediction_bands_cover_each_model_and_bracket_the_fit(depth_stats):
    bands = _decode_fit(depth_stats).bands
    assert set(zip(bands["scale"], bands["model"])) == {(s, n) for s in MODELS for n in MODELS[s]}
    assert (bands["mean_ci_lower"] <= bands["mean"]).all() and (bands["mean"] <= bands["mean_ci_upper"]).all()
    # on the log scale the band is exp of a CI of mean log latency: positive, in ms
    assert (bands.loc[bands["scale"] == "log", "mean_ci_lower"] > 0).all()


def test_to_dict_leaves_out_bands(depth_stats):
    d = _decode_fit(depth_stats).to_dict()
    assert "bands" not in d and d["verdict"]["single_variable_winner"] == "depth"
    assert d["seed_form"]["winner"] == d["verdict"]["winner"]
