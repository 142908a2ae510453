"""The analysis commands of `python -m runner`: analyze and report.

runner.cli registers these onto its app, so users see one CLI; they read a store or a
snapshot through store.cli's `open_dataset` and call analysis.report / analysis.html_report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from store.cli import console, fail, open_dataset, out
from vocabulary import DB_ENV, printable


def analyze(
    db: Optional[Path] = typer.Option(None, envvar=DB_ENV, help="store file (default: $SHAPEBENCH_DB, else shapebench.duckdb, else the bundled snapshot)"),
    snapshot: Optional[Path] = typer.Option(None, help="analyse a snapshot (directory or .zip) instead"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    markdown: bool = typer.Option(False, "--markdown", help="the README's results section (decode, whole dataset)"),
    regime: Optional[list[str]] = typer.Option(None, help="only these regimes (repeatable)"),
    backend: Optional[list[str]] = typer.Option(None, help="only these backends (repeatable)"),
    phase: Optional[list[str]] = typer.Option(None, help="prefill | decode | e2e (repeatable)"),
    dtype: Optional[list[str]] = typer.Option(None, help="only these dtypes (repeatable)"),
    seed: int = typer.Option(0, help="bootstrap seed"),
) -> None:
    """Regressions, inversions and the regime comparison, as text or JSON."""
    from analysis.report import analyze as run_analysis
    from analysis.report import format_text

    dataset, con = open_dataset(db, snapshot)
    if markdown:
        from analysis.readme_results import results_markdown

        try:
            typer.echo(printable(results_markdown(con)), nl=False)
        finally:
            con.close()
        return
    filters = {k: v for k, v in {"regime": regime, "backend": backend, "phase": phase, "dtype": dtype}.items() if v}
    try:
        result = run_analysis(con, seed=seed, **filters)
    except ValueError as error:
        fail(str(error))
    finally:
        con.close()
    if as_json:
        out.print_json(json.dumps(result | {"dataset": dataset.label}))
    else:
        console.print(f"dataset: {printable(dataset.label)}", markup=False, highlight=False)
        out.print(printable(format_text(result)), markup=False, highlight=False)


def report(
    out_path: Path = typer.Option(Path("shapebench-report.html"), "--out", help="HTML file to write"),
    db: Optional[Path] = typer.Option(None, envvar=DB_ENV, help="store file (default: $SHAPEBENCH_DB, else shapebench.duckdb, else the bundled snapshot)"),
    snapshot: Optional[Path] = typer.Option(None, help="report on a snapshot instead"),
    regime: Optional[list[str]] = typer.Option(None, help="only these regimes (repeatable)"),
    backend: Optional[list[str]] = typer.Option(None, help="only these backends (repeatable)"),
    phase: Optional[list[str]] = typer.Option(None, help="prefill | decode | e2e (repeatable)"),
) -> None:
    """A self-contained HTML report (interactive charts, no server needed)."""
    from analysis.html_report import build_report
    from store.cli import check_out_path

    check_out_path(out_path, not_these=tuple(p for p in (db, snapshot) if p is not None))  # before the analysis
    dataset, con = open_dataset(db, snapshot)
    filters = {k: v for k, v in {"regime": regime, "backend": backend, "phase": phase}.items() if v}
    try:
        page = build_report(con, filters, title=f"shapebench: {dataset.label}")
    except ValueError as error:
        fail(str(error))
    finally:
        con.close()
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(page)
    except OSError as error:  # a full disk, a folder removed meanwhile
        fail(f"could not write {out_path}: {error.strerror or error}")
    out.print(f"wrote {out_path} ({len(page) / 1e6:.1f} MB)")
