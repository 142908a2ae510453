"""The analysis commands of `python -m runner`: analyze, report and compare.

runner.cli registers these onto its app, so users see one CLI; they read a store or a
snapshot through store.cli's `open_dataset` and call analysis.report / analysis.html_report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer

from store.cli import console, fail, open_dataset, out
from vocabulary import DB_ENV, FAMILIES, printable


ANALYZE_FORMATS = ("text", "csv")


def analyze(
    db: Optional[Path] = typer.Option(None, envvar=DB_ENV, help="store file (default: $SHAPEBENCH_DB, else shapebench.duckdb, else the bundled snapshot)"),
    snapshot: Optional[Path] = typer.Option(None, help="analyse a snapshot (directory or .zip) instead"),
    full: bool = typer.Option(False, "--full", help="every table (per-cell statistics, every fit, inversion, regime and "
                                                    "backend comparison, reproducibility, memory and energy)"),
    fmt: str = typer.Option("text", "--format", help="text | csv (csv: per-cell statistics, one flat row per cell and phase)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    markdown: bool = typer.Option(False, "--markdown", help="the generated results of docs/results.md (decode, whole dataset)"),
    regime: Optional[list[str]] = typer.Option(None, help="only these regimes (repeatable)"),
    backend: Optional[list[str]] = typer.Option(None, help="only these backends (repeatable)"),
    phase: Optional[list[str]] = typer.Option(None, help="prefill | decode | e2e (repeatable)"),
    dtype: Optional[list[str]] = typer.Option(None, help="only these dtypes (repeatable)"),
    family: Optional[list[str]] = typer.Option(None, help=f"only these model families: {' | '.join(FAMILIES)} (repeatable)"),
    kv_heads: Optional[list[int]] = typer.Option(None, "--kv-heads", help="only shapes with these key/value head counts "
                                                                          "(repeatable; a gpt2 shape's equal its heads)"),
    pool_families: bool = typer.Option(False, "--pool-families",
                                       help="compare shapes across families: inversions across them, and the seed form "
                                            "with family as a term (default: each group holds one family)"),
    seed: int = typer.Option(0, help="bootstrap seed"),
) -> None:
    """A summary of what the data says (headline, verdicts, regimes); --full, --json or --format csv for more."""
    from analysis.report import analyze as run_analysis
    from analysis.report import cell_table, format_summary, format_text, summarize_analysis

    if fmt not in ANALYZE_FORMATS:
        fail(f"--format must be one of {', '.join(ANALYZE_FORMATS)}, not {fmt!r}")
    chosen = [name for name, on in (("--json", as_json), ("--markdown", markdown), ("--format csv", fmt == "csv"),
                                    ("--full", full)) if on]
    if len(chosen) > 1:
        fail(f"choose one of {', '.join(chosen)}")
    _check_families(family)
    dataset, con = open_dataset(db, snapshot)
    if markdown:
        from analysis.readme_results import results_markdown

        try:
            typer.echo(printable(results_markdown(con)), nl=False)
        finally:
            con.close()
        return
    filters = {k: v for k, v in {"regime": regime, "backend": backend, "phase": phase, "dtype": dtype, "family": family,
                                 "n_kv_head": kv_heads}.items() if v}
    try:
        if as_json or full:
            result = run_analysis(con, seed=seed, pool_families=pool_families, **filters)
        elif fmt == "csv":
            table = cell_table(con, seed=seed, **filters)
        else:
            summary = summarize_analysis(con, seed=seed, pool_families=pool_families, **filters)
    except ValueError as error:
        fail(str(error))
    finally:
        con.close()
    if as_json:
        out.print_json(json.dumps(result | {"dataset": dataset.label}))
    elif full:
        console.print(f"dataset: {printable(dataset.label)}", markup=False, highlight=False)
        out.print(printable(format_text(result)), markup=False, highlight=False)
    elif fmt == "csv":
        from analysis.export import safe_csv

        typer.echo(safe_csv(table), nl=False)
    else:
        console.print(f"dataset: {printable(dataset.label)}", markup=False, highlight=False)
        typer.echo(printable(format_summary(summary)))


def _check_families(families: Optional[list[str]]) -> None:
    """One error line for a family no model has (a typo would otherwise analyse nothing)."""
    bad = [f for f in families or [] if f not in FAMILIES]
    if bad:
        fail(f"unknown family {', '.join(map(repr, bad))}; families: {', '.join(FAMILIES)}")


def report(
    out_path: Path = typer.Option(Path("shapebench-report.html"), "--out", help="HTML file to write"),
    db: Optional[Path] = typer.Option(None, envvar=DB_ENV, help="store file (default: $SHAPEBENCH_DB, else shapebench.duckdb, else the bundled snapshot)"),
    snapshot: Optional[Path] = typer.Option(None, help="report on a snapshot instead"),
    regime: Optional[list[str]] = typer.Option(None, help="only these regimes (repeatable)"),
    backend: Optional[list[str]] = typer.Option(None, help="only these backends (repeatable)"),
    phase: Optional[list[str]] = typer.Option(None, help="prefill | decode | e2e (repeatable)"),
    family: Optional[list[str]] = typer.Option(None, help=f"only these model families: {' | '.join(FAMILIES)} (repeatable)"),
    kv_heads: Optional[list[int]] = typer.Option(None, "--kv-heads", help="only shapes with these key/value head counts "
                                                                          "(repeatable)"),
    self_contained: bool = typer.Option(False, "--self-contained",
                                        help="embed plotly.js (about 4.6 MB) instead of writing it once beside the report"),
) -> None:
    """An HTML report (interactive charts, latency table; no server or network needed).

    By default the charts' library, plotly.min.js, is written once beside the report and
    shared by every report in that folder; --self-contained makes one file to send.
    """
    from analysis.html_report import PLOTLY_FILE, build_report
    from store.cli import check_out_path

    check_out_path(out_path, not_these=tuple(p for p in (db, snapshot) if p is not None))  # before the analysis
    _check_families(family)
    dataset, con = open_dataset(db, snapshot)
    filters = {k: v for k, v in {"regime": regime, "backend": backend, "phase": phase, "family": family,
                                 "n_kv_head": kv_heads}.items() if v}
    try:
        page = build_report(con, filters, title=f"shapebench: {dataset.label}",
                            plotly_js="inline" if self_contained else "file")
    except ValueError as error:
        fail(str(error))
    finally:
        con.close()
    written = []
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)  # a new folder for the report: made, not refused
        if not self_contained:
            from plotly.offline import get_plotlyjs

            library, script = out_path.parent / PLOTLY_FILE, get_plotlyjs()
            if not library.exists() or library.read_text(encoding="utf-8") != script:
                library.write_text(script, encoding="utf-8")
                written.append(f"{library} ({len(script) / 1e6:.1f} MB)")
        out_path.write_text(page, encoding="utf-8")
    except OSError as error:
        fail(f"cannot write the report: {error}")
    size = out_path.stat().st_size
    out.print(f"wrote {out_path} ({size / 1e6:.2f} MB)" + (f" and {', '.join(written)}" if written else ""),
              markup=False, highlight=False)


COMPARE_FORMATS = ("md", "csv", "json")
KNOWN_RUNS_SHOWN = 5  # run ids an unknown-id error lists: enough to spot a typo, one line
# the compare table's columns, in reading order; the configuration first, regime last (it is long)
COMPARE_COLUMNS = ["phase", "model_name", "n_layer", "n_embd", "backend", "dtype", "batch_size", "prompt_len", "gen_len",
                   "median_a", "median_b", "ratio", "ratio_ci_low", "ratio_ci_high", "ci_kind", "rerun_ci_low",
                   "rerun_ci_high", "rerun_basis", "rounds_a", "rounds_b", "q_value", "moved", "direction", "regression",
                   "regime", "cell_key"]
# `compare` reads only medians and within-run SEs of the store's cells for the re-run history: no
# replicates of the median are needed, so the fewest the statistics accept
HISTORY_RESAMPLES = 2


def _check_run_ids(con, run_ids: list[str]) -> None:
    """One error line for a run id the dataset does not hold, naming a few it does (newest first)."""
    from analysis.load import runs_with_counts

    known = runs_with_counts(con)["run_id"].astype(str).tolist()
    unknown = [r for r in run_ids if r not in known]
    if unknown:
        shown = ", ".join(known[:KNOWN_RUNS_SHOWN]) + (f" (and {len(known) - KNOWN_RUNS_SHOWN} more)"
                                                       if len(known) > KNOWN_RUNS_SHOWN else "")
        fail(f"unknown run id {', '.join(repr(r) for r in unknown)}; known runs: {shown or 'none'}")


def _fact(value) -> str:
    """A recorded value as a reader wants it: measured floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def compare_markdown_view(table: pd.DataFrame) -> pd.DataFrame:
    """The compare table for a terminal or a CI log: moved cells first, largest change first,
    the CI and verdict as text, the regime only when the runs span several (it is long)."""
    from analysis.intervals import RERUN_HEADER, ci_text
    from analysis.rerun import rerun_text

    order = np.lexsort((-np.abs(np.log(table["ratio"].to_numpy(np.float64))),
                        ~table["moved"].fillna(False).astype(bool).to_numpy()))
    rows = table.iloc[order]
    verdict = np.where(rows["regression"], "REGRESSION", np.where(
        rows["moved"].isna(), "no CI", np.where(rows["moved"].fillna(False).astype(bool),
                                                "moved: b " + rows["direction"], "within noise")))
    view = pd.DataFrame({
        "phase": rows["phase"], "model": rows["model_name"], "layers x width": rows["n_layer"].astype(str) + " x "
        + rows["n_embd"].astype(str), "backend": rows["backend"], "dtype": rows["dtype"],
        "batch": rows["batch_size"], "prompt": rows["prompt_len"], "gen": rows["gen_len"],
        "a ms": rows["median_a"].map("{:.4g}".format), "b ms": rows["median_b"].map("{:.4g}".format),
        "b / a": rows["ratio"].map("{:.3f}x".format),
        "95% CI, these runs' rounds": [ci_text(lo, hi, kind) for lo, hi, kind
                                       in zip(rows["ratio_ci_low"], rows["ratio_ci_high"], rows["ci_kind"])],
        RERUN_HEADER: [rerun_text(lo, hi) for lo, hi in zip(rows["rerun_ci_low"], rows["rerun_ci_high"])],
        "q": rows["q_value"].map(lambda q: "" if pd.isna(q) else f"{q:.3g}"), "verdict": verdict})
    if rows["regime"].nunique() > 1:
        view["regime"] = rows["regime"]
    return view.reset_index(drop=True)


