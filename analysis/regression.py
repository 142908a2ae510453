"""Depth vs width per group: which shape variable explains latency.

Per group (cells equal in everything but shape) we fit OLS on cell medians with HC3
errors, which stay honest when the spread grows with model size:

- depth:         latency ~ depth               log: log latency ~ log depth
- params:        latency ~ params (millions)   log: log latency ~ log params
- depth+width:   latency ~ depth + width       log: log latency ~ log depth + log width
- params+depth:                                log: log latency ~ log params + log depth

The last is the seed study's (TR121) form. It is identifiable on a grid: log params is
close to log depth + 2 log width, but that ties log params to log depth only through
width, and a grid moves width independently (the correlation of log params with log
n_layer is 0.3-0.6 per bundled group; the fit reports it, the condition number and each
shape's leverage). What is not identifiable is log params together with *both* log depth
and log width (three nearly collinear terms), so no model has all three.

Verdict. The seed form asks the seed study's question directly: holding parameter count
fixed, does depth still cost (the log n_layer elasticity), and holding depth fixed, does
parameter count (the log params elasticity)? Its answer is "depth" or "params" when only
that coefficient's CI excludes 0, "both" when both do, "inconclusive" when neither does.
Shapes of leverage above `LEVERAGE_LIMIT` (in the 7-shape reference family tiny-gpt2 has
0.94) can decide a fit alone, so the seed form is refitted without them and the verdict
says when that changes the answer. The group's verdict is the seed form's answer where it
has one; the comparison of single-variable models (per scale: "depth" when the depth
coefficient's CI in depth+width excludes 0 and the depth-only model beats the params-only
model clearly, AIC lower by at least `CLEAR_AIC_GAP` and a higher adjusted R^2; "params"
symmetrically) stays in `verdicts` and in the text, and decides when the seed form cannot
be fitted.

Replicated levels. HC3 treats the shapes of a group as independent noise around the law;
it cannot see what a cell's replicates share (a run that slows deep models more, a round
of one process). So `fit_group` adds the coefficients' covariance over the cells' units,
clustered by unit: OLS is linear in the log medians, so with A = (X'X)^-1 X' the
coefficient vector of unit r's medians is A y_r, and the units' spread of A y gives, per
block of cells measured on the same k units, A S A' / k (S the units' covariance of the
cell medians), i.e. a fit per run (or round) and the spread of those fits. That part is
scaled by (t_{k-1} / z)^2, so that with few units the interval is a Student-t one (with 2
runs t_1 is 12.7, not 1.96), and added to HC3. The sum is conservative: the HC3 residuals
already hold the within-run noise that the units' spread holds again; it is never narrower
than either. Units are the runs for cells pooled over runs (`ci_kind` "across runs"), the
rounds of one run for a protocol-2 run ("across rounds"); a cell with no CI adds nothing,
and then the fit's `ci_kind` is "none": its CIs rest on HC3 across the shapes of one run
and leave out run-to-run variance, which tables mark. A cluster-robust sandwich
(statsmodels `cov_type="cluster"`) is not used because its standard errors need many
clusters, and a bundled cell has 2-4 runs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
from statsmodels.regression.linear_model import OLSResults, RegressionResultsWrapper

from analysis.intervals import CI_ACROSS_ROUNDS, CI_ACROSS_RUNS, CI_NONE, MIN_UNITS, t_factor, weakest_kind
from analysis.load import ALL_FAMILIES, GroupKey, group_dict, with_family

# Fewest distinct shapes for depth + width (3 coefficients) with 3 residual degrees of
# freedom, so that HC3 errors and t intervals are not degenerate.
MIN_SHAPES = 6
MIN_DEPTHS = 3  # a line through two depths cannot show whether depth fits at all
MIN_WIDTHS = 2
# Burnham & Anderson: a model 10 AIC units worse has essentially no support.
CLEAR_AIC_GAP = 10.0
CONFIDENCE = 0.95
# A shape whose hat value is above 0.5 carries more than half of its own fitted value
# (Hoaglin & Welsch flag 2p/n, which is 0.5 or more for the 6-12 shapes of a small group).
LEVERAGE_LIMIT = 0.5
BAND_POINTS = 40  # points per fitted line: smooth on a log axis, cheap to predict

MODELS: dict[str, dict[str, str]] = {
    "linear": {
        "depth": "latency ~ depth",
        "params": "latency ~ params_m",
        "depth+width": "latency ~ depth + width",
    },
    "log": {
        "depth": "log_latency ~ log_depth",
        "params": "log_latency ~ log_params",
        "depth+width": "log_latency ~ log_depth + log_width",
        "params+depth": "log_latency ~ log_params + log_depth",  # the seed study's form
    },
}
SEED_FORM = ("log", "params+depth")
DEPTH_TERM = {"linear": "depth", "log": "log_depth"}
PARAMS_TERM = {"linear": "params_m", "log": "log_params"}
UNITS = {"linear": "ms per layer", "log": "elasticity"}


@dataclass
class GroupFit:
    """Fits of one group. `bands` (fitted lines with CIs, in ms) stays out of `to_dict`."""

    group: dict[str, Any]
    group_id: str
    status: str  # ok | too_few_shapes
    message: str
    n_cells: int
    n_shapes: int
    models: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, dict[str, str]] = field(default_factory=dict)
    verdict: dict[str, str] = field(default_factory=dict)
    bands: pd.DataFrame = field(default_factory=pd.DataFrame)
    ci_includes_between_run_variance: bool = False
    seed_form: dict[str, Any] = field(default_factory=dict)
    ci_kind: str = CI_NONE  # the weakest replicated level in the CIs (analysis.intervals)

    @property
    def key(self) -> GroupKey:
        """The group as a structured key (`group_id` is its label)."""
        return GroupKey.of({"gen_len": None, **self.group})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (without the bands)."""
        return {
            "group": self.group, "group_id": self.group_id, "status": self.status,
            "message": self.message, "n_cells": self.n_cells, "n_shapes": self.n_shapes,
            "models": self.models, "verdicts": self.verdicts, "verdict": self.verdict,
            "ci_includes_between_run_variance": self.ci_includes_between_run_variance,
            "ci_kind": self.ci_kind, "seed_form": self.seed_form,
        }


