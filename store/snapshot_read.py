"""Reading a snapshot safely: from a directory, a .zip file or zip bytes, all in memory.

Everything is checked here (sizes, zip member names, decompression ratio, manifest,
checksums, Parquet schema, keys) before any caller touches a store, so that a refused
snapshot leaves nothing behind. Nothing is ever extracted to disk: zip members are read
into memory with a bound, which is what lets a hosted page accept uploads.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.kept import KEPT_FILE, KeptError, table_of_file
from store.schema import ADDED_COLUMNS, KNOWN_BEFORE, SCHEMA_VERSION, TABLES
from store.snapshot_manifest import MANIFEST_NAME, Manifest, SnapshotError, table_file
from store.snapshot_values import check_metadata_text, check_values

MIB = 1 << 20
# Natural keys per table: what "the same row" means when merging and what must be unique.
TABLE_KEYS = {
    "runs": ("run_id",),
    "cells": ("cell_id",),
    "samples": ("cell_id", "phase", "rep", "step"),
}
# A zip of a snapshot holds 4 files; a few hundred entries is already hostile.
MAX_ZIP_MEMBERS = 256
# Below this a high ratio is harmless (a small JSON file compresses well).
RATIO_CHECK_FLOOR = MIB


@dataclass(frozen=True)
class Limits:
    """Bounds on what a snapshot may cost to read; every one is checked before reading."""

    # Size of the zip or of the directory's files, as given.
    max_bytes: int = 2048 * MIB
    # Sum of the declared uncompressed sizes (zip members and Parquet pages).
    max_uncompressed: int = 4096 * MIB
    # Parquet inside is already zstd, so an honest member compresses little further.
    max_ratio: float = 100.0
    # Rows over all tables, from the Parquet footers: 10 million samples decode to about a
    # GiB and take a few times that while merged; the bundled dataset holds 0.25 million.
    max_rows: int = 10_000_000


# Local files are the user's own; uploads in hosted mode are a stranger's.
LOCAL_LIMITS = Limits()
UPLOAD_LIMITS = Limits(max_bytes=50 * MIB, max_uncompressed=512 * MIB, max_rows=2_000_000)


@dataclass(frozen=True)
class LoadedSnapshot:
    """A validated snapshot: its manifest and one Arrow table per store table."""

    manifest: Manifest
    tables: dict[str, pa.Table]
    kept: pa.Table | None = None  # derived.parquet (store.kept), when the manifest lists it


def _safe_member_name(name: str) -> bool:
    """True for a relative name that stays inside the archive's root."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        return False
    parts = PurePosixPath(name).parts
    return not any(p in ("..", "") for p in parts) and ":" not in parts[0]


def _read_zip(zf: zipfile.ZipFile, limits: Limits) -> dict[str, bytes]:
    """Read the snapshot's files from an open zip after checking every member's header."""
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise SnapshotError(f"zip has {len(infos)} entries; a snapshot has {len(TABLES) + 1}")
    names = [i.filename for i in infos]
    for name in names:
        if not _safe_member_name(name):
            raise SnapshotError(f"zip entry {name!r} escapes the snapshot directory")
    if len(set(names)) != len(names):
        raise SnapshotError("zip has duplicate entries")
    total = sum(i.file_size for i in infos)
    if total > limits.max_uncompressed:
        raise SnapshotError(
            f"zip would expand to {total} bytes, over the limit of {limits.max_uncompressed}"
        )
    for i in infos:
        if i.file_size > RATIO_CHECK_FLOOR and i.file_size > limits.max_ratio * max(i.compress_size, 1):
            raise SnapshotError(
                f"zip entry {i.filename!r} expands {i.file_size / max(i.compress_size, 1):.0f}x; "
                "refused as a likely decompression bomb"
            )
        if i.flag_bits & 0x1:
            raise SnapshotError(f"zip entry {i.filename!r} is encrypted")
    # Accept the files at the root or under one folder (a zip of a snapshot directory).
    manifests = [n for n in names if PurePosixPath(n).name == MANIFEST_NAME
                 and len(PurePosixPath(n).parts) <= 2]
    if len(manifests) != 1:
        raise SnapshotError(
            f"no {MANIFEST_NAME} in the zip: not a shapebench snapshot" if not manifests
            else f"zip holds {len(manifests)} manifests; expected one"
        )
    prefix = str(PurePosixPath(manifests[0]).parent)
    prefix = "" if prefix == "." else prefix + "/"
    wanted = [MANIFEST_NAME] + [table_file(t) for t in TABLES]
    if prefix + KEPT_FILE in names:  # optional; read only if the manifest lists it (load_snapshot)
        wanted.append(KEPT_FILE)
    files = {}
    for name in wanted:
        try:
            info = zf.getinfo(prefix + name)
        except KeyError:
            raise SnapshotError(f"snapshot lacks {name}") from None
        with zf.open(info) as f:
            # Read one byte past the declared size: a lying header cannot make us read more.
            data = f.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise SnapshotError(f"zip entry {name!r} does not match its declared size")
        files[name] = data
    return files


