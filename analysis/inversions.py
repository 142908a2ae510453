"""Latency inversions: a smaller model (fewer parameters) that runs slower.

For cells A, B of one group with params(A) < params(B), ratio = median(A) / median(B).
Its CI comes from the cells' independent bootstrap replicates of the median (each cell's
samples resampled on their own), divided pairwise. An inversion is significant when the
CI's lower bound is above 1; pairs are ranked by that lower bound, the strength the data
can vouch for, rather than by the point ratio.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_ci
from analysis.stats import CellStats

PAIR_CHUNK = 2000  # pairs per batch of ratio replicates: bounds memory to ~32 MB
SIDE_COLUMNS = ("cell_id", "model_name", "n_layer", "n_embd", "params", "median", "median_ci_low", "median_ci_high")


def pair_ratios(stats: CellStats, *, inversions_only: bool = True) -> pd.DataFrame:
    """Pairs (smaller A, larger B) per group with the ratio of medians and its CI.

    With `inversions_only` (default) only pairs whose point ratio is above 1 are kept,
    which is all an inversion table needs; the heatmap wants every pair. Columns: group_id,
    the group keys, `<col>_a` / `<col>_b` for the cell columns, ratio, ratio_ci_low,
    ratio_ci_high, significant, rank (1 = strongest in its group, among inversions).
    """
    frame = stats.frame.reset_index(drop=True)
    parts = []
    for group_id, rows in frame.groupby("group_id", sort=True).indices.items():
        params = frame["params"].to_numpy()[rows]
        median = frame["median"].to_numpy()[rows]
        ia, ib = np.nonzero(params[:, None] < params[None, :])
        ratio = median[ia] / median[ib]
        if inversions_only:
            keep = ratio > 1
            ia, ib, ratio = ia[keep], ib[keep], ratio[keep]
        a, b = rows[ia], rows[ib]
        low, high = np.empty(len(a)), np.empty(len(a))
        for lo in range(0, len(a), PAIR_CHUNK):
            sl = slice(lo, lo + PAIR_CHUNK)
            low[sl], high[sl] = percentile_ci(stats.draws[a[sl]] / stats.draws[b[sl]], stats.confidence)
        part = pd.DataFrame({"group_id": group_id}, index=range(len(a)))
        first = frame.iloc[rows[0]]
        for key in ("regime", "backend", "phase", "dtype", "batch_size", "prompt_len", "gen_len"):
            part[key] = first[key]
        for col in SIDE_COLUMNS:
            part[f"{col}_a"] = frame[col].to_numpy()[a]
            part[f"{col}_b"] = frame[col].to_numpy()[b]
        part["ratio"], part["ratio_ci_low"], part["ratio_ci_high"] = ratio, low, high
        parts.append(part)
    columns = ["group_id", "ratio", "ratio_ci_low", "ratio_ci_high"]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    out["significant"] = out["ratio_ci_low"] > 1
    out = out.sort_values(["group_id", "ratio_ci_low"], ascending=[True, False], ignore_index=True)
    inverted = out["ratio"] > 1
    out["rank"] = pd.NA
    if inverted.any():
        out.loc[inverted, "rank"] = out[inverted].groupby("group_id").cumcount() + 1
    return out


def find_inversions(stats: CellStats) -> pd.DataFrame:
    """Every pair where the smaller model is slower (point estimate), ranked per group."""
    return pair_ratios(stats, inversions_only=True)


def headlines(inversions: pd.DataFrame) -> pd.DataFrame:
    """The strongest significant inversion of each group (highest CI lower bound)."""
    sig = inversions[inversions["significant"]]
    return sig.sort_values("ratio_ci_low", ascending=False).groupby("group_id", sort=True).head(1).sort_values("group_id", ignore_index=True)


def headline_text(row: pd.Series) -> str:
    """One sentence for a headline inversion."""
    return (
        f"{row['model_name_a']} ({row['params_a'] / 1e6:.1f}M params, {row['n_layer_a']} x {row['n_embd_a']}) is "
        f"{row['ratio']:.2f}x slower [{row['ratio_ci_low']:.2f}, {row['ratio_ci_high']:.2f}] than the larger "
        f"{row['model_name_b']} ({row['params_b'] / 1e6:.1f}M params, {row['n_layer_b']} x {row['n_embd_b']})"
    )


def inversions_summary(inversions: pd.DataFrame, max_rows: int = 50) -> dict[str, Any]:
    """JSON-ready: counts, headlines per group, and the top significant pairs."""
    cols = [
        "group_id", "regime", "backend", "phase", "model_name_a", "params_a", "n_layer_a", "n_embd_a", "median_a",
        "model_name_b", "params_b", "n_layer_b", "n_embd_b", "median_b",
        "ratio", "ratio_ci_low", "ratio_ci_high", "significant", "rank",
    ]
    if inversions.empty:
        return {"n_inverted_pairs": 0, "n_significant": 0, "headlines": [], "significant": []}
    heads = headlines(inversions)
    sig = inversions[inversions["significant"]].sort_values("ratio_ci_low", ascending=False)
    return {
        "n_inverted_pairs": int(len(inversions)),
        "n_significant": int(inversions["significant"].sum()),
        "headlines": [{"group_id": r["group_id"], "text": headline_text(r)} for _, r in heads.iterrows()],
        "significant": _records(sig.head(max_rows)[cols]) if len(sig) else [],
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]
