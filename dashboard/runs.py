"""Starting, following and cancelling a benchmark run from the dashboard.

The run is `python -m runner run PLAN --runs-dir DIR --no-ingest` in its own session
(process group), so a CUDA crash or an OOM kill never takes the server down and the
dashboard stays the only DuckDB writer (it ingests the run directory as cells finish).
One run at a time per machine: a lock file holds the runner's pid; a lock whose process
is gone is stale and ignored. The page kills the pid and shows the log file a record names,
so a record is trusted only when this server process started that runner and wrote exactly
that record (`read_lock`); the file sits in the user's private directory and is opened
without following links (runner.runlock).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from runner import runlock
from runner.machine_load import BUSY_ADVICE, busy_reasons, busy_text
from runner.runfiles import BUDGET_EVENT, MACHINE_LOAD_EVENT, RunDir, list_run_dirs, run_dir_in
from vocabulary import BUSY_MACHINE_FLAG, STOP_BUDGET

REPO_ROOT = Path(__file__).resolve().parent.parent
CANCEL_GRACE_S = 10.0  # the runner finishes writing its files on SIGTERM; then we kill
_PROCS: dict[int, subprocess.Popen] = {}  # our children, so finished ones get reaped
_RECORDS: dict[int, dict[str, Any]] = {}  # the lock record this server wrote for each child


def lock_path(environ: Mapping[str, str] = os.environ) -> Path:
    """One lock per machine (the GPU is the shared resource), overridable for tests."""
    return runlock.record_path(environ)


def _alive(pid: int) -> bool:
    proc = _PROCS.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_lock(path: Path | None = None) -> dict[str, Any] | None:
    """The active run's lock record, or None when no run holds the machine."""
    path = path or lock_path()
    try:
        fd = runlock.open_lock_file(path, os.O_RDONLY)
    except (OSError, runlock.RunLocked):
        return None
    try:
        info = json.loads(os.read(fd, 1 << 16) or b"null")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int) or _RECORDS.get(pid) != info or not _alive(pid):
        return None  # not a runner this server started, or not the record it wrote
    return dict(_RECORDS[pid])


def start(plan_toml: str, plan_name: str, runs_dir: str | Path, *, lock: Path | None = None,
          python: str = sys.executable, ray_address: str | None = None) -> dict[str, Any]:
    """Write the plan, launch the runner, take the lock; raise RuntimeError if one is running.

    With `ray_address` ("local", "auto" or "ray://host:port") the runner sends the cells to a
    Ray cluster (`--ray`); progress and ingestion are the same.
    """
    extra = ["--ray", ray_address.strip()] if ray_address else []
    return _launch(plan_toml, plan_name, runs_dir, extra, {}, lock, python)


def resume(run_id: str, runs_dir: str | Path, *, lock: Path | None = None, python: str = sys.executable) -> dict[str, Any]:
    """Resume an interrupted run (`runner run PLAN --resume RUN_ID`: its finished cells are kept).

    The plan file is the run's own recorded plan, written out as TOML for the command line
    (the runner reads the plan from the run directory when resuming).
    """
    import tomli_w

    run = run_dir_in(runs_dir, run_id)  # ValueError for an id that is a path elsewhere
    meta = run.read_meta()
    if meta.get("status") != "interrupted":
        raise RuntimeError(f"run {run_id} is {meta.get('status')}, not interrupted: nothing to resume")
    plan = {k: v for k, v in (meta.get("plan") or {}).items() if v is not None}
    name = str(meta.get("plan_name") or plan.get("name") or run_id)
    return _launch(tomli_w.dumps(plan), name, runs_dir, ["--resume", run_id], {"resume": run_id}, lock, python)


def measuring_refusal() -> str | None:
    """Why no run can start now because another one measures on this machine (whoever started
    it: this dashboard, a terminal, a script), from the runner's own measuring lock; None when free."""
    who = runlock.holder()
    if who is None:
        return None
    return (f"Another run is measuring on this machine: {who}. Two runs at once corrupt each other's "
            "timings: wait for it to end (or stop it), then start again.")