def _open_zip(source: Path | bytes, limits: Limits) -> dict[str, bytes]:
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if size > limits.max_bytes:
        raise SnapshotError(f"snapshot is {size} bytes, over the limit of {limits.max_bytes}")
    raw = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with zipfile.ZipFile(raw) as zf:
            return _read_zip(zf, limits)
    except SnapshotError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as e:
        raise SnapshotError(f"not a readable zip: {e}") from None


def _read_dir(root: Path, limits: Limits) -> dict[str, bytes]:
    if not (root / MANIFEST_NAME).is_file():
        raise SnapshotError(f"no {MANIFEST_NAME} in {root}: not a shapebench snapshot")
    paths = {n: root / n for n in [MANIFEST_NAME] + [table_file(t) for t in TABLES]}
    for name, p in paths.items():
        if not p.is_file():
            raise SnapshotError(f"snapshot lacks {name}")
    if (root / KEPT_FILE).is_file():  # optional; read only if the manifest lists it (load_snapshot)
        paths[KEPT_FILE] = root / KEPT_FILE
    size = sum(p.stat().st_size for p in paths.values())
    if size > limits.max_bytes:
        raise SnapshotError(f"snapshot is {size} bytes, over the limit of {limits.max_bytes}")
    return {n: p.read_bytes() for n, p in paths.items()}


