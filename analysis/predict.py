"""Latency of a shape not measured, and how many samples a comparison needs.

The predictor fits the log-log depth + width model (no log params: collinear) on the cell
medians of the one group the query names and predicts at the new shape. The interval
returned as `ci` is a CI of the median latency (exp of a CI of mean log latency, HC3);
`prediction_interval` is where a new cell's median should fall, from the residual
variance (not robust: for reference). Outside the measured depth or width range the
answer is an extrapolation and says so.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy.stats import norm

from analysis.load import with_family
from analysis.regression import CONFIDENCE, shape_shortfall

FORMULA = "log_latency ~ log_depth + log_width"


def predict_latency(
    stats: pd.DataFrame,
    *,
    n_layer: int,
    n_embd: int,
    regime: str,
    backend: str,
    phase: str,
    dtype: str,
    batch_size: int,
    prompt_len: int,
    gen_len: int | None = None,
    family: str = "gpt2",
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Predicted median latency (ms) of shape n_layer x n_embd of `family` in the named group
    (a group holds one family: analysis.load.GROUP_KEYS).

    Returns a dict: status ("ok" | "no_data" | "too_few_shapes"), message, median_ms,
    ci (low, high), prediction_interval (low, high), extrapolation (bool), warnings (list),
    n_cells, measured_depth (min, max), measured_width (min, max).
    """
    if n_layer <= 0 or n_embd <= 0:
        raise ValueError(f"n_layer and n_embd must be positive, got {n_layer} x {n_embd}")
    stats = with_family(stats)
    mask = (
        (stats["family"] == family) & (stats["regime"] == regime) & (stats["backend"] == backend) & (stats["phase"] == phase)
        & (stats["dtype"] == dtype) & (stats["batch_size"] == batch_size) & (stats["prompt_len"] == prompt_len)
    )
    if phase == "e2e":
        if gen_len is None:
            raise ValueError("gen_len is required for phase 'e2e'")
        mask &= stats["gen_len"] == gen_len
    cells = stats[mask]
    base: dict[str, Any] = {"n_cells": int(len(cells)), "warnings": []}
    if cells.empty:
        return {**base, "status": "no_data", "message": "no measured cells in this group: nothing to predict from"}
    why = shape_shortfall(cells)
    if why:
        return {**base, "status": "too_few_shapes", "message": why}
    data = pd.DataFrame(
        {
            "log_latency": np.log(cells["median"].to_numpy(float)),
            "log_depth": np.log(cells["n_layer"].to_numpy(float)),
            "log_width": np.log(cells["n_embd"].to_numpy(float)),
        }
    )
    res = smf.ols(FORMULA, data).fit(cov_type="HC3")
    point = pd.DataFrame({"log_depth": [math.log(n_layer)], "log_width": [math.log(n_embd)]})
    frame = res.get_prediction(point).summary_frame(alpha=1 - confidence).iloc[0]
    depth_range = (int(cells["n_layer"].min()), int(cells["n_layer"].max()))
    width_range = (int(cells["n_embd"].min()), int(cells["n_embd"].max()))
    warnings = []
    if not depth_range[0] <= n_layer <= depth_range[1]:
        warnings.append(f"depth {n_layer} is outside the measured range {depth_range[0]}..{depth_range[1]}: extrapolation")
    if not width_range[0] <= n_embd <= width_range[1]:
        warnings.append(f"width {n_embd} is outside the measured range {width_range[0]}..{width_range[1]}: extrapolation")
    median = math.exp(frame["mean"])
    return {
        **base,
        "status": "ok",
        "message": f"{n_layer} x {n_embd}: {median:.3g} ms (median), {confidence:.0%} CI "
        f"[{math.exp(frame['mean_ci_lower']):.3g}, {math.exp(frame['mean_ci_upper']):.3g}]"
        + ("; " + "; ".join(warnings) if warnings else ""),
        "median_ms": median,
        "ci": (math.exp(frame["mean_ci_lower"]), math.exp(frame["mean_ci_upper"])),
        # the interval as a sentence: a page shows it as text, never as a metric's delta arrow
        "ci_text": f"{confidence:.0%} CI of the median: {math.exp(frame['mean_ci_lower']):.3g} to "
                   f"{math.exp(frame['mean_ci_upper']):.3g} ms",
        "prediction_interval": (math.exp(frame["obs_ci_lower"]), math.exp(frame["obs_ci_upper"])),
        "extrapolation": bool(warnings),
        "warnings": warnings,
        "measured_depth": depth_range,
        "measured_width": width_range,
    }