def _launch(plan_toml: str, plan_name: str, runs_dir: str | Path, extra: list[str], info_extra: dict[str, Any],
            lock: Path | None, python: str) -> dict[str, Any]:
    lock = lock or lock_path()
    active = read_lock(lock)
    if active:
        raise RuntimeError(f"a run is already in progress on this machine (pid {active['pid']})")
    refusal = measuring_refusal()
    if refusal:
        raise RuntimeError(refusal)
    runs_dir = Path(runs_dir).resolve()
    work = runs_dir / ".dashboard"
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in plan_name)[:40] or "plan"
    plan_file = work / f"{stamp}-{safe}.toml"
    plan_file.write_text(plan_toml)
    log_file = work / f"{stamp}-{safe}.log"
    known = [d.run_id for d in list_run_dirs(runs_dir)]
    command = [python, "-m", "runner", "run", str(plan_file), "--runs-dir", str(runs_dir), "--no-ingest", *extra]
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = runlock.open_lock_file(lock, os.O_WRONLY | os.O_CREAT)  # a planted link or file refuses the start
    try:
        with open(log_file, "w") as log:
            proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: Ctrl-C in the server's terminal does not hit it
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        _PROCS[proc.pid] = proc
        info = {"pid": proc.pid, "plan": str(plan_file), "log": str(log_file), "runs_dir": str(runs_dir),
                "known_runs": known, "started": time.time(), "plan_name": plan_name, **info_extra}
        _RECORDS[proc.pid] = info
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
    finally:
        os.close(fd)
    return dict(info)


def cancel(pid: int, grace_s: float = CANCEL_GRACE_S) -> str:
    """SIGTERM the children, then the runner (it marks the run interrupted); kill what lingers."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return "the run had already ended"
    children = parent.children(recursive=True)
    for child in children:
        try:
            child.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    try:
        parent.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        pass
    _, alive = psutil.wait_procs([parent, *children], timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    if pid in _PROCS:
        _PROCS.pop(pid).poll()
    return "cancelled" if not alive else f"cancelled ({len(alive)} process(es) had to be killed)"


def find_run_dir(info: Mapping[str, Any]) -> RunDir | None:
    """The run directory the launched runner created (the one not there before it started), or
    the one it resumes."""
    if info.get("resume"):
        run = RunDir(Path(info["runs_dir"]) / info["resume"])
        return run if run.path.is_dir() else None
    known = set(info.get("known_runs") or [])
    fresh = [d for d in list_run_dirs(info["runs_dir"]) if d.run_id not in known]
    return fresh[-1] if fresh else None


def log_tail(path: str | Path, lines: int = 12) -> list[str]:
    """Last lines of the runner's own output (errors before a run directory exists land here)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    # rich redraws its progress bar with carriage returns: keep the last state of each line
    return [line.split("\r")[-1] for line in text.splitlines() if line.strip()][-lines:]


@dataclass(frozen=True)
class LaunchOutcome:
    """How a run this dashboard launched ended: what the page shows once its process is gone."""

    ok: bool
    run_id: str | None  # the run directory it wrote, if it got that far
    message: str  # the runner's own line when it failed (refused, bad plan, crash), else a summary


def error_line(lines: list[str]) -> str | None:
    """The runner's last error line in its output: its one-line `error: ...` refusal, else the
    last line of a traceback (`SomeError: what`); None when the output holds neither."""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback"):
            return lines[-1].strip()
    return None


def launch_outcome(info: Mapping[str, Any]) -> LaunchOutcome:
    """How a launched run ended, from its exit status (where this process launched it), its
    run directory and its log; call once its process is gone.

    A run counts as ok only if its run directory says finished and the process did not exit
    non-zero; every other ending carries the runner's own last error line, so the page can
    say why where the user pressed Start (refused because another run measures, a plan the
    runner rejects, a crash before or after the run directory was written)."""
    proc = _PROCS.get(int(info.get("pid", -1)))
    code = proc.poll() if proc is not None else None
    run = find_run_dir(info)
    meta = (run.readable_meta() or {}) if run is not None else {}
    status = meta.get("status")
    lines = log_tail(info.get("log", ""), 200)
    if status == "finished" and not code:
        return LaunchOutcome(True, run.run_id, f"run {run.run_id} finished")
    why = error_line(lines)
    if why is None:
        why = (f"the runner exited with status {code}" if code else
               f"the run ended {status}" if status else "the runner ended without writing a run")
        if lines:
            why += f"; its last output: {lines[-1][:300]}"
    return LaunchOutcome(False, run.run_id if run is not None else None, why)


def _event_line(event: dict) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("ts", 0)))
    kind = event.get("event", "?")
    if kind == "cell_finished":
        status = event.get("status")
        text = f"{event.get('done')}/{event.get('total')} {status} {event.get('label', '')}"
        if status != "ok" and event.get("error"):
            text += f": {str(event['error'])[:160]}"
        return f"{stamp} {text}"
    if kind == "cell_started":
        rounds = int(event.get("rounds") or 1)
        return f"{stamp} started {event.get('label', '')}" + (
            f" (round {int(event.get('round') or 0) + 1}/{rounds})" if rounds > 1 else "")
    if kind == "round_finished":
        half = event.get("decode_half_width")  # an adaptive run's: where the cell's decode interval stands
        return (f"{stamp} round {int(event.get('round') or 0) + 1}/{event.get('rounds', '?')} done"
                + (f" (decode ±{half:.1%})" if isinstance(half, (int, float)) and half < 10 else
                   " (decode interval wider than ±1000%)" if isinstance(half, (int, float)) else ""))
    if kind == BUDGET_EVENT:
        return f"{stamp} budget of {event.get('budget_s')} s spent: the run stops here, resumable"
    return f"{stamp} {kind.replace('_', ' ')} " + (f"({event.get('done', 0)}/{event.get('total', '?')})" if "total" in event else "")


