"""Snapshots: export a selection of the store, merge one into a store, or open one in memory.

A snapshot is how measurements travel between machines and how the hosted dashboard gets
its data, so import is strict (see store.snapshot_read) and merging is idempotent: runs,
cells and samples are keyed, rows already present are left alone, and the only update is a
run that was still `running` when one snapshot was taken and has since ended. The same key
with different content is a conflict: refused whole, never mixed into the local rows.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Collection, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from store import kept
from store.db import connect_memory
from store.kept import KEPT_FILE, KeptResult
from store.schema import TABLES, stored_schema_version, table_columns
from store.snapshot_manifest import (
    MANIFEST_NAME, SNAPSHOT_FORMAT_VERSION, Manifest, SnapshotError, table_file, tool_version,
)
from store.snapshot_read import (
    LOCAL_LIMITS, TABLE_KEYS, UPLOAD_LIMITS, Limits, LoadedSnapshot, load_snapshot,
)

__all__ = [
    "SNAPSHOT_FORMAT_VERSION", "Manifest", "ImportReport", "SnapshotError", "Limits",
    "LOCAL_LIMITS", "UPLOAD_LIMITS", "export_snapshot", "export_snapshot_bytes",
    "import_snapshot", "open_snapshot", "open_snapshot_bytes",
]


def _q(name: str) -> str:
    """Quote an identifier; only ever applied to names from the store's own schema."""
    return '"' + name.replace('"', '""') + '"'


# --- export ---------------------------------------------------------------------------

# Computes the results to keep from a snapshot's rows, opened in memory (dashboard.results.derive).
Derive = Callable[[duckdb.DuckDBPyConnection], list[KeptResult]]


def _as_list(values: Sequence[str] | None) -> list[str] | None:
    """A filter as a sorted list; a bare string would silently filter on its characters."""
    if values is None:
        return None
    if isinstance(values, str):
        raise ValueError(f"a filter takes a list of names, got the string {values!r}")
    return sorted(values)


def _selection(con: duckdb.DuckDBPyConnection, regimes, run_ids, backends) -> dict[str, pa.Table]:
    """The rows a filtered export holds: runs by regime and id, cells by backend, and
    only runs that keep at least one cell when a backend filter is given."""
    params = {"regimes": _as_list(regimes), "run_ids": _as_list(run_ids), "backends": _as_list(backends)}
    cell_ok = "($backends::VARCHAR[] IS NULL OR list_contains($backends::VARCHAR[], c.backend))"
    run_ok = (
        "($regimes::VARCHAR[] IS NULL OR list_contains($regimes::VARCHAR[], r.regime)) AND "
        "($run_ids::VARCHAR[] IS NULL OR list_contains($run_ids::VARCHAR[], r.run_id))"
    )
    cells_where = f"c.run_id IN (SELECT r.run_id FROM runs r WHERE {run_ok}) AND {cell_ok}"
    queries = {
        "runs": f"SELECT r.* FROM runs r WHERE {run_ok} AND ($backends::VARCHAR[] IS NULL OR "
                f"r.run_id IN (SELECT c.run_id FROM cells c WHERE {cell_ok})) ORDER BY r.run_id",
        "cells": f"SELECT c.* FROM cells c WHERE {cells_where} ORDER BY c.cell_id",
        "samples": f"SELECT s.* FROM samples s WHERE s.cell_id IN "
                   f"(SELECT c.cell_id FROM cells c WHERE {cells_where}) "
                   "ORDER BY s.cell_id, s.phase, s.rep, s.step",
    }
    out = {}
    for table, sql in queries.items():
        # Bind only the parameters a query uses: DuckDB refuses unused named parameters.
        used = {k: v for k, v in params.items() if f"${k}" in sql}
        out[table] = con.sql(sql, params=used or None).to_arrow_table()
    return out


