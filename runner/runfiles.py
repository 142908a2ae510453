"""The run directory: what the runner writes as it goes, and the only thing it writes.

    <runs_dir>/<run_id>/meta.json          run record (`run_meta`; rewritten atomically on status change)
    <runs_dir>/<run_id>/events.jsonl       append-only progress log (one JSON object a line)
    <runs_dir>/<run_id>/cells/<key>.json   one finished cell (`cell_record`): its columns and raw samples
    <runs_dir>/<run_id>/rounds/<key>.r<N>.json  a finished round of a cell not finished yet
    <runs_dir>/<run_id>/.space-reserve     disk space held while the run runs (`RunDir.reserve_space`)

Every file is written to a temporary name and renamed, so a kill -9 leaves either the old
or the new file, never half of one: a killed run loses at most the cell in flight. A running
run holds a little disk space, released just before the writes that end it, so a disk the
run fills can never leave it marked running. The store ingests these files; the runner never
opens the database.

This module is the format's one room: the executors write through it, the store's
ingestion and the dashboard read through it, and it imports neither torch nor duckdb.
The integrity flags live here too, since they are computed from a record's raw samples.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import statistics
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from vocabulary import BUSY_MACHINE_FLAG, STOP_BUDGET

FORMAT_VERSION = 1
# A run file is a few KB to a few MB (a meta.json planning 20,000 cells, a cell with 10,000
# decode steps); past this it is not one this runner wrote.
MAX_RUN_FILE_BYTES = 256 << 20
# The space a running run holds for the writes that end it (the last meta.json and the closing
# event): meta.json's own size, since the new file is written before the old one goes, plus
# what the end adds to it (the machine-load summary, a Ray node's environment: a few KB) and
# the event line, with room to spare for the filesystem's own blocks.
SPACE_RESERVE_MARGIN = 256 << 10
# A run id as the runner makes it and the store accepts it (store.snapshot_values): it is also
# the run directory's name, so it can never name a path outside the runs folder.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


class RunFileRefused(ValueError):
    """A run file that is not a regular file or is too large to be one; one line naming it."""


def read_run_file(path: Path, limit: int = MAX_RUN_FILE_BYTES) -> bytes:
    """The bytes of a run file, read only if it is a regular file (a FIFO, a device such as
    /dev/zero, or a directory is refused at once, without blocking) of at most `limit` bytes.
    OSError where it is absent or unreadable."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RunFileRefused(f"{path} is not a regular file; refused")
        if info.st_size > limit:
            raise RunFileRefused(f"{path} holds {info.st_size} bytes, over the {limit} a run file may; refused")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise RunFileRefused(f"{path} grew past the {limit} bytes a run file may; refused")
        return data
    finally:
        os.close(fd)


