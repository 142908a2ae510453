"""The README's results section, generated from a dataset by the project's own analysis.

`python -m runner analyze --markdown` prints it; a test compares it with README.md so the
README cannot drift from the bundled data. Decode latency (ms per token) is the phase the
"latency inversion" claim is about. Where a cell was measured in several runs, medians and
CIs are pooled over runs (run-level bootstrap), so the CIs include run-to-run variance; an
interval that rests on one run only (a cell, or either cell of a ratio, measured in a
single run; a regression whose group has no repeats) is marked `WITHIN_RUN_MARK`, because
it leaves out the run-to-run spread, which is larger than the within-run noise on the
bundled GPUs. Regressions come from `regressions_across_runs`, as in `analyze`, so their
CIs carry between-run variance where there are repeats. Inversions are significant at FDR
5% within each group (`analysis.inversions`).
"""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_ci
from analysis.inversions import SIGNIFICANT_LABEL, pair_ratios
from analysis.regression import LEVERAGE_LIMIT, fit_all
from analysis.reproducibility import has_repeats, pooled_stats, regressions_across_runs
from analysis.resources import resources_markdown
from analysis.stats import CellStats, compute_cell_stats

PHASE = "decode"
# The seed and grid plans' operating point: the main tables compare shapes there only, so
# a batch-8 or long-prompt cell never joins a batch-1 regression or inversion table.
SEED_POINT = {"batch_size": 1, "prompt_len": 128, "gen_len": 64}
# The reference pair of the "latency inversion" claim, followed off the seed point.
DEEP_NARROW, SHALLOW_WIDE = "gpt2-5m", "gpt2-25m"
WITHIN_RUN_MARK = "†"
WITHIN_RUN_NOTE = (f"{WITHIN_RUN_MARK} within one run only: measured in a single run, so the interval leaves out "
                   "run-to-run variance.")


def _decode_stats(con: duckdb.DuckDBPyConnection, filters: dict | None = None) -> CellStats:
    return _both_stats(con, filters)[1]


def _both_stats(con: duckdb.DuckDBPyConnection, filters: dict | None = None) -> tuple[CellStats, CellStats]:
    """Per-run decode stats and the stats the tables use (pooled over runs where there are repeats)."""
    stats = compute_cell_stats(con, {"phase": PHASE, **(filters or {})})
    return stats, (pooled_stats(stats) if has_repeats(stats) else stats)


def _ci(low: float, high: float, within_run: bool = False) -> str:
    return f"[{low:.2f}, {high:.2f}]" + (WITHIN_RUN_MARK if within_run else "")


def _single_run(stats: CellStats, cell_ids) -> pd.Series:
    """Whether each cell (by cell_id) rests on one run only."""
    n_runs = stats.frame.set_index("cell_id")["n_runs"] if "n_runs" in stats.frame else None
    ids = pd.Series(list(cell_ids))
    return ids.map(n_runs).fillna(1).le(1) if n_runs is not None else pd.Series(True, index=ids.index)


def _with_note(lines: list[str]) -> list[str]:
    return lines + ["", WITHIN_RUN_NOTE] if any(WITHIN_RUN_MARK in line for line in lines) else lines


def _inversions(stats: CellStats, regime: str) -> list[str]:
    pairs = pair_ratios(stats)
    pairs = pairs[pairs["regime"] == regime]
    sig = pairs[pairs["significant"]]
    if sig.empty:
        return [f"No inversion {SIGNIFICANT_LABEL}."]
    lines = ["| backend | dtype | smaller but slower | larger | slower by [95% CI] | significant at FDR 5% / inverted pairs |",
             "|---|---|---|---|---|---|"]
    for (backend, dtype), group in sig.groupby(["backend", "dtype"], sort=True):
        top = group.sort_values("ratio_ci_low", ascending=False).iloc[0]
        within = bool(_single_run(stats, [top["cell_id_a"], top["cell_id_b"]]).any())
        inverted = int(((pairs["backend"] == backend) & (pairs["dtype"] == dtype)).sum())
        lines.append(
            f"| {backend} | {dtype} | {top['model_name_a']} ({top['n_layer_a']} x {top['n_embd_a']}, "
            f"{top['params_a'] / 1e6:.1f}M) | {top['model_name_b']} ({top['n_layer_b']} x {top['n_embd_b']}, "
            f"{top['params_b'] / 1e6:.1f}M) | {top['ratio']:.2f}x {_ci(top['ratio_ci_low'], top['ratio_ci_high'], within)} | "
            f"{len(group)} / {inverted} |"
        )
    return _with_note(lines)