def _snapshot_files(con, regimes, run_ids, backends, derive: Derive | None = None) -> tuple[Manifest, dict[str, bytes]]:
    tables = _selection(con, regimes, run_ids, backends)
    files = {}
    for table, tbl in tables.items():
        buf = io.BytesIO()
        pq.write_table(tbl, buf, compression="zstd")
        files[table_file(table)] = buf.getvalue()
    manifest = _manifest(con, tables, files, regimes, run_ids, backends)
    if derive is not None:
        # Computed on the snapshot as a reader opens it (same rows, same types), so the
        # content id in each key is the one the dashboard computes when it opens the export.
        snap = _open(_zip_bytes(manifest, files), LOCAL_LIMITS)
        try:
            kept_bytes = kept.file_bytes(derive(snap))
        finally:
            snap.close()
        files[KEPT_FILE] = kept_bytes
        manifest = manifest.model_copy(update={"derived": {"sha256": hashlib.sha256(kept_bytes).hexdigest(),
                                                           "bytes": len(kept_bytes)}})
    return manifest, files


def _manifest(con, tables: dict[str, pa.Table], files: dict[str, bytes], regimes, run_ids, backends) -> Manifest:
    return Manifest(
        created_at=Manifest.now(),
        tool_version=tool_version(),
        # the version the exported tables are at: an older store read without upgrading
        # exports its own version, and an import adds what it lacks as NULL
        schema_version=stored_schema_version(con),
        regimes=sorted(set(tables["runs"]["regime"].to_pylist())),
        row_counts={t: tbl.num_rows for t, tbl in tables.items()},
        files={n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in files.items()},
        filters={"regimes": _as_list(regimes), "run_ids": _as_list(run_ids),
                 "backends": _as_list(backends)},
    )


def _zip_bytes(manifest: Manifest, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            # Parquet is zstd inside already: store it rather than deflate it again.
            zf.writestr(name, data, compress_type=zipfile.ZIP_STORED)
        zf.writestr(MANIFEST_NAME, manifest.to_json(), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def export_snapshot(
    con: duckdb.DuckDBPyConnection,
    out: str | Path,
    *,
    regimes: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    derive: Derive | None = None,
) -> Manifest:
    """Write a snapshot to `out`: a single zip when it ends in .zip, else a directory.

    Filters select runs (by regime, by id), then their cells (by backend) and samples;
    None means no filter. Works on a read-only connection: it only reads the store.
    `derive` (dashboard.results.derive) computes the results kept in derived.parquet from
    the exported rows; None writes none.
    """
    out = Path(out)
    manifest, files = _snapshot_files(con, regimes, run_ids, backends, derive)
    if out.suffix.lower() == ".zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so a reader never sees half a zip.
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_zip_bytes(manifest, files))
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    # Manifest out first and back last: an interrupted export fails its checks on import.
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    if KEPT_FILE not in files:
        (out / KEPT_FILE).unlink(missing_ok=True)  # an earlier export's results, of other rows
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / MANIFEST_NAME).write_bytes(manifest.to_json())
    return manifest


def export_snapshot_bytes(
    con: duckdb.DuckDBPyConnection,
    *,
    regimes: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
) -> bytes:
    """The zip of a snapshot, built in memory: what a download button hands out."""
    return _zip_bytes(*_snapshot_files(con, regimes, run_ids, backends))


# --- import ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportReport:
    """What a merge did, per table: rows added, rows already there, runs updated."""

    manifest: Manifest
    added: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(self.added.values()) or any(self.updated.values())

    def __str__(self) -> str:
        parts = [f"{t}: +{self.added[t]} new, {self.present[t]} present"
                 + (f", {self.updated[t]} updated" if self.updated.get(t) else "")
                 for t in TABLES]
        return "; ".join(parts)


def _register(con: duckdb.DuckDBPyConnection, snap: LoadedSnapshot) -> dict[str, str]:
    names = {t: f"_shapebench_snapshot_{t}" for t in TABLES}
    for t, name in names.items():
        con.register(name, snap.tables[t])
    return names


