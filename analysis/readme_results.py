"""The generated results page (docs/results.md), made from a dataset by the project's own analysis.

`python -m runner analyze --markdown` prints it; a test compares it with the part of
`RESULTS_PAGE` between its markers, so the page the README links to cannot drift from the
bundled data. Decode latency (ms per token) is the phase the
"latency inversion" claim is about. Every interval shows its kind (`analysis.intervals`):
where a cell was measured in several runs, medians are pooled over runs and the CI is a
t interval across runs, shown plain; an interval across the rounds of one run (or, for a
fit, across the shapes of one run only) is marked `WITHIN_RUN_MARK`, because it leaves out
the run-to-run spread, which is larger than the within-run noise on the bundled GPUs; a
cell measured in one round of one run (every protocol-1 run) has no CI and shows
`NO_CI`, and so does a ratio with such a cell. Regressions come from
`regressions_across_runs`, as in `analyze`. Inversions are significant at FDR 5% within
each group (`analysis.inversions`): a pair without a CI is never significant.

The section opens with the headline (`analysis.headline`), the one the Overview page and
the HTML report show; the per-regime inversion tables and the seed pair off the seed point
are read from the headline's shape pairs, so a pair shows the same numbers everywhere.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_ci
from analysis.budget import budget_comparisons, budget_sentences, budget_table, flips
from analysis.headline import (DEEP_NARROW, NO_CI, SEED_PHASE, SEED_POINT, SHALLOW_WIDE, Headline, at_seed_point,
                               headline_for, headline_markdown, is_seed_pair, markdown_table)
from analysis.intervals import CI_ACROSS_RUNS, CI_KINDS, CI_NONE, weakest_kind
from analysis.inversions import SIGNIFICANT_LABEL
from analysis.load import runs_per_regime
from analysis.regression import LEVERAGE_LIMIT, coefficient, fit_all
from analysis.reproducibility import has_repeats, pooled_stats, regressions_across_runs
from analysis.resources import resources_markdown
from analysis.stats import CellStats, compute_cell_stats

# Where the generated results live: the README quotes only their headline and links here.
RESULTS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "results.md"
PHASE = SEED_PHASE
# The main tables compare shapes at SEED_POINT only, so a batch-8 or long-prompt cell never
# joins a batch-1 regression or inversion table; the seed pair is followed off it.
WITHIN_RUN_MARK = "†"
WITHIN_RUN_NOTE = (f"{WITHIN_RUN_MARK} within one run only: the interval is across the rounds of one run, or (a fit) "
                   "rests for some of its cells on HC3 across the shapes of one run alone, so it leaves out (some) "
                   "run-to-run variance. Unmarked intervals are across runs (Student t on run medians).")
NO_CI_NOTE = (f"{NO_CI}: measured in one round of one run (protocol 1), which has no independent replicate to "
              "build an interval on.")


def _both_stats(con: duckdb.DuckDBPyConnection, filters: dict | None = None) -> tuple[CellStats, CellStats]:
    """Per-run decode stats and the stats the tables use (pooled over runs where there are repeats)."""
    stats = compute_cell_stats(con, {"phase": PHASE, **(filters or {})})
    return stats, (pooled_stats(stats) if has_repeats(stats) else stats)


def _ci(low: float, high: float, kind: str) -> str:
    """An interval with its kind: plain across runs, marked within one run, 'no CI' without one."""
    if kind == CI_NONE or not (np.isfinite(low) and np.isfinite(high)):
        return NO_CI
    return f"[{low:.2f}, {high:.2f}]" + ("" if kind == CI_ACROSS_RUNS else WITHIN_RUN_MARK)


def _fit_kind(record: dict) -> str:
    """A fit's interval kind for `_ci`: a fit always has its HC3 interval, so 'none' reads as within one run."""
    return CI_ACROSS_RUNS if record.get("ci_kind") == CI_ACROSS_RUNS else CI_KINDS[1]


