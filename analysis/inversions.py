"""Latency inversions: a smaller model (fewer parameters) that runs slower.

For cells A, B of one group with params(A) < params(B), ratio = median(A) / median(B).
Its CI comes from the cells' replicates of the median (`CellStats.draws`), divided
pairwise: within a run the t replicates over rounds (`analysis.stats`), across runs those
over runs (`analysis.reproducibility.pooled_stats`). Cells measured on the same units (the
same rounds of a run, the same runs) share their draws, so the ratio's interval is the
paired t interval of the per-unit log ratios (`paired`); its `ci_kind` is the weaker of the
two cells' kinds, and a pair where either cell has no CI has none (NaN bounds, NaN p-value,
never significant).

Significance controls the false discovery rate over the pairs of a group that have a CI: a grid group of
40 shapes has 780 pairs, and testing each at 5% would call dozens of equal-speed pairs
inverted by chance. Each pair gets a bootstrap p-value for "ratio = 1", two-sided:
p = 2 min(#{ratio draws <= 1} + 1, #{ratio draws >= 1} + 1) / (B + 1), capped at 1 (the +1
keeps a p-value from being 0 on finitely many draws, Davison & Hinkley 4.4). An inversion
is *significant at FDR 5%* when its point ratio is above 1 and Benjamini-Hochberg at
`FDR` over every pair of its group (inverted or not: selecting the inverted ones first
would hide the multiplicity) rejects it.

Two-sided, not one-sided, because then p <= 0.05 exactly when the pair's 95% percentile CI
excludes 1: a pair called significant never shows a CI that touches 1, and BH only ever
removes pairs from the uncorrected rule (CI lower bound above 1). A one-sided test would
be valid too (the direction, smaller slower, is fixed by the params order before looking),
but it would call pairs significant whose shown 95% CI includes 1. Deciding the direction
by the point ratio after two-sided BH keeps the directional FDR at the level (Benjamini &
Yekutieli 2005). With B draws the smallest p is 2 / (B + 1) (0.001 at B = 2000), so in a
group of m pairs strong inversions pass only when at least m x 0.001 / 0.05 of them are
that strong; more resamples lift that floor.

Pairs are ranked by the CI's lower bound, the strength the data can vouch for, rather than
by the point ratio.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from statsmodels.stats.multitest import multipletests

from analysis.bootstrap import percentile_ci
from analysis.intervals import CI_KINDS, CI_NONE
from analysis.shapes import names_architecture
from analysis.stats import CellStats

FDR = 0.05  # Benjamini-Hochberg level across a group's pairs
SIGNIFICANT_LABEL = "significant at FDR 5%"

PAIR_CHUNK = 2000  # pairs per batch of ratio replicates: bounds memory to ~32 MB
# run_cell_id: a cell of one run behind each side (itself, or a pooled row's first run), for pages that open a cell.
# model_names: every name a pooled shape was measured under (reproducibility.pooled_stats), so a
# pair is found by name without splitting the joined label; protocol_version: the oldest
# protocol among its runs, so a headline can leave earlier protocols out.
SIDE_COLUMNS = ("cell_id", "run_cell_id", "model_name", "model_names", "family", "n_layer", "n_embd", "n_head",
                "n_kv_head", "params", "median",
                "median_ci_low", "median_ci_high", "ci_kind", "protocol_version")


def pair_ratios(stats: CellStats, *, inversions_only: bool = True) -> pd.DataFrame:
    """Pairs (smaller A, larger B) per group with the ratio of medians and its CI.

    With `inversions_only` (default) only pairs whose point ratio is above 1 are kept,
    which is all an inversion table needs; the heatmap wants every pair. Columns: group_id,
    the group keys, `<col>_a` / `<col>_b` for the cell columns, ratio, ratio_ci_low,
    ratio_ci_high, ci_kind (the weaker cell's kind: "across runs", "across rounds" or
    "none"), paired (both cells on the same units, so the CI is paired by run or round),
    p_value (two-sided, from the replicates; NaN without a CI), q_value (Benjamini-Hochberg
    within the group, over all its pairs that have a CI, also when only inversions are
    returned), ci_above_1 (the uncorrected rule), significant (at FDR 5%, see the module
    docstring), rank (1 = strongest in its group, among inversions).
    """
    frame = stats.frame.reset_index(drop=True)
    kind_rank = frame["ci_kind"].map(CI_KINDS.index).to_numpy() if "ci_kind" in frame else np.zeros(len(frame), int)
    unit_code = (pd.factorize(frame["unit_ids"].map(tuple))[0] if "unit_ids" in frame else np.arange(len(frame)))
    parts = []
    for group_id, rows in frame.groupby("group_id", sort=True).indices.items():
        params = frame["params"].to_numpy()[rows]
        median = frame["median"].to_numpy()[rows]
        ia, ib = np.nonzero(params[:, None] < params[None, :])
        ratio = median[ia] / median[ib]
        rank = np.minimum(kind_rank[rows[ia]], kind_rank[rows[ib]])
        paired = (unit_code[rows[ia]] == unit_code[rows[ib]]) & (rank > 0)
        p_value = _p_values(stats.draws, rows[ia], rows[ib])
        q_value = np.full(len(p_value), np.nan)
        tested = np.isfinite(p_value)
        if tested.any():
            q_value[tested] = multipletests(p_value[tested], alpha=FDR, method="fdr_bh")[1]
        if inversions_only:
            keep = ratio > 1
            ia, ib, ratio, p_value, q_value = ia[keep], ib[keep], ratio[keep], p_value[keep], q_value[keep]
            rank, paired = rank[keep], paired[keep]
        a, b = rows[ia], rows[ib]
        low, high = np.empty(len(a)), np.empty(len(a))
        with np.errstate(invalid="ignore"):  # pairs without a CI are NaN throughout
            for lo in range(0, len(a), PAIR_CHUNK):
                sl = slice(lo, lo + PAIR_CHUNK)
                low[sl], high[sl] = percentile_ci(stats.draws[a[sl]] / stats.draws[b[sl]], stats.confidence)
        part = pd.DataFrame({"group_id": group_id}, index=range(len(a)))
        first = frame.iloc[rows[0]]
        for key in ("regime", "backend", "phase", "dtype", "batch_size", "prompt_len", "gen_len"):
            part[key] = first[key]
        for col in (c for c in SIDE_COLUMNS if c in frame):
            part[f"{col}_a"] = frame[col].to_numpy()[a]
            part[f"{col}_b"] = frame[col].to_numpy()[b]
        part["ratio"], part["ratio_ci_low"], part["ratio_ci_high"] = ratio, low, high
        part["ci_kind"] = np.asarray(CI_KINDS, dtype=object)[rank] if len(rank) else CI_NONE
        part["paired"] = paired
        part["p_value"], part["q_value"] = p_value, q_value
        parts.append(part)
    columns = ["group_id", "ratio", "ratio_ci_low", "ratio_ci_high", "ci_kind", "paired", "p_value", "q_value"]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    out["ci_above_1"] = (out["ratio_ci_low"] > 1).fillna(False).astype(bool)
    out["significant"] = ((out["q_value"] <= FDR) & (out["ratio"] > 1)).astype(bool)
    out = out.sort_values(["group_id", "ratio_ci_low"], ascending=[True, False], ignore_index=True)
    inverted = out["ratio"] > 1
    out["rank"] = pd.NA
    if inverted.any():
        out.loc[inverted, "rank"] = out[inverted].groupby("group_id").cumcount() + 1
    return out


def _p_values(draws: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sided p-values of ratio = 1 from the replicates of pairs (a, b) of rows of `draws`; NaN without a CI."""
    n_draws = draws.shape[1] if draws.ndim == 2 else 0
    p = np.empty(len(a))
    for lo in range(0, len(a), PAIR_CHUNK):
        da, db = draws[a[lo:lo + PAIR_CHUNK]], draws[b[lo:lo + PAIR_CHUNK]]
        below, above = (da <= db).sum(axis=1), (da >= db).sum(axis=1)
        p[lo:lo + PAIR_CHUNK] = np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (n_draws + 1))
        missing = np.isnan(da[:, 0]) | np.isnan(db[:, 0]) if n_draws else np.ones(len(da), bool)
        p[lo:lo + PAIR_CHUNK][missing] = np.nan
    return p


