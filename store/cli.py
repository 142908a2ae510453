"""The store's commands of `python -m runner`: ingest, snapshot export / import / check.

runner.cli registers these onto its app, so users see one CLI. The helpers every command
shares (one plain error line, opening the store for writing or a dataset for reading) are
here, beside the store they open. Nothing here imports duckdb at import time: a GPU machine
without it still runs `python -m runner run --no-ingest`.
"""
from __future__ import annotations

import os
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


def check_out_path(out_path: Path, *, not_these: tuple[Path, ...] = (), file: bool = True) -> None:
    """Fail in one line, before any work, where `--out` cannot be written: the store file itself
    (or another input), an existing directory where a file goes, or a place under a folder this
    user cannot write. A folder that does not exist yet is fine: it is created on writing."""
    target = out_path.expanduser().resolve()
    for other in not_these:
        if other is not None and other.expanduser().resolve() == target:
            fail(f"--out {out_path} is the file being read; choose another path")
    if file and target.is_dir():
        fail(f"--out {out_path} is a directory; give a file path")
    if target.exists() and not os.access(target, os.W_OK):
        fail(f"--out {out_path} cannot be written (permission denied)")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        fail(f"--out {out_path}: cannot create files under {parent} (not a writable folder)")


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


def derive_with_progress(con, what: str, content: str | None = None):
    """dashboard.results.derive with a progress bar on stderr: about a minute on the bundle."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dashboard.results import derive

    with Progress(TextColumn(f"computing derived results for {what}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def step(name: str, done: int, total: int) -> None:
            bar.update(task, description=name[:60], completed=done, total=total)

        return derive(con, step, content)


def derive_into_store(db: Path) -> None:
    """Keep the dashboard's first-visit results in the store (store.kept), replacing those of
    earlier rows; one line says it ran. Computed on an in-memory copy, so the store file is
    held only to copy and to write. A failure is said, never fatal: the data is ingested."""
    import time

    from analysis.load import content_id
    from store.db import connect_when_free, copy_to_memory
    from store.kept import write

    start = time.perf_counter()
    try:
        con = connect_when_free(db, read_only=True, wait_s=STORE_LOCK_WAIT_S)
        try:
            content, mem = content_id(con), copy_to_memory(con)
        finally:
            con.close()
        try:
            rows = derive_with_progress(mem, str(db), content)
        finally:
            mem.close()
        con = open_store_for_writing(db)
        try:
            if content_id(con) != content:  # ingested again meanwhile: these would never be asked for
                typer.echo(f"derived results not kept: {db} changed while they were computed", err=True)
                return
            write(con, rows, replace_content=content)
        finally:
            con.close()
    except Exception as error:  # noqa: BLE001 - the dashboard computes what is not kept
        typer.echo(f"derived results not kept: {str(error).splitlines()[0][:240]}", err=True)
        return
    console.print(f"kept {len(rows)} derived results in {db} ({time.perf_counter() - start:.0f} s; --no-derive skips this)")


def ingest_after_run(db: Path, run_path: Path, derive: bool = True) -> None:
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
    if derive:
        derive_into_store(db)


def ingest(
    runs_dir: Path = typer.Argument(DEFAULT_RUNS, envvar=RUNS_ENV, help="a run directory, or a folder of them"),
    db: Path = typer.Option(DEFAULT_DB, envvar=DB_ENV, help="DuckDB store"),
    derive: bool = typer.Option(True, "--derive/--no-derive",
                                help="then compute the dashboard's derived results and keep them in the store"),
) -> None:
    """Ingest run directories into the store (idempotent)."""
    from runner.runfiles import RunDir
    from store.ingest import ingest_all, read_run, read_runs

    # the run files are read before the store is opened: a slow or hostile file never holds the writer lock
    try:
        read, skipped = ([read_run(runs_dir)], []) if RunDir(runs_dir).exists() else read_runs(runs_dir)
    except ValueError as error:
        fail(str(error))
    con = open_store_or_fail(db, runs_dir)
    try:
        report = ingest_all(con, read, skipped)
        if RunDir(runs_dir).exists() and report.skipped:
            fail(report.skipped[0])
    finally:
        con.close()
    for problem in report.skipped:
        typer.echo(f"skipped: {problem}", err=True)  # one plain line each, never wrapped
    out.print(f"{report.runs} runs read, {report.cells_added} cells and {report.samples_added} samples added to {db}"
              + (f"; {len(report.skipped)} run(s) skipped" if report.skipped else ""))
    if derive:
        derive_into_store(db)


@snapshot_app.command("export")
def snapshot_export(
    out_path: Path = typer.Option(..., "--out", help="a .zip file, or a directory"),
    db: Optional[Path] = typer.Option(None, envvar=DB_ENV, help="store file (default: $SHAPEBENCH_DB, else shapebench.duckdb)"),
    regime: Optional[list[str]] = typer.Option(None, help="only these regimes (repeatable)"),
    run: Optional[list[str]] = typer.Option(None, help="only these run ids (repeatable)"),
    backend: Optional[list[str]] = typer.Option(None, help="only these backends (repeatable)"),
    derive: bool = typer.Option(True, "--derive/--no-derive",
                                help="also compute the dashboard's derived results and keep them in the snapshot"),
) -> None:
    """Export the store (or a filtered part) as a snapshot with a checksummed manifest."""
    from store.snapshot import SnapshotError, export_snapshot

    check_out_path(out_path, not_these=(db or DEFAULT_DB,), file=out_path.suffix.lower() == ".zip")
    _, con = open_dataset(db or DEFAULT_DB, None)
    try:
        manifest = export_snapshot(con, out_path, regimes=regime, run_ids=run, backends=backend,
                                   derive=(lambda snap: derive_with_progress(snap, str(out_path))) if derive else None)
    except (SnapshotError, ValueError) as error:
        fail(str(error))
    except OSError as error:  # a full disk, a folder removed meanwhile
        fail(f"could not write {out_path}: {error.strerror or error}")
    finally:
        con.close()
    out.print(f"wrote {out_path}: " + ", ".join(f"{n} {t}" for t, n in manifest.row_counts.items())
              + (f", derived results ({manifest.derived['bytes'] / 2**20:.1f} MiB)" if manifest.derived else ""))


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
