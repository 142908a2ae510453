"""Headless report: everything the analysis says about a store, as a dict and as text.

Two functions, the whole interface the CLI (`python -m runner analyze --db PATH [--json]`)
needs:

    analyze(con, *, n_resamples=2000, seed=0, **filters) -> dict
        con: a DuckDB connection to a store (read-only is fine).
        filters: column=value or column=[values], e.g. regime="...", backend="hf-sdpa",
            phase="decode", batch_size=1 (see analysis.load.FILTER_COLUMNS); only ok cells.
        Returns a JSON-serialisable dict (NaN as None):
            filters       the filters applied
            cell_stats    {n_cells, n_rows, n_samples, phases, median_cv, high_cv, cells: [...]}
                          cells: one record per (cell, phase) with n, median, CI, ci_kind ("across
                          rounds" with 2+ rounds, else "none": NaN bounds), n_rounds, cv, p5, p95, tokens/s,
                          and the re-run interval rerun_ci_low/high with rerun_basis (analysis.rerun: where
                          the next run's median is expected, from the store's repeated runs; "no history")
            regressions   [{group, group_id, status, message, n_cells, n_shapes, models, verdicts, verdict, seed_form}]
            seed_form     [{group_id, regime, backend, phase, dtype, batch_size, prompt_len, gen_len,
                           coef_log_params, coef_log_params_lo/hi, coef_log_n_layer, coef_log_n_layer_lo/hi,
                           n_shapes, r2, winner, max_leverage, n_high_leverage, refit, ...}]: the seed
                          study's log latency ~ log params + log n_layer per fitted group (95% CIs)
            inversions    {n_inverted_pairs, n_significant (at FDR 5% within each group), n_without_ci,
                           ci_kinds (pairs per CI kind; each pair carries ci_kind and paired), n_ci_above_1
                           (uncorrected), fdr, headlines: [{group_id, text}], significant: [...]}: each
                          significant pair with its re-run interval too (rerun_ci_low/high, rerun_basis:
                          where a new run's ratio is expected, analysis.rerun)
            regimes       [{factor, comparison, status, message, levels, wald_depth, dropped}]
            backends      same shape as regimes, comparing backends within a regime
            reproducibility  {has_repeats, message, ...}: run-to-run variance (analysis.reproducibility)
            resources     {message, n_cells, n_with_energy, cells: [...], fits: [...]}: memory and energy
                          per (cell, phase) (peak memory, weight and KV-cache bytes, J per sample and
                          per token with a CI across rounds, mean power) and the seed form fitted to
                          log peak memory and log energy per token beside latency (analysis.resources)
            warnings      one-line notes, e.g. cells left out for impossible values (analysis.load.left_out)
            pool_families whether groups pool every family (default: a group holds one family)
            family_fits   with pool_families only: per pooled group, the seed form with family as a
                          term (analysis.regression.fit_across_families): each family's latency ratio
                          against the reference at equal params and depth, or why it was not fitted

        With pool_families the inversions compare shapes across families too; regressions,
        seed_form, regimes and backends stay within a family.

        When some cells were measured in more than one run (plan repeats), regressions,
        inversions, regimes and backends work on medians pooled over runs, and regressions
        and inversions use CIs across runs for the cells measured in several (Student t on
        run medians, analysis.intervals); each then carries "ci_includes_between_run_variance":
        true, and every CI its "ci_kind". cell_stats stays per run.

    format_text(result) -> str
        Readable tables of the same dict, for a terminal (`analyze --full`).

    summarize_analysis(con, **filters) -> AnalysisSummary; format_summary(summary) -> str
        What `analyze` prints by default: the headline (seed pair, strongest inversions),
        verdict counts and the regimes whose depth effect differs, in about a screenful.

    cell_table(con, **filters) -> DataFrame
        One flat row per (cell, phase) of every run: `analyze --format csv`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from analysis.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from analysis.budget import budget_comparisons, budget_sentences, flips
from analysis.headline import Headline, build_headline, headline_sections
from analysis.intervals import interval_texts
from analysis.inversions import find_inversions, inversions_summary
from analysis.load import left_out
from analysis.regimes import compare
from analysis.regression import fit_across_families, fit_all, fit_group
from analysis.resources import display_table, pair_ratio_text, resource_summary
from analysis.rerun import RERUN_COLUMNS, add_pair_rerun_intervals, add_rerun_intervals, between_run_history, rerun_text
from analysis.shape_answer import ShapeAnswer, shape_answer
from analysis.reproducibility import has_repeats, pooled_stats, regressions_across_runs, reproducibility_summary
from analysis.stats import CellStats, across_families, compute_cell_stats, summarize

CELL_RECORD_COLUMNS = (
    "cell_id", "phase", "group_id", "model_name", "family", "n_layer", "n_embd", "n_head", "n_kv_head", "params", "n",
    "median", "median_ci_low", "median_ci_high", "ci_kind", "n_rounds", "mean", "std", "cv", "p5", "p95", "tokens_per_s",
    *RERUN_COLUMNS,
)


def analyze(
    con: duckdb.DuckDBPyConnection,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    pool_families: bool = False,
    **filters: Any,
) -> dict[str, Any]:
    """Cell statistics, regressions per group, inversions, regime/backend comparisons, reproducibility.

    Groups hold one family; with `pool_families` the inversions compare shapes across
    families and `family_fits` holds the seed form with family as a term per pooled group
    (analysis.regression.fit_across_families).
    """
    stats = compute_cell_stats(con, filters, n_resamples=n_resamples, seed=seed)
    history = between_run_history(stats.frame)
    frame = add_rerun_intervals(stats.frame, history, confidence=stats.confidence)  # "next run" beside "this run"
    summary = summarize(frame)
    summary["cells"] = (frame[list(CELL_RECORD_COLUMNS)].assign(median_ci=interval_texts(frame)).to_dict("records")
                        if len(frame) else [])
    if has_repeats(stats):
        # One row per configuration: repeats are not independent cells, and their spread
        # belongs in the CIs, not in the number of observations.
        pooled = pooled_stats(stats)
        regressions = regressions_across_runs(stats, pooled)
        judged = add_rerun_intervals(pooled.frame, history, confidence=stats.confidence)
        found = add_pair_rerun_intervals(find_inversions(_grouped(pooled, pool_families)), judged,
                                         confidence=stats.confidence)
        inversions = {**inversions_summary(found), "ci_includes_between_run_variance": True}
        compared = pooled.frame
        reproducibility = reproducibility_summary(stats, con, pooled=pooled, regressions=regressions)
    else:
        regressions = [fit.to_dict() for fit in fit_all(frame)] if len(frame) else []
        found = add_pair_rerun_intervals(find_inversions(_grouped(stats, pool_families)), frame,
                                         confidence=stats.confidence)
        inversions = {**inversions_summary(found), "ci_includes_between_run_variance": False}
        compared = frame
        reproducibility = reproducibility_summary(stats)
    extra = {"family_fits": fit_across_families(compared)} if pool_families else {}
    result = {
        "filters": filters,
        "pool_families": pool_families,
        "cell_stats": summary,
        "regressions": regressions,
        "seed_form": seed_form_rows(regressions),
        "inversions": inversions,
        "regimes": compare(compared, "regime"),
        "backends": compare(compared, "backend"),
        "reproducibility": reproducibility,
        "resources": resource_summary(con, filters, latency=frame),
        "warnings": [w for w in (left_out(con, filters),) if w],
        **extra,
    }
    return _jsonable(result)


def _grouped(stats: CellStats, pool_families: bool) -> CellStats:
    """`stats` as the inversions compare it: within each family, or across them."""
    return across_families(stats) if pool_families else stats


def seed_form_rows(regressions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per fitted group: its keys, then the seed form (leverage list left out)."""
    rows = []
    for reg in regressions:
        seed = reg.get("seed_form")
        if reg["status"] != "ok" or not seed:
            continue
        group = {"gen_len": None, **reg["group"]}
        rows.append({"group_id": reg["group_id"], **group, **{k: v for k, v in seed.items() if k != "leverage"}})
    return rows