def run_dir_in(runs_dir: str | Path, run_id: str) -> "RunDir":
    """The run directory of `run_id` under `runs_dir`; ValueError for an id that is not a run
    id (a path such as ../elsewhere), so nothing outside the runs folder is ever read or written."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(f"{run_id!r} is not a run id (letters, digits and ._:- only)")
    root = Path(runs_dir).resolve()
    path = (root / run_id).resolve()
    if path.parent != root:
        raise ValueError(f"run {run_id!r} is not a directory of {runs_dir}")
    return RunDir(path)

# An events.jsonl line of this kind holds one machine-load sample (runner.machine_load) under
# "sample", with where it was taken ("at": run_start, round_start, round_end; key and round).
MACHINE_LOAD_EVENT = "machine_load"
# An events.jsonl line of this kind: an adaptive plan's budget_s ended this start or resume
# ("budget_s", and the cells "done" of the "total"); the run then ends interrupted, resumable.
BUDGET_EVENT = "budget_spent"

# A cell file's "resources" field: memory and energy of the cell (runner.trackers writes it,
# store.ingest reads it). A key that is absent or null means unknown, never zero:
#   weight_bytes, kv_cache_bytes          from the shape (see runner.trackers for the formulas)
#   peak_allocated_bytes, peak_reserved_bytes, peak_rss_bytes
#                                         the largest of the phases' peaks below
#   energy_source                         one of ENERGY_SOURCES, null where no counter is readable
#   device_memory                         who reported the device peaks, or why nobody did
#   rss_scope                             "phase" (peak reset per phase) or "process" (lifetime peak)
#   kv_cache_reserved_bytes               (vllm only) the KV cache the engine reports it reserved
#   phases: {phase: {<PEAK_FIELDS>, <WORKING_FIELDS>: max over rounds, <ENERGY_FIELDS>: one value per round}}
# The top-level keys in RESOURCE_COLUMNS are also columns of the store's cells table.
PEAK_FIELDS = ("peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_bytes")
# Per phase only: the peak above what was resident when the window began (device allocator
# on cuda, process RSS on the CPU). A round holds every cell of the round at once, so the
# absolute peaks above are the round's; these are what the phase itself adds.
WORKING_FIELDS = ("working_allocated_bytes", "working_rss_bytes")
# energy_j over a window of `calls` repetitions of the phase's operation lasting energy_s seconds
ENERGY_FIELDS = ("energy_j", "energy_s", "calls")
RESOURCE_COLUMNS = ("weight_bytes", "kv_cache_bytes", *PEAK_FIELDS, "energy_source")
ENERGY_SOURCES = ("nvml", "rapl")


# Early samples this far above the median mean setup work leaked into the phase.
SETUP_LEAK_FACTOR = 2.0
# An SM clock this far below its reading before the cell means the GPU throttled.
CLOCK_DROP_FRACTION = 0.9
# Round medians of one cell this far apart: the host, not the sample noise, moved the number.
ROUND_SHIFT = 1.10


@dataclass
class CellResult:
    """Everything stored for one cell: the columns of `cells` and the raw samples."""

    status: str  # ok | failed | unsupported
    error: str | None = None
    params: int | None = None
    setup_s: float | None = None
    cold_ms: float | None = None
    warmup_iters: int | None = None
    warmup_s: float | None = None
    warmup_converged: bool | None = None
    measured_s: float | None = None
    check_s: float | None = None
    flags: list[str] = field(default_factory=list)
    correctness: dict | None = None
    telemetry: dict | None = None
    profile: dict | None = None
    timer: str | None = None
    prefill: list[float] = field(default_factory=list)
    decode: list[list[float]] = field(default_factory=list)  # per rep, one value per step
    e2e: list[float] = field(default_factory=list)
    # protocol v2: the round of every prefill / decode rep / e2e sample, the worker pid of each round
    prefill_round: list[int] = field(default_factory=list)
    decode_round: list[int] = field(default_factory=list)
    e2e_round: list[int] = field(default_factory=list)
    worker: list[int | None] = field(default_factory=list)
    host_launch_us: list[float] = field(default_factory=list)  # before / after each round
    resources: dict | None = None  # memory and energy ("resources" above; runner.trackers)
    # True when a machine-load sample covering one of its rounds was busy (runner.machine_load);
    # None where nothing was sampled (runs before the sampler, whole-cell engines)
    machine_busy: bool | None = None
    # Rounds (runner.rounds): how many the cell used, and the relative half-width of the 95% t
    # interval of its decode median across them (0.03: +-3%; None below two rounds). With
    # `[measure] precision`, whether it reached the target and why it stopped (vocabulary.STOP_REASONS);
    # None in a plan of fixed rounds.
    rounds_used: int | None = None
    decode_half_width: float | None = None
    precision_reached: bool | None = None
    stop_reason: str | None = None


def planned_cell(key: str, order_index: int, cell: dict) -> dict:
    """One entry of meta.json's "cells": a planned cell at its place in the run's order."""
    return {"key": key, "order_index": order_index, "cell": cell}


def run_meta(*, run_id: str, series_id: str | None, plan: dict, started_at: str, environment: dict,
             regime: str, device_kind: str, tool_version: str, git_revision: str | None,
             shuffle_seed: int, cells: list[dict], protocol_version: int, **extra) -> dict:
    """The content of a new run's meta.json (`cells` from `planned_cell`, in run order);
    `extra` adds fields only some runs have (executor, calibration, cloned_from)."""
    return {
        "run_id": run_id,
        "series_id": series_id,
        "plan_name": plan["name"],
        "plan": plan,
        "started_at": started_at,
        "finished_at": None,
        "status": "running",
        "environment": environment,
        "regime": regime,
        "device_kind": device_kind,
        "tool_version": tool_version,
        "git_revision": git_revision,
        "shuffle_seed": shuffle_seed,
        "input_seed": plan["seed"],
        "n_cells_planned": len(cells),
        "protocol_version": protocol_version,
        "rounds": planned_rounds(plan["measure"]),
        **extra,
        "cells": cells,
    }


def planned_rounds(measure: dict) -> int:
    """The most rounds a cell of a plan's `[measure]` (as a dict) takes: `rounds`, or with a
    precision target `max_rounds` (meta.json's "rounds", what a resume is checked against)."""
    return int(measure["max_rounds"] if measure.get("precision") is not None else measure["rounds"])


def cell_record(entry: dict, result: CellResult, started_at: str, finished_at: str | None = None) -> dict:
    """The content of cells/<key>.json: the planned entry (`planned_cell`) and its result."""
    from dataclasses import asdict

    return {"cell_key": entry["key"], "order_index": entry["order_index"], "cell": entry["cell"],
            "started_at": started_at, "finished_at": finished_at or now_iso(), **asdict(result)}


def summary_of(record: dict) -> dict:
    """Medians of a cell record for the progress log (the store computes the real statistics),
    and the rounds it used with its decode interval's half-width and, with a precision target,
    whether it reached it (what the CLI's and the Run page's progress count)."""
    out = {name: record[name] for name in ("rounds_used", "decode_half_width", "precision_reached", "stop_reason")
           if record.get(name) is not None}
    if record.get("decode"):
        out["decode_ms_per_token"] = statistics.median([v for rep in record["decode"] for v in rep])
    if record.get("prefill"):
        out["prefill_ms"] = statistics.median(record["prefill"])
    return out


def decode_round_medians(record: Mapping) -> list[float]:
    """The median decode step of each round of a record (its "decode" generations and their
    "decode_round"; reps without a round are round 0), in round order: what
    analysis.load.round_medians computes from the stored samples, so the runner, the run's own
    results and the store agree on the units a decode interval rests on."""
    reps = record.get("decode") or []
    rounds = list(record.get("decode_round") or [])
    rounds += [0] * (len(reps) - len(rounds))
    steps: dict[int, list[float]] = {}
    for rep, rnd in zip(reps, rounds):
        steps.setdefault(0 if rnd is None else int(rnd), []).extend(rep)
    return [statistics.median(values) for _, values in sorted(steps.items()) if values]


def robust_cv(values: list[float]) -> float:
    """1.4826 x MAD / median: the spread that matters for a median, blind to rare outliers.

    Launch-bound GPU decode has heavy host-side outliers; they inflate the plain CV of
    almost every eager cell without moving the median the analysis uses. The plain CV is
    still computed by the analysis from the raw samples.
    """
    if len(values) < 2:
        return 0.0
    med = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - med) for v in values) / med