def read_files(source: str | Path | bytes, limits: Limits) -> dict[str, bytes]:
    """The manifest and table files of a snapshot, by name, read into memory."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open_zip(bytes(source), limits)
    path = Path(source)
    if path.is_dir():
        return _read_dir(path, limits)
    if not path.exists():
        raise SnapshotError(f"no snapshot at {path}")
    if path.suffix.lower() != ".zip":
        raise SnapshotError(f"{path} is neither a snapshot directory nor a .zip")
    return _open_zip(path, limits)


def _type_ok(duck_type: str, t: pa.DataType) -> bool:
    """Whether a Parquet column of Arrow type t can go into a store column without loss."""
    while isinstance(t, pa.BaseExtensionType):  # e.g. arrow.json written by DuckDB
        t = t.storage_type
    is_str = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    if pa.types.is_null(t):
        return True  # an all-NULL column; NOT NULL constraints still apply on insert
    if duck_type in ("VARCHAR", "JSON"):
        return is_str
    if duck_type == "INTEGER":
        return t in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16())
    if duck_type == "BIGINT":
        return pa.types.is_signed_integer(t) or t in (pa.uint8(), pa.uint16(), pa.uint32())
    if duck_type == "DOUBLE":  # not float16: DuckDB cannot read Arrow's half floats
        return t in (pa.float32(), pa.float64()) or pa.types.is_integer(t)
    if duck_type == "BOOLEAN":
        return pa.types.is_boolean(t)
    if duck_type == "TIMESTAMP":
        # A zone-aware value would be shifted by the reader's local zone on the way in.
        return pa.types.is_timestamp(t) and t.tz is None
    if duck_type == "VARCHAR[]":
        return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _type_ok("VARCHAR", t.value_type)
    return False


def _check_table(table: str, tbl: pa.Table, columns: dict[str, str], expected_rows: int) -> None:
    got = tbl.schema.names
    if len(set(got)) != len(got):
        raise SnapshotError(f"{table}.parquet has duplicate column names")
    missing = [c for c in columns if c not in got]
    extra = [c for c in got if c not in columns]
    if missing:
        raise SnapshotError(f"{table}.parquet lacks columns: {', '.join(missing)}")
    if extra:
        raise SnapshotError(f"{table}.parquet has unknown columns: {', '.join(map(repr, extra))}")
    for name, duck_type in columns.items():
        arrow_type = tbl.schema.field(name).type
        if not _type_ok(duck_type, arrow_type):
            raise SnapshotError(
                f"{table}.{name} has type {arrow_type}, incompatible with the store's {duck_type}"
            )
    if tbl.num_rows != expected_rows:
        raise SnapshotError(
            f"{table}.parquet has {tbl.num_rows} rows; the manifest says {expected_rows}"
        )
    keys = list(TABLE_KEYS[table])
    if tbl.num_rows and tbl.group_by(keys).aggregate([]).num_rows != tbl.num_rows:
        raise SnapshotError(f"{table}.parquet repeats a key ({', '.join(keys)})")


def _min_width(t: pa.DataType) -> int:
    """Fewest bytes a row of this type takes once decoded into Arrow (offsets included)."""
    try:
        return max(t.bit_width // 8, 0)
    except ValueError:  # variable width: string, list; at least a 4-byte offset
        return 4


def _is_text(t: pa.DataType) -> bool:
    while isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _decoded_bytes(col: pa.ChunkedArray) -> int:
    """Bytes a column takes once dictionary-decoded, computed without decoding it."""
    if not pa.types.is_dictionary(col.type):
        return col.nbytes
    total = 4 * len(col)
    for chunk in col.chunks:
        lengths = pc.binary_length(chunk.dictionary)
        total += pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0
    return total


def _read_parquet(name: str, data: bytes, budget: int, max_rows: int, row_limit: int | None = None) -> pa.Table:
    """Decode one Parquet file, refusing it as soon as it could cost more than `budget` bytes.

    Parquet compresses twice (pages and dictionaries), so a small file can hide a huge
    table: the declared page sizes and a per-row floor are checked before decoding, and
    text is read dictionary-encoded so its expanded size is known before it exists.
    """
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        meta, schema = pf.metadata, pf.schema_arrow
        if meta.num_rows > max_rows:
            raise SnapshotError(
                f"{name} has {meta.num_rows} rows, over the limit of {row_limit or max_rows} rows for this snapshot"
                + ("" if row_limit is None or max_rows == row_limit else " (all its tables together)") + "; refused"
            )
        check_metadata_text(name.removesuffix(".parquet"), meta)
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        floor = meta.num_rows * sum(_min_width(f.type) for f in schema)
        if max(declared, floor) > budget:
            raise SnapshotError(f"{name} would expand past the size limit; refused")
        text = [f.name for f in schema if _is_text(f.type)]
        tbl = pq.ParquetFile(pa.BufferReader(data), read_dictionary=text).read()
        if sum(_decoded_bytes(c) for c in tbl.columns) > budget:
            raise SnapshotError(f"{name} would expand past the size limit; refused")
        return pa.Table.from_arrays(
            [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in tbl.columns],
            names=tbl.schema.names,
        )
    except SnapshotError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        raise SnapshotError(f"{name} is not a readable Parquet file: {str(e).splitlines()[0]}") from None


def _known_column(tbl: pa.Table, known: str) -> pa.Array | pa.ChunkedArray:
    """A KNOWN_BEFORE value for every row: a quoted text, an integer or another column."""
    if known.startswith("'"):
        return pa.array([known.strip("'")] * tbl.num_rows, pa.string())
    if known.isdigit():
        return pa.array([int(known)] * tbl.num_rows, pa.int32())
    return tbl[known] if known in tbl.schema.names else pa.nulls(tbl.num_rows)  # missing: _check_table says so


def with_added_columns(table: str, tbl: pa.Table, schema_version: int) -> pa.Table:
    """An older snapshot's table with the columns added since: nulls ("not recorded", never
    zeros; Arrow's null type, which fits a column of any type), except what is known of
    every older row (store.schema.KNOWN_BEFORE: a run's protocol 1, a cell's gpt2 family
    and its n_kv_head = n_head)."""
    if schema_version >= SCHEMA_VERSION:
        return tbl
    for name in ADDED_COLUMNS.get(table, ()):
        if name not in tbl.schema.names:
            known = KNOWN_BEFORE.get((table, name))
            column = pa.nulls(tbl.num_rows) if known is None else _known_column(tbl, known)
            tbl = tbl.append_column(name, column)
    return tbl


def load_snapshot(
    source: str | Path | bytes, columns: dict[str, dict[str, str]], limits: Limits = LOCAL_LIMITS
) -> LoadedSnapshot:
    """Read and validate a whole snapshot against `columns` (table -> column -> DuckDB type).

    `columns` comes from the store being written to (or a fresh one), never from the
    snapshot: only those names are ever used in SQL.
    """
    files = read_files(source, limits)
    manifest = Manifest.from_json(files[MANIFEST_NAME])
    for name, entry in manifest.files.items():
        data = files[name]
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SnapshotError(f"checksum mismatch for {name}: the snapshot is corrupt or was altered")
    kept = None
    if manifest.derived is not None:
        data, entry = files.get(KEPT_FILE), manifest.derived
        if data is None:
            raise SnapshotError(f"snapshot lacks {KEPT_FILE}, which {MANIFEST_NAME} lists")
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SnapshotError(f"checksum mismatch for {KEPT_FILE}: the snapshot is corrupt or was altered")
        try:
            kept = table_of_file(data, limits.max_uncompressed)
        except KeptError as error:
            raise SnapshotError(str(error)) from None
    tables = {}
    budget, rows_left = limits.max_uncompressed, limits.max_rows
    for table in TABLES:
        name = table_file(table)
        tbl = with_added_columns(table, _read_parquet(name, files[name], budget, rows_left, limits.max_rows), manifest.schema_version)
        budget -= tbl.nbytes
        rows_left -= tbl.num_rows
        _check_table(table, tbl, columns[table], manifest.row_counts[table])
        tables[table] = tbl
    _check_links(tables)
    check_values(tables)
    _check_cell_sets(tables)
    _check_regimes(manifest, tables["runs"])
    return LoadedSnapshot(manifest, tables, kept)


def _check_regimes(manifest: Manifest, runs: pa.Table) -> None:
    """The manifest's regimes are those of its runs: what a listing shows is what is inside."""
    found = sorted(set(runs["regime"].to_pylist()))
    if sorted(manifest.regimes) != found:
        raise SnapshotError(f"{MANIFEST_NAME} regimes do not match the regimes of runs.parquet")