def design_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Cell medians with the regressors both scales need."""
    return pd.DataFrame(
        {
            "cell_id": cells["cell_id"].to_numpy(),
            "latency": cells["median"].to_numpy(dtype=float),
            "depth": cells["n_layer"].to_numpy(dtype=float),
            "width": cells["n_embd"].to_numpy(dtype=float),
            "params_m": cells["params"].to_numpy(dtype=float) / 1e6,
            "log_latency": np.log(cells["median"].to_numpy(dtype=float)),
            "log_depth": np.log(cells["n_layer"].to_numpy(dtype=float)),
            "log_width": np.log(cells["n_embd"].to_numpy(dtype=float)),
            "log_params": np.log(cells["params"].to_numpy(dtype=float)),
        }
    )


def design_matrix(formula: str, data: pd.DataFrame) -> pd.DataFrame:
    """The exog of an additive formula (`y ~ a + b`): an Intercept column, then the terms.

    What patsy would build for these formulas, without patsy: evaluating a formula costs
    about 15 ms, and the dashboard fits thousands of small groups (per run and pooled),
    where formula evaluation was 90% of the time.
    """
    terms = [t.strip() for t in formula.split("~", 1)[1].split("+")]
    columns = [np.ones(len(data))] + [data[t].to_numpy(dtype=float) for t in terms]
    return pd.DataFrame(np.column_stack(columns), columns=["Intercept", *terms], index=data.index)


def _response(formula: str, data: pd.DataFrame) -> pd.Series:
    return data[formula.split("~", 1)[0].strip()].astype(float)


def shape_shortfall(cells: pd.DataFrame) -> str | None:
    """Why these cells cannot support the fits, with how many more shapes are needed; None if fine."""
    shapes = cells[["n_layer", "n_embd"]].drop_duplicates()
    n_shapes, n_depths, n_widths = len(shapes), shapes["n_layer"].nunique(), shapes["n_embd"].nunique()
    problems = []
    if n_shapes < MIN_SHAPES:
        problems.append(
            f"{n_shapes} distinct shapes (depth x width); depth + width needs at least {MIN_SHAPES}: "
            f"measure {MIN_SHAPES - n_shapes} more"
        )
    if n_depths < MIN_DEPTHS:
        problems.append(f"{n_depths} distinct depths; add {MIN_DEPTHS - n_depths} more depth(s)")
    if n_widths < MIN_WIDTHS:
        problems.append(f"{n_widths} distinct width(s); add {MIN_WIDTHS - n_widths} more width(s)")
    if not problems:
        design = np.column_stack([np.ones(n_shapes), np.log(shapes["n_layer"]), np.log(shapes["n_embd"])])
        if np.linalg.matrix_rank(design) < 3:
            problems.append(
                "depth and width move together in these shapes (log width is a linear function of "
                "log depth), so their effects cannot be separated: add shapes off that line"
            )
    if not problems:
        return None
    return "too few distinct shapes for a fit: " + "; ".join(problems) + "."


COV_TYPES = {CI_ACROSS_RUNS: "HC3 + between-run (t across runs)", CI_ACROSS_ROUNDS: "HC3 + between-round (t across rounds)",
             CI_NONE: "HC3"}


def unit_covariance(exog: np.ndarray, cells: pd.DataFrame, *, log: bool = True,
                    confidence: float = CONFIDENCE) -> np.ndarray | None:
    """The covariance over the cells' replicate units of OLS coefficients on design `exog`, t-scaled.

    `exog` has one row per row of `cells` (same order); the response is the cells' log
    medians (`log`) or medians. Reads `unit_ids` / `unit_log_medians` (analysis.stats,
    analysis.reproducibility): cells with the same units form a block, and each block adds
    (t_{k-1}/z)^2 A S A' / k (module docstring). None when no cell has two or more units.
    """
    if "unit_ids" not in cells:
        return None
    blocks: dict[tuple, list[int]] = {}
    for i, units in enumerate(cells["unit_ids"]):
        if len(units) >= MIN_UNITS:
            blocks.setdefault(tuple(units), []).append(i)
    if not blocks:
        return None
    values = cells["unit_log_medians"].to_numpy()
    hat = np.linalg.pinv(np.asarray(exog, dtype=np.float64))  # p x n: coefficients = hat @ y
    cov = np.zeros((hat.shape[0], hat.shape[0]))
    for rows in blocks.values():
        y = np.array([values[i] for i in rows])  # cells x k, log medians
        y = y if log else np.exp(y)
        k = y.shape[1]
        spread = hat[:, rows] @ (y - y.mean(axis=1, keepdims=True))  # p x k: each unit's fit, centred
        cov += t_factor(k, confidence) * (spread @ spread.T) / (k * (k - 1))
    return cov


def unit_covariances(cells: pd.DataFrame, confidence: float = CONFIDENCE) -> dict[tuple[str, str], np.ndarray] | None:
    """`unit_covariance` of every model of `MODELS` on these cells; None without replicate units."""
    data = design_frame(cells)
    out = {}
    for scale, specs in MODELS.items():
        for name, formula in specs.items():
            cov = unit_covariance(design_matrix(formula, data).to_numpy(), cells, log=scale == "log", confidence=confidence)
            if cov is None:
                return None
            out[(scale, name)] = cov
    return out


def cov_type_of(cells: pd.DataFrame) -> str:
    """What a fit's covariance holds: HC3, plus the spread over runs or rounds where cells have them."""
    if "unit_ids" not in cells:
        return COV_TYPES[CI_NONE]
    levels = {k for k, units in zip(cells["ci_kind"], cells["unit_ids"]) if len(units) >= MIN_UNITS}
    return COV_TYPES[CI_ACROSS_RUNS if CI_ACROSS_RUNS in levels else CI_ACROSS_ROUNDS if levels else CI_NONE]