def compare(
    run_a: str = typer.Argument(..., help="baseline run id"),
    run_b: str = typer.Argument(..., help="run id compared against the baseline"),
    db: Optional[Path] = typer.Option(None, envvar=DB_ENV, help="store file (default: $SHAPEBENCH_DB, else shapebench.duckdb, else the bundled snapshot)"),
    snapshot: Optional[Path] = typer.Option(None, help="compare runs of a snapshot (directory or .zip) instead"),
    phase: list[str] = typer.Option(["decode"], help="prefill | decode | e2e (repeatable; default decode)"),
    threshold: float = typer.Option(0.05, help="exit 1 when a cell is significantly slower by more than this "
                                               "relative amount (0.05 = 5%)"),
    fmt: str = typer.Option("md", "--format", help="md | csv | json"),
) -> None:
    """Two runs cell by cell: median ratio b / a with a CI across rounds; exit 1 on a regression.

    A cell moved when Benjamini-Hochberg at FDR 5% over the compared cells rejects "no
    change" (Welch's t on the rounds' log medians); it is a regression when it moved slower
    by more than --threshold. Beside the CI, each ratio's re-run interval: where the ratio of
    a repeat of both runs is expected, from the dataset's repeated runs ("no history" without
    them). Exit codes: 0 no regression, 1 regression, 2 error.
    """
    from analysis.export import safe_csv
    from analysis.run_compare import (FDR, compare_runs_by_round, comparison_summary, environment_differences,
                                      regressions, run_table)
    from analysis.stats import compute_cell_stats
    from vocabulary import PHASES

    if fmt not in COMPARE_FORMATS:
        fail(f"--format must be one of {', '.join(COMPARE_FORMATS)}, not {fmt!r}")
    bad = [p for p in phase if p not in PHASES]
    if bad:
        fail(f"unknown phase {', '.join(map(repr, bad))}; phases: {', '.join(PHASES)}")
    if not threshold >= 0:
        fail(f"--threshold must be 0 or more (a relative slowdown, 0.05 = 5%), not {threshold}")
    _, con = open_dataset(db, snapshot)
    try:
        _check_run_ids(con, [run_a, run_b])
        cells = compute_cell_stats(con, {"phase": list(phase)}, n_resamples=HISTORY_RESAMPLES).frame
        table = compare_runs_by_round(con, run_a, run_b, {"phase": list(phase)}, cells=cells)
        differences = environment_differences(run_table(con), run_a, run_b)
    except ValueError as error:
        fail(str(error))
    finally:
        con.close()
    table["regression"] = regressions(table, threshold)
    table = table[COMPARE_COLUMNS]
    summary = comparison_summary(table) | {"regressions": int(table["regression"].sum())}
    regimes = table["regime"].unique()
    line = (f"{run_b} / {run_a}" + (f" on {regimes[0]}" if len(regimes) == 1 else "") + f", {', '.join(phase)}: {summary['n']} cells compared, {summary['with_ci']} with a CI "
            f"across rounds; {summary['moved']} moved beyond noise (Benjamini-Hochberg, FDR {FDR:.0%}): "
            f"{summary['slower']} slower, {summary['faster']} faster; {summary['regressions']} regression(s) "
            f"(slower by more than {threshold:.0%}); median ratio {summary['median_ratio']:.3f}x")
    if summary["no_ci"]:
        line += f"; {summary['no_ci']} cells measured in a single round have no CI and are never called moved"
    differ = ("the runs differ in " + "; ".join(f"{r.field}: {_fact(r.a)} vs {_fact(r.b)}" for r in differences.itertuples())
              if len(differences) else "everything recorded about the two runs' host, device and software is equal")
    if fmt == "csv":
        typer.echo(safe_csv(table), nl=False)
        typer.echo(line, err=True)
    elif fmt == "json":
        cells = json.loads(table.to_json(orient="records"))
        typer.echo(json.dumps({"run_a": run_a, "run_b": run_b, "phases": list(phase), "threshold": threshold,
                               "fdr": FDR, "summary": summary,
                               "environment_differences": json.loads(differences.to_json(orient="records")),
                               "cells": cells}, indent=1))
        typer.echo(line, err=True)
    else:
        from analysis.headline import markdown_table

        typer.echo("\n".join([line, "", differ[0].upper() + differ[1:] + ".", "",
                               *markdown_table(compare_markdown_view(table))]))
    if summary["regressions"]:
        raise typer.Exit(1)