# What makes two cells of one run the same measurement (runner.plan.Cell.key): the shape,
# not its name; family and KV heads where the schema has them.
CELL_CONFIGURATION = ("n_layer", "n_embd", "n_head", "n_kv_head", "family", "n_inner", "vocab_size", "n_positions",
                      "model_source", "backend", "backend_options", "device", "dtype", "batch_size", "prompt_len",
                      "gen_len")


def _check_cell_sets(tables: dict[str, pa.Table]) -> None:
    """A run's cells are part of its identity: never more than it planned, never one
    configuration twice (a forged cell beside the measured one)."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.register("runs", tables["runs"])
        con.register("cells", tables["cells"])
        row = con.execute("SELECT r.run_id, r.n_cells_planned, count(*) FROM runs r JOIN cells c USING (run_id) "
                          "WHERE r.n_cells_planned > 0 GROUP BY ALL HAVING count(*) > r.n_cells_planned "
                          "ORDER BY 1 LIMIT 1").fetchall()
        if row:
            raise SnapshotError(f"cells.parquet: run {row[0][0][:80]!r} has {row[0][2]} cells where it planned "
                                f"{row[0][1]}; refused")
        present = [c for c in CELL_CONFIGURATION if c in tables["cells"].schema.names]
        config = ", ".join(f'"{c}"' for c in ["run_id", *present])
        row = con.execute(f"SELECT run_id, min(cell_id), max(cell_id) FROM cells GROUP BY {config} "
                          "HAVING count(*) > 1 ORDER BY 1 LIMIT 1").fetchall()
        if row:
            raise SnapshotError(f"cells.parquet: run {row[0][0][:80]!r} holds one configuration twice "
                                f"({row[0][1][:80]!r} and {row[0][2][:80]!r}); refused")
    finally:
        con.close()


def _check_links(tables: dict[str, pa.Table]) -> None:
    """Refuse cells without their run and samples without their cell: a tampered snapshot."""
    for child, parent, key in (("cells", "runs", "run_id"), ("samples", "cells", "cell_id")):
        column = tables[child][key].cast(pa.string())
        known = tables[parent][key].cast(pa.string())
        if len(column) and not pc.all(pc.is_in(column, value_set=known)).as_py():
            raise SnapshotError(f"{child}.parquet refers to a {key} missing from {parent}.parquet")
