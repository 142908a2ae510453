"""Two runs of the same cells side by side: do their medians fall inside each other's CIs?

Used to check that a change of *how* a plan runs (through Ray instead of one process, on
another node of the same regime) does not change *what* it measures. The yardstick is
each run's own within-run bootstrap CI of the median. Run-to-run variance
(analysis.reproducibility) makes two runs disagree beyond those CIs even when nothing
changed, so a comparison is only meaningful next to a baseline: the same check between
two ordinary runs of the same plan on the same regime.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.stats import CellStats

KEY_COLUMNS = ("cell_key", "phase")
DESCRIBE_COLUMNS = ("regime", "model_name", "n_layer", "n_embd", "backend", "dtype", "batch_size", "prompt_len", "gen_len")


def compare_runs(stats: CellStats, run_a: str, run_b: str) -> pd.DataFrame:
    """One row per (cell key, phase) measured in both runs.

    Columns: the cell's configuration, median/ci_low/ci_high with suffix _a and _b, ratio
    (median_b / median_a), b_in_a_ci, a_in_b_ci (each median inside the other run's CI),
    cis_overlap. Raises ValueError when a run has no ok cell or the runs share none, so a
    misspelt run id cannot pass as "all cells agree".
    """
    frame = stats.frame
    sides = []
    for run_id in (run_a, run_b):
        side = frame[frame["run_id"] == run_id]
        if side.empty:
            known = ", ".join(sorted(frame["run_id"].unique()))
            raise ValueError(f"run '{run_id}' has no ok cell in these statistics (runs: {known})")
        sides.append(side)
    cols = [*KEY_COLUMNS, "median", "median_ci_low", "median_ci_high"]
    table = sides[0][[*KEY_COLUMNS, *DESCRIBE_COLUMNS, "median", "median_ci_low", "median_ci_high"]].merge(
        sides[1][cols], on=list(KEY_COLUMNS), suffixes=("_a", "_b"), validate="one_to_one")
    if table.empty:
        raise ValueError(f"runs '{run_a}' and '{run_b}' have no (cell, phase) in common")
    table = table.rename(columns={"median_ci_low_a": "ci_low_a", "median_ci_high_a": "ci_high_a",
                                  "median_ci_low_b": "ci_low_b", "median_ci_high_b": "ci_high_b"})
    table["ratio"] = table["median_b"] / table["median_a"]
    table["b_in_a_ci"] = table["median_b"].between(table["ci_low_a"], table["ci_high_a"])
    table["a_in_b_ci"] = table["median_a"].between(table["ci_low_b"], table["ci_high_b"])
    table["cis_overlap"] = (table[["ci_low_a", "ci_low_b"]].max(axis=1) <= table[["ci_high_a", "ci_high_b"]].min(axis=1))
    return table.sort_values(["phase", "backend", "dtype", "model_name"]).reset_index(drop=True)


def summarize_comparison(table: pd.DataFrame, by: str | None = "phase") -> pd.DataFrame:
    """Shares of agreement, overall and per `by` value: what a closing note reports.

    Columns: group, n, b_in_a_ci, a_in_b_ci, cis_overlap (shares 0..1), median_ratio and
    ratio_p5/p95 (how far apart the medians are, b over a), max_abs_log2_ratio.
    """
    groups = [("all", table)] + ([(str(k), g) for k, g in table.groupby(by, sort=True)] if by else [])
    rows: list[dict[str, Any]] = []
    for name, part in groups:
        ratio = part["ratio"].to_numpy(np.float64)
        rows.append({
            "group": name, "n": len(part),
            "b_in_a_ci": float(part["b_in_a_ci"].mean()), "a_in_b_ci": float(part["a_in_b_ci"].mean()),
            "cis_overlap": float(part["cis_overlap"].mean()),
            "median_ratio": float(np.median(ratio)), "ratio_p5": float(np.quantile(ratio, 0.05)),
            "ratio_p95": float(np.quantile(ratio, 0.95)), "max_abs_log2_ratio": float(np.abs(np.log2(ratio)).max()),
        })
    return pd.DataFrame(rows)


def within_runs_range(stats: CellStats, candidate: str, others: list[str]) -> pd.DataFrame:
    """Is the candidate run's median inside the range of the other runs' medians, per cell-phase?

    The within-run CI ignores run-to-run variance; the spread of several ordinary runs does
    not. If the candidate is just one more run of the same kind (exchangeable with the k
    others), it lands inside their range with probability (k - 1) / (k + 1), returned as
    `expected_inside`; a candidate that changes what is measured lands outside more often.
    Columns: cell_key, phase, backend, candidate_median, others_min, others_max, inside,
    expected_inside. Only cell-phases measured in the candidate and in every other run.
    """
    if len(others) < 2:
        raise ValueError("need at least two other runs for a range")
    frame = stats.frame[stats.frame["run_id"].isin([candidate, *others])]
    wide = frame.pivot_table(index=[*KEY_COLUMNS, "backend"], columns="run_id", values="median")
    missing = [r for r in [candidate, *others] if r not in wide.columns]
    if missing:
        raise ValueError(f"no ok cell for run(s) {', '.join(missing)}")
    wide = wide.dropna()
    table = pd.DataFrame({
        "candidate_median": wide[candidate], "others_min": wide[others].min(axis=1),
        "others_max": wide[others].max(axis=1)}).reset_index()
    table["inside"] = table["candidate_median"].between(table["others_min"], table["others_max"])
    table["expected_inside"] = (len(others) - 1) / (len(others) + 1)
    return table