def units_by_round(phase: str, values: list, rounds: list | None) -> dict[int, list[float]]:
    """A phase's independent units grouped by the round that measured them.

    Rounds, not samples, are the independent units of protocol 2, so every reader that
    resamples, compares or flags goes through this one grouping. A decode generation counts
    as one unit (the median of its steps: steps within one generation are autocorrelated).
    Values without a round (protocol 1 records carry no round lists) form round 0."""
    rounds = list(rounds or [])
    rounds += [0] * (len(values) - len(rounds))
    out: dict[int, list[float]] = {}
    for value, rnd in zip(values, rounds):
        if phase == "decode":
            if not value:
                continue
            value = statistics.median(value)
        if rnd is not None:
            out.setdefault(rnd, []).append(value)
    return dict(sorted(out.items()))


def round_shift(result: CellResult) -> dict[str, float]:
    """Per phase, max/min of its round medians (1.0 with fewer than two rounds).

    Per phase, because a cell's phases differ in what moves them: on the GPU a cuda-graph
    cell's decode is steady across rounds while its eager prefill is not, and a cell-level
    flag fired on almost every cell (41 of 42 in an H200 seed run), predicting nothing."""
    shifts = {}
    for phase in ("prefill", "decode", "e2e"):
        by_round = units_by_round(phase, getattr(result, phase), getattr(result, f"{phase}_round"))
        medians = [statistics.median(v) for v in by_round.values() if v]
        shifts[phase] = max(medians) / min(medians) if len(medians) >= 2 and min(medians) > 0 else 1.0
    return shifts