def fit_group(
    cells: pd.DataFrame,
    confidence: float = CONFIDENCE,
    *,
    bands: bool = True,
) -> GroupFit:
    """Fit the models on both scales for one group's cells (one row per cell).

    The covariance is HC3 plus, where cells have replicate units (runs or rounds), the
    t-scaled covariance over those units (module docstring, `unit_covariances`); `ci_kind`
    and the message say which. `bands=False` skips the fitted lines (a third of the cost)
    where only the verdict is needed, e.g. per-run fits.
    """
    group = group_dict(cells)
    group_id = str(cells["group_id"].iloc[0]) if "group_id" in cells else ""
    n_shapes = len(cells[["n_layer", "n_embd"]].drop_duplicates())
    shortfall = shape_shortfall(cells)
    if shortfall:
        return GroupFit(group, group_id, "too_few_shapes", shortfall, len(cells), n_shapes)
    data = design_frame(cells)
    alpha = 1 - confidence
    kind = weakest_kind(cells["ci_kind"]) if "ci_kind" in cells else CI_NONE
    extra = unit_covariances(cells, confidence)
    cov_type = cov_type_of(cells)
    models, fits = [], {}
    for scale, specs in MODELS.items():
        for name, formula in specs.items():
            exog = design_matrix(formula, data)
            res = sm.OLS(_response(formula, data).to_numpy(), exog.to_numpy()).fit(cov_type="HC3")
            res.model.data.xnames = list(exog.columns)  # numpy in, names kept: no pandas wrapping per call
            if extra is not None:
                res = with_extra_cov(res, extra[(scale, name)])
            fits[(scale, name)] = res
            models.append(_model_record(scale, name, formula, res, alpha, cov_type))
    verdicts = {scale: _scale_verdict(scale, {n: fits[(scale, n)] for n in MODELS[scale]}, alpha) for scale in MODELS}
    across_runs = kind == CI_ACROSS_RUNS
    seed = seed_form_record(data, fits[SEED_FORM], alpha, cov_type=cov_type)
    seed["ci_includes_between_run_variance"] = across_runs
    seed["ci_kind"] = kind
    seed["kv_term"] = kv_heads_term(cells, confidence)
    verdict = _with_seed_form(_combine(verdicts), seed)
    kind_note = {CI_ACROSS_RUNS: "across runs (CIs include between-run variance): ",
                 CI_ACROSS_ROUNDS: "across rounds of one run (CIs leave out run-to-run variance): "}.get(kind, "")
    verdict = {**verdict, "lead": kind_note + verdict["lead"], "text": kind_note + verdict["text"]}
    lines = _bands(data, fits, alpha) if bands else pd.DataFrame()
    return GroupFit(group, group_id, "ok", verdict["text"], len(cells), n_shapes, models, verdicts, verdict, lines, across_runs,
                    seed, kind)


