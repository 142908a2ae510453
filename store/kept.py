"""Derived results kept with the data: one row per result, in a store table and in a snapshot.

A visitor's first page on a data version must not wait for the pooled statistics (tens of
seconds on 2 cores), so `runner snapshot export` and `runner ingest` compute them once and
keep them beside the rows they came from: the `derived_results` table of a store, and
`derived.parquet` of a snapshot, with the same columns. A snapshot may come from a stranger
(an upload, hosted mode), so nothing here is a pickle: a result is a JSON document whose
DataFrames are Parquet blobs, and only the dataclasses the caller names are ever rebuilt.

Each row carries its key (a hash of content id, code version, name, filters and arguments)
and those parts in the clear; a reader asks for a key, so a result made by other code or on
other rows is never served. What is computed lives with the dashboard (dashboard.results);
this module only knows how a result is written and read.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("shapebench.kept")

TABLE = "derived_results"  # store/schema.sql creates it; a snapshot holds it as KEPT_FILE
KEPT_FILE = "derived.parquet"
COLUMNS = {"key": "VARCHAR", "name": "VARCHAR", "content_id": "VARCHAR", "code_version": "VARCHAR",
           "filters": "VARCHAR", "args": "VARCHAR", "document": "VARCHAR", "frames": "BLOB[]"}
ARROW_SCHEMA = pa.schema([(c, pa.list_(pa.binary()) if c == "frames" else pa.string()) for c in COLUMNS])
# One kept frame of the bundle is at most a few MB; a blob declaring far more is not ours.
MAX_FRAME_BYTES = 512 << 20
MAX_FRAME_ROWS = 20_000_000
# All frames of one result together: a document naming one blob many times decodes it once,
# and many distinct blobs cannot add up past this either.
MAX_RESULT_BYTES = MAX_FRAME_BYTES


class KeptError(ValueError):
    """A kept result could not be written or read back; the message is one line."""


@dataclass(frozen=True)
class KeptResult:
    """One derived result with the parts of its key, ready to be written (`encode`)."""

    key: str
    name: str
    content_id: str
    code_version: str
    filters: str  # JSON of the filters it was computed under ([] for none)
    args: str  # JSON of its arguments
    document: str
    frames: tuple[bytes, ...]

    def row(self) -> dict[str, Any]:
        return {c: list(self.frames) if c == "frames" else getattr(self, c) for c in COLUMNS}


# --- values <-> (document, frames) -------------------------------------------------------

def _coded_columns(frame: pd.DataFrame) -> list[str]:
    """Object columns that are not plain text: Parquet would turn a dict into a struct of every
    row's keys (a missing key back as None), a list into an array, and ints with pd.NA into
    floats with NaN, so these travel cell by cell as JSON text (`encode`'s own forms) and come
    back as the values they were."""
    def plain(v: Any) -> bool:
        return v is None or isinstance(v, str)

    return [c for c in frame.columns if frame[c].dtype == object and not frame[c].map(plain).all()]


def _frame_bytes(frame: pd.DataFrame, coded: list[str], cell: Any) -> bytes:
    if coded:
        frame = frame.assign(**{c: frame[c].map(lambda v: json.dumps(cell(v), allow_nan=False)) for c in coded})
    buf = io.BytesIO()
    try:
        # a RangeIndex goes into the metadata; any other index is stored as columns
        pq.write_table(pa.Table.from_pandas(frame), buf, compression="zstd")
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise KeptError(f"a frame does not fit Parquet: {str(error).splitlines()[0][:200]}") from None
    return buf.getvalue()


def _frame_of(blob: bytes, coded: list[str], cell: Any, budget: list[int]) -> pd.DataFrame:
    """A kept frame, its size checked from the footer (and taken from `budget`, the bytes the
    rest of its result may still decode) before anything is decoded."""
    reader = pq.ParquetFile(pa.BufferReader(blob))
    meta = reader.metadata
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if declared > MAX_FRAME_BYTES or meta.num_rows > MAX_FRAME_ROWS or declared > budget[0]:
        raise KeptError("a kept frame would expand past the size limit")
    budget[0] -= declared
    frame = reader.read().to_pandas()
    for c in coded:
        frame[c] = pd.Series([cell(json.loads(v)) for v in frame[c]], index=frame.index, dtype=object)
    return frame


def encode(value: Any, types: Mapping[str, type]) -> tuple[str, tuple[bytes, ...]]:
    """(JSON document, Parquet blobs) for `value`: frames, the dataclasses in `types`, lists,
    tuples, dicts, numpy and plain scalars, None, pd.NA. Anything else raises KeptError: it is
    not kept."""
    frames: list[bytes] = []
    names = {cls: name for name, cls in types.items()}

    def walk(v: Any) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if v is pd.NA:
            return {"$na": True}
        if isinstance(v, (int, np.integer)) and not isinstance(v, np.bool_):
            return int(v)
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, (float, np.floating)):
            f = float(v)
            return f if math.isfinite(f) else {"$float": repr(f)}
        if isinstance(v, pd.DataFrame):
            coded = _coded_columns(v)
            frames.append(_frame_bytes(v, coded, walk))
            return {"$frame": len(frames) - 1, "json": [str(c) for c in coded]} if coded else {"$frame": len(frames) - 1}
        if type(v) in names:
            return {"$type": names[type(v)],
                    "fields": {f.name: walk(getattr(v, f.name)) for f in dataclasses.fields(v)}}
        if isinstance(v, tuple):
            return {"$tuple": [walk(x) for x in v]}
        if isinstance(v, (list, np.ndarray)):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in v):
                return {k: walk(x) for k, x in v.items()}
            return {"$items": [[walk(k), walk(x)] for k, x in v.items()]}
        raise KeptError(f"cannot keep a {type(v).__name__} without pickling it")

    document = json.dumps(walk(value), allow_nan=False, separators=(",", ":"))
    return document, tuple(frames)


def decode(document: str, frames: Iterable[bytes], types: Mapping[str, type]) -> Any:
    """The value `encode` wrote; only the dataclasses in `types` are built. Raises KeptError."""
    blobs = list(frames)
    # each blob is decoded once however often the document names it (pages never modify a
    # result in place, so sharing the frame is safe), and all of them within one budget
    decoded: dict[tuple[int, tuple[str, ...]], pd.DataFrame] = {}
    budget = [MAX_RESULT_BYTES]

    def walk(v: Any) -> Any:
        if isinstance(v, list):
            return [walk(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "$frame" in v:
            coded = v.get("json", [])
            if not isinstance(coded, list) or not all(isinstance(c, str) for c in coded):
                _bad("a frame's JSON columns")
            key = (int(v["$frame"]), tuple(coded))
            if key not in decoded:
                decoded[key] = _frame_of(blobs[key[0]], coded, walk, budget)
            return decoded[key]
        if "$na" in v:
            return pd.NA
        if "$float" in v:
            return float(v["$float"]) if v["$float"] in ("nan", "inf", "-inf") else _bad("a float")
        if "$tuple" in v:
            return tuple(walk(x) for x in v["$tuple"])
        if "$items" in v:
            return {_hashable(walk(k)): walk(x) for k, x in v["$items"]}
        if "$type" in v:
            cls = types.get(v["$type"]) or _bad(f"type {str(v['$type'])[:40]!r}")
            return cls(**{k: walk(x) for k, x in v["fields"].items()})
        return {k: walk(x) for k, x in v.items()}

    try:
        return walk(json.loads(document))
    except KeptError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, pa.ArrowException, OSError) as error:
        raise KeptError(f"unreadable kept result: {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}") from None


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, (list, tuple)) else v


def _bad(what: str):
    raise KeptError(f"a kept result holds {what} this shapebench does not read")


# --- the store table and the snapshot file ---------------------------------------------------

def write(con: duckdb.DuckDBPyConnection, results: Iterable[KeptResult], *, replace_content: str | None = None) -> int:
    """Insert (or replace, by key) kept results in the store's table; return how many.

    `replace_content`: drop every row of another content id first. A store keeps the results
    of its current rows only: older ones could never be asked for again.
    """
    rows = [r.row() for r in results]
    if replace_content is not None:
        con.execute(f"DELETE FROM {TABLE} WHERE content_id <> ?", [replace_content])
    if not rows:
        return 0
    table = pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
    con.register("_kept_rows", table)
    try:
        con.execute(f"DELETE FROM {TABLE} WHERE key IN (SELECT key FROM _kept_rows)")
        con.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM _kept_rows")
    finally:
        con.unregister("_kept_rows")
    return len(rows)


def load(con: duckdb.DuckDBPyConnection, key: str, types: Mapping[str, type]) -> tuple[bool, Any]:
    """(True, value) for the kept result of `key`, else (False, None): none kept, no table
    (a store from before it, opened read-only), or one that cannot be read (said in the log)."""
    try:
        rows = con.execute(f"SELECT document, frames FROM {TABLE} WHERE key = ?", [key]).fetchall()
    except duckdb.CatalogException:
        return False, None
    if not rows:
        return False, None
    try:
        return True, decode(rows[0][0], rows[0][1] or [], types)
    except KeptError as error:
        log.warning("kept result %s not served: %s", key, error)
        return False, None


def keys(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(name, key) of every kept result, by name: what a store or snapshot holds."""
    try:
        return [tuple(r) for r in con.execute(f"SELECT name, key FROM {TABLE} ORDER BY name, key").fetchall()]
    except duckdb.CatalogException:
        return []


def file_bytes(results: Iterable[KeptResult]) -> bytes:
    """A snapshot's derived.parquet: the table's rows, in key order."""
    rows = sorted((r.row() for r in results), key=lambda r: r["key"])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA), buf, compression="zstd")
    return buf.getvalue()


