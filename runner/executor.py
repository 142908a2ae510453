"""Running a plan: shuffle the cells, measure each, write the run directory as it goes.

Cells run in a shuffled order (seed recorded) so that drift in clocks or temperature does
not line up with model size. A failed cell is recorded and the run goes on; Ctrl-C (or
SIGTERM from the dashboard's Cancel) marks the run interrupted, and `resume` picks up the
cells that have no file yet.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from runner.lifecycle import (
    PROGRESS_PREFIX, ProgressCallback, RunError, begin_segment, create_run, emit, end_run, ends_on_write_failure,
    measure_records, prepare_device, record_cell, run_repeats, sample_machine,
)
from runner.machine_load import LoadSampler
from runner.plan import Cell, MeasureSettings, Plan, expand, resolve_device
from runner.runfiles import BUDGET_EVENT, RunDir
from vocabulary import STOP_BUDGET


def start_run(
    plan: Plan,
    runs_dir: str | Path,
    *,
    device: str | None = None,
    series_id: str | None = None,
    repeat_index: int = 0,
    cells: list[Cell] | None = None,
) -> RunDir:
    """Create the run directory with its shuffled cell order; measures nothing yet."""
    from runner.environment import regime_key

    device = resolve_device(device or plan.device)
    cells = cells if cells is not None else expand(plan, device=device)
    env = prepare_device(device, plan.measure)
    calibrate = None
    if plan.measure.calibrate:
        from runner.calibrate import calibrate as measure_ceilings

        def calibrate() -> dict:
            return measure_ceilings(device)

    return create_run(plan, runs_dir, cells, device=device, environment=env, regime=regime_key(env),
                      series_id=series_id, repeat_index=repeat_index, calibrate=calibrate)


def checked_for_resume(run: RunDir, meta: dict) -> tuple[MeasureSettings, int]:
    """(measure settings, rounds) of a run about to resume, held to the checks a fresh run
    passes: meta.json may have been edited since, so its recorded plan is validated again (every
    cap), its rounds are the plan's (or 1, as a protocol-1 run began), and every planned cell
    takes each axis value from the plan. RunError in one line otherwise."""
    from runner.plan import MAX_CELLS, PlanError, parse_plan

    try:
        plan = parse_plan(meta["plan"])
    except (PlanError, KeyError, TypeError) as error:
        raise RunError(f"run {run.run_id}: its recorded plan does not validate ({str(error)[:300]}); "
                       "start it again as a new run") from None
    rounds = meta.get("rounds") or 1
    if rounds not in (1, plan.measure.planned_rounds) or (plan.measure.adaptive and rounds != plan.measure.max_rounds):
        raise RunError(f"run {run.run_id}: meta.json asks for {str(rounds)[:40]} rounds where its plan has "
                       f"{plan.measure.planned_rounds}; refused")
    planned = meta.get("cells")
    if not isinstance(planned, list) or len(planned) > MAX_CELLS:
        raise RunError(f"run {run.run_id}: meta.json does not list at most {MAX_CELLS} planned cells; refused")
    sweeps = [plan, *plan.also]
    allowed = {axis: {v for sweep in sweeps for v in (getattr(sweep, axis) or [])} | set(getattr(plan, axis))
               for axis in ("backends", "dtypes", "batch_sizes", "prompt_lens", "gen_lens")}
    for entry in planned:
        try:
            cell = Cell.model_validate(entry["cell"])
        except (KeyError, TypeError, ValueError):
            raise RunError(f"run {run.run_id}: meta.json holds a planned cell that is not one; refused") from None
        for axis, value in (("backends", cell.backend), ("dtypes", cell.dtype), ("batch_sizes", cell.batch_size),
                            ("prompt_lens", cell.prompt_len), ("gen_lens", cell.gen_len)):
            if value not in allowed[axis]:
                raise RunError(f"run {run.run_id}: planned cell {cell.label()!r} has {axis} {value!r}, which its plan "
                               "does not; refused")
    return plan.measure, int(rounds)


def refuse_other_hardware(run: RunDir, meta: dict) -> None:
    """A run's cells are compared with each other as one experiment: a resume on other hardware
    (another GPU, driver or host class) would mix two regimes under one run id, so it is refused."""
    from runner.environment import collect, regime_key

    recorded = meta.get("regime")
    here = regime_key(collect(meta.get("device_kind", "cpu")))
    if recorded and here != recorded:
        raise RunError(f"run {run.run_id} was measured on {recorded[:200]}; this machine is {here[:200]}: "
                       "a resume here would mix two regimes in one run; start a new run instead")


def continue_run(run: RunDir, progress: ProgressCallback | None = None, *, only_round: int | None = None,
                 deadline: float | None = None) -> RunDir:
    """Measure every planned cell of a run that has no cell file yet, in the stored order.

    With `[measure] processes = true` each round runs in a fresh worker process
    (`runner.round_worker`, which calls this with `only_round` and the segment's `deadline`);
    this process then only starts the workers, forwards their progress and keeps the run's
    status. With `[measure] precision` and `budget_s`, this start or resume measures until
    time.time() + budget_s (`deadline`); the run then ends interrupted with stop_reason
    "budget" (vocabulary.STOP_BUDGET), and a resume measures its open cells further,
    the budget-stopped ones included."""
    import time

    if not run.exists():
        raise RunError(f"no run directory at {run.path}")
    meta = run.read_meta()
    settings, rounds = checked_for_resume(run, meta)
    worker = only_round is not None
    if deadline is None and settings.budget_s is not None and not worker:
        deadline = time.time() + settings.budget_s
    if settings.processes and rounds > 1 and not worker:
        return _rounds_in_workers(run, progress, rounds, settings, deadline)
    prepare_device(meta.get("device_kind", "cpu"), settings)
    if not worker:
        refuse_other_hardware(run, meta)
    # a round worker's parent is the run's own process, idle while the worker measures
    sampler = LoadSampler(own_pids={os.getpid(), os.getppid()} if worker else None)
    planned = meta["cells"]
    reopened = run.reopenable_keys() if settings.adaptive else set()
    done = run.finished_keys() - reopened
    total = len(planned)
    todo = [entry for entry in planned if entry["key"] not in done]
    labels = [Cell.model_validate(entry["cell"]).label() for entry in todo]
    kept = run.round_records(reopened)
    earlier = {i: kept[entry["key"]] for i, entry in enumerate(todo) if entry["key"] in kept}

    def on_start(i: int, round_index: int) -> None:
        sample_machine(run, sampler, progress, "round_start", key=todo[i]["key"], round=round_index)
        emit(run, progress, "cell_started", key=todo[i]["key"], label=labels[i], index=len(done), total=total,
             round=round_index, rounds=rounds)

    def on_round(i: int, round_index: int, record: dict) -> None:
        # after the round's timed phases: this sample's interval covers the round itself
        record["machine_load"] = sample_machine(run, sampler, progress, "round_end", key=todo[i]["key"],
                                                round=round_index)
        run.write_round(todo[i]["key"], round_index, record)
        half = {"decode_half_width": record["decode_half_width"]} if "decode_half_width" in record else {}
        emit(run, progress, "round_finished", key=todo[i]["key"], round=round_index, rounds=rounds, **half)

    spent: list[bool] = []
    # the run directory cannot be written (disk full, quota, read-only): the run ends interrupted
    with ends_on_write_failure(run):
        if not worker:
            begin_segment(run, done=len(done), total=total)
            sample_machine(run, sampler, progress, "run_start")
        try:
            for _, record in measure_records(todo, settings, meta["input_seed"], rounds=rounds,
                                             order_seed=meta["shuffle_seed"], on_start=on_start, done=earlier,
                                             on_round=on_round,
                                             only_rounds=None if only_round is None else {only_round},
                                             deadline=deadline, on_budget=lambda: spent.append(True)):
                record_cell(run, record, done=done, total=total, progress=progress)
        except KeyboardInterrupt:
            if not worker:
                end_run(run, "interrupted")
            raise
        if spent:
            emit(run, progress, BUDGET_EVENT, budget_s=settings.budget_s, done=len(done), total=total)
        if not worker:
            end_run(run, "interrupted", reason=STOP_BUDGET) if spent else end_run(run, "finished")
    return run


def rounds_left(run: RunDir, rounds: int, reopened: set[str] = frozenset()) -> list[int]:
    """The rounds some unfinished cell (or a `reopened` one) still lacks (a resumed run skips
    whole rounds done)."""
    finished = run.finished_keys() - set(reopened)
    kept = run.round_records(reopened)
    unfinished = [entry["key"] for entry in run.read_meta()["cells"] if entry["key"] not in finished]
    return [r for r in range(rounds) if any(r not in kept.get(key, {}) for key in unfinished)]


def _rounds_in_workers(run: RunDir, progress: ProgressCallback | None, rounds: int, settings: MeasureSettings,
                       deadline: float | None) -> RunDir:
    """One fresh worker process per round, in turn; their progress lines are forwarded.

    With a precision target the next round is chosen after each worker, from the round and
    cell files it left (cells that reached their target take no more); a worker that reports
    the budget spent is the last. The worker inherits this process's GPU processes as its own
    (NVML would otherwise call the parent a foreign process on the GPU). A worker that dies
    ends the run as interrupted, resumable: its finished rounds are on disk."""
    import json
    import signal
    import subprocess
    import sys

    from runner import telemetry

    root = str(Path(__file__).resolve().parents[1])
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        # NVML may not list this process yet right after its CUDA context was made (two H200
        # runs flagged their own parent as foreign): name our pid too, as NVML sees it here
        telemetry.RELATED_GPU_PIDS_ENV: ",".join(str(pid) for pid in telemetry.own_gpu_pids() | {os.getpid()}),
    }
    spent = False

    def next_rounds():
        if not settings.adaptive:
            yield from rounds_left(run, rounds)
            return
        started = -1
        while not spent:  # read again after every worker: cells that reached their target (or stopped) leave
            later = [r for r in rounds_left(run, rounds, run.reopenable_keys()) if r > started]
            if not later:
                return
            started = later[0]
            yield started

    with ends_on_write_failure(run):
        begin_segment(run, done=len(run.finished_keys()), total=len(run.read_meta()["cells"]))
        sample_machine(run, LoadSampler(), progress, "run_start")
    try:
        for round_index in next_rounds():
            worker = subprocess.Popen(
                [sys.executable, "-m", "runner.round_worker", str(run.path.resolve()), str(round_index),
                 *([repr(deadline)] if deadline is not None else [])],
                stdout=subprocess.PIPE, text=True, env=env,
            )
            error = None
            try:
                for line in worker.stdout:
                    if not line.startswith(PROGRESS_PREFIX):
                        sys.stdout.write(line)
                        continue
                    event = json.loads(line[len(PROGRESS_PREFIX):])
                    if event["event"] == "worker_error":
                        error = event["error"]
                        continue
                    spent = spent or event["event"] == BUDGET_EVENT
                    if progress:
                        progress(event)
                code = worker.wait()
            except KeyboardInterrupt:
                worker.send_signal(signal.SIGINT)
                try:
                    worker.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
                raise
            if error is not None:
                raise RunError(error)
            if code != 0:
                raise RunError(f"the worker of round {round_index} exited with status {code}; "
                               f"the run is marked interrupted: resume with --resume {run.run_id}")
    except (KeyboardInterrupt, RunError):
        with ends_on_write_failure(run):
            end_run(run, "interrupted")
        raise
    with ends_on_write_failure(run):
        end_run(run, "interrupted", reason=STOP_BUDGET) if spent else end_run(run, "finished")
    return run


def execute(
    plan: Plan,
    runs_dir: str | Path,
    *,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    on_run_created: Callable[[RunDir], None] | None = None,
) -> list[RunDir]:
    """Run a plan `plan.repeats` times (independently shuffled runs sharing a series id)."""
    return run_repeats(
        plan.repeats,
        lambda repeat_index, series_id: start_run(plan, runs_dir, device=device, series_id=series_id,
                                                  repeat_index=repeat_index),
        lambda run: [continue_run(run, progress)],
        on_run_created,
    )
