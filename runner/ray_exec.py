"""Running a plan on a Ray cluster: one task per (model, backend) group, the driver writes.

Scheduling: the cells of a run are grouped by (model shape, backend, backend options) and
each group is one Ray task, so a group's eager reference is built once per task (one
`ReferenceCache` per task). Each cell still builds (and for torch-compile compiles) its own
timed model inside `measure_in_rounds`, exactly as without Ray, so setup stays a per-cell figure.
A task asks for one whole GPU on cuda plans (never a fraction: two cells sharing a GPU
would time each other) and one CPU on cpu plans; `resource` pins tasks to nodes that
advertise a custom resource (`ray start --resources='{"H100": 8}'`).

Workers only measure: each returns its cell records (the content of `cells/<key>.json`)
and its node's environment. The driver alone writes run directories, so the files, the
events and the ingest are the same as without Ray. Runs are per hardware regime: results
from a node of another regime go to a run directory cloned from the plan's meta, never
mixed into one run. Planned cells that no regime has measured yet stay with the first run,
so `--resume` of that run (with or without Ray) measures what is missing.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable

from runner.lifecycle import (
    ProgressCallback, RunError, begin_segment, create_run, end_run, ends_on_write_failure, failed_records,
    measure_records, prepare_device, record_cell, run_repeats, write_failure,
)
from runner.plan import Plan, expand
from runner.runfiles import MACHINE_LOAD_EVENT, RunDir, new_run_id, now_iso

# A pin only has to select nodes, not count slots: num_cpus / num_gpus limit concurrency.
PIN_AMOUNT = 0.001
PENDING_REGIME = "pending: set by the first Ray worker that reports"
REPO_ROOT = Path(__file__).resolve().parent.parent


def connect(address: str | None, **init_kwargs) -> None:
    """ray.init once: 'local' (or None) starts a local instance, else 'auto' or 'ray://host:port'.

    Workers import `runner` from this checkout's path: every node needs the same checkout
    at the same path (and its requirements), as the README says.
    """
    import ray

    if ray.is_initialized():
        return
    # the checkout first, then whatever the driver already had (e.g. packages installed with
    # pip --target): a worker must import exactly what the driver imports
    python_path = os.pathsep.join([str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    # a caller's runtime_env (e.g. a test's worker_process_setup_hook) adds to ours
    extra = dict(init_kwargs.pop("runtime_env", None) or {})
    runtime_env = extra | {"env_vars": {**extra.get("env_vars", {}), "PYTHONPATH": python_path}}
    target = None if address in (None, "", "local") else address
    if target not in (None, "auto"):
        check_reachable(target)
    try:
        ray.init(address=target, runtime_env=runtime_env, log_to_driver=False, **init_kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RunError(f"cannot connect to Ray at {address!r}: {str(error).splitlines()[0]}") from error


RAY_CONNECT_TIMEOUT_S = 10.0  # a head node answers a TCP connect in milliseconds; ray.init itself retries for minutes
# A Ray GCS (and a Ray Client server, ray://) is a gRPC server: it sends its HTTP/2 settings as
# soon as a client's connection preface arrives, within milliseconds. ray.init would wait for
# minutes on a port that accepts connections but never answers so.
RAY_ANSWER_TIMEOUT_S = 5.0
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + empty SETTINGS
HTTP2_SETTINGS = 4  # the frame type a server's first frame must have (RFC 9113, 3.4)


def check_reachable(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S,
               answer_s: float = RAY_ANSWER_TIMEOUT_S) -> None:
    """Refuse, within `timeout_s` + `answer_s`, an address that is not host:port (with or without
    ray://), whose port does not accept a connection, or whose server does not answer as a gRPC
    server does (`_answers_as_grpc`): ray.init would retry any of these for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise RunError(f"Ray address {address!r} is not local, auto, ray://host:port or host:port")
    try:
        conn = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise RunError(f"cannot reach Ray at {address!r}: {reason} (tried for up to {timeout_s:.0f} s)") from None
    with conn:
        # with TLS (Ray's RAY_USE_TLS, read as Ray reads it) the server speaks only after a
        # handshake this probe cannot make: the connect above is all that is checked
        if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
            _answers_as_grpc(conn, address, answer_s)


def _answers_as_grpc(conn: socket.socket, address: str, answer_s: float) -> None:
    """Send the HTTP/2 connection preface and expect the server's SETTINGS frame back within
    `answer_s`; RunError in one line otherwise. Any gRPC server passes, not only Ray's."""
    server = "Ray Client server" if address.startswith("ray://") else "GCS"
    refused = f"Ray address {address!r} accepts connections but does not answer as a Ray cluster ({server})"
    deadline = time.monotonic() + answer_s
    header = b""
    try:
        conn.sendall(HTTP2_PREFACE)
        while len(header) < 9:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(9 - len(header))
            if not chunk:
                raise RunError(f"{refused}: it closed the connection")
            header += chunk
    except TimeoutError:
        raise RunError(f"{refused} within {answer_s:.0f} s") from None
    except OSError as error:
        raise RunError(f"{refused}: {error.strerror or error}") from None
    length, kind, flags, stream = int.from_bytes(header[:3], "big"), header[3], header[4], header[5:]
    if kind != HTTP2_SETTINGS or flags & 1 or stream != bytes(4) or length % 6:
        raise RunError(f"{refused}: its first bytes are {header!r}, not HTTP/2 settings")


def check_cluster(device: str, resource: str | None) -> None:
    """Refuse, before anything runs, a plan the cluster can never schedule."""
    import ray

    available = ray.cluster_resources()
    if resource and available.get(resource, 0) <= 0:
        custom = sorted(k for k in available if k not in ("CPU", "GPU", "memory", "object_store_memory")
                        and not k.startswith(("node:", "accelerator_type:")))
        raise RunError(
            f"no node of the Ray cluster has the resource '{resource}' (custom resources: "
            f"{', '.join(custom) or 'none'}); start the nodes with ray start --resources='{{\"{resource}\": 1}}'"
        )
    if device == "cuda" and available.get("GPU", 0) < 1:
        raise RunError("the plan asks for device 'cuda' but the Ray cluster has no GPU")


def resolve_ray_device(requested: str) -> str:
    """'auto' means cuda when the cluster has a GPU (the driver itself may have none)."""
    import ray

    if requested != "auto":
        return requested
    return "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"


def group_entries(entries: list[dict]) -> list[list[dict]]:
    """Planned cells grouped by (model, backend, options), in the run's shuffled order."""
    groups: dict[tuple, list[dict]] = {}
    for entry in sorted(entries, key=lambda e: e["order_index"]):
        cell = entry["cell"]
        key = (repr(sorted(cell["model"].items())), cell["backend"], repr(sorted(cell.get("backend_options", {}).items())))
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


def _claim_calibration(segment: str, node_id: str) -> bool:
    """True for the first task of a run segment on a node: it calibrates the node's device.

    An O_EXCL marker file is atomic across the node's worker processes, so concurrent tasks
    (one per GPU) never calibrate twice. `segment` is new for every start or resume, and the
    driver only asks for calibration while the run has none, so a resume after a lost
    calibrating task calibrates again.
    """
    import tempfile

    marker = Path(tempfile.gettempdir()) / f"shapebench-calibrated-{segment}-{node_id}"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def measure_group(entries: list[dict], measure: dict, input_seed: int, device: str, segment: str = "") -> dict:
    """The body of one Ray task: measure a group's cells on this node, return the records.

    With `calibrate` in the measure settings, the first task of the run on each node first
    measures the node's ceilings (runner.calibrate) and returns them with its records.
    """
    import socket

    from runner.environment import regime_key
    from runner.plan import MeasureSettings

    import ray

    settings = MeasureSettings.model_validate(measure)
    gpu_ids = [int(i) for i in ray.get_gpu_ids()]
    if settings.cpu_affinity == "auto" and device == "cuda" and gpu_ids:
        # tasks on one host's GPUs run at once: one core each, counted down from the last
        allowed = sorted(os.sched_getaffinity(0))
        settings = settings.model_copy(update={"cpu_affinity": [allowed[-1 - gpu_ids[0] % len(allowed)]]})
    env = prepare_device(device, settings)
    calibration = None
    if settings.calibrate and _claim_calibration(segment, ray.get_runtime_context().get_node_id()):
        from runner.calibrate import calibrate

        calibration = calibrate(device)
    # the same interleaved rounds as the direct executor, over this task's cells
    records = [record for _, record in measure_records(entries, settings, input_seed, rounds=settings.rounds,
                                                       order_seed=input_seed)]
    # the GPU Ray gave this task is part of the label, so the per-node progress and the
    # events show that a multi-GPU host used every GPU, and each cell exactly one
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    node = f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:8]})"
    if gpu_ids:
        node += f" GPU {','.join(gpu_ids)}"
    return {"environment": env, "regime": regime_key(env), "node": node, "records": records,
            "calibration": calibration}