def progress(run: RunDir, now: float | None = None, recent: int = 8) -> dict[str, Any]:
    """Where a run stands, from its events.jsonl: cells and cell-rounds done, current cell,
    ETA, whether the machine is busy, recent lines.

    A protocol-2 run measures every cell in `rounds` interleaved rounds, so its first cell
    finishes only in the last round; progress therefore counts cell-rounds (a cell that
    failed or was refused counts all its rounds as done). The ETA extrapolates the pace of
    the current segment in cell-rounds (a resumed run's idle gap is not counted); the first
    round, which pays every cell's setup, sets it until later rounds bring it down.
    """
    now = time.time() if now is None else now
    events = run.events()
    meta = {}
    try:
        meta = run.read_meta()
    except (OSError, ValueError):  # absent, torn, or not a regular file (runner.runfiles.RunFileRefused)
        pass
    total = int(meta.get("n_cells_planned") or 0)
    rounds = int(meta.get("rounds") or 1)
    done, current, failed = 0, None, 0
    finished: set[str] = set()
    rounds_of: dict[str, set[int]] = {}
    segment_start, segment_units0 = None, 0
    ended = None
    load = None
    busy_samples = 0

    def units() -> int:  # cell-rounds settled: every round of a finished cell, the kept ones of the others
        return done * rounds + sum(len(r) for key, r in rounds_of.items() if key not in finished)

    for ev in events:
        kind = ev.get("event")
        total = int(ev.get("total") or total)
        if kind == "segment_started":  # a resume: the interruption before it is over
            ended = None
            done = int(ev.get("done") or 0)
            segment_start, segment_units0 = ev.get("ts"), units()
        elif kind == "cell_started":
            current = ev.get("label")
        elif kind == "round_finished":
            rounds_of.setdefault(str(ev.get("key")), set()).add(int(ev.get("round") or 0))
        elif kind == "cell_finished":
            done = int(ev.get("done") or done + 1)
            if ev.get("key"):
                finished.add(str(ev["key"]))
            current = None
            failed += ev.get("status") != "ok"
        elif kind == MACHINE_LOAD_EVENT and ev.get("sample"):
            load = ev["sample"]
            busy_samples += bool(load.get("busy"))
        elif kind in ("run_finished", "run_interrupted"):
            ended = kind
            current = None
    units_total = total * rounds
    units_done = min(units(), units_total) if units_total else units()
    eta = None
    if segment_start and ended is None and units_done > segment_units0 and units_total:
        per_unit = (now - segment_start) / (units_done - segment_units0)
        eta = per_unit * (units_total - units_done)
    status = meta.get("status") or ("finished" if ended == "run_finished" else "running")
    summary = meta.get("machine_load") or {}
    busy = None
    if status == "running" and load is not None and load.get("busy"):
        busy = f"Right now {busy_text(load)}"
    elif summary.get("busy") or (status != "running" and busy_samples):
        worst = "; ".join(busy_reasons(summary.get("worst") or load or {})) or "no reason recorded"
        busy = (f"Measured on a busy machine ({summary.get('busy_samples', busy_samples)} of "
                f"{summary.get('samples', len([e for e in events if e.get('event') == MACHINE_LOAD_EVENT]))} "
                f"load samples busy, at worst: {worst}); the cells measured then are flagged {BUSY_MACHINE_FLAG}. "
                f"To measure again: {BUSY_ADVICE}")
    precision = ((meta.get("plan") or {}).get("measure") or {}).get("precision")
    adaptive = {}
    if precision is not None:
        adaptive = adaptive_progress(meta, events, now, segment_start if ended is None else None)
        units_done, units_total = adaptive["units_done"], adaptive["units_total"]
        if ended is None:
            eta = adaptive_eta(units_done, units_total, now, segment_start, adaptive)
    return {
        "run_id": run.run_id, "status": status, "plan_name": meta.get("plan_name"), "regime": meta.get("regime"),
        "done": done, "total": total, "failed": failed, "current": current, "eta_s": eta,
        "rounds": rounds, "units_done": units_done, "units_total": units_total,
        "fraction": min(units_done / units_total, 1.0) if units_total else 0.0,
        "precision": precision, "reached": adaptive.get("reached", 0), "stop_reason": meta.get("stop_reason"),
        "busy": busy,
        "recent": [_event_line(e) for e in [e for e in events if e.get("event") != MACHINE_LOAD_EVENT][-recent:]],
    }


