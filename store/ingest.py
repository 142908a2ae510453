"""Ingestion of run directories into the store: the one place that writes runs and cells.

Idempotent, keyed by run id and cell id: a run is upserted (its status moves from running
to finished), a cell and its samples are inserted once, and replaced only where its file was
rewritten since (a later finished_at: an adaptive cell its run's budget stopped, measured
further by a resume). Each run directory is ingested in one transaction, so a reader never
sees a cell without its samples. Reads the run files through runner.runfiles (no torch), so
the dashboard can ingest runs started from the CLI.

Which columns a row has, and how each value is stored, comes from the live tables (which
init_schema has brought up to schema.sql): a run-file field named like a column reaches the
store without a list here. What is written below is only where a column's value is not a
field of the same name (a cell's configuration, its resources, defaults of older runs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from runner.models import default_inner
from runner.runfiles import RESOURCE_COLUMNS, RunDir, list_run_dirs
from store.schema import table_columns
from store.snapshot_manifest import SnapshotError
from store.snapshot_values import check_values


@dataclass
class IngestReport:
    runs: int = 0
    cells_added: int = 0
    samples_added: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per run directory left out

    def __add__(self, other: "IngestReport") -> "IngestReport":
        return IngestReport(self.runs + other.runs, self.cells_added + other.cells_added,
                            self.samples_added + other.samples_added, self.skipped + other.skipped)


class IngestError(ValueError):
    """A run directory that cannot be ingested; one line naming the directory and why."""


def _timestamp(value: str | None):
    """ISO-8601 with offset (as the runner writes) -> naive UTC, the store's convention."""
    return None if value is None else pd.Timestamp(value).tz_convert("UTC").tz_localize(None)


def _stored(value, dtype: str):
    """A run-file value as a column of this DuckDB type holds it: JSON as text (None stays
    NULL), a timestamp as naive UTC, anything else as it is."""
    if dtype == "JSON":
        return None if value is None else json.dumps(value)
    if dtype == "TIMESTAMP":
        return _timestamp(value)
    return value


def _row(values: dict, columns: dict[str, str]) -> dict:
    """One value per column of the table (`columns`: name -> type); a column the run files
    do not carry is NULL."""
    return {column: _stored(values.get(column), dtype) for column, dtype in columns.items()}


def _run_row(meta: dict, columns: dict[str, str]) -> dict:
    """The runs row of a meta.json: its fields by column name."""
    return _row(meta | {
        "calibration": meta.get("calibration") or None,  # an empty calibration measured nothing
        "protocol_version": meta.get("protocol_version") or 1,  # runs before protocol 2 did not say
    }, columns)


# What each sample tuple of `_cell_rows` holds, in order: each a column of the samples table.
SAMPLE_FIELDS = ("cell_id", "phase", "rep", "step", "latency_ms", "timer", "round", "worker")


def _cell_rows(run_id: str, record: dict, columns: dict[str, str]) -> tuple[dict, list[tuple]]:
    """The cells row and the samples (SAMPLE_FIELDS tuples) of a cell file: its result fields
    by column name, its configuration and resources unpacked."""
    cell = record["cell"]
    model = cell["model"]
    cell_id = f"{run_id}/{record['cell_key']}"
    resources = record.get("resources") or {}
    values = {
        **record,
        # absent (a run before the trackers) or null: NULL, never 0
        **{column: resources.get(column) for column in RESOURCE_COLUMNS},
        "cell_id": cell_id,
        "run_id": run_id,
        "model_name": model["name"],
        "model_source": model.get("source"),
        "n_layer": model["n_layer"],
        "n_embd": model["n_embd"],
        "n_head": model["n_head"],
        "family": model.get("family") or "gpt2",  # a run before families measured GPT-2
        "n_kv_head": model.get("n_kv_head") or model["n_head"],
        "n_inner": model.get("n_inner") or default_inner(model.get("family") or "gpt2", model["n_embd"]),
        "vocab_size": model["vocab_size"],
        "n_positions": model["n_positions"],
        "backend": cell["backend"],
        "backend_options": cell.get("backend_options") or {},
        "device": cell["device"],
        "dtype": cell["dtype"],
        "batch_size": cell["batch_size"],
        "prompt_len": cell["prompt_len"],
        "gen_len": cell["gen_len"],
        "flags": list(record.get("flags") or []),
    }
    row = _row(values, columns)
    samples = []
    if record.get("status") == "ok":
        timer = record.get("timer") or "unknown"
        workers = record.get("worker") or []

        def round_of(phase: str, rep: int) -> tuple[int | None, int | None]:
            rounds = record.get(f"{phase}_round") or []
            if rep >= len(rounds):
                return None, None  # protocol 1: one pass, no rounds
            r = rounds[rep]
            return r, (workers[r] if r < len(workers) else None)

        for rep, value in enumerate(record.get("prefill") or []):
            samples.append((cell_id, "prefill", rep, 0, value, timer, *round_of("prefill", rep)))
        for rep, steps in enumerate(record.get("decode") or []):
            r, w = round_of("decode", rep)
            for step, value in enumerate(steps):
                samples.append((cell_id, "decode", rep, step, value, timer, r, w))
        for rep, value in enumerate(record.get("e2e") or []):
            samples.append((cell_id, "e2e", rep, 0, value, timer, *round_of("e2e", rep)))
    return row, samples