# A run's columns that may differ between two copies of it: one taken while it was running,
# one after it ended (Ray runs also add their calibration as they go).
RUN_ENDING_COLUMNS = ("status", "finished_at", "calibration")


def _same(columns, left: str = "d", right: str = "s") -> str:
    return " AND ".join(f"{left}.{_q(c)} IS NOT DISTINCT FROM {right}.{_q(c)}" for c in columns) or "true"


def _conflict(con: duckdb.DuckDBPyConnection, src: dict[str, str], cols: dict[str, dict[str, str]],
              live_runs: set[str]) -> str | None:
    """Why the snapshot cannot be merged without mixing two measurements, or None.

    The same run id, cell id or sample key with different content is two measurements under
    one name: merging either would leave a cell holding samples of both, so it is refused.
    Only a run that was running in one copy may differ, and only in how it ended.
    """
    identity = [c for c in cols["runs"] if c not in RUN_ENDING_COLUMNS]
    row = con.execute(
        f"SELECT s.run_id FROM {src['runs']} s JOIN runs d USING (run_id) "
        f"WHERE NOT ({_same(cols['runs'])}) AND NOT (({_same(identity)}) "
        "AND (d.status = 'running' OR s.status = 'running')) ORDER BY s.run_id LIMIT 1"
    ).fetchall()
    if row:
        return f"run {row[0][0]!r} is already in the store with different content"
    if live_runs:
        row = con.execute(
            f"SELECT s.run_id FROM {src['runs']} s JOIN runs d USING (run_id) "
            f"WHERE list_contains($live, s.run_id) AND NOT ({_same(cols['runs'])}) ORDER BY s.run_id LIMIT 1",
            {"live": sorted(live_runs)},
        ).fetchall()
        if not row:  # an identical run row, but cells this machine has not measured (yet)
            row = con.execute(
                f"SELECT s.run_id FROM {src['cells']} s WHERE list_contains($live, s.run_id) "
                "AND s.cell_id NOT IN (SELECT cell_id FROM cells) ORDER BY s.run_id LIMIT 1",
                {"live": sorted(live_runs)},
            ).fetchall()
        if row:
            return f"run {row[0][0]!r} is still running on this machine; import after it ends"
    # a run's cell set is part of its identity: a run that is not running here takes no new cell
    row = con.execute(
        f"SELECT s.run_id FROM {src['cells']} s JOIN runs d USING (run_id) WHERE d.status <> 'running' "
        "AND s.cell_id NOT IN (SELECT cell_id FROM cells) ORDER BY s.run_id LIMIT 1"
    ).fetchall()
    if row:
        return f"run {row[0][0]!r} is already in the store with another set of cells"
    row = con.execute(
        f"SELECT s.cell_id FROM {src['cells']} s JOIN cells d USING (cell_id) "
        f"WHERE NOT ({_same(cols['cells'])}) ORDER BY s.cell_id LIMIT 1"
    ).fetchall()
    if row:
        return f"cell {row[0][0]!r} is already in the store with different settings or results"
    sample_cols = ", ".join(_q(c) for c in cols["samples"])
    shared = f"SELECT cell_id FROM {src['cells']} JOIN cells USING (cell_id)"
    row = con.execute(
        f"WITH here AS (SELECT {sample_cols} FROM samples WHERE cell_id IN ({shared})), "
        f"there AS (SELECT {sample_cols} FROM {src['samples']} WHERE cell_id IN ({shared})) "
        "SELECT cell_id FROM ((SELECT * FROM here EXCEPT ALL SELECT * FROM there) "
        "UNION ALL (SELECT * FROM there EXCEPT ALL SELECT * FROM here)) ORDER BY cell_id LIMIT 1"
    ).fetchall()
    if row:
        return f"cell {row[0][0]!r} is already in the store with different samples"
    return None