def find_inversions(stats: CellStats) -> pd.DataFrame:
    """Every pair where the smaller model is slower (point estimate), ranked per group."""
    return pair_ratios(stats, inversions_only=True)


def headlines(inversions: pd.DataFrame) -> pd.DataFrame:
    """The strongest inversion of each group significant at FDR 5% (highest CI lower bound)."""
    sig = inversions[inversions["significant"]]
    return sig.sort_values("ratio_ci_low", ascending=False).groupby("group_id", sort=True).head(1).sort_values("group_id", ignore_index=True)


def side_shape(row: pd.Series, side: str) -> str:
    """One side's shape in full: params and depth x width, and where the pair is not two GPT-2
    shapes (`names_architecture`) each side's family and query / KV heads."""
    text = f"{row[f'params_{side}'] / 1e6:.1f}M params, {row[f'n_layer_{side}']} x {row[f'n_embd_{side}']}"
    if names_architecture(row.get(f"family_{s}", "gpt2") for s in "ab"):
        text = f"{row.get(f'family_{side}', 'gpt2')}, {text}, {row.get(f'n_head_{side}')}/{row.get(f'n_kv_head_{side}')} heads"
    return text


def headline_text(row: pd.Series) -> str:
    """One sentence for a headline inversion, naming both shapes in full."""
    return (
        f"{row['model_name_a']} ({side_shape(row, 'a')}) is "
        f"{row['ratio']:.2f}x slower [{row['ratio_ci_low']:.2f}, {row['ratio_ci_high']:.2f}, CI {row['ci_kind']}] than the larger "
        f"{row['model_name_b']} ({side_shape(row, 'b')})"
    )


