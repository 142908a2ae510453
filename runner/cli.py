"""`python -m runner`: run plans headless, ingest run directories, inspect, analyse, share.

Nothing here needs a database to run a plan: `run --no-ingest` only writes the run
directory (how the GPU machines, which have no duckdb, are used).
"""
from __future__ import annotations

import json
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from vocabulary import DB_ENV, DEFAULT_DB, DEFAULT_RUNS, RUNS_ENV, runs_path

app = typer.Typer(add_completion=False, no_args_is_help=True, help="shapebench: latency vs transformer shape")
snapshot_app = typer.Typer(no_args_is_help=True, help="export, import and check snapshots")
app.add_typer(snapshot_app, name="snapshot")
console = Console(stderr=True)
out = Console()



def _fail(message: str, code: int = 2) -> None:
    """One plain line on stderr: no markup parsing, no wrapping (the dashboard reads it)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _load(plan_path: Path):
    from runner.plan import PlanError, load_plan

    try:
        return load_plan(plan_path)
    except PlanError as error:
        _fail(str(error))


def _sigterm_as_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


STORE_LOCK_WAIT_S = 10.0  # the dashboard writes only while it ingests or imports: seconds


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


def _ingest(db: Path, run_path: Path) -> None:
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


@app.command()
def run(
    plan: Path = typer.Argument(..., help="plan TOML file"),
    db: Path = typer.Option(DEFAULT_DB, envvar=DB_ENV, help="DuckDB store to ingest into when the run ends"),
    runs_dir: Path = typer.Option(DEFAULT_RUNS, envvar=RUNS_ENV, help="where run directories are written"),
    device: Optional[str] = typer.Option(None, help="override the plan's device: cpu | cuda"),
    resume: Optional[str] = typer.Option(None, help="run id to resume: skips its finished cells"),
    no_ingest: bool = typer.Option(False, "--no-ingest", help="only write the run directory"),
    ray: Optional[str] = typer.Option(
        None, "--ray", help="run the cells as Ray tasks: 'local' starts a local instance, 'auto' joins the "
        "running cluster, or ray://host:port"),
    ray_resource: Optional[str] = typer.Option(
        None, "--ray-resource", help="with --ray: only nodes that have this custom resource (e.g. H100)"),
) -> None:
    """Run a plan (or resume a run), with a live progress bar; ingest at the end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from runner.executor import RunError, continue_run, execute
    from runner.plan import PlanError
    from runner.runfiles import RunDir

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if ray_resource and not ray:
        _fail("--ray-resource needs --ray")
    loaded = _load(plan) if resume is None else None
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
    )
    runs: list[RunDir] = []
    current: list[RunDir] = []

    def track(run_dir: RunDir) -> None:
        """Show a run's header and give it a progress bar when it starts or resumes."""
        current.append(run_dir)
        meta = run_dir.read_meta()
        console.print(f"run [bold]{run_dir.run_id}[/bold] on {meta['regime']} -> {run_dir.path}")
        bars.append(progress.add_task("starting", total=meta["n_cells_planned"],
                                      completed=len(run_dir.finished_keys())))

    bars: list = []

    nodes: dict = {}

    def report(event: dict) -> None:
        if event["event"] == "cell_started":
            progress.update(bars[-1], description=event["label"])
        elif event["event"] == "ray_submitted":
            progress.update(bars[-1], description=f"{event['tasks']} Ray tasks")
        elif event["event"] == "ray_finished":
            for node, count in event["nodes"].items():
                nodes[node] = nodes.get(node, 0) + count
        else:
            progress.update(bars[-1], completed=event["done"])
            if event["status"] != "ok":
                progress.console.print(f"  [yellow]{event['status']}[/yellow] {event['label']}: {event['error']}")

    from runner.runlock import RunLocked, machine_lock

    held = ExitStack()
    try:
        held.enter_context(machine_lock(f"run {resume}" if resume else f"plan {loaded.name}"))
    except RunLocked as error:
        _fail(str(error))
    try:
        if ray:
            from runner.ray_exec import connect, continue_ray_run, execute_ray

            connect(ray)
            signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # ray.init installs its own handler
        with progress:
            if resume:
                run_dir = RunDir(runs_dir / resume)
                if not run_dir.exists():
                    _fail(f"no run '{resume}' under {runs_dir}")
                track(run_dir)
                if ray:
                    runs.extend(continue_ray_run(run_dir, resource=ray_resource, progress=report))
                else:
                    runs.append(continue_run(run_dir, report))
            elif ray:
                runs = execute_ray(loaded, runs_dir, device=device, resource=ray_resource, progress=report,
                                   on_run_created=track)
            else:
                _check_fits(loaded, device)
                runs = execute(loaded, runs_dir, device=device, progress=report, on_run_created=track)
    except (PlanError, RunError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: resume with --resume {current[-1].run_id if current else ''}")
        if not no_ingest:
            for run_dir in current:
                _ingest(db, run_dir.path)
        raise typer.Exit(130)
    finally:
        held.close()  # measuring is over: the next run may start
    for node, count in sorted(nodes.items()):
        console.print(f"  {count} cells on {node}")
    for run_dir in runs:
        if not no_ingest:
            _ingest(db, run_dir.path)
        out.print(run_dir.run_id)


def _check_fits(loaded, device: Optional[str]) -> None:
    """Refuse, before any model is built, a plan whose largest cell cannot fit on this device."""
    from runner.plan import check_memory, expand, free_memory, resolve_device

    dev = resolve_device(device or loaded.device)
    check_memory(expand(loaded, device=dev, resolve_remote=False), free_memory(dev))


@app.command()
def plan(plan: Path = typer.Argument(..., help="plan TOML file"),
         device: Optional[str] = typer.Option(None, help="cpu | cuda (default: the plan's)")) -> None:
    """Validate a plan; print its cells and a rough time estimate."""
    from runner.plan import PlanError, check_memory, estimate_seconds, expand, free_memory

    loaded = _load(plan)
    dev = device or (loaded.device if loaded.device != "auto" else "cuda")
    try:
        cells = expand(loaded, device=dev, resolve_remote=False)
        check_memory(cells, free_memory(dev))
    except PlanError as error:
        _fail(str(error))
    table = Table(title=f"{loaded.name}: {len(cells)} cells on {dev} (x{loaded.repeats} repeats)")
    for column in ("model", "layers", "width", "backend", "dtype", "batch", "prompt", "gen"):
        table.add_column(column)
    for cell in cells:
        table.add_row(cell.model.name, str(cell.model.n_layer), str(cell.model.n_embd), cell.backend,
                      cell.dtype, str(cell.batch_size), str(cell.prompt_len), str(cell.gen_len))
    out.print(table)
    hub = sorted({m for sweep in [loaded, *loaded.also] if sweep.models for m in sweep.models.hub})
    if hub:
        out.print(f"hub models, read when the run starts (not counted above): {', '.join(hub)}",
                  markup=False, highlight=False)
    seconds = estimate_seconds(cells, loaded.measure) * loaded.repeats
    out.print(f"rough estimate: {seconds / 60:.1f} min")


@app.command("list")
def list_(what: str = typer.Argument("all", help="models | backends | all")) -> None:
    """The model registry, and the backends with what each supports on this machine."""
    from runner.models import REGISTRY

    if what in ("models", "all"):
        table = Table(title="reference models")
        for column in ("name", "n_layer", "n_embd", "n_head", "params"):
            table.add_column(column)
        for spec in REGISTRY.values():
            table.add_row(spec.name, str(spec.n_layer), str(spec.n_embd), str(spec.n_head), f"{spec.approx_params():,}")
        out.print(table)
    if what in ("backends", "all"):
        from runner.capabilities import backend_capabilities

        table = Table(title="backends on this machine")
        for column in ("backend", "devices", "dtypes", "here", "description"):
            table.add_column(column)
        for row in backend_capabilities():
            table.add_row(row["backend"], ", ".join(row["devices"]), ", ".join(row["dtypes"]),
                          row["available_here"], row["description"])
        out.print(table)


@app.command("calibrate")
def calibrate_cmd(device: str = typer.Option("auto", help="cpu | cuda | auto")) -> None:
    """Measure this device's bandwidth, matrix throughput and launch cost (printed as JSON)."""
    from runner.calibrate import calibrate
    from runner.plan import resolve_device

    out.print_json(json.dumps(calibrate(resolve_device(device))))


@app.command()
def ingest(
    runs_dir: Path = typer.Argument(DEFAULT_RUNS, envvar=RUNS_ENV, help="a run directory, or a folder of them"),
    db: Path = typer.Option(DEFAULT_DB, envvar=DB_ENV, help="DuckDB store"),
) -> None:
    """Ingest run directories into the store (idempotent)."""
    from store.ingest import ingest_run_dir, ingest_runs

    if not runs_dir.exists():
        _fail(f"{runs_dir} does not exist")
    try:
        con = open_store_for_writing(db)
    except RuntimeError as error:
        _fail(str(error))
    except Exception as error:  # noqa: BLE001 - not a store, not readable
        _fail(f"cannot open {db}: {str(error).splitlines()[0]}")
    try:
        if (runs_dir / "meta.json").exists():
            report = ingest_run_dir(con, runs_dir)
        else:
            report = ingest_runs(con, runs_dir)
    except ValueError as error:
        _fail(str(error))
    finally:
        con.close()
    for problem in report.skipped:
        typer.echo(f"skipped: {problem}", err=True)  # one plain line each, never wrapped
    out.print(f"{report.runs} runs read, {report.cells_added} cells and {report.samples_added} samples added to {db}"
              + (f"; {len(report.skipped)} run(s) skipped" if report.skipped else ""))


def _open_dataset(db: Optional[Path], snapshot: Optional[Path]):
    from store.dataset import open_read_only, resolve
    from store.snapshot import SnapshotError

    dataset = resolve(db, snapshot)
    try:
        return dataset, open_read_only(dataset)
    except (FileNotFoundError, SnapshotError) as error:
        _fail(str(error))
    except Exception as error:  # noqa: BLE001 - e.g. the file is locked by a running dashboard
        _fail(f"cannot open {dataset.label}: {str(error).splitlines()[0]}")


@app.command()
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

    dataset, con = _open_dataset(db, snapshot)
    if markdown:
        from analysis.readme_results import results_markdown

        try:
            typer.echo(results_markdown(con), nl=False)
        finally:
            con.close()
        return
    filters = {k: v for k, v in {"regime": regime, "backend": backend, "phase": phase, "dtype": dtype}.items() if v}
    try:
        result = run_analysis(con, seed=seed, **filters)
    except ValueError as error:
        _fail(str(error))
    finally:
        con.close()
    if as_json:
        out.print_json(json.dumps(result | {"dataset": dataset.label}))
    else:
        console.print(f"dataset: {dataset.label}")
        out.print(format_text(result), markup=False, highlight=False)


@app.command()
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

    dataset, con = _open_dataset(db, snapshot)
    filters = {k: v for k, v in {"regime": regime, "backend": backend, "phase": phase}.items() if v}
    try:
        page = build_report(con, filters, title=f"shapebench: {dataset.label}")
    except ValueError as error:
        _fail(str(error))
    finally:
        con.close()
    out_path.write_text(page)
    out.print(f"wrote {out_path} ({len(page) / 1e6:.1f} MB)")


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

    _, con = _open_dataset(db or DEFAULT_DB, None)
    try:
        manifest = export_snapshot(con, out_path, regimes=regime, run_ids=run, backends=backend)
    except (SnapshotError, ValueError) as error:
        _fail(str(error))
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

    if not path.exists():
        _fail(f"{path} does not exist")
    try:
        con = open_store_for_writing(db)
    except RuntimeError as error:
        _fail(str(error))
    except Exception as error:  # noqa: BLE001 - not a store, not readable
        _fail(f"cannot open {db}: {str(error).splitlines()[0]}")
    try:
        live = [d.run_id for d in list_run_dirs(runs_dir) if _run_status(d) == "running"]
        report = import_snapshot(con, path, live_runs=live)
    except SnapshotError as error:
        _fail(f"refused: {error}")
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
        _fail(f"invalid: {error}")
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("runs", "cells", "samples")}
    con.close()
    out.print(f"ok: {path} " + ", ".join(f"{n} {t}" for t, n in counts.items()))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