def adaptive_progress(meta: Mapping[str, Any], events: list[dict], now: float, segment_start: float | None) -> dict:
    """Where an adaptive run (`[measure] precision`, runner.rounds) stands: cell-rounds done, the
    cell-rounds it is expected to take (a cell that stopped counts the rounds it used; an open
    one at least min_rounds and one more than it has), cells that reached their target, and the
    seconds left of the running segment's budget_s (None without one)."""
    measure = (meta.get("plan") or {}).get("measure") or {}
    min_rounds = int(measure.get("min_rounds") or 1)
    rounds_of: dict[str, set[int]] = {}
    stopped: dict[str, dict] = {}  # key -> its latest cell_finished (a resumed budget-stopped cell finishes again)
    at_segment_start = 0  # cell-rounds done when the latest start or resume began: the pace counts from there
    for ev in events:
        key = str(ev.get("key"))
        if ev.get("event") == "round_finished":
            rounds_of.setdefault(key, set()).add(int(ev.get("round") or 0))
        elif ev.get("event") == "cell_finished":
            stopped[key] = ev
        elif ev.get("event") == "segment_started":
            at_segment_start = sum(len(r) for r in rounds_of.values())
    expected = 0
    for entry in meta.get("cells") or []:
        key, kept = str(entry.get("key")), len(rounds_of.get(str(entry.get("key")), ()))
        last = stopped.get(key)
        if last is not None and (last.get("status") != "ok" or last.get("stop_reason") != STOP_BUDGET
                                 or meta.get("status") != "running"):
            expected += kept
        else:
            expected += max(min_rounds, kept + 1)
    budget = measure.get("budget_s")
    left = max(0.0, segment_start + float(budget) - now) if budget and segment_start is not None else None
    return {"units_done": sum(len(r) for r in rounds_of.values()), "units_total": max(expected, 1),
            "segment_units0": at_segment_start,
            "reached": sum(bool(ev.get("precision_reached")) for ev in stopped.values()), "budget_left_s": left}


def adaptive_eta(units_done: int, units_total: int, now: float, segment_start: float | None,
                 adaptive: Mapping[str, Any]) -> float | None:
    """An adaptive run's ETA: the segment's pace over the cell-rounds it is expected to take,
    never past what is left of its budget; None before a pace or a budget is known."""
    eta = None
    if segment_start is not None and units_done > adaptive["segment_units0"]:
        eta = (now - segment_start) / (units_done - adaptive["segment_units0"]) * max(units_total - units_done, 0)
    left = adaptive["budget_left_s"]
    return left if eta is None else (eta if left is None else min(eta, left))


def progress_text(p: Mapping[str, Any]) -> str:
    """A run's progress in one line: cell-rounds when it has several rounds, cells, failures, ETA;
    for an adaptive run the cell-rounds so far and the cells at their precision target."""
    if p.get("precision") is not None:
        parts = [f"cell-round {p['units_done']}", f"{p['reached']}/{p['total']} cells at ±{p['precision']:.0%}",
                 f"{p['done']} / {p['total']} cells finished"]
        if p["failed"]:
            parts.append(f"{p['failed']} failed")
        if p.get("stop_reason") == STOP_BUDGET and p["status"] != "running":
            parts.append("budget spent: resume to measure further")
        else:
            parts.append(f"ETA {format_eta(p['eta_s'])}")
        return " · ".join(parts)
    parts = [f"{p['units_done']} / {p['units_total']} cell-rounds ({p['rounds']} rounds)" if p["rounds"] > 1
             else f"{p['done']} / {p['total']} cells"]
    if p["rounds"] > 1:
        parts.append(f"{p['done']} / {p['total']} cells finished")
    if p["failed"]:
        parts.append(f"{p['failed']} failed")
    parts.append(f"ETA {format_eta(p['eta_s'])}")
    return " · ".join(parts)


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every run directory under runs_dir (dashboard or CLI started), newest first."""
    return [progress(d) for d in reversed(list_run_dirs(runs_dir))]


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


RUNS_PAGE = "runs"  # the Runs page's url_path in app.py
RUN_PARAM = "run"  # the query parameter with which the Runs page opens on one run


def runs_page_path(run_id: str) -> str:
    """The Runs page opened on one run, relative to the dashboard's address: `/runs?run=ID`."""
    from urllib.parse import urlencode

    return f"/{RUNS_PAGE}?{urlencode({RUN_PARAM: run_id})}"
