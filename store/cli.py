"""The store's commands of `python -m runner`: ingest, snapshot export / import / check.

runner.cli registers these onto its app, so users see one CLI. The helpers every command
shares (one plain error line, opening the store for writing or a dataset for reading) are
here, beside the store they open. Nothing here imports duckdb at import time: a GPU machine
without it still runs `python -m runner run --no-ingest`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from vocabulary import DB_ENV, DEFAULT_DB, DEFAULT_RUNS, RUNS_ENV, runs_path

snapshot_app = typer.Typer(no_args_is_help=True, help="export, import and check snapshots")
console = Console(stderr=True)
out = Console()

STORE_LOCK_WAIT_S = 10.0  # the dashboard writes only while it ingests or imports: seconds


def fail(message: str, code: int = 2) -> None:
    """One plain line on stderr: no markup parsing, no wrapping (the dashboard reads it)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_store_for_writing(db: Path):
    """The store read-write, waiting a few seconds for another writer (DuckDB allows one);
    raises RuntimeError with one line saying who holds it and what to do."""
    from store.db import StoreBusyError, connect_when_free

    try:
        return connect_when_free(db, wait_s=STORE_LOCK_WAIT_S)
    except StoreBusyError as busy:
        raise RuntimeError(
            f"cannot open {db}: another process is writing it ({busy.holder}); "
            "retry when it is done (a dashboard holds the file only while it ingests or imports)") from None


def open_store_or_fail(db: Path, source: Path):
    """`open_store_for_writing` for a command that writes `source` (run directories, a
    snapshot) into the store: a missing source or any failure to open ends it with one line."""
    if not source.exists():
        fail(f"{source} does not exist")
    try:
        return open_store_for_writing(db)
    except RuntimeError as error:
        fail(str(error))
    except Exception as error:  # noqa: BLE001 - not a store, not readable
        fail(f"cannot open {db}: {str(error).splitlines()[0]}")


def open_dataset(db: Optional[Path], snapshot: Optional[Path]):
    """(dataset, read-only connection) for the read commands; a failure is one error line."""
    from store.dataset import open_read_only, resolve
    from store.snapshot import SnapshotError

    dataset = resolve(db, snapshot)
    try:
        return dataset, open_read_only(dataset)
    except (FileNotFoundError, SnapshotError) as error:
        fail(str(error))
    except Exception as error:  # noqa: BLE001 - e.g. the file is locked by a running dashboard
        fail(f"cannot open {dataset.label}: {str(error).splitlines()[0]}")


def ingest_after_run(db: Path, run_path: Path) -> None:
    """Ingest a run the CLI just measured; a store another process holds is said, not fatal
    (the run directory is complete and can be ingested later)."""
    from store.ingest import ingest_run_dir

    try:
        con = open_store_for_writing(db)
    except Exception as error:  # noqa: BLE001 - DuckDB allows one writer: the dashboard may hold it
        # The dashboard ingests only the runs folder it watches (SHAPEBENCH_RUNS, else runs/).
        watched = runs_path().resolve()
        later = (f"the dashboard (watching {watched}) or `python -m runner ingest {run_path} --db {db}` will ingest it"
                 if run_path.parent.resolve() == watched else
                 f"ingest it with `python -m runner ingest {run_path} --db {db}` (the dashboard watches {watched}, "
                 "not this folder)")
        reason = str(error).splitlines()[0][:240].removeprefix(f"cannot open {db}: ")
        typer.echo(f"not ingested: cannot open {db} ({reason}); "
                   f"the run directory {run_path} is complete; {later}", err=True)
        return
    try:
        report = ingest_run_dir(con, run_path)
    finally:
        con.close()
    console.print(f"ingested {report.cells_added} cells, {report.samples_added} samples into {db}")


def ingest(
    runs_dir: Path = typer.Argument(DEFAULT_RUNS, envvar=RUNS_ENV, help="a run directory, or a folder of them"),
    db: Path = typer.Option(DEFAULT_DB, envvar=DB_ENV, help="DuckDB store"),
) -> None:
    """Ingest run directories into the store (idempotent)."""
    from runner.runfiles import RunDir
    from store.ingest import ingest_run_dir, ingest_runs

    con = open_store_or_fail(db, runs_dir)
    try:
        if RunDir(runs_dir).exists():
            report = ingest_run_dir(con, runs_dir)
        else:
            report = ingest_runs(con, runs_dir)
    except ValueError as error:
        fail(str(error))
    finally:
        con.close()
    for problem in report.skipped:
        typer.echo(f"skipped: {problem}", err=True)  # one plain line each, never wrapped
    out.print(f"{report.runs} runs read, {report.cells_added} cells and {report.samples_added} samples added to {db}"
              + (f"; {len(report.skipped)} run(s) skipped" if report.skipped else ""))


@snapshot_app.command("export")
def snapshot_export(
    out_path: Path = typer.Option(..., "--out", help="a .zip file, or a directory"),
    db: Optional[Path] = typer.Option(None, envvar=DB_ENV, help="store file (default: $SHAPEBENCH_DB, else shapebench.duckdb)"),
    regime: Optional[list[str]] = typer.Option(None, help="only these regimes (repeatable)"),
    run: Optional[list[str]] = typer.Option(None, help="only these run ids (repeatable)"),
    backend: Optional[list[str]] = typer.Option(None, help="only these backends (repeatable)"),
) -> None:
    """Export the store (or a filtered part) as a snapshot with a checksummed manifest."""
    from store.snapshot import SnapshotError, export_snapshot

    _, con = open_dataset(db or DEFAULT_DB, None)
    try:
        manifest = export_snapshot(con, out_path, regimes=regime, run_ids=run, backends=backend)
    except (SnapshotError, ValueError) as error:
        fail(str(error))
    finally:
        con.close()
    out.print(f"wrote {out_path}: " + ", ".join(f"{n} {t}" for t, n in manifest.row_counts.items()))


def _run_status(run_dir) -> str | None:
    try:
        return run_dir.read_meta().get("status")
    except (OSError, ValueError):
        return None


@snapshot_app.command("import")
def snapshot_import(
    path: Path = typer.Argument(..., help="snapshot .zip or directory"),
    db: Path = typer.Option(DEFAULT_DB, envvar=DB_ENV, help="store file to merge into (created if missing)"),
    runs_dir: Path = typer.Option(DEFAULT_RUNS, envvar=RUNS_ENV, help="this machine's runs: a run still running there is never changed"),
) -> None:
    """Merge a snapshot into a store: validated first, idempotent, all or nothing."""
    from runner.runfiles import list_run_dirs
    from store.snapshot import SnapshotError, import_snapshot

    con = open_store_or_fail(db, path)
    try:
        live = [d.run_id for d in list_run_dirs(runs_dir) if _run_status(d) == "running"]
        report = import_snapshot(con, path, live_runs=live)
    except SnapshotError as error:
        fail(f"refused: {error}")
    finally:
        con.close()
    out.print(str(report))


@snapshot_app.command("check")
def snapshot_check(path: Path = typer.Argument(..., help="snapshot .zip or directory")) -> None:
    """Validate a snapshot (manifest, checksums, schema) without importing it."""
    from store.snapshot import SnapshotError, open_snapshot

    try:
        con = open_snapshot(path)
    except (SnapshotError, FileNotFoundError) as error:
        fail(f"invalid: {error}")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("runs", "cells", "samples")}
    con.close()
    out.print(f"ok: {path} " + ", ".join(f"{n} {t}" for t, n in counts.items()))
