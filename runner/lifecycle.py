"""A run's life in its directory, the same for the direct and the Ray executor.

- `prepare_device`: CUDA, host control and the environment, in whichever process measures.
- `create_run`: the meta (plan, shuffled cell order, environment) and `run_started`.
- `begin_segment`: a start or a resume: status running, `segment_started`.
- `measure_records`: a list of planned cells measured in interleaved rounds, as cell records.
- `record_cell`: a finished cell's file and its `cell_finished` event (and progress).
- `end_run`: finished or interrupted, with its event, in the space the run held for it.
- `ends_on_write_failure`, `write_failure`: a run directory the disk refuses to write (full,
  quota, read-only) ends the run interrupted, in one line.
- `run_repeats`: `plan.repeats` runs sharing a series id.

The executors decide where cells run (this process, round workers, Ray tasks); what lands
in the run directory, and when, is decided here (the format itself is runner.runfiles).
Nothing here imports torch at import time.
"""
from __future__ import annotations

import random
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator

from runner import TOOL_VERSION
from runner.plan import Cell, Plan
from runner.runfiles import (
    MACHINE_LOAD_EVENT, CellResult, RunDir, cell_record, new_run_id, now_iso, planned_cell, run_meta, summary_of,
)
from vocabulary import PROTOCOL_VERSION, STOP_BUDGET

ProgressCallback = Callable[[dict], None]
# A round worker's progress lines on its stdout start with this (runner.round_worker).
PROGRESS_PREFIX = "@shapebench-progress "


class RunError(ValueError):
    """A run that cannot start or resume, with the reason."""


def prepare_device(device: str, settings=None) -> dict:
    """Initialise CUDA (telemetry learns our own GPU process), apply host control (core,
    threads) and collect the environment, with what was applied read back and the host's
    measured launch cost on that core. Shared by the direct and the Ray executor."""
    from runner import environment, telemetry
    from runner.host import apply_host_control, host_launch_us

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RunError("the plan asks for device 'cuda' but no CUDA device is available here")
        telemetry.mark_baseline()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
        telemetry.mark_own()
        # float32 means float32: TF32 matrix units would change the numbers and the gate
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    control = {}
    if settings is not None:
        try:
            control = apply_host_control(settings.cpu_affinity, settings.threads, device)
        except ValueError as error:
            raise RunError(str(error)) from None
    env = environment.collect(device) | control
    env["host_launch_us"] = host_launch_us(device)
    return env


def create_run(
    plan: Plan,
    runs_dir: str | Path,
    cells: list[Cell],
    *,
    device: str,
    environment: dict,
    regime: str,
    series_id: str | None = None,
    repeat_index: int = 0,
    calibrate: Callable[[], dict] | None = None,
    **extra,
) -> RunDir:
    """A new run directory with its cells in a shuffled order (seed `plan.seed + repeat_index`,
    recorded), then `run_started`; `calibrate()` (if given) runs in between, into the meta."""
    shuffle_seed = plan.seed + repeat_index
    order = list(range(len(cells)))
    random.Random(shuffle_seed).shuffle(order)
    run = RunDir(Path(runs_dir) / new_run_id())
    try:
        run.create(run_meta(
            run_id=run.run_id, series_id=series_id, plan=plan.model_dump(mode="json"), started_at=now_iso(),
            environment=environment, regime=regime, device_kind=device, tool_version=TOOL_VERSION,
            git_revision=environment.get("git_revision"), shuffle_seed=shuffle_seed,
            protocol_version=PROTOCOL_VERSION,
            cells=[planned_cell(cells[i].key, pos, cells[i].model_dump(mode="json")) for pos, i in enumerate(order)],
            **extra,
        ))
    except OSError as error:  # nothing of the run directory is left
        raise RunError(f"cannot create a run directory under {runs_dir}: {_reason(error)}; "
                       "free space and start again") from None
    with ends_on_write_failure(run):
        if calibrate is not None:
            run.update_meta(calibration=calibrate())
        run.event("run_started", total=len(cells), regime=regime)
    return run


def begin_segment(run: RunDir, done: int, total: int, **fields) -> None:
    """A start or resume: temp files a killed writer left are removed, disk space is held for
    the run's end (runfiles.RunDir.reserve_space), the run is running. OSError where the disk
    refuses: callers end the run with `ends_on_write_failure`.

    Wall-time accounting sums the segments between this event and the next
    run_interrupted/run_finished, so a resumed run's idle gap is not counted."""
    run.remove_temp_files()
    run.reserve_space()
    run.update_meta(status="running", finished_at=None)
    run.event("segment_started", done=done, total=total, **fields)


def emit(run: RunDir, progress: ProgressCallback | None, kind: str, **fields) -> None:
    """One progress event: appended to the run's log and passed to the caller's callback."""
    run.event(kind, **fields)
    if progress:
        progress({"event": kind, **fields})


def measure_records(
    entries: list[dict],
    settings,
    input_seed: int,
    *,
    rounds: int,
    order_seed: int,
    on_start: Callable[[int, int], None] | None = None,
    **options,
) -> Iterator[tuple[int, dict]]:
    """Measure planned cells (meta.json's entries) in interleaved rounds with one reference
    cache (runner.protocol.measure_in_rounds, which takes `options`); yields (entry index,
    cell record) as each cell finishes, its start stamped when its first round began."""
    from runner.protocol import ReferenceCache, measure_in_rounds

    cells = [Cell.model_validate(entry["cell"]) for entry in entries]
    started: dict[int, str] = {}

    def start(i: int, round_index: int) -> None:
        started.setdefault(i, now_iso())
        if on_start:
            on_start(i, round_index)

    for i, result in measure_in_rounds(cells, settings, input_seed, ReferenceCache(), rounds=rounds,
                                       order_seed=order_seed, on_start=start, **options):
        yield i, cell_record(entries[i], result, started.get(i, now_iso()))