def _sample_frame(samples: list[tuple], columns: dict[str, str]) -> pd.DataFrame:
    """The samples as the samples table's columns, in its order (`columns`: name -> type); a
    column the samples do not carry is NULL."""
    frame = pd.DataFrame(samples, columns=list(SAMPLE_FIELDS))
    return pd.DataFrame({column: frame[column] if column in frame else None for column in columns})


@dataclass(frozen=True)
class RunFiles:
    """What a run directory holds, read before the store is opened for writing: a run folder
    that is slow or hostile to read (a FIFO, a device) never holds the store's writer lock."""

    path: Path
    meta: dict
    records: list[dict]


def read_run(run_path: str | Path) -> RunFiles:
    """The meta and cell records of one run directory (regular files only, bounded: runner.runfiles),
    its run id checked against the directory's name; IngestError in one line otherwise."""
    run_path = Path(run_path)
    try:
        run_dir = RunDir(run_path)
        meta = run_dir.readable_meta()
        if meta is None:
            raise IngestError(f"{run_path} is not a run directory (no readable meta.json)")
        if "run_id" not in meta:
            raise IngestError(f"{run_path}: cannot ingest (KeyError: missing field 'run_id')")
        if meta["run_id"] != run_path.name:
            raise IngestError(f"{run_path}: meta.json names run {str(meta['run_id'])[:80]!r}, not the directory's "
                              "name; a run directory is named after its run id")
        # a cell file being replaced right now is left out: picked up on the next ingest
        return RunFiles(run_path, meta, run_dir.readable_cell_records())
    except IngestError:
        raise
    except (ValueError, OSError) as error:
        raise IngestError(f"{run_path}: cannot ingest ({type(error).__name__}: {str(error).splitlines()[0][:300]})") from None


def ingest_run_dir(con: duckdb.DuckDBPyConnection, run_path: str | Path) -> IngestReport:
    """Bring one run directory into the store; a second call adds nothing.

    A directory whose files cannot be stored (a missing field, a value out of a column's
    range, a run id another run already holds) raises IngestError and leaves the store as it was.
    """
    return ingest_read(con, read_run(run_path))


def ingest_read(con: duckdb.DuckDBPyConnection, files: RunFiles) -> IngestReport:
    """Store a run directory already read (`read_run`); IngestError as ingest_run_dir."""
    try:
        return _ingest_run_files(con, files)
    except IngestError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, duckdb.Error) as error:
        what = f"missing field {error}" if isinstance(error, KeyError) else str(error).splitlines()[0][:300]
        raise IngestError(f"{files.path}: cannot ingest ({type(error).__name__}: {what})") from None


def _check_same_run(con: duckdb.DuckDBPyConnection, run_path: Path, run_row: dict) -> None:
    """A run id the store holds for another run (another start time or seed: two directories
    claiming one id) is refused, never merged into the cells already stored."""
    stored = con.execute("SELECT started_at, shuffle_seed FROM runs WHERE run_id = ?", [run_row["run_id"]]).fetchall()
    if not stored:
        return
    started, seed = stored[0]
    new_started = None if run_row.get("started_at") is None else pd.Timestamp(run_row["started_at"]).to_pydatetime()
    if started != new_started or seed != run_row.get("shuffle_seed"):
        raise IngestError(f"{run_path}: run {run_row['run_id']} is already in the store from another run directory "
                          f"(started {started}); refused rather than merged")