def _kinds(stats: CellStats, cell_ids) -> list[str]:
    """The CI kind of each cell (by cell_id)."""
    kinds = stats.frame.set_index("cell_id")["ci_kind"]
    return [str(kinds.get(c, CI_NONE)) for c in cell_ids]


def _with_note(lines: list[str]) -> list[str]:
    notes = [note for mark, note in ((WITHIN_RUN_MARK, WITHIN_RUN_NOTE), (NO_CI, NO_CI_NOTE))
             if any(mark in line for line in lines)]
    return lines + [""] + notes if notes else lines


def _inversions(headline: Headline, regime: str) -> list[str]:
    """The strongest significant inversion per backend and dtype in decode at the seed point (shape pairs)."""
    pairs = headline.pairs
    pairs = pairs[(pairs["regime"] == regime) & (pairs["phase"] == PHASE) & at_seed_point(pairs) & (pairs["ratio"] > 1)]
    sig = pairs[pairs["significant"]]
    if sig.empty:
        return [f"No inversion {SIGNIFICANT_LABEL}."]
    lines = ["| backend | dtype | smaller but slower | larger | slower by [95% CI] | significant at FDR 5% / inverted pairs |",
             "|---|---|---|---|---|---|"]
    for (backend, dtype), group in sig.groupby(["backend", "dtype"], sort=True):
        top = group.sort_values("ratio_ci_low", ascending=False).iloc[0]
        inverted = int(((pairs["backend"] == backend) & (pairs["dtype"] == dtype)).sum())
        lines.append(
            f"| {backend} | {dtype} | {top['model_name_a']} ({top['n_layer_a']} x {top['n_embd_a']}, "
            f"{top['params_a'] / 1e6:.1f}M) | {top['model_name_b']} ({top['n_layer_b']} x {top['n_embd_b']}, "
            f"{top['params_b'] / 1e6:.1f}M) | {top['ratio']:.2f}x {_ci(top['ratio_ci_low'], top['ratio_ci_high'], top['ci_kind'])} | "
            f"{len(group)} / {inverted} |"
        )
    return _with_note(lines)


def _verdicts(fits: list[dict]) -> list[str]:
    lines = [
        "| backend | dtype | shapes | verdict | ms per layer, depth + width model [95% CI] | adj. R² depth-only / params-only (log) |",
        "|---|---|---|---|---|---|",
    ]
    for fit in fits:
        group = fit["group"]
        if fit["status"] != "ok":
            lines.append(f"| {group['backend']} | {group['dtype']} | {fit['n_shapes']} | {fit['message']} | | |")
            continue
        depth = coefficient(fit["models"], "linear", "depth+width", "depth")
        log_depth = coefficient(fit["models"], "log", "depth", "log_depth")
        log_params = coefficient(fit["models"], "log", "params", "log_params")
        r2 = f"{log_depth['adj_r2']:.2f} / {log_params['adj_r2']:.2f}" if log_depth and log_params else ""
        lines.append(
            f"| {group['backend']} | {group['dtype']} | {fit['n_shapes']} | {fit['verdict']['winner']} | "
            f"{depth['estimate']:.3f} {_ci(depth['ci_low'], depth['ci_high'], _fit_kind(fit))} | {r2} |"
        )
    return _with_note(lines)