def failed_records(entries: list[dict], error: str) -> list[dict]:
    """Records of planned cells that failed without being measured (their worker was lost)."""
    stamp = now_iso()
    return [cell_record(entry, CellResult(status="failed", error=error), stamp, stamp) for entry in entries]


def record_cell(run: RunDir, record: dict, *, done: set[str], total: int,
                progress: ProgressCallback | None = None, **fields) -> None:
    """Write a finished cell's file (its kept rounds go), add it to `done`, emit `cell_finished`
    with the progress medians; `fields` add to the event (e.g. the Ray node)."""
    key = record["cell_key"]
    run.write_cell(key, record)
    if record.get("stop_reason") != STOP_BUDGET:  # a budget-stopped cell's rounds are what a resume goes on from
        run.clear_rounds(key)
    done.add(key)
    emit(run, progress, "cell_finished", key=key, label=Cell.model_validate(record["cell"]).label(),
         status=record["status"], error=record["error"], done=len(done), total=total, **fields,
         **summary_of(record))


def sample_machine(run: RunDir, sampler, progress: ProgressCallback | None, at: str, **where) -> dict:
    """One machine-load sample (runner.machine_load.LoadSampler), logged as MACHINE_LOAD_EVENT
    and passed to the caller's callback; `at` and `where` say where in the run it was taken.
    Never called inside a timed region: a sample walks the process table."""
    sample = sampler.sample()
    emit(run, progress, MACHINE_LOAD_EVENT, at=at, sample=sample, **where)
    return sample


def end_run(run: RunDir, status: str, reason: str | None = None, **fields) -> None:
    """Mark the run finished (with its end time) or interrupted, and log it with its counts;
    `reason` says what stopped it where that was no interrupt (vocabulary.STOP_BUDGET:
    an adaptive plan's budget_s), as meta.json's and the event's stop_reason.

    The space the run held (runfiles.RunDir.reserve_space) is given back first, so these writes
    find room on a disk the run filled; OSError only where something else took that room.
    The meta gets the run's machine-load verdict (runner.machine_load.load_summary of every
    sample in its events): `machine_load.busy` says the run was measured on a busy machine."""
    from runner.machine_load import load_summary

    run.release_space()
    # a reason is kept only while it holds: a resume that finishes clears it
    stopped = {"stop_reason": reason} if reason or "stop_reason" in run.read_meta() else {}
    meta = run.update_meta(status=status, machine_load=load_summary(run.machine_load_samples()), **stopped,
                           **({"finished_at": now_iso()} if status == "finished" else {}))
    kind = "run_finished" if status == "finished" else "run_interrupted"
    with suppress(OSError):  # the status is written; without this event the segment ends at its last one
        run.event(kind, done=len(run.finished_keys()), total=meta["n_cells_planned"],
                  **({"reason": reason} if reason else {}), **fields)


def _reason(error: OSError) -> str:
    return (error.strerror or str(error) or type(error).__name__).splitlines()[0]


def write_failure(run: RunDir, error: OSError, also: tuple[RunDir, ...] = ()) -> str:
    """End a run whose directory the disk refused to write: interrupted (with the reason in its
    closing event), in the space it held for that; `also` (runs cloned from it) likewise.
    Returns the one line to show. A run not marked running (a resume refused before it began)
    is left as it is."""
    reason = _reason(error)
    marked = [_end_after_failure(r, reason) for r in (run, *also)][0]
    return (f"cannot write the run directory {run.path}: {reason}; {marked}; "
            f"free space and resume with --resume {run.run_id}")


def _end_after_failure(run: RunDir, reason: str) -> str:
    with suppress(OSError):
        run.remove_temp_files()
    status = (run.readable_meta() or {}).get("status")
    if status != "running":
        with suppress(OSError):
            run.release_space()
        return f"the run is left {status}" if isinstance(status, str) else "its meta.json cannot be read"
    try:
        end_run(run, "interrupted", reason=reason)
    except OSError:
        return "the run could not even be marked interrupted"
    return "the run is marked interrupted"


@contextmanager
def ends_on_write_failure(run: RunDir, also: tuple[RunDir, ...] = ()) -> Iterator[None]:
    """Writes to a run directory: an OSError inside (disk full, quota, read-only) ends the run
    (`write_failure`) and is raised as RunError, in one line."""
    try:
        yield
    except OSError as error:
        raise RunError(write_failure(run, error, also)) from None


def run_repeats(
    repeats: int,
    start: Callable[[int, str | None], RunDir],
    measure: Callable[[RunDir], list[RunDir]],
    on_run_created: Callable[[RunDir], None] | None = None,
) -> list[RunDir]:
    """`repeats` independently shuffled runs sharing a series id (none for a single run):
    `start(repeat_index, series_id)` makes each, `measure(run)` returns the runs it wrote."""
    series_id = uuid.uuid4().hex[:12] if repeats > 1 else None
    runs = []
    for repeat_index in range(repeats):
        run = start(repeat_index, series_id)
        if on_run_created:
            on_run_created(run)
        runs.extend(measure(run))
    return runs