KV_FORM = "log_latency ~ log_params + log_depth + log_kv_share"


def kv_heads_term(cells: pd.DataFrame, confidence: float = CONFIDENCE) -> dict[str, Any] | None:
    """The seed form with a KV-heads term, where a group's KV heads vary: log latency ~ log
    params + log depth + log (n_kv_head / n_head), with `fit_group`'s covariance (HC3 plus
    the units' spread). The term is the share of heads that hold keys and values (1 for full
    multi-head attention; the KV cache is that share of the width), so more heads at one width
    is not read as more KV. Its coefficient is the elasticity of latency in that share at equal
    parameters and depth: what grouped-query attention saves.

    None where every cell has the same share (GPT-2, or one KV count) or a frame has no head
    counts: the seed form is then all there is. Where it varies but the term is not identified (too few shapes, or a share that
    moves with depth and params), a record says why instead of a coefficient.
    """
    cells = with_family(cells)
    if "n_kv_head" not in cells:  # no head counts: full multi-head attention (analysis.why says the same)
        return None
    share = cells["n_kv_head"].to_numpy(dtype=float) / cells["n_head"].to_numpy(dtype=float)
    if len(np.unique(share)) < 2:
        return None
    data = design_frame(cells).assign(log_kv_share=np.log(share))
    exog = design_matrix(KV_FORM, data)
    n_shapes = len(cells[["n_layer", "n_embd", "n_head", "n_kv_head"]].drop_duplicates())
    heads = sorted({f"{int(kv)}/{int(h)}" for kv, h in zip(cells["n_kv_head"], cells["n_head"])})
    record: dict[str, Any] = {"formula": KV_FORM, "n_shapes": n_shapes, "kv_heads": heads}
    if n_shapes < MIN_SHAPES:
        return record | {"status": "not_identified", "message": f"{n_shapes} distinct shapes (depth x width x KV heads); "
                                                                 f"a KV-heads term needs at least {MIN_SHAPES}"}
    if np.linalg.matrix_rank(exog.to_numpy()) < exog.shape[1]:
        return record | {"status": "not_identified", "message": "the KV heads' share moves with parameter count and depth "
                                                                 "in these shapes: their effects cannot be separated"}
    res = sm.OLS(_response(KV_FORM, data).to_numpy(), exog.to_numpy()).fit(cov_type="HC3")
    res.model.data.xnames = list(exog.columns)
    extra = unit_covariance(exog.to_numpy(), cells, confidence=confidence)
    if extra is not None:
        res = with_extra_cov(res, extra)
    estimate, low, high = _ci(res, "log_kv_share", 1 - confidence)
    return record | {
        "status": "ok", "coef_log_kv_share": estimate, "coef_log_kv_share_lo": low, "coef_log_kv_share_hi": high,
        "r2": float(res.rsquared), "condition_number": float(np.linalg.cond(exog.to_numpy())),
        "cov_type": cov_type_of(cells),
        "message": f"KV-heads elasticity {estimate:.3g} [{low:.3g}, {high:.3g}] at equal params and depth "
                   f"(log of KV heads / heads, measured at {', '.join(heads)})",
    }


def _fit_seed_form(data: pd.DataFrame) -> Any:
    formula = MODELS[SEED_FORM[0]][SEED_FORM[1]]
    exog = design_matrix(formula, data)
    res = sm.OLS(_response(formula, data).to_numpy(), exog.to_numpy()).fit(cov_type="HC3")
    res.model.data.xnames = list(exog.columns)
    return res


def _seed_terms(res: Any, alpha: float) -> dict[str, Any]:
    p_est, p_low, p_high = _ci(res, "log_params", alpha)
    d_est, d_low, d_high = _ci(res, "log_depth", alpha)
    return {
        "coef_log_params": p_est, "coef_log_params_lo": p_low, "coef_log_params_hi": p_high,
        "coef_log_n_layer": d_est, "coef_log_n_layer_lo": d_low, "coef_log_n_layer_hi": d_high,
        "r2": float(res.rsquared), "winner": seed_winner(p_low, p_high, d_low, d_high),
    }