def describe_failure(error: Exception) -> str:
    """The cell error for a task that did not return; system failures were retried once."""
    import ray.exceptions as rex

    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, rex.TaskCancelledError):
        return f"ray task cancelled: {first}"[:2000]
    retried = isinstance(error, (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError))
    note = " (the task was retried once and failed again)" if retried else ""
    return f"ray task failed, worker died or raised: {type(error).__name__}: {first}{note}"[:2000]


def start_ray_run(plan: Plan, runs_dir: str | Path, device: str, *, series_id: str | None = None,
                  repeat_index: int = 0) -> RunDir:
    """The run directory, as `start_run` makes it, with the environment left to the workers."""
    if plan.measure.processes:
        raise RunError("[measure] processes = true runs each round in a fresh local worker process; "
                       "it is not available with --ray (each Ray task keeps one process): drop it or run without --ray")
    if plan.measure.adaptive:
        raise RunError("[measure] precision chooses each round's cells from every cell's rounds so far; "
                       "it is not available with --ray (each Ray task measures its own cells): drop it or run without --ray")
    return create_run(plan, runs_dir, expand(plan, device=device), device=device, environment={},
                      regime=PENDING_REGIME, series_id=series_id, repeat_index=repeat_index, executor="ray")


class RegimeRuns:
    """Where each regime's records go: the first run, then clones of its meta for others."""

    def __init__(self, primary: RunDir) -> None:
        self.primary = primary
        meta = primary.read_meta()
        self.by_regime: dict[str, RunDir] = {}
        if meta["regime"] != PENDING_REGIME:
            self.by_regime[meta["regime"]] = primary
        self.moved: dict[str, set[str]] = {}  # clone run id -> keys measured there

    def run_for(self, regime: str, env: dict) -> RunDir:
        if regime in self.by_regime:
            return self.by_regime[regime]
        meta = self.primary.read_meta()
        if not self.by_regime and meta["regime"] == PENDING_REGIME:
            self.primary.update_meta(environment=env, regime=regime, git_revision=env.get("git_revision"))
            self.primary.event("regime_set", regime=regime)
            self.by_regime[regime] = self.primary
            return self.primary
        clone = RunDir(self.primary.path.parent / new_run_id())
        clone.create({k: v for k, v in meta.items() if k != "format_version"} | {
            "run_id": clone.run_id, "started_at": now_iso(), "environment": env, "regime": regime,
            "git_revision": env.get("git_revision"), "cloned_from": self.primary.run_id, "status": "running"})
        # known before its first event: a write failure from here on ends the clone too
        self.by_regime[regime] = clone
        self.moved[clone.run_id] = set()
        clone.event("run_started", total=0, regime=regime, cloned_from=self.primary.run_id)
        begin_segment(clone, done=0, total=0)
        return clone

    def clones(self) -> tuple[RunDir, ...]:
        """The runs cloned for other regimes so far."""
        return tuple(run for run in self.by_regime.values() if run is not self.primary)

    def runs(self) -> list[RunDir]:
        """The first run, then each clone made so far."""
        return [self.primary] + [r for r in self.by_regime.values() if r is not self.primary]

    def record(self, run: RunDir, key: str) -> None:
        if run is not self.primary:
            self.moved[run.run_id].add(key)

    def split_planned(self) -> list[RunDir]:
        """Split the planned cells: a clone plans what it measured, the first run the rest.
        Returns every run, the first one first."""
        meta = self.primary.read_meta()
        moved_all = set().union(*self.moved.values()) if self.moved else set()
        for run in self.by_regime.values():
            if run is self.primary:
                continue
            keys = self.moved[run.run_id] | run.finished_keys()
            planned = [e for e in meta["cells"] if e["key"] in keys]
            run.update_meta(cells=planned, n_cells_planned=len(planned))
        if moved_all:
            planned = [e for e in meta["cells"] if e["key"] not in moved_all]
            self.primary.update_meta(cells=planned, n_cells_planned=len(planned))
        return [self.primary] + [r for r in self.by_regime.values() if r is not self.primary]