def _jsonable(value: Any) -> Any:
    """Plain Python types only; NaN and NA become None so the JSON is strict."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is pd.NA or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: Any) -> float:
    """A JSON number back as a float (None, the JSON form of NaN, as NaN)."""
    return float("nan") if value is None else float(value)


def _table(records: list[dict[str, Any]], columns: list[str], floatfmt: str = "{:.4g}") -> str:
    if not records:
        return "  (none)"
    frame = pd.DataFrame(records)[columns]
    return frame.to_string(index=False, float_format=lambda x: floatfmt.format(x))


def format_text(result: dict[str, Any]) -> str:
    """Readable text for a terminal: the same content as `analyze`, as sections and tables."""
    lines: list[str] = [f"warning: {w}" for w in result.get("warnings", [])]
    cs = result["cell_stats"]
    lines += ["== Cell statistics ==", f"{cs['n_cells']} ok cells, {cs['n_rows']} cell-phases, {cs['n_samples']} samples"]
    if cs["n_rows"]:
        lines.append(f"median CV {cs['median_cv']:.3f}; phases: " + ", ".join(f"{k} {v}" for k, v in cs["phases"].items()))
        by_group: dict[str, list[dict[str, Any]]] = {}
        for rec in cs["cells"]:
            by_group.setdefault(rec["group_id"], []).append(rec)
        for group_id, recs in sorted(by_group.items()):
            recs = sorted(recs, key=lambda r: (r["params"] or 0, r["cell_id"]))
            lines.append(f"-- {group_id}")
            recs = [{**r, "rerun_ci": rerun_text(*(_number(r[c]) for c in ("rerun_ci_low", "rerun_ci_high")))} for r in recs]
            lines.append(_table(recs, ["model_name", "n_layer", "n_embd", "params", "n", "median", "median_ci", "ci_kind",
                                       "rerun_ci", "cv", "tokens_per_s"]))
    lines += ["", "== Depth vs width, per group =="]
    for reg in result["regressions"]:
        lines.append(f"-- {reg['group_id']} ({reg['n_cells']} cells, {reg['n_shapes']} shapes)")
        lines.append(f"   {reg['message']}")
        if reg["status"] != "ok":
            continue
        lines.append(f"   CI kind: {reg.get('ci_kind', 'none')} ({reg['models'][0]['cov_type']})")
        rows = [
            {"scale": m["scale"], "model": m["model"], "term": c["term"], "estimate": c["estimate"],
             "ci_low": c["ci_low"], "ci_high": c["ci_high"], "adj_r2": m["adj_r2"], "aic": m["aic"]}
            for m in reg["models"] for c in m["coefficients"] if c["term"] != "Intercept"
        ]
        lines.append(_table(rows, ["scale", "model", "term", "estimate", "ci_low", "ci_high", "adj_r2", "aic"]))
        seed = reg.get("seed_form") or {}
        if seed:
            lines.append(f"   seed form: max leverage {seed['max_leverage']:.2f} ({seed['n_high_leverage']} above 0.5), "
                         f"corr(log params, log n_layer) {seed['corr_log_params_log_n_layer']:.2f}, "
                         f"condition number {seed['condition_number']:.3g}, verdict {seed['winner']}")
    if "family_fits" in result:
        lines += ["", "== Across families: the seed form with family as a term, per pooled group =="]
        lines += family_fit_lines(result["family_fits"])
    inv = result["inversions"]
    across = " across runs: CIs include between-run variance" if inv.get("ci_includes_between_run_variance") else ""
    lines += ["", "== Latency inversions (smaller model slower) ==",
              f"{inv['n_inverted_pairs']} inverted pairs, {inv['n_significant']} significant at FDR 5% (Benjamini-Hochberg "
              f"within each group; {inv.get('n_ci_above_1', inv['n_significant'])} with the 95% CI above 1 before FDR control){across}",
              "CI kinds of the inverted pairs: " + (", ".join(f"{k} {v}" for k, v in inv.get("ci_kinds", {}).items()) or "-")
              + (f" ({inv['n_without_ci']} without a CI are never significant)" if inv.get("n_without_ci") else "")]
    lines += [f"* {h['group_id']}: {h['text']}" for h in inv["headlines"]]
    if inv["significant"]:
        families = {r.get(f"family_{side}") for r in inv["significant"] for side in "ab"} - {None}
        named = ["family_a", "model_name_a", "family_b", "model_name_b"] if families - {"gpt2"} else ["model_name_a", "model_name_b"]
        rows = [{**r, "rerun_ci": rerun_text(*(_number(r.get(c)) for c in ("rerun_ci_low", "rerun_ci_high")))}
                for r in inv["significant"][:20]]
        lines.append(_table(rows, ["regime", "backend", "phase", *named, "ratio", "ratio_ci_low", "ratio_ci_high",
                                   "ci_kind", "rerun_ci"]))
    for key, title in (("regimes", "Across regimes"), ("backends", "Across backends")):
        lines += ["", f"== {title} =="]
        if not result[key]:
            lines.append("  (no cells)")
        for comp in result[key]:
            c = comp["comparison"]
            lines.append("-- " + ", ".join(f"{k}={v}" for k, v in c.items()))
            lines.append(f"   {comp['message']}")
            if comp.get("cov_type"):
                lines.append(f"   CI kind: {comp['ci_kind']} ({comp['cov_type']})")
            if comp["levels"]:
                lines.append(_table(comp["levels"], ["level", "n_cells", "depth_effect", "depth_ci_low", "depth_ci_high", "width_effect"]))
    lines += ["", "== Reproducibility (run to run) =="]
    lines += _reproducibility_lines(result.get("reproducibility") or {"message": "(not computed)"})
    lines += ["", "== Memory and energy =="]
    lines += _resource_lines(result.get("resources") or {"message": "(not computed)"})
    return "\n".join(lines)


def family_fit_lines(fits: list[dict[str, Any]]) -> list[str]:
    """One line per pooled group (its message), then the fitted terms of those that were fitted."""
    if not fits:
        return ["  (no cells)"]
    lines = []
    for fit in fits:
        lines.append(f"-- {fit['group_id']} ({fit['n_cells']} cells; {', '.join(fit['families'])})")
        lines.append(f"   {fit['message']}")
        if fit["status"] == "ok":
            rows = [{"term": term, **values} for term, values in fit["terms"].items() if term != "Intercept"]
            lines.append(_table(rows, ["term", "estimate", "ci_low", "ci_high", "p_value"]))
    return lines


def _resource_lines(res: dict[str, Any]) -> list[str]:
    """Per group: peak memory (MiB) and energy (mJ per token, J per sample, CI across rounds), then the fits."""
    lines = [res["message"]]
    table = display_table(res.get("cells") or [])
    for group_id, rows in (table.groupby("group_id", sort=True) if len(table) else []):
        lines.append(f"-- {group_id}")
        lines.append(rows.drop(columns=["group_id", "phase"]).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    lines += [f"* {fit['group_id']}: {fit['text']}" for fit in res.get("fits") or []]
    for pair in res.get("seed_pair_energy") or []:
        lines.append(f"* energy per decode token, {pair['small']} / {pair['large']}, {pair['regime']} | {pair['backend']} | "
                     f"{pair['dtype']} | batch {pair['batch_size']} | prompt {pair['prompt_len']}: "
                     f"{pair['small_mj_per_token']:.3g} / {pair['large_mj_per_token']:.3g} mJ = "
                     f"{pair_ratio_text(pair['ratio'], pair['ratio_ci_low'], pair['ratio_ci_high'], pair['ci_kind'])} ({pair['ci_kind']})")
    return lines


def _reproducibility_lines(rep: dict[str, Any]) -> list[str]:
    lines = [rep["message"]]
    if not rep.get("has_repeats"):
        return lines
    lines.append("Between-run SD of log medians per group (~ relative spread), net of within-run noise:")
    lines.append(_table(rep["groups"], ["group_id", "n_units", "n_runs", "between_run_sd", "between_run_sd_ci_low",
                                        "between_run_sd_ci_high", "between_run_sd_ci_kind", "within_run_se", "max_spread_ratio",
                                        "n_irreproducible"]))
    if rep["irreproducible"]:
        lines.append("-- irreproducible cells (run medians differ beyond their within-run CIs), widest spread first")
        rows = [{**r, "differs": ", ".join(sorted(r["environment_diff"] or {})) or "-"} for r in rep["irreproducible"][:20]]
        lines.append(_table(rows, ["model_name", "phase", "n_runs", "spread_ratio", "median", "median_ci_low", "median_ci_high", "ci_kind", "differs"]))
    inv = rep["inversions"]
    lines.append(f"-- inversions: {inv['n_reproducible']} reproducible across runs, "
                 f"{inv['n_not_reproducible']} not reproducible (significant within a run only)")
    if inv["not_reproducible"]:
        rows = [{**r, "runs": ", ".join(r["runs_significant"])} for r in inv["not_reproducible"][:20]]
        lines.append(_table(rows, ["model_name_a", "model_name_b", "ratio", "ratio_ci_low", "ratio_ci_high", "ci_kind", "runs"]))
    for reg in rep["regressions"]:
        per_run = ", ".join(f"{r['run_id']}: {r['winner'] or r['status']}" for r in reg["per_run"])
        lines.append(f"-- {reg['group_id']}: {reg['reproducibility']} (across runs: {reg['winner']}; per run: {per_run})")
    return lines


# --- the summary: what `analyze` prints by default -------------------------------------------

SUMMARY_ROWS = 24  # rows of any one summary table; the rest is one line that says how many and where
REGIME_DIFFERS_P = 0.05  # a regime comparison is listed when its Wald test of equal depth effects rejects at this level
CELL_CSV_COLUMNS = ("run_id", "regime", "backend", "dtype", "batch_size", "prompt_len", "gen_len", "model_name", "family",
                    "n_layer", "n_embd", "n_head", "n_kv_head", "params", "phase", "n", "median", "median_ci_low",
                    "median_ci_high", "ci_kind", "n_rounds", "mean", "std", "cv", "p5", "p95", "tokens_per_s", "cell_id", "group_id")
MORE = "(--full for every table, --json for all of it machine-readable, --format csv for per-cell statistics)"


@dataclass(frozen=True)
class AnalysisSummary:
    """What a first look at a dataset needs, computed without the sections it does not show.

    `counts`: n_cells, n_rows, n_samples, n_runs, median_cv; `regimes`: the regime keys in
    order (the tables name them R1, R2, ...); `headline`: analysis.headline's seed pair,
    strongest inversions and pair counts; `verdicts`: one row per group (regime, phase,
    status, winner) of the depth-vs-params fits; `regime_comparisons`: analysis.regimes.compare
    over regimes; `warnings`: one-line notes.
    """

    counts: dict[str, Any]
    regimes: list[str]
    headline: Headline
    verdicts: pd.DataFrame
    regime_comparisons: list[dict[str, Any]]
    warnings: list[str]
    shapes: ShapeAnswer | None = None  # the answer in a sentence per hardware class, and the shapes' table
    family_fits: list[dict[str, Any]] | None = None  # with pool_families: the seed form with family as a term


def summarize_analysis(
    con: duckdb.DuckDBPyConnection,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    pool_families: bool = False,
    **filters: Any,
) -> AnalysisSummary:
    """The summary of `analyze` (same filters, same pooling, same fits), in a fraction of its time.

    Fits are the same `fit_group` calls as `analyze` on the same pooled cells, without the
    prediction bands and the per-run refits (reproducibility) that only the full output shows.
    With `pool_families` the headline's inversions compare shapes across families and
    `family_fits` holds the seed form with family as a term, as `analyze` does.
    """
    stats = compute_cell_stats(con, filters, n_resamples=n_resamples, seed=seed)
    frame = stats.frame
    pooled = pooled_stats(stats).frame if len(frame) else frame
    compared = pooled if has_repeats(stats) else frame
    fits = [fit_group(cells, bands=False) for _, cells in compared.groupby("group_id", sort=True)] if len(frame) else []
    verdicts = pd.DataFrame([{**fit.group, "status": fit.status,
                              "winner": (fit.verdict or {}).get("winner") if fit.status == "ok" else fit.status}
                             for fit in fits], columns=["regime", "phase", "status", "winner"])
    counts = {"n_cells": int(frame["cell_id"].nunique()) if len(frame) else 0, "n_rows": len(frame),
              "n_samples": int(frame["n"].sum()) if len(frame) else 0,
              "n_runs": int(frame["run_id"].nunique()) if len(frame) else 0,
              "median_cv": float(frame["cv"].median()) if len(frame) else float("nan")}
    headline = build_headline(stats, pool_families=pool_families)
    return AnalysisSummary(
        counts=counts, regimes=sorted(frame["regime"].unique()) if len(frame) else [],
        headline=headline, verdicts=verdicts,
        regime_comparisons=compare(compared, "regime"), warnings=[w for w in (left_out(con, filters),) if w],
        shapes=shape_answer(pooled, fits, headline) if len(frame) else None,
        family_fits=_jsonable(fit_across_families(compared)) if pool_families else None)


def _capped(table: pd.DataFrame, what: str) -> list[str]:
    """A table as text, at most SUMMARY_ROWS rows, then a line naming how many more there are."""
    if table.empty:
        return ["  (none)"]
    lines = table.head(SUMMARY_ROWS).to_string(index=False).splitlines()
    if len(table) > SUMMARY_ROWS:
        lines.append(f"  ... {len(table) - SUMMARY_ROWS} more {what} {MORE}")
    return lines


def format_summary(summary: AnalysisSummary) -> str:
    """The summary as text for a terminal: about a screenful whatever the dataset's size.

    Regimes are long keys, so tables name them R1, R2, ... and one line per regime says which
    is which; every table is capped at SUMMARY_ROWS rows with a line saying what was left out.
    """
    c = summary.counts
    lines = [f"warning: {w}" for w in summary.warnings]
    if not c["n_rows"]:
        return "\n".join([*lines, "0 ok cells match this selection."])
    code = {regime: f"R{i}" for i, regime in enumerate(summary.regimes, start=1)}
    lines += [f"{c['n_cells']:,} ok cells ({c['n_rows']:,} cell-phases, {c['n_samples']:,} samples) in {c['n_runs']} runs "
              f"on {len(code)} regimes; median CV {c['median_cv']:.3f}"]
    lines += [f"  {short}: {regime}" for regime, short in list(code.items())[:SUMMARY_ROWS]]
    if len(code) > SUMMARY_ROWS:
        lines.append(f"  ... {len(code) - SUMMARY_ROWS} more regimes")

    def coded(table: pd.DataFrame) -> pd.DataFrame:
        return table.assign(regime=table["regime"].map(code)) if "regime" in table and len(table) else table

    sections = headline_sections(summary.headline)
    if summary.shapes is not None:
        lines += ["", "== Does shape drive latency? =="]
        lines += [f"{where}: {sentence}" for where, sentence in summary.shapes.sentences]
        if not len(summary.headline.seed_pairs):  # your own shapes lead: the reference pair is not measured
            lines += ["", "== Your shapes (decode; per group: fastest, slowest, and the fit's verdict or what to measure) =="]
            lines += _capped(coded(summary.shapes.groups), "groups")
            sections = [(title, text, table) for title, text, table in sections[1:] if len(table)]
    for title, text, table in sections:
        lines += ["", f"== {title} ==", text]
        if len(table):
            lines += _capped(coded(table), "rows")
    comparisons = budget_comparisons(summary.headline.pairs)
    if len(comparisons):
        said = budget_sentences(comparisons)
        lines += ["", "== At equal parameters (deep / shallow, more / fewer KV heads; decode) =="]
        lines += said[:SUMMARY_ROWS] + [f"The answer flips: {flip}" for flip in flips(comparisons)]
        if len(said) > SUMMARY_ROWS:
            lines.append(f"  ... {len(said) - SUMMARY_ROWS} more devices {MORE}")
    verdicts = summary.verdicts
    lines += ["", f"== Depth or parameter count? ({len(verdicts)} groups fitted; rows: regime and phase, "
              "columns: groups per verdict) =="]
    if len(verdicts):
        crosstab = pd.crosstab([verdicts["regime"].map(code), verdicts["phase"]], verdicts["winner"]).reset_index()
        lines += _capped(crosstab.rename_axis(columns=None), "rows")
    if summary.family_fits is not None:
        lines += ["", "== Across families (the seed form with family as a term; groups otherwise hold one family) =="]
        lines += [f"{fit['group_id']}: {fit['message']}" for fit in summary.family_fits[:SUMMARY_ROWS]] or ["  (none)"]
        if len(summary.family_fits) > SUMMARY_ROWS:
            lines.append(f"  ... {len(summary.family_fits) - SUMMARY_ROWS} more groups {MORE}")
    comparisons = [comp for comp in summary.regime_comparisons if comp.get("status") == "ok"]
    differs = sorted((comp for comp in comparisons if (comp.get("wald_depth") or {}).get("p_value", 1.0) < REGIME_DIFFERS_P),
                     key=lambda comp: comp["wald_depth"]["p_value"])
    lines += ["", "== Across regimes ==",
              f"{len(comparisons)} groups measured on two or more regimes; in {len(differs)} the depth effect differs "
              f"across regimes (Wald p < {REGIME_DIFFERS_P})" + (":" if differs else ".")]
    rows = pd.DataFrame([{**comp["comparison"], "Wald p": f"{comp['wald_depth']['p_value']:.2g}",
                          "regimes": ", ".join(code.get(level["level"], str(level["level"])) for level in comp["levels"])}
                         for comp in differs])
    if len(rows):
        lines += _capped(rows, "groups")
    lines += ["", f"This is a summary {MORE}."]
    return "\n".join(lines)


def cell_table(con: duckdb.DuckDBPyConnection, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
               **filters: Any) -> pd.DataFrame:
    """Per-run statistics of every ok (cell, phase), one flat row each (CELL_CSV_COLUMNS): `analyze --format csv`."""
    frame = compute_cell_stats(con, filters, n_resamples=n_resamples, seed=seed).frame
    return frame.reindex(columns=list(CELL_CSV_COLUMNS))