def seed_winner(params_lo: float, params_hi: float, depth_lo: float, depth_hi: float) -> str:
    """"depth", "params", "both" or "inconclusive": which elasticities' CIs exclude 0."""
    params, depth = params_lo > 0 or params_hi < 0, depth_lo > 0 or depth_hi < 0
    return {(True, True): "both", (False, True): "depth", (True, False): "params"}.get((params, depth), "inconclusive")


def seed_form_record(data: pd.DataFrame, res: Any, alpha: float, cov_type: str = "HC3") -> dict[str, Any]:
    """The seed form's coefficients with CIs, its fit diagnostics, and a refit without high leverage.

    Leverage is the hat value of each shape; Cook's distance its influence on the whole fit.
    The refit drops shapes above `LEVERAGE_LIMIT` and uses HC3 alone (a between-run
    covariance belongs to the full design); it is reported only when it drops something,
    with `verdict_changed` when its answer differs.
    """
    exog = np.asarray(res.model.exog)
    hat = np.einsum("ij,ji->i", exog, np.linalg.pinv(exog))
    resid = np.asarray(res.resid)
    k = exog.shape[1]
    cooks = resid**2 / (k * res.scale) * hat / np.maximum(1 - hat, 1e-12) ** 2 if res.scale > 0 else np.zeros_like(hat)
    record: dict[str, Any] = {
        **_seed_terms(res, alpha),
        "n_shapes": int(len(data[["depth", "width"]].drop_duplicates())), "n": int(res.nobs), "cov_type": cov_type,
        "corr_log_params_log_n_layer": float(np.corrcoef(data["log_params"], data["log_depth"])[0, 1]),
        "condition_number": float(np.linalg.cond(exog)),
    }
    order = np.argsort(-hat)
    record["leverage"] = [
        {"cell_id": str(data["cell_id"].iloc[i]), "n_layer": int(data["depth"].iloc[i]), "n_embd": int(data["width"].iloc[i]),
         "leverage": float(hat[i]), "cooks_distance": float(cooks[i])}
        for i in order[:5]
    ]
    record["max_leverage"] = float(hat.max())
    high = hat > LEVERAGE_LIMIT
    record["n_high_leverage"] = int(high.sum())
    record["refit"] = None
    if high.any():
        kept = data[~high]
        dropped = ", ".join(f"{int(d)} x {int(w)}" for d, w in zip(data["depth"][high], data["width"][high]))
        design = np.column_stack([np.ones(len(kept)), kept["log_params"], kept["log_depth"]])
        if len(kept) < k + 1 or np.linalg.matrix_rank(design) < k:
            record["refit"] = {"status": "not_identifiable", "dropped": dropped,
                               "message": f"without the shapes of leverage above {LEVERAGE_LIMIT:g} ({dropped}) too few "
                                          "shapes remain to separate params from depth"}
        else:
            refit = _seed_terms(_fit_seed_form(kept), alpha)
            record["refit"] = {"status": "ok", "dropped": dropped, "n": int(len(kept)), "cov_type": "HC3", **refit,
                               "verdict_changed": refit["winner"] != record["winner"]}
    return record


def _seed_text(seed: Mapping[str, Any]) -> str:
    text = (f"seed form log latency ~ log params + log n_layer (R^2 {seed['r2']:.3f}): "
            f"params elasticity {seed['coef_log_params']:.3g} [{seed['coef_log_params_lo']:.3g}, {seed['coef_log_params_hi']:.3g}], "
            f"depth elasticity {seed['coef_log_n_layer']:.3g} [{seed['coef_log_n_layer_lo']:.3g}, {seed['coef_log_n_layer_hi']:.3g}]")
    refit = seed.get("refit")
    if refit and refit["status"] == "ok" and refit["verdict_changed"]:
        text += (f"; without the shapes of leverage above {LEVERAGE_LIMIT:g} ({refit['dropped']}) the verdict changes "
                 f"to {refit['winner']} (params {refit['coef_log_params']:.3g} [{refit['coef_log_params_lo']:.3g}, "
                 f"{refit['coef_log_params_hi']:.3g}], depth {refit['coef_log_n_layer']:.3g} "
                 f"[{refit['coef_log_n_layer_lo']:.3g}, {refit['coef_log_n_layer_hi']:.3g}])")
    elif refit and refit["status"] == "ok":
        text += f"; unchanged without the shapes of leverage above {LEVERAGE_LIMIT:g} ({refit['dropped']})"
    elif refit:
        text += f"; {refit['message']}"
    kv = seed.get("kv_term")
    if kv:
        text += f"; {kv['message']}"
    return text


