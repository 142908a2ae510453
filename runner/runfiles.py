"""The run directory: what the runner writes as it goes, and the only thing it writes.

    <runs_dir>/<run_id>/meta.json          run record (rewritten atomically on status change)
    <runs_dir>/<run_id>/events.jsonl       append-only progress log (one JSON object a line)
    <runs_dir>/<run_id>/cells/<key>.json   one finished cell: its columns and raw samples

Every file is written to a temporary name and renamed, so a kill -9 leaves either the old
or the new file, never half of one: a killed run loses at most the cell in flight. The
store ingests these files; the runner never opens the database.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

FORMAT_VERSION = 1

# A cell file's "resources" field: memory and energy of the cell (runner.trackers writes it,
# store.ingest reads it). A key that is absent or null means unknown, never zero:
#   weight_bytes, kv_cache_bytes          from the shape (see runner.trackers for the formulas)
#   peak_allocated_bytes, peak_reserved_bytes, peak_rss_bytes
#                                         the largest of the phases' peaks below
#   energy_source                         one of ENERGY_SOURCES, null where no counter is readable
#   device_memory                         who reported the device peaks, or why nobody did
#   rss_scope                             "phase" (peak reset per phase) or "process" (lifetime peak)
#   kv_cache_reserved_bytes               (vllm only) the KV cache the engine reports it reserved
#   phases: {phase: {<PEAK_FIELDS>: max over rounds, <ENERGY_FIELDS>: one value per round}}
# The top-level keys in RESOURCE_COLUMNS are also columns of the store's cells table.
PEAK_FIELDS = ("peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_bytes")
# energy_j over a window of `calls` repetitions of the phase's operation lasting energy_s seconds
ENERGY_FIELDS = ("energy_j", "energy_s", "calls")
RESOURCE_COLUMNS = ("weight_bytes", "kv_cache_bytes", *PEAK_FIELDS, "energy_source")
ENERGY_SOURCES = ("nvml", "rapl")


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


class RunDir:
    """Reads and writes one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.cells_dir = self.path / "cells"
        self.meta_file = self.path / "meta.json"
        self.events_file = self.path / "events.jsonl"

    @property
    def run_id(self) -> str:
        return self.path.name

    def create(self, meta: dict) -> None:
        self.cells_dir.mkdir(parents=True, exist_ok=False)
        self.write_meta(meta | {"format_version": FORMAT_VERSION})

    def exists(self) -> bool:
        return self.meta_file.exists()

    def remove_temp_files(self) -> int:
        """Delete temp files a killed writer left (write_json_atomic's `.NAME.PID.tmp`)."""
        stale = [*self.path.glob(".*.tmp"), *self.cells_dir.glob(".*.tmp")]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def read_meta(self) -> dict:
        return json.loads(self.meta_file.read_text())

    def write_meta(self, meta: dict) -> None:
        write_json_atomic(self.meta_file, meta)

    def update_meta(self, **changes) -> dict:
        meta = self.read_meta() | changes
        self.write_meta(meta)
        return meta

    def event(self, kind: str, **fields) -> None:
        """Append one progress event; a torn last line (kill mid-write) is skipped on read."""
        line = json.dumps({"ts": time.time(), "event": kind, **fields}, separators=(",", ":"))
        with open(self.events_file, "a") as handle:
            handle.write(line + "\n")

    def events(self) -> list[dict]:
        if not self.events_file.exists():
            return []
        out = []
        for line in self.events_file.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def write_cell(self, cell_key: str, record: dict) -> None:
        write_json_atomic(self.cells_dir / f"{cell_key}.json", record)

    def write_round(self, cell_key: str, round_index: int, record: dict) -> None:
        """One finished round of a cell not finished yet (protocol v2): a kill loses at most
        the round in flight; the cell file replaces these once its last round is done."""
        rounds_dir = self.path / "rounds"
        rounds_dir.mkdir(exist_ok=True)
        write_json_atomic(rounds_dir / f"{cell_key}.r{round_index}.json", record)

    def round_records(self) -> dict[str, dict[int, dict]]:
        """{cell_key: {round: record}} of rounds kept for cells that have no cell file yet."""
        out: dict[str, dict[int, dict]] = {}
        rounds_dir = self.path / "rounds"
        finished = self.finished_keys()
        for path in sorted(rounds_dir.glob("*.json")) if rounds_dir.is_dir() else []:
            key, _, index = path.stem.rpartition(".r")
            if key in finished or not index.isdigit():
                continue
            try:
                out.setdefault(key, {})[int(index)] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # torn by a kill mid-write: that round is measured again
        return out

    def clear_rounds(self, cell_key: str) -> None:
        for path in (self.path / "rounds").glob(f"{cell_key}.r*.json"):
            path.unlink(missing_ok=True)

    def finished_keys(self) -> set[str]:
        return {p.stem for p in self.cells_dir.glob("*.json")}

    def cell_records(self) -> list[dict]:
        records = []
        for path in sorted(self.cells_dir.glob("*.json")):
            records.append(json.loads(path.read_text()))
        return records


def list_run_dirs(runs_dir: str | Path) -> list[RunDir]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return [RunDir(p) for p in sorted(root.iterdir()) if (p / "meta.json").exists()]