def _seed_form(fits: list[dict]) -> list[str]:
    """The seed study's log latency ~ log params + log n_layer: both elasticities per backend."""
    lines = [
        "| backend | dtype | shapes | params elasticity [95% CI] | depth (n_layer) elasticity [95% CI] | R² | verdict | "
        f"without leverage > {LEVERAGE_LIMIT:g} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fit in fits:
        seed, group = fit.get("seed_form") or {}, fit["group"]
        if fit["status"] != "ok" or not seed:
            continue
        kind = _fit_kind(seed)
        refit = seed["refit"]
        if refit is None:
            note = "none above"
        elif refit["status"] != "ok":
            note = f"drops {refit['dropped']}: not identifiable"
        else:
            note = (f"drops {refit['dropped']}: {refit['winner']}" + (" (changes)" if refit["verdict_changed"] else ""))
        lines.append(
            f"| {group['backend']} | {group['dtype']} | {seed['n_shapes']} | {seed['coef_log_params']:.2f} "
            f"{_ci(seed['coef_log_params_lo'], seed['coef_log_params_hi'], kind)} | {seed['coef_log_n_layer']:.2f} "
            f"{_ci(seed['coef_log_n_layer_lo'], seed['coef_log_n_layer_hi'], kind)} | {seed['r2']:.3f} | "
            f"{seed['winner']} | {note} |"
        )
    return _with_note(lines)


def _speedups(stats: CellStats, regime: str) -> list[str]:
    """hf-eager median / cuda-graph median per shape, the CI from the two cells' replicates."""
    frame = stats.frame.reset_index(drop=True)
    keys = ["model_name", "dtype", "batch_size", "prompt_len"]
    eager = frame[(frame["regime"] == regime) & (frame["backend"] == "hf-eager")]
    graph = frame[(frame["regime"] == regime) & (frame["backend"] == "cuda-graph")]
    both = eager.reset_index().merge(graph.reset_index(), on=keys, suffixes=("_eager", "_graph"))
    if both.empty:
        if graph.empty and (eager.get("device") == "cpu").all():
            return ["cuda-graph runs on GPUs only: not measured in this regime."]
        return ["No shape measured with both hf-eager and cuda-graph."]
    ratios = stats.draws[both["index_eager"].to_numpy()] / stats.draws[both["index_graph"].to_numpy()]
    low, high = percentile_ci(ratios, stats.confidence)
    both["speedup"] = both["median_eager"] / both["median_graph"]
    both["low"], both["high"] = low, high
    both["kind"] = [weakest_kind(k) for k in zip(_kinds(stats, both["cell_id_eager"]), _kinds(stats, both["cell_id_graph"]))]
    lines = []
    for dtype, group in both.groupby("dtype", sort=True):
        lines.append(
            f"- {dtype}: {len(group)} shapes, speed-up from {group['speedup'].min():.1f}x to "
            f"{group['speedup'].max():.1f}x (median {group['speedup'].median():.1f}x); "
            + "; ".join(
                f"{row.model_name} {row.speedup:.1f}x {_ci(row.low, row.high, row.kind)}"
                for row in group.sort_values("n_layer_eager").itertuples()
                if row.model_name.startswith(("gpt2-", "tiny-"))
            )
        )
    return _with_note(lines)


def _off_seed_point(headline: Headline, regime: str) -> list[str]:
    """gpt2-5m / gpt2-25m decode ratio at each (batch, prompt) other than the seed point."""
    pairs = headline.pairs
    pairs = pairs[(pairs["regime"] == regime) & (pairs["phase"] == PHASE) & is_seed_pair(pairs)
                  & (pairs["gen_len"] == SEED_POINT["gen_len"])
                  & ~((pairs["batch_size"] == SEED_POINT["batch_size"]) & (pairs["prompt_len"] == SEED_POINT["prompt_len"]))]
    if pairs.empty:
        return []
    lines = [f"Off the seed point ({DEEP_NARROW} / {SHALLOW_WIDE}, decode ms per token, 64 new tokens; a CI is across "
             "runs where both cells were measured in more than one, else across rounds of one run or none):", "",
             f"| batch | prompt | backend | dtype | {DEEP_NARROW} | {SHALLOW_WIDE} | ratio [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    pairs = pairs.sort_values(["batch_size", "prompt_len", "backend", "dtype"])
    for row in pairs.itertuples():
        lines.append(f"| {row.batch_size} | {row.prompt_len} | {row.backend} | {row.dtype} | {row.median_a:.3f} | "
                     f"{row.median_b:.3f} | {row.ratio:.2f}x {_ci(row.ratio_ci_low, row.ratio_ci_high, row.ci_kind)} |")
    return _with_note(lines) + [""]


def _kind_counts(cells: pd.DataFrame) -> str:
    """One sentence: how many of these cells have a CI of each kind."""
    counts = cells["ci_kind"].value_counts()
    across_runs, across_rounds, none = (int(counts.get(k, 0)) for k in (CI_ACROSS_RUNS, CI_KINDS[1], CI_NONE))
    parts = []
    if across_runs:
        parts.append(f"{across_runs} measured in more than one run (medians pooled over runs, CIs across runs)")
    if across_rounds:
        parts.append(f"{across_rounds} in several rounds of one run (CIs across rounds, {WITHIN_RUN_MARK})")
    if none:
        parts.append(f"{none} in one round of one run ({NO_CI})")
    return "Of these, " + "; ".join(parts) + "."


def _equal_parameters(headline: Headline) -> list[str]:
    """Deep-and-thin against shallow-and-wide, and KV heads, at equal parameters (`analysis.budget`)."""
    comparisons = budget_comparisons(headline.pairs)
    if comparisons.empty:
        return []
    lines = ["### At equal parameters", "",
             "Shapes of one family whose parameter counts lie within 20% of each other: the deepest against the "
             "shallowest with the same KV heads, and more against fewer KV heads at the same depth (decode ms per "
             "token, ratio with its 95% CI, paired across the rounds or runs both cells share).", ""]
    lines += [f"- {sentence}" for sentence in budget_sentences(comparisons, WITHIN_RUN_MARK)]
    lines += [f"- The answer flips: {flip}." for flip in flips(comparisons)]
    table = budget_table(comparisons)
    table["95% CI"] = [_ci(low, high, kind) if np.isfinite(low) else NO_CI
                       for low, high, kind in zip(comparisons["ci_low"], comparisons["ci_high"], comparisons["ci_kind"])]
    return [*lines, "", *_with_note(markdown_table(table)), ""]


def results_markdown(con: duckdb.DuckDBPyConnection) -> str:
    """The whole results section as Markdown (deterministic: seeded bootstraps)."""
    per_run, stats = _both_stats(con, SEED_POINT)
    fits = regressions_across_runs(per_run, stats) if stats is not per_run else [
        f.to_dict() for f in fit_all(stats.frame)]
    headline = headline_for(con)
    runs = runs_per_regime(con)
    out = [headline_markdown(headline)]
    for row in runs.itertuples():
        cells = stats.frame[stats.frame["regime"] == row.regime]
        if cells.empty:
            continue
        out.append(f"### {row.regime}")
        out.append("")
        pooled = " " + _kind_counts(cells)
        out.append(
            f"{row.runs} run{'s' if row.runs > 1 else ''} ({row.plans}), {row.first_day}, protocol {row.protocols}; "
            f"{len(cells)} decode cells "
            f"(ms per token; batch 1, prompt 128, 64 new tokens).{pooled}"
        )
        out.append("")
        out.append(f"Strongest inversion {SIGNIFICANT_LABEL} (Benjamini-Hochberg over each group's pairs) per backend "
                   "and dtype (smaller model slower):")
        out.append("")
        out.extend(_inversions(headline, row.regime))
        out.append("")
        regime_fits = sorted((f for f in fits if f["group"]["regime"] == row.regime),
                             key=lambda f: (f["group"]["backend"], f["group"]["dtype"]))
        out.append("The seed study's form, log latency ~ log params + log n_layer (cell medians; HC3, plus the "
                   "t-scaled spread of the fit over runs where cells were repeated):")
        out.append("")
        out.extend(_seed_form(regime_fits))
        out.append("")
        out.append("Depth vs parameter count (verdict from the seed form; single-variable regressions on cell medians, "
                   "errors as in the seed form):")
        out.append("")
        out.extend(_verdicts(regime_fits))
        out.append("")
        out.append("cuda-graph speed-up over hf-eager (decode):")
        out.append("")
        out.extend(_speedups(stats, row.regime))
        out.append("")
        out.extend(_off_seed_point(headline, row.regime))
    out.extend(_equal_parameters(headline))
    out.extend(resources_markdown(con))
    return "\n".join(out).rstrip() + "\n"
