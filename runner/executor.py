"""Running a plan: shuffle the cells, measure each, write the run directory as it goes.

Cells run in a shuffled order (seed recorded) so that drift in clocks or temperature does
not line up with model size. A failed cell is recorded and the run goes on; Ctrl-C (or
SIGTERM from the dashboard's Cancel) marks the run interrupted, and `resume` picks up the
cells that have no file yet.
"""
from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from runner import TOOL_VERSION
from runner.plan import Cell, Plan, expand, resolve_device
from runner.runfiles import RunDir, new_run_id, now_iso

ProgressCallback = Callable[[dict], None]


class RunError(ValueError):
    """A run that cannot start or resume, with the reason."""


PROTOCOL_VERSION = 2  # 1: one pass per cell, unpinned; 2: host control, interleaved rounds (DESIGN.md)


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
    shuffle_seed = plan.seed + repeat_index
    order = list(range(len(cells)))
    random.Random(shuffle_seed).shuffle(order)
    run = RunDir(Path(runs_dir) / new_run_id())
    run.create({
        "run_id": run.run_id,
        "series_id": series_id,
        "plan_name": plan.name,
        "plan": plan.model_dump(mode="json"),
        "started_at": now_iso(),
        "finished_at": None,
        "status": "running",
        "environment": env,
        "regime": regime_key(env),
        "device_kind": device,
        "tool_version": TOOL_VERSION,
        "git_revision": env.get("git_revision"),
        "shuffle_seed": shuffle_seed,
        "input_seed": plan.seed,
        "n_cells_planned": len(cells),
        "protocol_version": PROTOCOL_VERSION,
        "rounds": plan.measure.rounds,
        "cells": [
            {"key": cells[i].key, "order_index": pos, "cell": cells[i].model_dump(mode="json")}
            for pos, i in enumerate(order)
        ],
    })
    if plan.measure.calibrate:
        from runner.calibrate import calibrate

        run.update_meta(calibration=calibrate(device))
    run.event("run_started", total=len(cells), regime=regime_key(env))
    return run


def continue_run(run: RunDir, progress: ProgressCallback | None = None, *, only_round: int | None = None) -> RunDir:
    """Measure every planned cell of a run that has no cell file yet, in the stored order.

    With `[measure] processes = true` each round runs in a fresh worker process
    (`runner.round_worker`, which calls this with `only_round`); this process then only
    starts the workers, forwards their progress and keeps the run's status."""
    from runner.plan import MeasureSettings
    from runner.protocol import ReferenceCache, measure_in_rounds

    if not run.exists():
        raise RunError(f"no run directory at {run.path}")
    meta = run.read_meta()
    settings = MeasureSettings.model_validate(meta["plan"]["measure"])
    rounds = int(meta.get("rounds") or 1)  # a protocol-1 run resumes as it began: one pass
    worker = only_round is not None
    if settings.processes and rounds > 1 and not worker:
        return _rounds_in_workers(run, progress, rounds)
    prepare_device(meta.get("device_kind", "cpu"), settings)
    planned = meta["cells"]
    done = run.finished_keys()
    total = len(planned)
    todo = [entry for entry in planned if entry["key"] not in done]
    cells = [Cell.model_validate(entry["cell"]) for entry in todo]
    kept = run.round_records()
    earlier = {i: kept[entry["key"]] for i, entry in enumerate(todo) if entry["key"] in kept}
    started: dict[int, str] = {}
    references = ReferenceCache()
    if not worker:
        run.remove_temp_files()
        run.update_meta(status="running", finished_at=None)
        # Wall-time accounting sums the segments between this event and the next
        # run_interrupted/run_finished, so a resumed run's idle gap is not counted.
        run.event("segment_started", done=len(done), total=total)

    def on_start(i: int, round_index: int) -> None:
        started.setdefault(i, now_iso())
        info = {"key": todo[i]["key"], "label": cells[i].label(), "index": len(done), "total": total,
                "round": round_index, "rounds": rounds}
        run.event("cell_started", **info)
        if progress:
            progress({"event": "cell_started", **info})

    def on_round(i: int, round_index: int, record: dict) -> None:
        run.write_round(todo[i]["key"], round_index, record)
        run.event("round_finished", key=todo[i]["key"], round=round_index, rounds=rounds)

    try:
        for i, result in measure_in_rounds(cells, settings, meta["input_seed"], references, rounds=rounds,
                                           order_seed=meta["shuffle_seed"], done=earlier,
                                           on_round=on_round, on_start=on_start,
                                           only_rounds=None if only_round is None else {only_round}):
            entry, cell = todo[i], cells[i]
            record = {
                "cell_key": entry["key"],
                "order_index": entry["order_index"],
                "cell": entry["cell"],
                "started_at": started.get(i, now_iso()),
                "finished_at": now_iso(),
                **asdict(result),
            }
            run.write_cell(entry["key"], record)
            run.clear_rounds(entry["key"])
            done.add(entry["key"])
            summary = summary_of(result)
            run.event("cell_finished", key=entry["key"], label=cell.label(), status=result.status,
                      error=result.error, done=len(done), total=total, **summary)
            if progress:
                progress({"event": "cell_finished", "label": cell.label(), "status": result.status,
                          "error": result.error, "done": len(done), "total": total, **summary})
    except KeyboardInterrupt:
        if not worker:
            run.update_meta(status="interrupted")
            run.event("run_interrupted", done=len(done), total=total)
        raise
    except OSError as error:  # the run directory cannot be written (disk full, quota, read-only)
        raise RunError(write_failure(run, error)) from None
    if not worker:
        run.update_meta(status="finished", finished_at=now_iso())
        run.event("run_finished", done=len(done), total=total)
    return run


