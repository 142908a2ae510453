"""At equal parameters: what deep-and-thin costs per token against shallow-and-wide, and what KV heads change.

MobileLLM chose deep-and-thin decoders for accuracy at a fixed parameter budget; the
question here is its price in latency. From the headline's shape pairs (`Headline.pairs`:
every pair of shapes of one group, i.e. one regime, backend, dtype, batch, prompt and
generation length, with the ratio of their decode medians and its CI, pooled over runs
where a shape was measured more than once), two comparisons are kept per group and family:

* **depth**: among shapes of the same family and KV heads whose parameter counts lie within
  `EQUAL_PARAMS` of each other, the pair furthest apart in depth; the ratio is deep /
  shallow ms per token (above 1: deep-and-thin is slower).
* **KV heads**: at the same depth, family and (within `EQUAL_PARAMS`) parameter count, the
  pair furthest apart in KV heads; the ratio is more / fewer KV heads.

The CI is the pair's own (`analysis.inversions.pair_ratios`: paired by round or run where
both cells share them), inverted with the ratio when the pair's sides are the other way
round. Nothing is fitted across groups: each backend, device, dtype and batch size answers
for itself, and where the answer changes sign between groups, `flips` says where.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.headline import SEED_PHASE
from analysis.intervals import CI_ACROSS_RUNS, CI_NONE
from analysis.shapes import names_architecture, shape_label
from vocabulary import PROTOCOL_VERSION

EQUAL_PARAMS = 1.2  # shapes within 20% of each other's parameter count count as "equal parameters"
GROUP_KEYS = ["regime", "backend", "dtype", "batch_size", "prompt_len", "gen_len"]
COLUMNS = [*GROUP_KEYS, "family", "comparison", "first", "second", "first_layers", "second_layers", "first_kv_heads",
           "second_kv_heads", "params_m", "ratio", "ci_low", "ci_high", "ci_kind", "verdict"]
DEPTH, KV = "depth", "KV heads"
SLOWER, FASTER, SAME, NO_CI = "slower", "faster", "no clear difference", "no CI"


def _side(pairs: pd.DataFrame, side: str) -> pd.DataFrame:
    return pd.DataFrame({
        "name": pairs[f"model_name_{side}"], "family": pairs.get(f"family_{side}", "gpt2"),
        "layers": pairs[f"n_layer_{side}"], "width": pairs[f"n_embd_{side}"],
        "heads": pairs.get(f"n_head_{side}", np.nan), "kv": pairs.get(f"n_kv_head_{side}", pairs.get(f"n_head_{side}")),
        "params": pairs[f"params_{side}"],
    }, index=pairs.index)


def _label(row: pd.Series, prefix: str) -> str:
    """A shape named as everywhere else (analysis.shapes): in full where its family is not GPT-2."""
    family = row[f"{prefix}family"]
    if not names_architecture([family]):
        return shape_label(row[f"{prefix}name"], int(row[f"{prefix}layers"]), int(row[f"{prefix}width"]),
                           float(row[f"{prefix}params"]))
    return shape_label(row[f"{prefix}name"], int(row[f"{prefix}layers"]), int(row[f"{prefix}width"]),
                       float(row[f"{prefix}params"]), str(family), int(row[f"{prefix}heads"]), int(row[f"{prefix}kv"]))


def device_label(regime: str) -> str:
    """A regime as a sentence names it: the device, and its host class where the regime has one
    ("NVIDIA H200 (host 5be464da)"), without driver and CUDA versions."""
    parts = [part.strip() for part in str(regime).split(" | ")]
    host = next((part for part in parts[1:] if part.startswith("host ")), None)
    return f"{parts[0]} ({host})" if host else parts[0]


def _verdict(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return NO_CI
    if low > 1:
        return SLOWER
    if high < 1:
        return FASTER
    return SAME


def budget_comparisons(pairs: pd.DataFrame, *, all_protocols: bool = False) -> pd.DataFrame:
    """The depth and KV-heads comparisons at equal parameters (`COLUMNS`), one row per group,
    family, comparison (and, for depth, KV heads), from `Headline.pairs`. `first` is the deeper
    (depth) or the one with more KV heads (KV heads); ratio = first / second, its CI, and the
    verdict on `first`: slower, faster, no clear difference (the CI holds 1) or no CI.
    As in the headline, pairs with a run of an earlier protocol are left out unless `all_protocols`."""
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    pairs = pairs[pairs["phase"] == SEED_PHASE]
    if not all_protocols and "protocol_version" in pairs:
        pairs = pairs[pairs["protocol_version"] >= PROTOCOL_VERSION]
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    a, b = _side(pairs, "a"), _side(pairs, "b")
    equal = (np.maximum(a["params"], b["params"]) <= EQUAL_PARAMS * np.minimum(a["params"], b["params"])) & (
        a["family"].astype(str) == b["family"].astype(str))
    rows = []
    for comparison, keep, first_is_a in (
            (DEPTH, equal & (a["kv"] == b["kv"]) & (a["layers"] != b["layers"]), a["layers"] > b["layers"]),
            (KV, equal & (a["layers"] == b["layers"]) & (a["kv"] != b["kv"]), a["kv"] > b["kv"])):
        if not keep.any():
            continue
        chosen = pairs[keep].copy()
        flip = ~first_is_a[keep]
        first = pd.concat([a[keep].where(~flip, b[keep]).add_prefix("f_")], axis=1)
        second = b[keep].where(~flip, a[keep]).add_prefix("s_")
        chosen = pd.concat([chosen, first, second], axis=1)
        chosen["r"] = np.where(flip, 1 / chosen["ratio"], chosen["ratio"])
        chosen["lo"] = np.where(flip, 1 / chosen["ratio_ci_high"], chosen["ratio_ci_low"])
        chosen["hi"] = np.where(flip, 1 / chosen["ratio_ci_low"], chosen["ratio_ci_high"])
        chosen["spread"] = (chosen["f_layers"] / chosen["s_layers"] if comparison == DEPTH
                            else chosen["f_kv"] / chosen["s_kv"])
        chosen["closeness"] = (np.maximum(chosen["f_params"], chosen["s_params"])
                               / np.minimum(chosen["f_params"], chosen["s_params"]))
        by = [*GROUP_KEYS, "f_family"] + (["f_kv"] if comparison == DEPTH else ["f_layers"])
        best = (chosen.sort_values(["spread", "closeness"], ascending=[False, True])
                .groupby(by, sort=True, dropna=False).head(1))
        for _, row in best.iterrows():
            rows.append({
                **{key: row[key] for key in GROUP_KEYS}, "family": row["f_family"], "comparison": comparison,
                "first": _label(row, "f_"), "second": _label(row, "s_"),
                "first_layers": int(row["f_layers"]), "second_layers": int(row["s_layers"]),
                "first_kv_heads": int(row["f_kv"]), "second_kv_heads": int(row["s_kv"]),
                "params_m": round(float(np.mean([row["f_params"], row["s_params"]])) / 1e6, 1),
                "ratio": float(row["r"]), "ci_low": float(row["lo"]), "ci_high": float(row["hi"]),
                "ci_kind": row.get("ci_kind", CI_NONE), "verdict": _verdict(row["lo"], row["hi"]),
            })
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(["comparison", "regime", "backend", "dtype", "batch_size", "family"], ignore_index=True)


def flips(comparisons: pd.DataFrame) -> list[str]:
    """Where the depth answer changes sign: for each family, the groups where deep-and-thin is
    significantly slower and those where it is significantly faster, when both exist."""
    depth = comparisons[comparisons["comparison"] == DEPTH]
    out = []
    for family, rows in depth.groupby("family", sort=True):
        slower, faster = rows[rows["verdict"] == SLOWER], rows[rows["verdict"] == FASTER]
        if len(slower) and len(faster):
            out.append(f"{family}: deep-and-thin is slower with {_where(slower)} but faster with {_where(faster)}")
    return out


def _where(rows: pd.DataFrame) -> str:
    return "; ".join(sorted({f"{r.backend} {r.dtype} batch {r.batch_size} on {device_label(r.regime)}"
                             for r in rows.itertuples()}))


def _ratio_text(row, within_run_mark: str = "") -> str:
    if not np.isfinite(row.ci_low):
        return f"{row.ratio:.2f}x (no CI)"
    mark = within_run_mark if row.ci_kind != CI_ACROSS_RUNS else ""
    return f"{row.ratio:.2f}x [{row.ci_low:.2f}, {row.ci_high:.2f}]{mark}"


def budget_sentences(comparisons: pd.DataFrame, within_run_mark: str = "") -> list[str]:
    """Per device and family, one sentence on depth at equal parameters and one on KV heads:
    each group's ratio with its CI ("..., 30 layers against 6 (time per token, 95% CI): cuda-graph
    bfloat16 batch 1 4.20x [4.10, 4.31]; ..."). `within_run_mark` follows an interval that is
    across the rounds of one run rather than across runs."""
    if comparisons.empty:
        return []
    out = []
    for (regime, family, comparison), rows in comparisons.groupby(["regime", "family", "comparison"], sort=True):
        widest = rows.sort_values(["first_layers", "second_layers"], ascending=[False, True]).iloc[0]
        # what tells the rows apart beyond backend, dtype and batch: the KV heads (depth) or the depth (KV heads)
        apart = "first_kv_heads" if comparison == DEPTH else "first_layers"
        several = rows.groupby(["backend", "dtype", "batch_size"])[apart].nunique().max() > 1

        def where(r) -> str:
            extra = "" if not several else (f", {r.first_kv_heads} KV head{'s' if r.first_kv_heads != 1 else ''}" if comparison == DEPTH
                                             else f", {r.first_layers} layers")
            return f"{r.backend} {r.dtype} batch {r.batch_size}{extra}"

        parts = "; ".join(f"{where(r)} {_ratio_text(r, within_run_mark)}"
                          for r in rows.sort_values(["backend", "dtype", "batch_size", apart]).itertuples())
        if comparison == DEPTH:
            what = (f"{family} at about {widest.params_m:.0f}M parameters, {widest.first_layers} layers against "
                    f"{widest.second_layers}")
        else:
            what = (f"{family} at equal depth and parameters, {widest.first_kv_heads} KV heads against "
                    f"{widest.second_kv_heads}")
        out.append(f"On {device_label(regime)}, {what} (time per token, 95% CI): {parts}.")
    return out


def budget_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons as a page or the README shows them: readable columns, the CI in words."""
    if comparisons.empty:
        return pd.DataFrame(columns=["comparison", "device", "backend", "dtype", "batch", "slower?", "shape",
                                     "against", "ratio", "95% CI"])
    return pd.DataFrame({
        "comparison": comparisons["comparison"],
        "device": comparisons["regime"].map(device_label),
        "backend": comparisons["backend"], "dtype": comparisons["dtype"], "batch": comparisons["batch_size"],
        "shape": comparisons["first"], "against": comparisons["second"],
        "ratio": comparisons["ratio"].map(lambda v: f"{v:.2f}x"),
        "95% CI": [f"[{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else "none"
                   for lo, hi in zip(comparisons["ci_low"], comparisons["ci_high"])],
        "slower?": comparisons["verdict"],
    })