def integrity_flags(result: CellResult, settings) -> list[str]:
    """Flags shown next to the numbers; an empty list means nothing looked wrong.

    `settings` is the plan's `[measure]` (runner.plan.MeasureSettings): its cv_threshold
    and min_samples are read."""
    flags = []
    decode_flat = [v for rep in result.decode for v in rep]
    phases = {"prefill": result.prefill, "decode": decode_flat, "e2e": result.e2e}
    if any(robust_cv(v) > settings.cv_threshold for v in phases.values() if len(v) > 1):
        flags.append("high_cv")
    # warm-up convergence is recorded per cell (warmup_converged) but is no flag: it failed on
    # most cuda-graph cells, the most reproducible backend, so it predicted nothing.
    # round_shift_<phase>: that phase's round medians more than 10% apart. Measured on the
    # H200 (README, protocol 2): decode cell-phases so flagged moved 16-22% between runs,
    # unflagged ones 1-2%. The host's launch cost (host_launch_us, per round) stays recorded
    # but is no flag: a shift of it fired on most cells and did not predict a re-run.
    flags += [f"round_shift_{phase}" for phase, shift in round_shift(result).items() if shift > ROUND_SHIFT]
    for samples in (result.prefill, decode_flat):
        if len(samples) >= 6:
            med = statistics.median(samples)
            if sum(samples[:3]) / 3 > SETUP_LEAK_FACTOR * med:
                flags.append("setup_leak")
                break
    if any(len(v) < settings.min_samples for v in (result.prefill, decode_flat)):
        flags.append("too_few_samples")
    tele = result.telemetry or {}
    before, after = tele.get("before") or {}, tele.get("after") or {}
    if before.get("sm_clock_mhz") and after.get("sm_clock_mhz"):
        if after["sm_clock_mhz"] < CLOCK_DROP_FRACTION * before["sm_clock_mhz"]:
            flags.append("clock_drop")
    if before.get("foreign_pids") or after.get("foreign_pids"):
        flags.append("foreign_gpu_process")
    if result.correctness is not None and not result.correctness["ok"]:
        flags.append("output_mismatch")
    if result.machine_busy:
        flags.append(BUSY_MACHINE_FLAG)
    return flags


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk (ENOSPC) or a kill: leave no temp file behind
        tmp.unlink(missing_ok=True)
        raise


class RunSignature(NamedTuple):
    """What changes in a run directory as it progresses, read without opening a file: a
    reader polling for new results compares signatures instead of re-reading the files."""

    meta_mtime_ns: int  # meta.json is rewritten (atomically) on every status change
    n_cells: int  # a finished cell adds one file under cells/; rounds/ are not stored, so not counted