SEED_LEADS = {
    "depth": "depth drives latency, not parameter count",
    "params": "parameter count drives latency, not depth",
    "both": "depth and parameter count both drive latency",
    "inconclusive": "inconclusive: neither elasticity's CI excludes 0 in the seed form",
}


def _with_seed_form(single: dict[str, str], seed: Mapping[str, Any]) -> dict[str, str]:
    """The group verdict: the seed form's answer, with the single-variable comparison after it."""
    winner = seed["winner"]
    lead = f"{SEED_LEADS[winner]} ({_seed_text(seed)}); single-variable models: "
    return {
        "winner": winner,
        "single_variable_winner": single["winner"],
        "lead": lead + single["lead"],
        "text": lead + single["text"],
    }


def with_extra_cov(res: Any, extra: np.ndarray) -> Any:
    """The same OLS fit with covariance HC3 + `extra`: conf_int, p-values and get_prediction use it.

    Normal quantiles, as HC3 fits use; `scale` stays the residual variance so that the
    (non-robust, reference-only) observation intervals keep their meaning.
    """
    cov = np.asarray(res.cov_params()) + np.asarray(extra, dtype=np.float64)
    widened = OLSResults(res.model, np.asarray(res.params), normalized_cov_params=cov / res.scale, scale=res.scale, use_t=False)
    return RegressionResultsWrapper(widened)


def fit_all(stats: pd.DataFrame, confidence: float = CONFIDENCE) -> list[GroupFit]:
    """`fit_group` for every group in a cell-stats frame, in group order."""
    return [fit_group(g, confidence) for _, g in stats.groupby("group_id", sort=True)]


def _model_record(scale: str, name: str, formula: str, res: Any, alpha: float, cov_type: str = "HC3") -> dict[str, Any]:
    # numpy views of the results: statsmodels' pandas wrappers cost more than the fit here
    terms = list(res.model.exog_names)
    params, pvalues = np.asarray(res.params), np.asarray(res.pvalues)
    ci = np.asarray(res.conf_int(alpha))
    coefficients = [
        {
            "term": term,
            "estimate": float(params[i]),
            "ci_low": float(ci[i, 0]),
            "ci_high": float(ci[i, 1]),
            "p_value": float(pvalues[i]),
        }
        for i, term in enumerate(terms)
    ]
    return {
        "scale": scale, "model": name, "formula": formula, "n": int(res.nobs),
        "adj_r2": float(res.rsquared_adj), "aic": float(res.aic), "coefficients": coefficients,
        "cov_type": cov_type,
    }


def coefficient(models: list[dict[str, Any]], scale: str, model: str, term: str) -> dict[str, Any] | None:
    """One term of one fitted model (a GroupFit's `models` records) with that model's adj. R^2
    and AIC, or None where the model was not fitted."""
    for record in models:
        if record["scale"] == scale and record["model"] == model:
            for entry in record["coefficients"]:
                if entry["term"] == term:
                    return entry | {"adj_r2": record["adj_r2"], "aic": record["aic"]}
    return None


def _ci(res: Any, term: str, alpha: float) -> tuple[float, float, float]:
    i = list(res.model.exog_names).index(term)
    low, high = np.asarray(res.conf_int(alpha))[i]
    return float(np.asarray(res.params)[i]), float(low), float(high)


def _scale_verdict(scale: str, fits: dict[str, Any], alpha: float) -> dict[str, str]:
    depth, params, both = fits["depth"], fits["params"], fits["depth+width"]
    gap = params.aic - depth.aic  # > 0: depth-only fits better
    d_est, d_low, d_high = _ci(both, DEPTH_TERM[scale], alpha)
    p_est, p_low, p_high = _ci(params, PARAMS_TERM[scale], alpha)
    detail = (
        f"{scale} scale: depth-only adj R^2 {depth.rsquared_adj:.3f}, AIC {depth.aic:.1f}; "
        f"params-only adj R^2 {params.rsquared_adj:.3f}, AIC {params.aic:.1f}; "
        f"depth coefficient in depth + width {d_est:.3g} [{d_low:.3g}, {d_high:.3g}] ({UNITS[scale]})"
    )
    depth_ci_clear = d_low > 0 or d_high < 0
    params_ci_clear = p_low > 0 or p_high < 0
    if gap >= CLEAR_AIC_GAP and depth.rsquared_adj > params.rsquared_adj and depth_ci_clear:
        lead = "depth explains latency better than parameter count here"
        return {"winner": "depth", "lead": lead, "text": f"{lead}: {detail}", "detail": detail}
    if -gap >= CLEAR_AIC_GAP and params.rsquared_adj > depth.rsquared_adj and params_ci_clear:
        lead = "parameter count explains latency better than depth here"
        return {
            "winner": "params",
            "lead": lead,
            "text": f"{lead}: {detail}; params coefficient {p_est:.3g} [{p_low:.3g}, {p_high:.3g}]",
            "detail": detail,
        }
    reasons = []
    if abs(gap) < CLEAR_AIC_GAP:
        reasons.append(f"AIC differs by only {abs(gap):.1f} (< {CLEAR_AIC_GAP:g})")
    elif (gap > 0) != (depth.rsquared_adj > params.rsquared_adj):
        reasons.append("AIC and adjusted R^2 disagree")
    elif gap > 0 and not depth_ci_clear:
        reasons.append("the depth coefficient's CI includes 0 once width is in the model")
    elif gap < 0 and not params_ci_clear:
        reasons.append("the params coefficient's CI includes 0")
    why = f"({'; '.join(reasons)})"
    return {"winner": "inconclusive", "lead": f"inconclusive {why}", "why": why, "text": f"inconclusive {why}: {detail}",
            "detail": detail}


