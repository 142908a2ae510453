"""The answer to "does shape drive latency?" in sentences, for any dataset: the reference
snapshot, a user's own store of two shapes, or both together.

The headline (analysis.headline) is built around the seed pair (gpt2-5m vs gpt2-25m). A user
who measured shapes of their own has no seed pair, no fit (two shapes cannot separate depth
from parameter count) and, most often, no significant inversion: an Overview built only
on those said "0 of 0 fitted groups" and showed no latency at all. Here every dataset gets
one sentence per class of hardware (GPUs, CPUs) from the strongest evidence it holds, in
this order: the seed pair, the depth-vs-parameters fits (analysis.regression), the
strongest significant inversion (analysis.inversions), and otherwise the measured cells
with what is missing to say more ("2 shapes (2 depths): measure at least 3 depths to
fit"). The tables behind the sentences (each group's cells in decode, ms per token with
their 95% CI; each group's fastest and slowest shape and verdict) are returned with them,
so a page lays out and never decides.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.headline import DEEP_NARROW, SEED_PHASE, SHALLOW_WIDE, Headline
from analysis.intervals import CI_NONE
from analysis.load import with_family
from analysis.regression import MIN_DEPTHS, MIN_SHAPES, MIN_WIDTHS, GroupFit
from analysis.shapes import names_architecture, pair_labels, shape_label

# How the sentences name a device kind's regimes ("On the GPUs measured, ...").
DEVICE_CLASSES = {"cuda": "GPUs", "cpu": "CPUs"}
GROUP_COLUMNS = ["regime", "backend", "dtype", "batch_size", "prompt_len", "gen_len"]
CELL_COLUMNS = ["group_id", "group", *GROUP_COLUMNS, "device_kind", "shape", "model_name", "n_layer", "n_embd", "params",
                "ms_per_token", "ci_low", "ci_high", "ci_kind", "rerun_ci_low", "rerun_ci_high", "n_runs"]
VERDICT_COLUMNS = ["group", "shapes", "verdict", "fastest", "slowest", "slowest / fastest", "regime"]


@dataclass(frozen=True)
class ShapeAnswer:
    """`sentences`: (hardware class, sentence) pairs, GPUs first. `cells`: every decode cell of
    the selection, one row per shape and group (`CELL_COLUMNS`), ms per token with its 95% CI.
    `groups`: per group, its number of shapes, fastest and slowest shape and the fits'
    verdict or why there is none (`VERDICT_COLUMNS`)."""

    sentences: list[tuple[str, str]]
    cells: pd.DataFrame
    groups: pd.DataFrame

    def only(self, regimes) -> "ShapeAnswer":
        """The tables restricted to `regimes` (a user's own, beside the reference); sentences kept."""
        regimes = set(regimes)
        return ShapeAnswer(self.sentences, self.cells[self.cells["regime"].isin(regimes)].reset_index(drop=True),
                           self.groups[self.groups["regime"].isin(regimes)].reset_index(drop=True))


def decode_cells(pooled: pd.DataFrame) -> pd.DataFrame:
    """Decode cells (pooled over runs) as the Overview lists them: a group label, the shape's
    label, ms per token with its CI (and its re-run interval where `pooled` has one), sorted by
    group then latency."""
    if pooled.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    cells = pooled[pooled["phase"] == SEED_PHASE].copy()
    if cells.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    cells = with_family(cells)
    cells["group"] = [group_name(r) for r in cells.itertuples()]
    full = names_architecture(cells["family"].unique())  # a store of GPT-2 shapes alone names them as it always has
    cells["shape"] = [shape_label(name, n_layer, n_embd, params, *((family, n_head, n_kv_head) if full else ()))
                      for name, n_layer, n_embd, params, family, n_head, n_kv_head
                      in zip(cells["model_name"], cells["n_layer"], cells["n_embd"], cells["params"], cells["family"],
                             cells["n_head"], cells["n_kv_head"])]
    cells = cells.rename(columns={"median": "ms_per_token", "median_ci_low": "ci_low", "median_ci_high": "ci_high"})
    if "n_runs" not in cells:
        cells["n_runs"] = 1
    for column in ("rerun_ci_low", "rerun_ci_high"):  # pooled cells judged by analysis.rerun carry them
        if column not in cells:
            cells[column] = float("nan")
    return cells[CELL_COLUMNS].sort_values(["regime", "group", "ms_per_token"], ignore_index=True)


def group_name(row: Any) -> str:
    """A decode group as a reader names it: backend, dtype, batch, prompt and generated tokens,
    led by its family where that is not GPT-2 (as `GroupKey.short_label`)."""
    family = getattr(row, "family", "gpt2")
    lead = f"{family} " if family != "gpt2" else ""
    return f"{lead}{row.backend} {row.dtype} b{row.batch_size} p{row.prompt_len} g{row.gen_len}"


def missing_for_fit(n_shapes: int, n_depths: int, n_widths: int) -> str:
    """What to measure before depth and parameter count can be told apart, in a short phrase."""
    wanted = []
    if n_depths < MIN_DEPTHS:
        wanted.append(f"at least {MIN_DEPTHS} depths")
    if n_widths < MIN_WIDTHS:
        wanted.append(f"at least {MIN_WIDTHS} widths")
    if n_shapes < MIN_SHAPES:
        wanted.append(f"at least {MIN_SHAPES} shapes")
    shapes = f"{n_shapes} shape{'s' if n_shapes != 1 else ''} ({n_depths} depth{'s' if n_depths != 1 else ''})"
    if not wanted:
        return f"{shapes}: depth and width move together, so their effects cannot be separated; add shapes off that line"
    return f"{shapes}: measure {' and '.join(wanted)} to fit"


def fit_verdicts(fits: list[GroupFit]) -> dict[str, str]:
    """Per fitted decode group (its group_id), the fits' winner: depth, params or inconclusive."""
    return {fit.group_id: fit.verdict.get("winner", "inconclusive") for fit in fits
            if fit.status == "ok" and fit.group.get("phase") == SEED_PHASE}


def group_table(cells: pd.DataFrame, verdicts: dict[str, str]) -> pd.DataFrame:
    """Per decode group: shapes, fastest and slowest, their ratio, and the verdict or what is missing."""
    rows = []
    for group_id, group in cells.groupby("group_id", sort=True):
        group = group.sort_values("ms_per_token")
        fastest, slowest = group.iloc[0], group.iloc[-1]
        shapes = group[["n_layer", "n_embd"]].drop_duplicates()
        verdict = verdicts.get(group_id)
        rows.append({
            "group": fastest["group"], "regime": fastest["regime"], "shapes": len(shapes),
            "fastest": f"{fastest['shape']}: {fastest['ms_per_token']:.3g} ms/token",
            "slowest": f"{slowest['shape']}: {slowest['ms_per_token']:.3g} ms/token",
            "slowest / fastest": f"{slowest['ms_per_token'] / fastest['ms_per_token']:.2f}x" if len(shapes) > 1 else "—",
            "verdict": VERDICT_WORDS.get(verdict, verdict) if verdict else
            missing_for_fit(len(shapes), shapes["n_layer"].nunique(), shapes["n_embd"].nunique()),
        })
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


VERDICT_WORDS = {"depth": "depth explains latency better than parameter count",
                 "params": "parameter count explains latency better than depth",
                 "inconclusive": "fitted, inconclusive"}


def _ratio_range(low: float, high: float) -> str:
    return f"{low:.2f}x" if np.isclose(low, high, rtol=0.005) else f"{low:.2f}-{high:.2f}x"


def seed_sentence(where: str, seed: pd.DataFrame) -> str:
    """The seed pair's ratio over the rows of one hardware class (regime x backend x dtype)."""
    ratios = seed["ratio"]
    with_ci = seed[seed["ci_kind"] != CI_NONE]
    ci = (f" (95% CIs from {with_ci['ratio_ci_low'].min():.2f}x to {with_ci['ratio_ci_high'].max():.2f}x)"
          if len(with_ci) else " (no CI: single-round cells)")
    first = seed.iloc[0]
    deep = f"{first['n_layer_a']} x {first['n_embd_a']} {DEEP_NARROW} ({first['params_a'] / 1e6:.0f}M)"
    wide = f"{first['n_layer_b']} x {first['n_embd_b']} {SHALLOW_WIDE} ({first['params_b'] / 1e6:.0f}M)"
    combos = f"{len(seed)} backend/dtype combination{'s' if len(seed) != 1 else ''}"
    if (ratios > 1).all():
        lead = "depth drives decode latency" if seed["significant"].any() else "depth leads decode latency"
        return (f"On the {where} measured, {lead}: the {deep} is {_ratio_range(ratios.min(), ratios.max())} slower per "
                f"token than the {wide}{ci}, over {combos}.")
    if (ratios < 1).all():
        inverse = 1 / ratios
        return (f"On the {where} measured, parameter count drives decode latency: the {wide} is "
                f"{_ratio_range(inverse.min(), inverse.max())} slower per token than the {deep}{ci}, over {combos}.")
    slower = int((ratios > 1).sum())
    return (f"On the {where} measured, it depends on the backend: the {deep} is slower per token than the {wide} in "
            f"{slower} of {combos}, by {ratios.min():.2f}x to {ratios.max():.2f}x{ci}.")


def fits_sentence(where: str, winners: list[str]) -> str:
    counts = pd.Series(winners).value_counts()
    depth, params, open_ = counts.get("depth", 0), counts.get("params", 0), counts.get("inconclusive", 0)
    n = len(winners)
    if depth > params and depth >= open_:
        lead = "depth drives decode latency"
    elif params > depth and params >= open_:
        lead = "parameter count drives decode latency"
    else:
        lead = "neither depth nor parameter count clearly drives decode latency"
    return (f"On the {where} measured, {lead}: the depth-vs-parameters fits pick depth in {depth}, parameter count in "
            f"{params} and neither in {open_} of {n} fitted group{'s' if n != 1 else ''}.")


def inversion_sentence(where: str, row: pd.Series) -> str:
    a, b = pair_labels(row)
    return (f"On the {where} measured, shape beats size in at least one place: the smaller {a} is {row['ratio']:.2f}x "
            f"slower per token than the larger {b} (95% CI {row['ratio_ci_low']:.2f}-{row['ratio_ci_high']:.2f}x, "
            f"{row['backend']} {row['dtype']}); too few shapes to fit depth against parameter count.")


def cells_sentence(where: str, cells: pd.DataFrame, groups: pd.DataFrame) -> str:
    fastest, slowest = cells.loc[cells["ms_per_token"].idxmin()], cells.loc[cells["ms_per_token"].idxmax()]
    if len(cells[["n_layer", "n_embd"]].drop_duplicates()) < 2:
        return (f"On the {where} measured, one shape only ({fastest['shape']}, {fastest['ms_per_token']:.3g} ms/token): "
                f"measure at least {MIN_DEPTHS} depths to see whether shape drives latency.")
    return (f"On the {where} measured, not yet answered: {fastest['shape']} is fastest ({fastest['ms_per_token']:.3g} "
            f"ms/token, {fastest['group']}) and {slowest['shape']} slowest ({slowest['ms_per_token']:.3g} ms/token, "
            f"{slowest['group']}); {groups['verdict'].iloc[0]}.")


def shape_answer(pooled: pd.DataFrame, fits: list[GroupFit], headline: Headline) -> ShapeAnswer:
    """One sentence per hardware class from the strongest evidence it holds, with its tables.

    `pooled`: pooled cell statistics (reproducibility.pooled_stats(...).frame); `fits`: the
    depth-vs-width fits of the same frame; `headline`: the headline of the same selection
    (its seed pairs and its every-pair frame, significance at FDR 5%).
    """
    cells = decode_cells(pooled)
    groups = group_table(cells, fit_verdicts(fits))
    kinds = dict(zip(cells["regime"], cells["device_kind"]))
    regime_of = dict(zip(cells["group_id"], cells["regime"]))
    winners = {regime_of[group_id]: [] for group_id in fit_verdicts(fits) if group_id in regime_of}
    for group_id, winner in fit_verdicts(fits).items():
        if group_id in regime_of:
            winners[regime_of[group_id]].append(winner)
    sentences = []
    for kind in sorted(set(kinds.values()), key=lambda k: (k != "cuda", str(k))):
        where = DEVICE_CLASSES.get(kind, f"{kind} devices")
        regimes = {r for r, k in kinds.items() if k == kind}
        seed = headline.seed_pairs[headline.seed_pairs["regime"].isin(regimes)] if len(headline.seed_pairs) else []
        kind_winners = [w for regime in sorted(regimes) for w in winners.get(regime, [])]
        pairs = headline.pairs
        significant = (pairs[pairs["regime"].isin(regimes) & (pairs["phase"] == SEED_PHASE) & pairs["significant"]
                             & (pairs["ratio"] > 1)] if len(pairs) else pairs)
        if len(seed):
            sentence = seed_sentence(where, seed)
            if kind_winners:
                depth = sum(w == "depth" for w in kind_winners)
                params = sum(w == "params" for w in kind_winners)
                sentence += (f" Over every shape, the depth-vs-parameters fits pick depth in {depth} and parameter "
                             f"count in {params} of {len(kind_winners)} fitted groups.")
        elif kind_winners:
            sentence = fits_sentence(where, kind_winners)
        elif len(significant):
            sentence = inversion_sentence(where, significant.sort_values("ratio_ci_low", ascending=False).iloc[0])
        else:
            sentence = cells_sentence(where, cells[cells["regime"].isin(regimes)],
                                      groups[groups["regime"].isin(regimes)])
        sentences.append((where, sentence))
    return ShapeAnswer(sentences=sentences, cells=cells, groups=groups)