def _ingest_run_files(con: duckdb.DuckDBPyConnection, files: RunFiles) -> IngestReport:
    run_path, meta = files.path, files.meta
    run_id = meta["run_id"]
    columns = {table: table_columns(con, table) for table in ("runs", "cells", "samples")}
    run_row = _run_row(meta, columns["runs"])
    _check_same_run(con, run_path, run_row)
    known = dict(con.execute("SELECT cell_id, finished_at FROM cells WHERE run_id = ?", [run_id]).fetchall())
    cell_rows, sample_rows, replaced = [], [], []
    for record in files.records:
        cell_id = f"{run_id}/{record['cell_key']}"
        if cell_id in known:
            # the same file again: nothing to add; a file rewritten since (an adaptive cell the run's
            # budget stopped, measured further by a resume) replaces its row and samples
            finished = _timestamp(record.get("finished_at"))
            if finished is None or known[cell_id] is None or finished.to_pydatetime() == known[cell_id]:
                continue
            replaced.append(cell_id)
        row, samples = _cell_rows(run_id, record, columns["cells"])
        cell_rows.append(row)
        sample_rows.extend(samples)

    run_frame = pd.DataFrame([run_row])  # noqa: F841 - read by DuckDB by name
    cell_frame = pd.DataFrame(cell_rows, columns=list(columns["cells"]))  # noqa: F841
    sample_frame = _sample_frame(sample_rows, columns["samples"])  # noqa: F841
    _check_rows(run_path, {"runs": run_frame, "cells": cell_frame, "samples": sample_frame})
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        con.execute("INSERT INTO runs BY NAME SELECT * FROM run_frame")
        if replaced:
            con.execute("DELETE FROM samples WHERE list_contains(?, cell_id)", [replaced])
            con.execute("DELETE FROM cells WHERE list_contains(?, cell_id)", [replaced])
        if cell_rows:
            con.execute("INSERT INTO cells BY NAME SELECT * FROM cell_frame")
        if sample_rows:
            con.execute("INSERT INTO samples BY NAME SELECT * FROM sample_frame")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return IngestReport(runs=1, cells_added=len(cell_rows), samples_added=len(sample_rows))


def _check_rows(run_path: Path, frames: dict[str, pd.DataFrame]) -> None:
    """The rows about to be stored pass the checks a snapshot's rows pass on import
    (store.snapshot_values): ingest and import accept exactly the same values, so whatever the
    store holds can be exported and imported again."""
    try:
        check_values({table: pa.Table.from_pandas(frame, preserve_index=False) for table, frame in frames.items()
                      if len(frame)})
    except SnapshotError as error:
        raise IngestError(f"{run_path}: cannot ingest: {error}") from None


def read_runs(runs_dir: str | Path) -> tuple[list[RunFiles], list[str]]:
    """Every run directory under runs_dir, read (`read_run`), and one line per directory that
    could not be: what `ingest_runs` stores, read before the store is opened."""
    read, skipped = [], []
    for run_dir in list_run_dirs(runs_dir):
        try:
            read.append(read_run(run_dir.path))
        except IngestError as error:  # one bad run must not hide the runs after it
            skipped.append(str(error))
    return read, skipped


def ingest_all(con: duckdb.DuckDBPyConnection, read: list[RunFiles], skipped: list[str] | None = None) -> IngestReport:
    """Store run directories already read; one that cannot be stored is named in `skipped`."""
    report = IngestReport(skipped=list(skipped or []))
    for files in read:
        try:
            report = report + ingest_read(con, files)
        except IngestError as error:
            report = report + IngestReport(skipped=[str(error)])
    return report


def ingest_runs(con: duckdb.DuckDBPyConnection, runs_dir: str | Path) -> IngestReport:
    """Ingest every run directory under runs_dir (finished, interrupted or still running).

    A run directory that cannot be ingested is left out and named in `report.skipped`;
    the others are ingested all the same.
    """
    return ingest_all(con, *read_runs(runs_dir))