MAX_KEPT_ROWS = 10_000  # the bundle keeps about 160 results


def table_of_file(data: bytes, max_bytes: int) -> pa.Table:
    """derived.parquet as an Arrow table of exactly the expected columns; KeptError otherwise.
    Its footer's sizes are checked against `max_bytes` before anything is decompressed."""
    try:
        reader = pq.ParquetFile(pa.BufferReader(data))
        meta = reader.metadata
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if declared > max_bytes or meta.num_rows > MAX_KEPT_ROWS:
            raise KeptError(f"{KEPT_FILE} would expand past the size limit; refused")
        table = reader.read()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise KeptError(f"{KEPT_FILE} is not a readable Parquet file: {str(error).splitlines()[0][:160]}") from None
    try:
        return table.select(list(COLUMNS)).cast(ARROW_SCHEMA)
    except (pa.ArrowException, KeyError, ValueError):
        raise KeptError(f"{KEPT_FILE} does not hold the columns {', '.join(COLUMNS)}") from None


def insert_file_table(con: duckdb.DuckDBPyConnection, table: pa.Table) -> None:
    """Load a snapshot's kept results into its in-memory store."""
    con.register("_kept_file", table)
    try:
        con.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM _kept_file")
    finally:
        con.unregister("_kept_file")