def _combine(verdicts: dict[str, dict[str, str]]) -> dict[str, str]:
    winners = {v["winner"] for v in verdicts.values()}
    decided = winners - {"inconclusive"}
    details = "; ".join(v["detail"] for v in verdicts.values())
    if len(decided) == 1:
        winner = decided.pop()
        scales = [s for s, v in verdicts.items() if v["winner"] == winner]
        others = [s for s in verdicts if s not in scales]
        where = (
            f"on the {', '.join(scales)} scale only ({', '.join(others)} inconclusive)"
            if others else "linear and log-log scales agree"
        )
        lead = f"{verdicts[scales[0]]['lead']} ({where})"
    elif len(decided) > 1:
        winner, lead = "inconclusive", "inconclusive: the linear and log-log scales disagree"
    else:
        reasons = "; ".join(f"{s}: {v['why']}" for s, v in verdicts.items())
        winner, lead = "inconclusive", f"inconclusive on both scales ({reasons})"
    return {"winner": winner, "lead": lead, "text": f"{lead}: {details}"}


def _bands(data: pd.DataFrame, fits: dict[tuple[str, str], Any], alpha: float) -> pd.DataFrame:
    """Fitted lines with CI (and observation) bands, in ms, for plotting.

    On the log scale the line and its band are exp of a mean of log latency: a CI of the
    (geometric) median, not of the mean. Observation intervals use the model's residual
    variance, not HC3: they are not robust and are kept for reference only.
    """
    depth_grid = np.geomspace(data["depth"].min(), data["depth"].max(), BAND_POINTS)
    params_grid = np.geomspace(data["params_m"].min(), data["params_m"].max(), BAND_POINTS)
    widths = np.sort(data["width"].unique())
    depths = np.sort(data["depth"].unique())
    grids = {
        "depth": pd.DataFrame({"depth": depth_grid, "width": np.nan, "params_m": np.nan}),
        "params": pd.DataFrame({"depth": np.nan, "width": np.nan, "params_m": params_grid}),
        "depth+width": pd.DataFrame(
            {"depth": np.tile(depth_grid, len(widths)), "width": np.repeat(widths, BAND_POINTS), "params_m": np.nan}
        ),
        # one line over parameter count per measured depth (a width sweep at that depth)
        "params+depth": pd.DataFrame(
            {"depth": np.repeat(depths, BAND_POINTS), "width": np.nan, "params_m": np.tile(params_grid, len(depths))}
        ),
    }
    parts = []
    for (scale, name), res in fits.items():
        grid = grids[name].copy()
        grid["log_depth"] = np.log(grid["depth"])
        grid["log_width"] = np.log(grid["width"])
        grid["log_params"] = np.log(grid["params_m"] * 1e6)
        formula = MODELS[scale][name]
        frame = res.get_prediction(design_matrix(formula, grid).to_numpy()).summary_frame(alpha=alpha)
        cols = ["mean", "mean_ci_lower", "mean_ci_upper", "obs_ci_lower", "obs_ci_upper"]
        values = np.exp(frame[cols].to_numpy()) if scale == "log" else frame[cols].to_numpy()
        out = grid[["depth", "width", "params_m"]].copy()
        out[cols] = values
        out.insert(0, "model", name)
        out.insert(0, "scale", scale)
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def fit_across_families(stats: pd.DataFrame, confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Pool every family of each group into one fit with family as a term.

    Groups hold one family by default (analysis.load.GROUP_KEYS); here the cells of a group
    key without its family are pooled and the seed study's form gets a family term:
    log latency ~ log params + log depth + C(family). Each family's coefficient is the
    log latency ratio against the reference family (gpt2 where present) at equal parameters
    and depth: what the architecture costs or saves beyond its shape. The covariance is
    `fit_group`'s: HC3, plus the spread over runs or rounds where cells have them
    (`unit_covariance`). Groups with a single family, or too few shapes for the form, say
    so instead of fitting.
    """
    frame = with_family(stats)
    if frame.empty:
        return []
    labels = [GroupKey.of(row, pool_families=True).label for row in frame.to_dict("records")]
    frame = frame.assign(pooled_group_id=labels)
    alpha = 1 - confidence
    out = []
    for group_id, cells in frame.groupby("pooled_group_id", sort=True):
        cells = cells.reset_index(drop=True)
        families = sorted(cells["family"].unique())
        record: dict[str, Any] = {"group_id": group_id, "families": families, "n_cells": int(len(cells)),
                                  "family": ALL_FAMILIES}
        shapes = cells[["family", "n_layer", "n_embd", "n_kv_head", "params"]].drop_duplicates()
        n_terms = 3 + len(families) - 1
        if len(families) < 2:
            record.update(status="one_family", message=f"only {families[0]} in this group: nothing to pool")
        elif len(shapes) <= n_terms:
            record.update(status="too_few_shapes",
                          message=f"{len(shapes)} distinct shapes over {len(families)} families; the pooled form "
                                  f"has {n_terms} coefficients: measure {n_terms + 1 - len(shapes)} more")
        else:
            reference = "gpt2" if "gpt2" in families else families[0]
            data = pd.DataFrame({
                "log_latency": np.log(cells["median"].to_numpy(float)),
                "log_params": np.log(cells["params"].to_numpy(float)),
                "log_depth": np.log(cells["n_layer"].to_numpy(float)),
                "family": cells["family"].astype(str).to_numpy(),
            })
            formula = f"log_latency ~ log_params + log_depth + C(family, Treatment(reference='{reference}'))"
            res = smf.ols(formula, data).fit(cov_type="HC3")
            names = list(res.model.exog_names)
            extra = unit_covariance(res.model.exog, cells, confidence=confidence)
            if extra is not None:
                res = with_extra_cov(res, extra)
            estimates, p_values = np.asarray(res.params), np.asarray(res.pvalues)
            ci = np.asarray(res.conf_int(alpha))
            terms = {}
            for i, name in enumerate(names):
                key = f"family:{name.split('[T.')[1].rstrip(']')}" if "[T." in name else name
                terms[key] = {"estimate": float(estimates[i]), "ci_low": float(ci[i, 0]), "ci_high": float(ci[i, 1]),
                              "p_value": float(p_values[i])}
            effects = {k.split(":", 1)[1]: {"ratio": float(np.exp(v["estimate"])), "ci_low": float(np.exp(v["ci_low"])),
                                            "ci_high": float(np.exp(v["ci_high"]))}
                       for k, v in terms.items() if k.startswith("family:")}
            kind = weakest_kind(cells["ci_kind"]) if "ci_kind" in cells else CI_NONE
            cov_type = cov_type_of(cells)
            text = "; ".join(f"{fam} {e['ratio']:.2f}x [{e['ci_low']:.2f}, {e['ci_high']:.2f}]" for fam, e in effects.items())
            record.update(status="ok", reference=reference, formula=formula, cov_type=cov_type, ci_kind=kind, terms=terms,
                          family_ratios=effects, n_shapes=int(len(shapes)), adj_r2=float(res.rsquared_adj),
                          message=f"latency at equal params and depth, against {reference}: {text} "
                                  f"({confidence:.0%} CI, {cov_type})")
        out.append(record)
    return out


def newest_current_group(fits: list[GroupFit], pooled: pd.DataFrame, started: Mapping[str, Any]) -> str | None:
    """The group a page opens on: of the fitted groups whose every cell used the current
    protocol, the one measured most recently (its newest run's start), ties to more shapes.

    Opening on the group with the most shapes picked an old protocol-1 group of the bundled
    data (unpinned single passes, superseded); None when no fitted group is current.
    """
    from vocabulary import PROTOCOL_VERSION

    if pooled.empty:
        return None
    protocol = pooled.groupby("group_id")["protocol_version"].min()
    newest = pooled.groupby("group_id")["run_ids"].agg(
        lambda ids: max((str(started.get(r, "")) for runs in ids for r in runs), default=""))
    candidates = [f for f in fits if f.status == "ok" and protocol.get(f.group_id, 0) >= PROTOCOL_VERSION]
    if not candidates:
        return None
    return max(candidates, key=lambda f: (newest.get(f.group_id, ""), f.n_shapes)).group_id