class RunDir:
    """Reads and writes one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.cells_dir = self.path / "cells"
        self.meta_file = self.path / "meta.json"
        self.events_file = self.path / "events.jsonl"
        self.rounds_dir = self.path / "rounds"
        self.reserve_file = self.path / ".space-reserve"

    @property
    def run_id(self) -> str:
        return self.path.name

    def create(self, meta: dict) -> None:
        """Make the run directory: its meta.json and its space reserve. OSError where the disk
        cannot hold both, and then nothing of the directory is left."""
        self.cells_dir.mkdir(parents=True, exist_ok=False)
        meta = meta | {"format_version": FORMAT_VERSION}
        try:
            self.reserve_space(len(json.dumps(meta, separators=(",", ":")).encode()))
            self.write_meta(meta)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def reserve_space(self, meta_bytes: int | None = None) -> None:
        """Hold disk space for the writes that end the run (`release_space` gives it back just
        before them): a file of `meta_bytes` (meta.json's size) + SPACE_RESERVE_MARGIN bytes.

        The bytes are random and synced, so a filesystem that compresses or defers allocation
        holds the space too. A reserve already that large (a killed run's, on resume) is kept.
        OSError (ENOSPC) where the disk cannot hold it; the disk is then left as it was."""
        if meta_bytes is None:
            meta_bytes = self.meta_file.stat().st_size
        want = meta_bytes + SPACE_RESERVE_MARGIN
        fd = os.open(self.reserve_file, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            have = os.fstat(fd).st_size
            try:
                offset = have
                while offset < want:
                    offset += os.pwrite(fd, os.urandom(min(want - offset, 1 << 20)), offset)
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, have)  # give back what this call took
                if not have:
                    self.reserve_file.unlink(missing_ok=True)
                raise
        finally:
            os.close(fd)

    def release_space(self) -> None:
        """Give back the space `reserve_space` held, for the writes that end the run."""
        self.reserve_file.unlink(missing_ok=True)

    def exists(self) -> bool:
        return self.meta_file.exists()

    def remove_temp_files(self) -> int:
        """Delete temp files a killed writer left (write_json_atomic's `.NAME.PID.tmp`)."""
        stale = [*self.path.glob(".*.tmp"), *self.cells_dir.glob(".*.tmp")]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def read_meta(self) -> dict:
        return json.loads(read_run_file(self.meta_file))

    def readable_meta(self) -> dict | None:
        """The meta, or None where it cannot be read (absent, or not a JSON object)."""
        meta = _read_json_or_none(self.meta_file)
        return meta if isinstance(meta, dict) else None

    def write_meta(self, meta: dict) -> None:
        write_json_atomic(self.meta_file, meta)

    def update_meta(self, **changes) -> dict:
        meta = self.read_meta() | changes
        self.write_meta(meta)
        return meta

    def event(self, kind: str, **fields) -> None:
        """Append one progress event; a torn last line (kill mid-write) is skipped on read.

        A write the disk refuses is taken back whole (OSError), so no torn line is left for
        the next event to run into."""
        line = json.dumps({"ts": time.time(), "event": kind, **fields}, separators=(",", ":")) + "\n"
        fd = os.open(self.events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            end = os.fstat(fd).st_size
            try:
                data = memoryview(line.encode())
                while data:
                    data = data[os.write(fd, data):]
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)

    def events(self) -> list[dict]:
        try:
            text = read_run_file(self.events_file).decode("utf-8", errors="replace")
        except (OSError, RunFileRefused):
            return []  # not written yet, or not a file this runner wrote: no progress to show
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def machine_load_samples(self) -> list[dict]:
        """The machine-load samples the run recorded (MACHINE_LOAD_EVENT), in order."""
        return [e["sample"] for e in self.events() if e.get("event") == MACHINE_LOAD_EVENT and e.get("sample")]

    def active_seconds(self) -> float:
        """How long the run was running: the sum of its segments (a start or a resume up to its
        finish or interruption; a segment killed without either, up to its last event), so a run
        resumed in a later session does not count the hours it waited between sessions."""
        total, opened, last = 0.0, None, None
        for event in self.events():
            kind, ts = event.get("event"), event.get("ts")
            if kind in ("run_started", "segment_started"):
                if opened is not None and last != opened:  # the segment before ended without an event
                    total += last - opened
                    opened = None
                opened = ts if opened is None else opened  # run_started then segment_started: one start
            elif kind in ("run_finished", "run_interrupted") and opened is not None:
                total += ts - opened
                opened = None
            last = ts
        if opened is not None and last is not None:
            total += last - opened
        return total

    def write_cell(self, cell_key: str, record: dict) -> None:
        write_json_atomic(self.cells_dir / f"{cell_key}.json", record)

    def write_round(self, cell_key: str, round_index: int, record: dict) -> None:
        """One finished round of a cell not finished yet (protocol v2): a kill loses at most
        the round in flight; the cell file replaces these once its last round is done."""
        self.rounds_dir.mkdir(exist_ok=True)
        write_json_atomic(self.rounds_dir / f"{cell_key}.r{round_index}.json", record)

    def round_records(self, reopened: set[str] = frozenset()) -> dict[str, dict[int, dict]]:
        """{cell_key: {round: record}} of rounds kept for cells that have no cell file yet, and
        for the `reopened` ones (budget-stopped cells a resume measures further)."""
        out: dict[str, dict[int, dict]] = {}
        finished = self.finished_keys() - set(reopened)
        for path in sorted(self.rounds_dir.glob("*.json")) if self.rounds_dir.is_dir() else []:
            key, _, index = path.stem.rpartition(".r")
            if key in finished or not index.isdigit():
                continue
            try:
                out.setdefault(key, {})[int(index)] = json.loads(read_run_file(path))
            except (OSError, RunFileRefused, json.JSONDecodeError):
                continue  # torn by a kill mid-write: that round is measured again
        return out

    def reopenable_keys(self) -> set[str]:
        """Cells whose file says the run's budget stopped them (STOP_BUDGET): a resume measures
        them further from their kept round files, which `record_cell` leaves for exactly this."""
        return {record["cell_key"] for record in self.readable_cell_records()
                if record.get("stop_reason") == STOP_BUDGET and record.get("status") == "ok"}

    def clear_rounds(self, cell_key: str) -> None:
        for path in self.rounds_dir.glob(f"{cell_key}.r*.json"):
            path.unlink(missing_ok=True)

    def signature(self) -> RunSignature:
        """The run's progress as `RunSignature`; (0, 0) parts where a file is not there yet."""
        try:
            meta_mtime = self.meta_file.stat().st_mtime_ns
        except OSError:
            meta_mtime = 0
        return RunSignature(meta_mtime, len(self.finished_keys()) if self.cells_dir.is_dir() else 0)

    def finished_keys(self) -> set[str]:
        return {p.stem for p in self.cells_dir.glob("*.json")}

    def cell_records(self) -> list[dict]:
        records = []
        for path in sorted(self.cells_dir.glob("*.json")):
            records.append(json.loads(read_run_file(path)))
        return records

    def readable_cell_records(self) -> list[dict]:
        """The cell records, in key order, without any that cannot be read right now (a
        reader racing a writer: the next read picks it up). A cell file that is no regular file
        or is too large raises RunFileRefused: it is not a file being written, and never will be."""
        records = (_read_json_or_none(path) for path in sorted(self.cells_dir.glob("*.json")))
        return [record for record in records if record is not None]


def _read_json_or_none(path: Path):
    try:
        return json.loads(read_run_file(path))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # absent, or a file being replaced right now


def list_run_dirs(runs_dir: str | Path) -> list[RunDir]:
    """The run directories under runs_dir (those with a meta.json), in name order."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return [run for run in map(RunDir, sorted(root.iterdir())) if run.exists()]


def changed_run_dirs(runs_dir: str | Path, seen: Mapping[str, RunSignature]) -> list[tuple[RunDir, RunSignature]]:
    """Run directories whose signature differs from `seen` (str(path) -> signature), with
    their new signature: what a poller has to read again."""
    changed = ((run, run.signature()) for run in list_run_dirs(runs_dir))
    return [(run, sig) for run, sig in changed if seen.get(str(run.path)) != sig]
