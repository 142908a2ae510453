"""`python -m runner`: run plans headless, ingest run directories, inspect, analyse, share.

This module holds the runner's own commands (run, plan, list, calibrate); the data
commands live beside what they call (store.cli: ingest, snapshot; analysis.cli: analyze,
report) and are registered onto the same app below, so users see one CLI.

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
from rich.markup import escape
from rich.table import Table

from analysis import cli as analysis_cli
from store import cli as store_cli
from store.cli import console, fail, ingest_after_run, out
from vocabulary import DB_ENV, DEFAULT_DB, DEFAULT_RUNS, RUNS_ENV

app = typer.Typer(add_completion=False, no_args_is_help=True, help="shapebench: latency vs transformer shape")


def _print_version(value: bool) -> None:
    if value:
        from vocabulary import tool_version

        typer.echo(f"shapebench {tool_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """shapebench: latency vs transformer shape (`shapebench` and `python -m runner` are the same CLI)."""


def _load(plan_path: Path):
    from runner.plan import PlanError, load_plan

    try:
        return load_plan(plan_path)
    except PlanError as error:
        fail(str(error))


def _sigterm_as_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


@app.command()
def run(
    plan: Path = typer.Argument(..., help="plan TOML file"),
    db: Path = typer.Option(DEFAULT_DB, envvar=DB_ENV, help="DuckDB store to ingest into when the run ends"),
    runs_dir: Path = typer.Option(DEFAULT_RUNS, envvar=RUNS_ENV, help="where run directories are written"),
    device: Optional[str] = typer.Option(None, help="override the plan's device: cpu | cuda"),
    resume: Optional[str] = typer.Option(None, help="run id to resume: skips its finished cells"),
    no_ingest: bool = typer.Option(False, "--no-ingest", help="only write the run directory"),
    no_derive: bool = typer.Option(False, "--no-derive", help="ingest, but do not keep the dashboard's derived results"),
    ray: Optional[str] = typer.Option(
        None, "--ray", help="run the cells as Ray tasks: 'local' starts a local instance, 'auto' joins the "
        "running cluster, or ray://host:port"),
    ray_resource: Optional[str] = typer.Option(
        None, "--ray-resource", help="with --ray: only nodes that have this custom resource (e.g. H100)"),
) -> None:
    """Run a plan (or resume a run), with a live progress bar; ingest at the end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from runner.executor import continue_run, execute
    from runner.lifecycle import RunError
    from runner.plan import PlanError
    from runner.runfiles import BUDGET_EVENT, RunDir
    from vocabulary import STOP_BUDGET

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    if ray_resource and not ray:
        fail("--ray-resource needs --ray")
    loaded = _load(plan) if resume is None else None
    if resume is not None:
        from runner.runfiles import run_dir_in

        from runner.executor import checked_for_resume, refuse_other_hardware

        try:
            resumed = run_dir_in(runs_dir, resume)  # never a path outside --runs-dir
            if resumed.exists():
                checked_for_resume(resumed, resumed.read_meta())  # before anything is shown or locked
                if not ray:  # a Ray run's cells ran on its workers, not on this machine
                    refuse_other_hardware(resumed, resumed.read_meta())
        except RunError as error:
            fail(str(error))
        except ValueError as error:
            fail(f"--resume: {error}")
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
    )
    runs: list[RunDir] = []
    current: list[RunDir] = []

    def track(run_dir: RunDir) -> None:
        """Show a run's header and give it a progress bar when it starts or resumes.

        The bar counts cell-rounds: a protocol-2 run interleaves the rounds of every cell, so
        its first cell finishes only in the last round and a bar of cells would sit at 0."""
        current.append(run_dir)
        meta = run_dir.read_meta()
        console.print(f"run [bold]{run_dir.run_id}[/bold] on {meta['regime']} -> {run_dir.path}")
        rounds = int(meta.get("rounds") or 1)
        finished = run_dir.finished_keys()
        kept = {(key, r) for key, by_round in run_dir.round_records().items() for r in by_round}
        counted.clear()
        counted.update((key, r) for key in finished for r in range(rounds))
        counted.update(kept)
        per_cell[:] = [rounds]
        precision = ((meta.get("plan") or {}).get("measure") or {}).get("precision")
        adaptive.clear()
        if precision is not None:
            # cells finish as they reach their target: the bar counts cells, the text the cell-rounds
            records = [r for r in run_dir.readable_cell_records() if r.get("stop_reason") != STOP_BUDGET]
            counted.clear()
            counted.update((r["cell_key"], k) for r in records for k in range(int(r.get("rounds_used") or 1)))
            counted.update((key, r) for key, by_round in run_dir.round_records(run_dir.reopenable_keys()).items()
                           for r in by_round)
            adaptive.update(precision=precision, reached={r["cell_key"] for r in records if r.get("precision_reached")},
                            done=len(records), total=meta["n_cells_planned"])
            bars.append(progress.add_task(adaptive_text(), total=meta["n_cells_planned"], completed=len(records)))
            return
        bars.append(progress.add_task("starting", total=meta["n_cells_planned"] * rounds, completed=len(counted)))

    adaptive: dict = {}  # an adaptive run's precision, reached cell keys, cells done and planned

    def adaptive_text(label: str = "") -> str:
        """'cell-round 14 · 5/8 cells at ±3%', and the cell being measured."""
        head = (f"cell-round {len(counted)} · {len(adaptive['reached'])}/{adaptive['total']} cells at "
                f"±{adaptive['precision']:.0%}")
        return f"{head} · {label}" if label else head

    bars: list = []
    counted: set = set()  # (cell key, round) measured or settled: the bar's completed count
    per_cell: list = [1]  # rounds per cell of the run being shown
    nodes: dict = {}
    warned: set = set()  # run ids already warned of a busy machine during the run

    def show(event: dict) -> None:
        if adaptive:
            show_adaptive(event)
        elif event["event"] == "cell_started":
            progress.update(bars[-1], description=f"{event['label']} (round {event.get('round', 0) + 1}/"
                                                  f"{event.get('rounds', 1)})")
        elif event["event"] == "ray_submitted":
            progress.update(bars[-1], description=f"{event['tasks']} Ray tasks")
        elif event["event"] == "ray_finished":
            for node, count in event["nodes"].items():
                nodes[node] = nodes.get(node, 0) + count
        elif event["event"] == "machine_load":
            _warn_busy(event, current[-1].run_id if current else "", warned, progress.console)
        elif event["event"] == "round_finished":
            counted.add((event["key"], event["round"]))
            progress.update(bars[-1], completed=len(counted))
        elif event["event"] == "cell_finished":
            # a failed or refused cell settles its rounds that will never run
            counted.update((event["key"], r) for r in range(per_cell[0]))
            progress.update(bars[-1], completed=len(counted))
            if event["status"] != "ok":
                progress.console.print(f"  [yellow]{event['status']}[/yellow] {event['label']}: {event['error']}")

    def show_adaptive(event: dict) -> None:
        """Progress of an adaptive run: cells done on the bar, cell-rounds and cells at target in its text."""
        kind = event["event"]
        if kind == "cell_started":
            progress.update(bars[-1], description=adaptive_text(f"{event['label']} (round {event.get('round', 0) + 1})"))
        elif kind == "round_finished":
            counted.add((event["key"], event["round"]))
            progress.update(bars[-1], description=adaptive_text())
        elif kind == "cell_finished":
            if event.get("precision_reached"):
                adaptive["reached"].add(event["key"])
            progress.update(bars[-1], completed=event.get("done", 0), description=adaptive_text())
            if event["status"] != "ok":
                progress.console.print(f"  [yellow]{event['status']}[/yellow] {event['label']}: {event['error']}")
        elif kind == BUDGET_EVENT:
            progress.console.print(
                f"budget of {event.get('budget_s')} s spent: {len(adaptive['reached'])}/{adaptive['total']} cells at "
                f"±{adaptive['precision']:.0%}; resume with --resume {current[-1].run_id if current else ''}",
                markup=False, highlight=False)
        elif kind == "machine_load":
            _warn_busy(event, current[-1].run_id if current else "", warned, progress.console)

    from runner.runlock import RunLocked, machine_lock

    if ray:
        # connect first, within a bound: an unreachable cluster must not hold the machine lock
        from runner.ray_exec import connect, continue_ray_run, execute_ray

        try:
            connect(ray)
        except RunError as error:
            fail(str(error))
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # ray.init installs its own handler
    held = ExitStack()
    try:
        held.enter_context(machine_lock(f"run {resume}" if resume else f"plan {loaded.name}"))
    except RunLocked as error:
        fail(str(error))
    try:
        with progress:
            if resume:
                run_dir = resumed
                if not run_dir.exists():
                    fail(f"no run '{resume}' under {runs_dir}")
                track(run_dir)
                if ray:
                    runs.extend(continue_ray_run(run_dir, resource=ray_resource, progress=show))
                else:
                    runs.append(continue_run(run_dir, show))
            elif ray:
                runs = execute_ray(loaded, runs_dir, device=device, resource=ray_resource, progress=show,
                                   on_run_created=track)
            else:
                _check_fits(loaded, device)
                runs = execute(loaded, runs_dir, device=device, progress=show, on_run_created=track)
    except (PlanError, RunError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: resume with --resume {current[-1].run_id if current else ''}")
        if not no_ingest:
            for run_dir in current:  # interrupted: store what was measured, quickly; derive on the next ingest
                ingest_after_run(db, run_dir.path, derive=False)
        raise typer.Exit(130)
    finally:
        held.close()  # measuring is over: the next run may start
    for node, count in sorted(nodes.items()):
        console.print(f"  {count} cells on {node}")
    for run_dir in runs:
        _warn_busy_run(run_dir)
    for run_dir in runs:
        if not no_ingest:
            ingest_after_run(db, run_dir.path, derive=not no_derive)
        _print_results(run_dir.path, db, runs_dir, ingested=not no_ingest)
        out.print(run_dir.run_id)  # the last line on stdout, for scripts


def _print_results(run_path: Path, db: Path, runs_dir: Path, ingested: bool) -> None:
    """The run's own numbers (analysis.run_results, read from the run directory: no store
    needed) and where to look next, on stdout before the run id."""
    from analysis.run_results import format_run_results, run_results
    from dashboard.runs import runs_page_path

    typer.echo(f"\nresults of run {run_path.name} (median decode ms per token, 95% CI across rounds):")
    typer.echo(format_run_results(run_results(run_path)) + "\n")
    settings = " ".join(f"{name}={value}" for name, value, default in ((DB_ENV, db, DEFAULT_DB), (RUNS_ENV, runs_dir, DEFAULT_RUNS))
                        if Path(value) != default)
    steps = [] if ingested else [f"  store it:   python -m runner ingest {run_path} --db {db}"]
    steps += [f"  analyse:    python -m runner analyze --db {db}",
              f"  dashboard:  {settings + ' ' if settings else ''}streamlit run app.py, "
              f"then open {runs_page_path(run_path.name)} on the address it prints"]
    typer.echo("where to look next:\n" + "\n".join(steps))


def _warn_busy(event: dict, run_id: str, warned: set, where) -> None:
    """A busy machine-load sample: one warning line before the run, one the first time
    during it (runner.machine_load says what counts as busy and what to do)."""
    from runner.machine_load import busy_text

    sample = event.get("sample") or {}
    if not sample.get("busy") or (event.get("at") != "run_start" and run_id in warned):
        return
    warned.add(run_id)
    when = "before the run" if event.get("at") == "run_start" else "during the run"
    if sample.get("machine") == "driver":  # a Ray run samples the machine it was started on
        when += " (on the Ray driver's machine)"
    where.print(f"[yellow]warning[/yellow] {when}: {escape(busy_text(sample))}", highlight=False)


def _warn_busy_run(run_dir) -> None:
    """At the end: say if the run was measured on a busy machine, how many cells are flagged."""
    from runner.machine_load import BUSY_ADVICE, busy_reasons
    from vocabulary import BUSY_MACHINE_FLAG

    summary = run_dir.read_meta().get("machine_load") or {}
    if not summary.get("busy"):
        return
    flagged = sum(BUSY_MACHINE_FLAG in (record.get("flags") or []) for record in run_dir.readable_cell_records())
    worst = escape("; ".join(busy_reasons(summary.get("worst") or {})) or "no reason recorded")
    console.print(f"[yellow]warning[/yellow]: run {run_dir.run_id} was measured on a busy machine "
                  f"({summary['busy_samples']} of {summary['samples']} load samples; at worst {worst}); "
                  f"{flagged} cell(s) are flagged {BUSY_MACHINE_FLAG} and their numbers are not to be trusted. "
                  f"To measure again: {escape(BUSY_ADVICE)}", highlight=False)


def _check_fits(loaded, device: Optional[str]) -> None:
    """Refuse, before any model is built, a plan whose largest cell cannot fit on this device."""
    from runner.plan import check_memory, expand, free_memory, resolve_device

    dev = resolve_device(device or loaded.device)
    check_memory(expand(loaded, device=dev, resolve_remote=False), free_memory(dev))


def _history_rounds(db: Optional[Path], device: str, measure) -> dict[str, tuple[float, int]]:
    """backend -> (mean rounds needed, cells) from the store (or the bundled snapshot) for an
    adaptive plan (analysis.predict.rounds_from_history); {} where there is none to read (no
    store, a store held by a writer, a machine without duckdb)."""
    try:
        from analysis.predict import rounds_from_history
        from store.dataset import open_read_only, resolve

        con = open_read_only(resolve(db))
    except Exception:  # noqa: BLE001 - no history to read: the estimate says so
        return {}
    try:
        return rounds_from_history(con, device, measure.precision, measure.min_rounds, measure.max_rounds)
    except Exception:  # noqa: BLE001 - a store this version cannot read: no history either
        return {}
    finally:
        con.close()


def _adaptive_estimate(cells, measure, history: dict[str, tuple[float, int]]) -> tuple[float, float, list[str]]:
    """(low, high) seconds of an adaptive plan and the lines that say where its rounds come
    from: the mean rounds earlier cells of each backend needed, or min_rounds..max_rounds."""
    from runner.plan import estimate_seconds

    lines = []
    low_rounds: dict[str, float] = {}
    high_rounds: dict[str, float] = {}
    for backend in sorted({cell.backend for cell in cells}):
        if backend in history:
            mean, n = history[backend]
            low_rounds[backend] = high_rounds[backend] = mean
            lines.append(f"  {backend}: {mean:.1f} rounds a cell (mean needed by {n} earlier cells)")
        else:
            low_rounds[backend], high_rounds[backend] = measure.min_rounds, measure.max_rounds
            lines.append(f"  {backend}: no earlier runs; assuming {measure.min_rounds} to {measure.max_rounds} rounds")
    return estimate_seconds(cells, measure, rounds=low_rounds), estimate_seconds(cells, measure, rounds=high_rounds), lines


@app.command()
def plan(plan: Path = typer.Argument(..., help="plan TOML file"),
         device: Optional[str] = typer.Option(None, help="cpu | cuda (default: the plan's)"),
         db: Optional[Path] = typer.Option(None, envvar=DB_ENV, help="store whose earlier runs estimate an adaptive "
                                           "plan's rounds (default: the store if there is one, else the bundled data)")) -> None:
    """Validate a plan; print its cells and a rough time estimate (for a plan with a precision
    target, with the rounds earlier runs of each backend needed)."""
    from runner.plan import PlanError, check_memory, estimate_seconds, expand, free_memory

    loaded = _load(plan)
    dev = device or (loaded.device if loaded.device != "auto" else "cuda")
    try:
        cells = expand(loaded, device=dev, resolve_remote=False)
        check_memory(cells, free_memory(dev))
    except PlanError as error:
        fail(str(error))
    table = Table(title=f"{loaded.name}: {len(cells)} cells on {dev} (x{loaded.repeats} repeats)")
    for column in ("model", "family", "layers", "width", "heads / KV", "backend", "dtype", "batch", "prompt", "gen"):
        table.add_column(column)
    for cell in cells:
        table.add_row(cell.model.name, cell.model.family, str(cell.model.n_layer), str(cell.model.n_embd),
                      f"{cell.model.n_head} / {cell.model.kv_heads}", cell.backend,
                      cell.dtype, str(cell.batch_size), str(cell.prompt_len), str(cell.gen_len))
    out.print(table)
    hub = sorted({m for sweep in [loaded, *loaded.also] if sweep.models for m in sweep.models.hub})
    if hub:
        out.print(f"hub models, read when the run starts (not counted above): {', '.join(hub)}",
                  markup=False, highlight=False)
    measure = loaded.measure
    if measure.adaptive:
        history = _history_rounds(db, dev, measure)
        low, high, lines = _adaptive_estimate(cells, measure, history)
        budget = f", at most {measure.budget_s:g} s of measuring per start or resume" if measure.budget_s else ""
        out.print(f"precision +-{measure.precision:.0%} of each decode median, {measure.min_rounds} to "
                  f"{measure.max_rounds} rounds a cell{budget}:", markup=False, highlight=False)
        out.print("\n".join(lines), markup=False, highlight=False)
        span = f"{low / 60:.1f} min" if abs(high - low) < 1 else f"{low / 60:.1f} to {high / 60:.1f} min"
        note = ""
        if measure.budget_s:
            _, unbounded, _ = _adaptive_estimate(cells, measure.model_copy(update={"budget_s": None}), history)
            if unbounded > high + 1:
                note = (f"; the budget stops it there, where every round needed would take {unbounded / 60:.1f} min "
                        "(resume it with --resume)")
        out.print(f"rough estimate: {span} on a quiet machine" + (f" (x{loaded.repeats} repeats)" if loaded.repeats > 1 else "")
                  + note, markup=False, highlight=False)
    else:
        seconds = estimate_seconds(cells, measure) * loaded.repeats
        out.print(f"rough estimate: {seconds / 60:.1f} min on a quiet machine")
    from runner.machine_load import LoadSampler, busy_text

    now = LoadSampler().sample()
    if now["busy"]:
        console.print(f"[yellow]warning[/yellow]: the run will take longer: {escape(busy_text(now))}", highlight=False)


@app.command("list")
def list_(what: str = typer.Argument("all", help="models | backends | all")) -> None:
    """The model families, the reference models and the catalogue, and the backends with what
    each supports on this machine."""
    from runner.models import CATALOGUE, FAMILY_NOTES, REGISTRY

    if what in ("models", "all"):
        families = Table(title="model families")
        for column in ("family", "architecture"):
            families.add_column(column)
        for family, note in FAMILY_NOTES.items():
            families.add_row(family, note)
        out.print(families)
        for title, specs in (("reference models (plan: reference)", REGISTRY), ("catalogue (plan: catalogue)", CATALOGUE)):
            table = Table(title=title)
            for column in ("name", "family", "layers", "width", "heads/KV", "MLP", "vocab", "context", "tied", "params"):
                table.add_column(column)
            for spec in specs.values():
                table.add_row(spec.name, spec.family, str(spec.n_layer), str(spec.n_embd), f"{spec.n_head} / {spec.kv_heads}",
                              str(spec.inner), str(spec.vocab), str(spec.context), "yes" if spec.tie_embeddings else "no",
                              f"{spec.approx_params():,}")
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


# the data commands, after the runner's own: `--help` lists them in the same order as before
app.command()(store_cli.ingest)
app.command()(analysis_cli.analyze)
app.command()(analysis_cli.report)
app.command()(analysis_cli.compare)
app.add_typer(store_cli.snapshot_app, name="snapshot")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
