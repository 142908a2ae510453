"""The headline: what a dataset says first, computed once for every place that shows it.

The Overview page, the README's generated results (`analyze --markdown`) and the HTML
report each used to pick their own headline (a prefill pair of two runs with within-run
CIs on one, repeats pooled on another, decode tables on the third), so one dataset had
three stories. Here there is one function, `build_headline`, and one rendering of its rows
(`headline_sections`), which the three lay out as a Streamlit table, Markdown or HTML.

It answers the seed study's question first: per regime, backend and dtype, the seed pair
(`DEEP_NARROW` vs `SHALLOW_WIDE`) in decode at the seed point, the ratio of their medians
with its 95% CI and what that CI is across (`analysis.intervals`), then the strongest
inversions significant at FDR 5% (`analysis.inversions`), each naming its regime, backend,
phase and dtype.

Everything is pooled over runs by `reproducibility.pooled_stats`, whose unit is the
configuration without the model's name (`POOL_COLUMNS`: shape, backend and options, dtype,
batch, prompt and generation length, within a regime and phase), not the stored cell key:
the reference family and the grid generator name the same model twice (gpt2-50m is the
grid's 8x512, gpt2-100m its 8x768) under different cell keys, and pooling by those left two
rows for one shape in a group and counted every pair with that shape twice (issue 20:
"1839 significant" of fewer shape pairs). So a group holds one row per shape (no run
measures a shape twice under two names), its median is the geometric mean over every run
that measured it, whatever the name, and a count of pairs is a count of shape pairs; the
Inversions page and `analyze` pool the same way. Repeated cells never pick a run.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from analysis.intervals import CI_NONE, NO_CI, RERUN_HEADER, ci_text  # noqa: F401 - NO_CI re-exported for the README tables
from analysis.inversions import SIGNIFICANT_LABEL, headlines, pair_ratios
from analysis.reproducibility import pooled_stats
from analysis.rerun import NO_HISTORY, RERUN_COLUMNS, add_pair_rerun_intervals, add_rerun_intervals, between_run_history, rerun_text
from analysis.shapes import pair_labels
from analysis.stats import CellStats, across_families, compute_cell_stats
from vocabulary import PROTOCOL_VERSION

# The seed and grid plans' operating point: the seed pair is compared there only.
SEED_POINT = {"batch_size": 1, "prompt_len": 128, "gen_len": 64}
SEED_PHASE = "decode"  # the phase the "latency inversion" claim is about (ms per token)
# The reference pair of the claim: deep and narrow, yet 5x fewer parameters than shallow and wide.
DEEP_NARROW, SHALLOW_WIDE = "gpt2-5m", "gpt2-25m"
TOP_INVERSIONS = 10  # one per group: enough to show every backend that inverts, few enough to read first
PAIR_COLUMNS = ("group_id", "regime", "backend", "phase", "dtype", "batch_size", "prompt_len", "gen_len", "model_name_a",
                "model_name_b", "ratio", "ratio_ci_low", "ratio_ci_high", "ci_kind", *RERUN_COLUMNS,
                "significant")  # what an empty headline still carries
COUNT_COLUMNS = ("regime", "groups", "shape_pairs", "inverted", "significant", "without_ci")


@dataclass(frozen=True)
class Headline:
    """The rows of the headline, as numbers.

    `seed_pairs`: one row per (regime, backend, dtype) that measured both seed models at the
    seed point, with the pair columns of `inversions.pair_ratios` (ratio = DEEP_NARROW /
    SHALLOW_WIDE), the ratio's re-run interval (`analysis.rerun`: rerun_ci_low/high,
    rerun_basis) plus n_runs_a/b; every pair below carries the re-run interval too. `inversions`: the strongest significant inversion of each
    group, the `TOP_INVERSIONS` strongest groups by CI lower bound, with the group's
    shape_pairs, inverted and significant counts. `counts`: per regime, groups, shape pairs,
    inverted, significant and without CI. `pairs`: every shape pair of every group, for
    tables that go beyond the headline (the README's per-regime ones) and must agree with it.
    """

    seed_pairs: pd.DataFrame
    inversions: pd.DataFrame
    counts: pd.DataFrame
    pairs: pd.DataFrame
    earlier_protocol_regimes: tuple[str, ...] = ()  # regimes whose earlier-protocol pairs the tables leave out
    all_protocols: bool = False


def build_headline(stats: CellStats, top: int = TOP_INVERSIONS, *, all_protocols: bool = False,
                   pool_families: bool = False) -> Headline:
    """The headline of per-run cell statistics (`compute_cell_stats`, any filters).

    Pools by shape, compares every shape pair of every group once (`pair_ratios`, FDR over
    the group's shape pairs) and picks the seed pairs and the strongest inversions from
    that one frame, so a pair shows the same numbers wherever it appears.

    The seed, inversion and count tables hold only pairs whose every run used the current
    protocol (`vocabulary.PROTOCOL_VERSION`) unless `all_protocols`: protocol-1 runs were
    unpinned single passes whose cells move 2x between runs (README, Protocol 2), so they
    stay in the store and in `pairs` (the per-regime tables) but do not lead. The regimes
    they leave out are named (`earlier_protocol_regimes`), never dropped without a word.
    With `pool_families` a group holds every family, so pairs compare shapes across them.
    """
    pooled = pooled_stats(stats)
    if pool_families:
        pooled = across_families(pooled)
    if pooled.frame.empty:
        return Headline(*(pd.DataFrame(columns=columns) for columns in (PAIR_COLUMNS, PAIR_COLUMNS, COUNT_COLUMNS,
                                                                         PAIR_COLUMNS)))
    pairs = pair_ratios(pooled, inversions_only=False)
    # Beside each ratio's CI, where a new run's ratio is expected (analysis.rerun), from the per-run history.
    cells = add_rerun_intervals(pooled.frame, between_run_history(stats.frame), confidence=stats.confidence)
    pairs = add_pair_rerun_intervals(pairs, cells, confidence=stats.confidence)
    runs = dict(zip(pooled.frame["cell_id"], pooled.frame["n_runs"]))
    pairs["n_runs_a"], pairs["n_runs_b"] = pairs["cell_id_a"].map(runs), pairs["cell_id_b"].map(runs)
    pairs["protocol_version"] = (np.minimum(pairs["protocol_version_a"], pairs["protocol_version_b"]).astype(int)
                                 if "protocol_version_a" in pairs else 1)
    earlier = pairs["protocol_version"] < PROTOCOL_VERSION
    left_out = () if all_protocols else tuple(sorted(pairs.loc[earlier, "regime"].unique()))
    every_pair, pairs = pairs, (pairs if all_protocols else pairs[~earlier])
    seed = pairs[is_seed_pair(pairs) & at_seed_point(pairs) & (pairs["phase"] == SEED_PHASE)]
    seed = seed.sort_values(["regime", "backend", "dtype"], ignore_index=True)

    inverted = pairs[pairs["ratio"] > 1]
    per_group = pd.DataFrame({
        "shape_pairs": pairs.groupby("group_id").size(),
        "inverted": inverted.groupby("group_id").size(),
        "significant": inverted.groupby("group_id")["significant"].sum(),
    }).fillna(0).astype(int)
    strongest = (headlines(inverted).sort_values("ratio_ci_low", ascending=False, ignore_index=True).head(top)
                 .drop(columns=["significant"], errors="ignore").join(per_group, on="group_id"))

    counts = pd.DataFrame([{
        "regime": regime,
        "groups": int(group["group_id"].nunique()),
        "shape_pairs": int(len(group)),
        "inverted": int((group["ratio"] > 1).sum()),
        "significant": int(group["significant"].sum()),
        "without_ci": int((group["ci_kind"] == CI_NONE).sum()),
    } for regime, group in pairs.groupby("regime", sort=True)], columns=COUNT_COLUMNS)
    return Headline(seed_pairs=seed, inversions=strongest, counts=counts, pairs=every_pair,
                    earlier_protocol_regimes=left_out, all_protocols=all_protocols)


def is_seed_pair(pairs: pd.DataFrame) -> pd.Series:
    """Pairs (of `pair_ratios`) of DEEP_NARROW vs SHALLOW_WIDE, at any point and phase.

    A pooled shape carries every name it was measured under (`model_names`), so the seed
    model is found among them, never by splitting the joined label; per-run pairs have one name.
    """
    def named(side: str, name: str) -> pd.Series:
        if f"model_names_{side}" in pairs:
            return pairs[f"model_names_{side}"].map(lambda names: name in list(names)).astype(bool)
        return pairs[f"model_name_{side}"].astype(str) == name

    return named("a", DEEP_NARROW) & named("b", SHALLOW_WIDE)


def at_seed_point(pairs: pd.DataFrame) -> pd.Series:
    """Pairs measured at batch, prompt and generation length of `SEED_POINT`."""
    return np.logical_and.reduce([pairs[key] == value for key, value in SEED_POINT.items()])


def headline_for(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None, *,
                 all_protocols: bool = False) -> Headline:
    """`build_headline` of every ok cell matching `filters` (the CLI's and the report's entry point)."""
    return build_headline(compute_cell_stats(con, filters), all_protocols=all_protocols)


# --- one rendering for every page ----------------------------------------------------------

def _runs(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a} / {b}"


def seed_table(headline: Headline) -> pd.DataFrame:
    """The seed pair rows as shown (text columns): every row names regime, backend, phase, dtype."""
    rows = [{
        "regime": r.regime, "backend": r.backend, "phase": r.phase, "dtype": r.dtype,
        f"{DEEP_NARROW} ms/token": f"{r.median_a:.3f}", f"{SHALLOW_WIDE} ms/token": f"{r.median_b:.3f}",
        "ratio": f"{r.ratio:.2f}x", "95% CI": ci_text(r.ratio_ci_low, r.ratio_ci_high, r.ci_kind),
        "CI kind": r.ci_kind, RERUN_HEADER: _rerun(r), "runs": _runs(r.n_runs_a, r.n_runs_b),
        SIGNIFICANT_LABEL: "yes" if r.significant else "no",
    } for r in headline.seed_pairs.itertuples()]
    return pd.DataFrame(rows, columns=["regime", "backend", "phase", "dtype", f"{DEEP_NARROW} ms/token",
                                       f"{SHALLOW_WIDE} ms/token", "ratio", "95% CI", "CI kind", RERUN_HEADER, "runs",
                                       SIGNIFICANT_LABEL])


def _rerun(row) -> str:
    """A pair's re-run interval as its table shows it (a headline kept before it existed has none)."""
    return rerun_text(getattr(row, "rerun_ci_low", float("nan")), getattr(row, "rerun_ci_high", float("nan")))


def inversion_table(headline: Headline) -> pd.DataFrame:
    """The strongest inversions as shown: the group (regime, backend, phase, dtype, batch, prompt),
    the pair, the ratio with its CI and kind, and the group's counts of shape pairs."""
    rows = [{
        "regime": r.regime, "backend": r.backend, "phase": r.phase, "dtype": r.dtype,
        "batch": str(r.batch_size), "prompt": str(r.prompt_len),
        **dict(zip(("smaller but slower", "larger"), pair_labels(r))),
        "slower by": f"{r.ratio:.2f}x", "95% CI": ci_text(r.ratio_ci_low, r.ratio_ci_high, r.ci_kind),
        "CI kind": r.ci_kind, RERUN_HEADER: _rerun(r),
        "significant / inverted / shape pairs in group": f"{r.significant} / {r.inverted} / {r.shape_pairs}",
    } for r in headline.inversions.itertuples()]
    return pd.DataFrame(rows, columns=["regime", "backend", "phase", "dtype", "batch", "prompt", "smaller but slower",
                                       "larger", "slower by", "95% CI", "CI kind", RERUN_HEADER,
                                       "significant / inverted / shape pairs in group"])


def count_table(headline: Headline) -> pd.DataFrame:
    """Shape pairs per regime: compared, inverted (point ratio above 1), significant, without a CI."""
    return headline.counts.rename(columns={
        "shape_pairs": "shape pairs", "inverted": "inverted", "significant": SIGNIFICANT_LABEL,
        "without_ci": "without CI"})


def headline_sections(headline: Headline) -> list[tuple[str, str, pd.DataFrame]]:
    """(title, what it shows, table) in reading order; an empty table's text says why."""
    point = (f"batch {SEED_POINT['batch_size']}, prompt {SEED_POINT['prompt_len']}, "
             f"{SEED_POINT['gen_len']} new tokens")
    seed = seed_table(headline)
    inversions = inversion_table(headline)
    return [(title, text + earlier_protocol_note(headline) if index == 0 else text, table)
            for index, (title, text, table) in enumerate(_sections(headline, point, seed, inversions))]


def earlier_protocol_note(headline: Headline) -> str:
    """The sentence that says which regimes' earlier-protocol runs the tables leave out ('' if none)."""
    regimes = headline.earlier_protocol_regimes
    if not regimes:
        return ""
    return (f" Runs of protocol 1 (one unpinned pass per cell, before host control and rounds; their cells move up "
            f"to 2x between runs) are left out of these tables, which drops pairs of: {'; '.join(regimes)}.")


def _sections(headline: Headline, point: str, seed: pd.DataFrame,
              inversions: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    return [
        (f"The seed pair: {DEEP_NARROW} vs {SHALLOW_WIDE}",
         (f"{SEED_PHASE.capitalize()} ms per token at {point}, per regime, backend and dtype; medians pooled over runs "
          f"(geometric mean of run medians), ratio {DEEP_NARROW} / {SHALLOW_WIDE} (above 1: the deep, narrow model, "
          "with fewer parameters, is slower) with its 95% CI and what the CI is across (across rounds: this run only; "
          f"across runs: the value runs centre on; {NO_CI} where a cell was measured in one round of one run), and its "
          f"{RERUN_HEADER}: where the ratio of a new run is expected, from the store's repeated runs of the backend "
          f"on the regime (\"{NO_HISTORY}\" without them).") if len(seed) else
         f"No regime measured both {DEEP_NARROW} and {SHALLOW_WIDE} in {SEED_PHASE} at {point}.",
         seed),
        ("Strongest inversions",
         (f"A smaller model slower than a larger one, {SIGNIFICANT_LABEL} (Benjamini-Hochberg over the shape pairs "
          f"of each group; a pair without a CI never is): the strongest of each group, the {TOP_INVERSIONS} groups "
          "with the highest CI lower bound; every phase and operating point, pooled over runs per shape; beside the "
          f"CI, its {RERUN_HEADER} (where a new run's ratio is expected).")
         if len(inversions) else f"No inversion {SIGNIFICANT_LABEL}.",
         inversions),
        ("Shape pairs per regime",
         "Each pair of shapes of a group counted once, however many runs or names measured it."
         if len(headline.counts) else "No two shapes measured in one group.",
         count_table(headline)),
    ]


WIDE_TABLE_COLUMNS = 8  # past this many columns a long regime name would push the numbers off screen


def split_by_regime(table: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """A wide headline table as (regime, its rows without the regime column) in first-seen
    order, for screens where a regime name would crowd out the ratio and its CI; a narrow
    table (or one without regimes) comes back whole, under None."""
    if len(table.columns) <= WIDE_TABLE_COLUMNS or "regime" not in table.columns:
        return [(None, table)]
    return [(str(regime), rows.drop(columns="regime").reset_index(drop=True))
            for regime, rows in table.groupby("regime", sort=False)]


def markdown_table(table: pd.DataFrame) -> list[str]:
    """A text table as Markdown lines (a `|` inside a cell, as in a regime, is escaped)."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return lines


def headline_markdown(headline: Headline) -> str:
    """The headline as the README's generated results open with it."""
    lines = ["### Headline", ""]
    for title, text, table in headline_sections(headline):
        lines += [f"**{title}.** {text}", ""]
        if len(table):
            lines += markdown_table(table) + [""]
    return "\n".join(lines)