def _coefficient(fit: dict, scale: str, model: str, term: str) -> dict | None:
    for record in fit["models"]:
        if record["scale"] == scale and record["model"] == model:
            for coefficient in record["coefficients"]:
                if coefficient["term"] == term:
                    return coefficient | {"adj_r2": record["adj_r2"], "aic": record["aic"]}
    return None


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
        depth = _coefficient(fit, "linear", "depth+width", "depth")
        log_depth = _coefficient(fit, "log", "depth", "log_depth")
        log_params = _coefficient(fit, "log", "params", "log_params")
        r2 = f"{log_depth['adj_r2']:.2f} / {log_params['adj_r2']:.2f}" if log_depth and log_params else ""
        lines.append(
            f"| {group['backend']} | {group['dtype']} | {fit['n_shapes']} | {fit['verdict']['winner']} | "
            f"{depth['estimate']:.3f} {_ci(depth['ci_low'], depth['ci_high'], not fit['ci_includes_between_run_variance'])} | {r2} |"
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
        within = not seed["ci_includes_between_run_variance"]
        refit = seed["refit"]
        if refit is None:
            note = "none above"
        elif refit["status"] != "ok":
            note = f"drops {refit['dropped']}: not identifiable"
        else:
            note = (f"drops {refit['dropped']}: {refit['winner']}" + (" (changes)" if refit["verdict_changed"] else ""))
        lines.append(
            f"| {group['backend']} | {group['dtype']} | {seed['n_shapes']} | {seed['coef_log_params']:.2f} "
            f"{_ci(seed['coef_log_params_lo'], seed['coef_log_params_hi'], within)} | {seed['coef_log_n_layer']:.2f} "
            f"{_ci(seed['coef_log_n_layer_lo'], seed['coef_log_n_layer_hi'], within)} | {seed['r2']:.3f} | "
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
    both["within"] = (_single_run(stats, both["cell_id_eager"]).to_numpy() | _single_run(stats, both["cell_id_graph"]).to_numpy())
    lines = []
    for dtype, group in both.groupby("dtype", sort=True):
        lines.append(
            f"- {dtype}: {len(group)} shapes, speed-up from {group['speedup'].min():.1f}x to "
            f"{group['speedup'].max():.1f}x (median {group['speedup'].median():.1f}x); "
            + "; ".join(
                f"{row.model_name} {row.speedup:.1f}x {_ci(row.low, row.high, row.within)}"
                for row in group.sort_values("n_layer_eager").itertuples()
                if row.model_name.startswith(("gpt2-", "tiny-"))
            )
        )
    return _with_note(lines)


def _off_seed_point(stats: CellStats, regime: str) -> list[str]:
    """gpt2-5m / gpt2-25m decode ratio at each (batch, prompt) other than the seed point."""
    pairs = pair_ratios(stats, inversions_only=False)
    pairs = pairs[(pairs["regime"] == regime) & (pairs["model_name_a"] == DEEP_NARROW)
                  & (pairs["model_name_b"] == SHALLOW_WIDE)
                  & ~((pairs["batch_size"] == SEED_POINT["batch_size"]) & (pairs["prompt_len"] == SEED_POINT["prompt_len"]))]
    if pairs.empty:
        return []
    lines = [f"Off the seed point ({DEEP_NARROW} / {SHALLOW_WIDE}, decode ms per token, 64 new tokens; a CI pools "
             "runs where both cells were measured in more than one, else it is within one run):", "",
             f"| batch | prompt | backend | dtype | {DEEP_NARROW} | {SHALLOW_WIDE} | ratio [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    pairs = pairs.sort_values(["batch_size", "prompt_len", "backend", "dtype"])
    within = _single_run(stats, pairs["cell_id_a"]).to_numpy() | _single_run(stats, pairs["cell_id_b"]).to_numpy()
    for row, single in zip(pairs.itertuples(), within):
        lines.append(f"| {row.batch_size} | {row.prompt_len} | {row.backend} | {row.dtype} | {row.median_a:.3f} | "
                     f"{row.median_b:.3f} | {row.ratio:.2f}x {_ci(row.ratio_ci_low, row.ratio_ci_high, single)} |")
    return _with_note(lines) + [""]


def results_markdown(con: duckdb.DuckDBPyConnection) -> str:
    """The whole results section as Markdown (deterministic: seeded bootstraps)."""
    per_run, stats = _both_stats(con, SEED_POINT)
    fits = regressions_across_runs(per_run, stats) if stats is not per_run else [
        f.to_dict() for f in fit_all(stats.frame)]
    everything = _decode_stats(con, {"gen_len": SEED_POINT["gen_len"]})
    runs = con.execute(
        "SELECT regime, count(*) AS runs, string_agg(DISTINCT plan_name, ', ' ORDER BY plan_name) AS plans, "
        "strftime(min(started_at), '%Y-%m-%d') AS first_day FROM runs GROUP BY regime ORDER BY regime"
    ).df()
    out = []
    for row in runs.itertuples():
        cells = stats.frame[stats.frame["regime"] == row.regime]
        if cells.empty:
            continue
        out.append(f"### {row.regime}")
        out.append("")
        repeated = int((cells["n_runs"] > 1).sum()) if "n_runs" in cells else 0
        if repeated == len(cells):
            pooled = (" Every cell was measured in more than one run: medians are pooled over runs and CIs "
                      "include run-to-run variance.")
        elif repeated:
            pooled = (f" {repeated} of them were measured in more than one run: their medians are pooled over runs "
                      "and their CIs include run-to-run variance; the other CIs are within one run.")
        else:
            pooled = " Each cell was measured in one run: CIs are within-run."
        out.append(
            f"{row.runs} run{'s' if row.runs > 1 else ''} ({row.plans}), {row.first_day}; {len(cells)} decode cells "
            f"(ms per token; batch 1, prompt 128, 64 new tokens).{pooled}"
        )
        out.append("")
        out.append(f"Strongest inversion {SIGNIFICANT_LABEL} (Benjamini-Hochberg over each group's pairs) per backend "
                   "and dtype (smaller model slower):")
        out.append("")
        out.extend(_inversions(stats, row.regime))
        out.append("")
        regime_fits = sorted((f for f in fits if f["group"]["regime"] == row.regime),
                             key=lambda f: (f["group"]["backend"], f["group"]["dtype"]))
        out.append("The seed study's form, log latency ~ log params + log n_layer (cell medians; HC3, plus "
                   "between-run variance from a run-level bootstrap where cells were repeated):")
        out.append("")
        out.extend(_seed_form(regime_fits))
        out.append("")
        out.append("Depth vs parameter count (verdict from the seed form; single-variable regressions on cell medians, HC3 errors):")
        out.append("")
        out.extend(_verdicts(regime_fits))
        out.append("")
        out.append("cuda-graph speed-up over hf-eager (decode):")
        out.append("")
        out.extend(_speedups(stats, row.regime))
        out.append("")
        out.extend(_off_seed_point(everything, row.regime))
    out.extend(resources_markdown(con))
    return "\n".join(out).rstrip() + "\n"