def samples_needed(cv: float, relative_difference: float, *, alpha: float = 0.05, power: float = 0.8, statistic: str = "median") -> int:
    """Samples per cell to tell two cells apart whose medians differ by `relative_difference`.

    Two-sided test at level `alpha` (95% confidence) with the given power (80% by default:
    the usual convention, a 1-in-5 chance of missing a real difference), both cells with
    coefficient of variation `cv`, normal approximation:

        n = 2 (z_{1-alpha/2} + z_{power})^2 cv^2 / d^2

    for means; the sample median of normal data needs pi/2 times as many samples (its
    asymptotic relative efficiency is 2/pi), hence the factor for `statistic="median"`.
    Decode steps within a generation are correlated, so count reps, not steps, when that
    correlation is strong.
    """
    if cv <= 0 or relative_difference <= 0:
        raise ValueError(f"cv and relative_difference must be positive, got {cv} and {relative_difference}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha} and {power}")
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    n = 2 * z**2 * cv**2 / relative_difference**2
    if statistic == "median":
        n *= math.pi / 2
    return max(2, math.ceil(n))


def rounds_from_history(con: Any, device_kind: str, precision: float, min_rounds: int,
                        max_rounds: int) -> dict[str, tuple[float, int]]:
    """backend -> (mean rounds a cell would need for a decode median within +-`precision`,
    cells it rests on), from the ok cells of `device_kind` measured in two or more rounds.

    A cell of an adaptive run counts the rounds it used where it reached its target; every
    other cell counts `analysis.intervals.rounds_needed` on the spread of its decode round
    medians (the same t interval the runner stops on). Each is clipped to [min_rounds,
    max_rounds], as a run would spend them. An estimate: rounds of earlier plans may have
    been larger than an adaptive plan's short ones, and hosts move (docs/protocol.md)."""
    from analysis.intervals import rounds_needed
    from store.schema import table_columns

    reached = "c.precision_reached" if "precision_reached" in table_columns(con, "cells") else "NULL"
    used = "c.rounds_used" if "rounds_used" in table_columns(con, "cells") else "NULL"
    rows = con.execute(f"""
        WITH by_round AS (
            SELECT s.cell_id, s.round, median(s.latency_ms) AS m FROM samples s
            WHERE s.phase = 'decode' AND s.round IS NOT NULL GROUP BY ALL)
        SELECT c.backend, list(ln(b.m) ORDER BY b.round) AS logs, any_value({reached}) AS reached,
               any_value({used}) AS used
        FROM by_round b JOIN cells c USING (cell_id) JOIN runs r ON r.run_id = c.run_id
        WHERE c.status = 'ok' AND r.device_kind = ? AND b.m > 0
        GROUP BY c.cell_id, c.backend HAVING count(*) >= 2""", [device_kind]).fetchall()
    needed: dict[str, list[float]] = {}
    for backend, logs, was_reached, rounds_used in rows:
        k = rounds_used if was_reached and rounds_used else rounds_needed(list(logs), target=precision)
        if k is not None:
            needed.setdefault(backend, []).append(float(min(max(k, min_rounds), max_rounds)))
    return {backend: (sum(ks) / len(ks), len(ks)) for backend, ks in sorted(needed.items())}