def _merge(con: duckdb.DuckDBPyConnection, snap: LoadedSnapshot, src: dict[str, str],
           live_runs: set[str]) -> ImportReport:
    added, present, updated = {}, {}, {}
    cols = {t: table_columns(con, t) for t in TABLES}
    reason = _conflict(con, src, cols, live_runs)
    if reason:
        raise SnapshotError(f"conflict: {reason}; nothing imported (same id, different measurement)")
    # A run snapshotted while running, now ended: take the ended row (finished_at, status).
    set_cols = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in cols["runs"] if c != "run_id")
    updated["runs"] = con.execute(
        f"UPDATE runs SET {set_cols} FROM {src['runs']} s "
        "WHERE runs.run_id = s.run_id AND runs.status = 'running' AND s.status <> 'running'"
    ).fetchall()[0][0]
    for t in TABLES:
        col_list = ", ".join(_q(c) for c in cols[t])
        match = " AND ".join(f"d.{_q(k)} = s.{_q(k)}" for k in TABLE_KEYS[t])
        added[t] = con.execute(
            f"INSERT INTO {t} ({col_list}) SELECT {', '.join('s.' + _q(c) for c in cols[t])} "
            f"FROM {src[t]} s WHERE NOT EXISTS (SELECT 1 FROM {t} d WHERE {match})"
        ).fetchall()[0][0]
        present[t] = snap.tables[t].num_rows - added[t] - updated.get(t, 0)
    updated.setdefault("cells", 0)
    updated.setdefault("samples", 0)
    return ImportReport(snap.manifest, added, present, updated)


def import_snapshot(
    con: duckdb.DuckDBPyConnection, path: str | Path | bytes, *, limits: Limits = LOCAL_LIMITS,
    live_runs: Collection[str] = (),
) -> ImportReport:
    """Merge a snapshot (directory, .zip, or zip bytes) into the store, all or nothing.

    Everything is validated against this store's own schema before the store is touched;
    refusals raise SnapshotError with a one-line reason and leave the store as it was. A
    run, cell or sample already in the store with different content is a conflict and is
    refused; `live_runs` (runs still running on this machine) are never changed.
    """
    columns = {t: table_columns(con, t) for t in TABLES}
    snap = load_snapshot(path, columns, limits)
    src = _register(con, snap)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            report = _merge(con, snap, src, set(live_runs))
            con.execute("COMMIT")
        except SnapshotError:
            con.execute("ROLLBACK")
            raise
        except duckdb.Error as e:
            con.execute("ROLLBACK")
            raise SnapshotError(f"import failed, store unchanged: {str(e).splitlines()[0]}") from None
    finally:
        for name in src.values():
            con.unregister(name)
    return report


# --- open in memory -------------------------------------------------------------------

def _open(source: str | Path | bytes, limits: Limits) -> duckdb.DuckDBPyConnection:
    con = connect_memory()
    try:
        snap = load_snapshot(source, {t: table_columns(con, t) for t in TABLES}, limits)
        src = _register(con, snap)
        for t in TABLES:
            cols = ", ".join(_q(c) for c in table_columns(con, t))
            con.execute(f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {src[t]}")
            con.unregister(src[t])
        if snap.kept is not None:
            kept.insert_file_table(con, snap.kept)
    except duckdb.Error as e:
        con.close()
        raise SnapshotError(f"snapshot does not fit the store: {str(e).splitlines()[0]}") from None
    except BaseException:
        con.close()
        raise
    return con


def open_snapshot(path: str | Path, *, limits: Limits = LOCAL_LIMITS) -> duckdb.DuckDBPyConnection:
    """An in-memory store holding a snapshot's tables: no file lock, nothing written to disk."""
    return _open(path, limits)


def open_snapshot_bytes(
    data: bytes, max_bytes: int = UPLOAD_LIMITS.max_bytes, *, limits: Limits | None = None
) -> duckdb.DuckDBPyConnection:
    """Open an uploaded snapshot zip from memory; `max_bytes` bounds the upload itself."""
    # every upload bound applies (rows too); only the size of the zip itself is the caller's
    limits = limits or replace(UPLOAD_LIMITS, max_bytes=max_bytes)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SnapshotError("an upload must be bytes")
    return _open(bytes(data), limits)