def rounds_left(run: RunDir, rounds: int) -> list[int]:
    """The rounds some unfinished cell still lacks (a resumed run skips whole rounds done)."""
    finished = run.finished_keys()
    kept = run.round_records()
    unfinished = [entry["key"] for entry in run.read_meta()["cells"] if entry["key"] not in finished]
    return [r for r in range(rounds) if any(r not in kept.get(key, {}) for key in unfinished)]


def _rounds_in_workers(run: RunDir, progress: ProgressCallback | None, rounds: int) -> RunDir:
    """One fresh worker process per round, in turn; their progress lines are forwarded.

    The worker inherits this process's GPU processes as its own (NVML would otherwise call
    the parent a foreign process on the GPU). A worker that dies ends the run as
    interrupted, resumable: its finished rounds are on disk."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from runner import round_worker, telemetry

    meta = run.read_meta()
    total = len(meta["cells"])
    run.remove_temp_files()
    run.update_meta(status="running", finished_at=None)
    run.event("segment_started", done=len(run.finished_keys()), total=total)
    root = str(Path(__file__).resolve().parents[1])
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        # NVML may not list this process yet right after its CUDA context was made (two H200
        # runs flagged their own parent as foreign): name our pid too, as NVML sees it here
        telemetry.RELATED_GPU_PIDS_ENV: ",".join(str(pid) for pid in telemetry.own_gpu_pids() | {os.getpid()}),
    }
    try:
        for round_index in rounds_left(run, rounds):
            worker = subprocess.Popen(
                [sys.executable, "-m", "runner.round_worker", str(run.path.resolve()), str(round_index)],
                stdout=subprocess.PIPE, text=True, env=env,
            )
            error = None
            try:
                for line in worker.stdout:
                    if not line.startswith(round_worker.PROGRESS_PREFIX):
                        sys.stdout.write(line)
                        continue
                    event = json.loads(line[len(round_worker.PROGRESS_PREFIX):])
                    if event["event"] == "worker_error":
                        error = event["error"]
                    elif progress:
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
        run.update_meta(status="interrupted")
        run.event("run_interrupted", done=len(run.finished_keys()), total=total)
        raise
    run.update_meta(status="finished", finished_at=now_iso())
    run.event("run_finished", done=len(run.finished_keys()), total=total)
    return run


def write_failure(run: RunDir, error: OSError) -> str:
    """Mark the run interrupted if the disk still takes that much; say so in one line."""
    reason = error.strerror or str(error).splitlines()[0]
    try:
        run.update_meta(status="interrupted")
        marked = "the run is marked interrupted"
    except OSError:
        marked = "the run could not even be marked interrupted"
    run.remove_temp_files()
    return (f"cannot write the run directory {run.path}: {reason}; {marked}; "
            f"free space and resume with --resume {run.run_id}")


def summary_of(result) -> dict:
    """Medians for the progress log (the store computes the real statistics)."""
    from runner.timing import median

    out = {}
    if result.decode:
        out["decode_ms_per_token"] = median([v for rep in result.decode for v in rep])
    if result.prefill:
        out["prefill_ms"] = median(result.prefill)
    return out


def execute(
    plan: Plan,
    runs_dir: str | Path,
    *,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    on_run_created: Callable[[RunDir], None] | None = None,
) -> list[RunDir]:
    """Run a plan `plan.repeats` times (independently shuffled runs sharing a series id)."""
    import uuid

    series_id = uuid.uuid4().hex[:12] if plan.repeats > 1 else None
    runs = []
    for repeat_index in range(plan.repeats):
        run = start_run(plan, runs_dir, device=device, series_id=series_id, repeat_index=repeat_index)
        if on_run_created:
            on_run_created(run)
        runs.append(continue_run(run, progress))
    return runs