class DriverLoad:
    """Machine-load samples of the driver's machine (runner.machine_load) during a Ray run,
    logged in every run of the segment as the direct executor logs its own (MACHINE_LOAD_EVENT;
    each sample says `machine: driver`), so `end_run` gives each run's meta its verdict the same way.

    Taken at the start, after each task's records are written and at the end: the samples'
    intervals cover the whole segment. The driver cannot know when a worker is inside a timed
    region, so a sample is taken where the driver works anyway (a task's results arriving).
    This host's Ray processes are the run's own (`ray_pids`); on a remote cluster the verdict
    is the driver's machine's, not the measuring nodes'.
    """

    def __init__(self, regimes: RegimeRuns, progress: ProgressCallback | None) -> None:
        from runner.machine_load import LoadSampler, ray_pids

        self.regimes, self.progress = regimes, progress
        self.sampler = LoadSampler(own_pids={os.getpid()} | ray_pids())

    def __call__(self, at: str, **where) -> dict:
        sample = self.sampler.sample() | {"machine": "driver"}
        fields = {"at": at, "sample": sample, **where}
        for run in self.regimes.runs():
            run.event(MACHINE_LOAD_EVENT, **fields)
        if self.progress:
            self.progress({"event": MACHINE_LOAD_EVENT, **fields})
        return sample