def inversions_summary(inversions: pd.DataFrame, max_rows: int = 50) -> dict[str, Any]:
    """JSON-ready: counts (significant at FDR 5%, and uncorrected), headlines per group, the top significant pairs
    (with their re-run interval where `analysis.rerun.add_pair_rerun_intervals` gave one)."""
    cols = [
        "group_id", "regime", "backend", "phase", "model_name_a", "family_a", "params_a", "n_layer_a", "n_embd_a",
        "n_kv_head_a", "median_a", "model_name_b", "family_b", "params_b", "n_layer_b", "n_embd_b", "n_kv_head_b", "median_b",
        "ratio", "ratio_ci_low", "ratio_ci_high", "ci_kind", "paired", "rerun_ci_low", "rerun_ci_high", "rerun_basis",
        "p_value", "q_value", "significant", "rank",
    ]
    if inversions.empty:
        return {"n_inverted_pairs": 0, "n_significant": 0, "n_ci_above_1": 0, "n_without_ci": 0, "ci_kinds": {},
                "fdr": FDR, "headlines": [], "significant": []}
    heads = headlines(inversions)
    sig = inversions[inversions["significant"]].sort_values("ratio_ci_low", ascending=False)
    return {
        "n_inverted_pairs": int(len(inversions)),
        "n_significant": int(inversions["significant"].sum()),  # at FDR 5% within each group
        "n_ci_above_1": int(inversions["ci_above_1"].sum()),  # uncorrected: each pair on its own
        "n_without_ci": int((inversions["ci_kind"] == CI_NONE).sum()),  # never significant: no replicate to test on
        "ci_kinds": {str(k): int(v) for k, v in inversions["ci_kind"].value_counts().sort_index().items()},
        "fdr": FDR,
        "headlines": [{"group_id": r["group_id"], "text": headline_text(r)} for _, r in heads.iterrows()],
        "significant": _records(sig.head(max_rows)[[c for c in cols if c in sig]]) if len(sig) else [],
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]
