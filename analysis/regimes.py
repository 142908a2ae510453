"""Does the depth effect hold on this hardware (or backend), and how strongly?

One pooled model per comparison group (cells equal in everything but shape and the
factor compared), on cell medians with HC3 errors plus, where cells have replicate units
(runs, rounds), the t-scaled spread of the fit over them (`regression.unit_covariance`);
the result's `ci_kind` is its least replicated cell's (analysis.intervals):

    log latency ~ log depth * C(level) + log width * C(level)

where `level` is the regime (or backend). Each level gets its own depth and width
elasticities with CIs (linear contrasts of the pooled coefficients), and a Wald test asks
whether the depth elasticities are all equal. Levels with too few shapes for their own
slopes are left out, and the result says so.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from analysis.intervals import CI_NONE, weakest_kind
from analysis.load import GROUP_KEYS, with_family
from analysis.regression import CONFIDENCE, cov_type_of, shape_shortfall, unit_covariance, with_extra_cov

FORMULA = "log_latency ~ log_depth * C(level) + log_width * C(level)"
SIGNIFICANCE = 0.05  # Wald test level for "the depth effect differs"


def compare(stats: pd.DataFrame, factor: str = "regime", confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Per comparison group, the depth/width effect per level of `factor` and a Wald test.

    `factor` is "regime" or "backend". Returns JSON-ready dicts: comparison (the fixed keys),
    status ("ok" | "single_level" | "too_few_shapes"), message, levels (one dict per level:
    level, n_cells, depth_effect, depth_ci_low, depth_ci_high, width_effect, width_ci_low,
    width_ci_high), wald_depth (statistic, p_value, df), ci_kind, cov_type and dropped levels.
    """
    if factor not in ("regime", "backend"):
        raise ValueError(f"factor must be 'regime' or 'backend', got {factor!r}")
    if stats.empty:
        return []
    out = []
    frame = with_family(stats).assign(gen_key=np.where(stats["phase"] == "e2e", stats["gen_len"], -1))
    keys = [k for k in GROUP_KEYS if k != factor] + ["gen_key"]
    for values, cells in frame.groupby(keys, sort=True):
        comparison = {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(keys, values) if k != "gen_key"}
        if comparison["phase"] == "e2e":
            comparison["gen_len"] = int(values[-1])
        out.append(_compare_one(cells, factor, comparison, confidence))
    return out


def _compare_one(cells: pd.DataFrame, factor: str, comparison: dict[str, Any], confidence: float) -> dict[str, Any]:
    result: dict[str, Any] = {"factor": factor, "comparison": comparison, "levels": [], "dropped": []}
    usable = []
    for level, sub in cells.groupby(factor, sort=True):
        why = shape_shortfall(sub)
        if why:
            result["dropped"].append({"level": level, "reason": why})
        else:
            usable.append(level)
    levels_all = sorted(cells[factor].unique())
    if len(levels_all) < 2:
        return {**result, "status": "single_level",
                "message": f"only one {factor} ({levels_all[0]}) here: measure the same shapes on another {factor} to compare"}
    if len(usable) < 2:
        return {**result, "status": "too_few_shapes",
                "message": f"fewer than two {factor}s have enough shapes for their own slopes ({len(usable)} do)"}
    used = cells[cells[factor].isin(usable)]
    data = pd.DataFrame(
        {
            "log_latency": np.log(used["median"].to_numpy(float)),
            "log_depth": np.log(used["n_layer"].to_numpy(float)),
            "log_width": np.log(used["n_embd"].to_numpy(float)),
            "level": used[factor].astype(str).to_numpy(),
        }
    )
    res = smf.ols(FORMULA, data).fit(cov_type="HC3")
    extra = unit_covariance(res.model.exog, used.reset_index(drop=True), confidence=confidence)
    if extra is not None:
        res = with_extra_cov(res, extra)
    result["ci_kind"] = weakest_kind(used["ci_kind"]) if "ci_kind" in used else CI_NONE
    result["cov_type"] = cov_type_of(used)
    names = list(res.params.index)
    alpha = 1 - confidence
    reference = usable[0]
    for level in usable:
        row: dict[str, Any] = {"level": level, "n_cells": int((data["level"] == level).sum())}
        for var in ("depth", "width"):
            contrast = np.zeros(len(names))
            contrast[names.index(f"log_{var}")] = 1
            if level != reference:
                contrast[names.index(f"log_{var}:C(level)[T.{level}]")] = 1
            test = res.t_test(contrast)
            low, high = test.conf_int(alpha)[0]
            row[f"{var}_effect"] = float(np.squeeze(test.effect))
            row[f"{var}_ci_low"], row[f"{var}_ci_high"] = float(low), float(high)
        result["levels"].append(row)
    interactions = [i for i, n in enumerate(names) if n.startswith("log_depth:C(level)")]
    restriction = np.zeros((len(interactions), len(names)))
    restriction[np.arange(len(interactions)), interactions] = 1
    wald = res.wald_test(restriction, scalar=True)
    p_value = float(wald.pvalue)
    result["wald_depth"] = {"statistic": float(wald.statistic), "p_value": p_value, "df": int(len(interactions))}
    effects = ", ".join(f"{r['level']}: {r['depth_effect']:.2f} [{r['depth_ci_low']:.2f}, {r['depth_ci_high']:.2f}]" for r in result["levels"])
    holds = all(r["depth_ci_low"] > 0 for r in result["levels"])
    if p_value < SIGNIFICANCE:
        verdict = f"the depth effect differs across {factor}s (Wald p = {p_value:.2g})"
    else:
        verdict = f"no evidence that the depth effect differs across {factor}s (Wald p = {p_value:.2g})"
    held = "holds (CI above 0) on every" if holds else "does not clearly hold on every"
    result["status"] = "ok"
    result["message"] = f"{verdict}; depth {held} {factor}; depth elasticity per {factor}: {effects}"
    return result