def continue_ray_run(run: RunDir, *, resource: str | None = None,
                     progress: ProgressCallback | None = None) -> list[RunDir]:
    """Measure a run's cells that have no file yet on the connected Ray cluster.

    Returns the run and any run cloned for another regime. Ctrl-C cancels every task and
    marks the runs interrupted; cells whose task had returned are already written.
    """
    import ray

    if not run.exists():
        raise RunError(f"no run directory at {run.path}")
    meta = run.read_meta()
    from runner.executor import checked_for_resume

    checked_for_resume(run, meta)  # an edited meta.json is held to a fresh run's checks
    device = meta["device_kind"]
    check_cluster(device, resource)
    done = run.finished_keys()
    todo = [e for e in meta["cells"] if e["key"] not in done]
    total = len(meta["cells"])
    options = {"num_gpus": 1} if device == "cuda" else {"num_cpus": 1}
    if resource:
        options["resources"] = {resource: PIN_AMOUNT}
    task = ray.remote(max_retries=1, retry_exceptions=False)(measure_group).options(**options)

    # calibrate (once per node) only while the run has no calibration yet
    measure = dict(meta["plan"]["measure"], calibrate=bool(meta["plan"]["measure"].get("calibrate"))
                   and not meta.get("calibration"))
    segment = f"{run.run_id}-{uuid.uuid4().hex[:8]}"
    regimes = RegimeRuns(run)
    with ends_on_write_failure(run):
        begin_segment(run, done=len(done), total=total, executor="ray")
    pending: dict = {}
    nodes: Counter = Counter()
    try:  # the samples too: a Ctrl-C or SIGTERM while one is taken (the first waits 0.5 s) marks the runs interrupted
        sample_driver = DriverLoad(regimes, progress)
        sample_driver("run_start")
        for group in group_entries(todo):
            pending[task.remote(group, measure, meta["input_seed"], device, segment)] = group
        if progress:
            progress({"event": "ray_submitted", "tasks": len(pending), "cells": len(todo), "done": len(done),
                      "total": total})
        while pending:
            # a bounded wait returns to Python regularly, so Ctrl-C / SIGTERM is handled at once
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if not ready:
                continue
            ref = ready[0]
            group = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:
                outcome = {"environment": None, "regime": None, "node": "failed",
                           "records": failed_records(group, describe_failure(error))}
            target = run if outcome["regime"] is None else regimes.run_for(outcome["regime"], outcome["environment"])
            if outcome.get("calibration") and not target.read_meta().get("calibration"):
                target.update_meta(calibration=outcome["calibration"])  # one node's ceilings per regime run
            nodes[outcome["node"]] += len(outcome["records"])
            for record in outcome["records"]:
                record_cell(target, record, done=done, total=total, progress=progress, node=outcome["node"])
                regimes.record(target, record["cell_key"])
            sample_driver("task_end", node=outcome["node"])
        sample_driver("run_end")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        with ends_on_write_failure(run, also=regimes.clones()):
            for r in regimes.split_planned():
                end_run(r, "interrupted")
        raise
    except OSError as error:  # the driver cannot write the run directory (disk full, quota, read-only)
        for ref in pending:
            ray.cancel(ref, force=True)
        raise RunError(write_failure(run, error, also=regimes.clones())) from None
    with ends_on_write_failure(run, also=regimes.clones()):
        runs = regimes.split_planned()
        end_run(run, "finished", nodes=dict(nodes))
        for other in runs[1:]:
            end_run(other, "finished")
    if progress:
        progress({"event": "ray_finished", "nodes": dict(nodes)})
    return runs


def execute_ray(plan: Plan, runs_dir: str | Path, *, device: str | None = None, resource: str | None = None,
                progress: ProgressCallback | None = None,
                on_run_created: Callable[[RunDir], None] | None = None) -> list[RunDir]:
    """`execute` on the connected Ray cluster: `plan.repeats` runs, each split into tasks."""
    device = resolve_ray_device(device or plan.device)
    check_cluster(device, resource)  # before any run directory exists
    return run_repeats(
        plan.repeats,
        lambda repeat_index, series_id: start_ray_run(plan, runs_dir, device, series_id=series_id,
                                                      repeat_index=repeat_index),
        lambda run: continue_ray_run(run, resource=resource, progress=progress),
        on_run_created,
    )
