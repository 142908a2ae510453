"""Opening the store: one read-write file, or an in-memory database for read-only use."""
from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb

from store.schema import SCHEMA_SQL, SCHEMA_VERSION, init_schema
from vocabulary import DEFAULT_DB


class NotAStoreError(ValueError):
    """A DuckDB file this shapebench must not write to (or read as a store): someone else's
    database, a store of a newer schema, or a damaged one. The message is one line."""


# The tables schema.sql creates: a store holds these and no others.
SCHEMA_TABLES = frozenset(re.findall(r"^CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA_SQL, re.M))


def _refuse(con: duckdb.DuckDBPyConnection, message: str) -> None:
    con.close()
    raise NotAStoreError(message)


def _check_is_store(con: duckdb.DuckDBPyConnection, path: Path, *, for_writing: bool = False) -> None:
    """Decide, before any DDL, whether `con` may be used as a store; refuse in one line.

    An empty database is a new store. Otherwise it must hold shapebench's schema_info and no
    table schema.sql does not make (a foreign database with a table named schema_info is
    still foreign; an old store lacking later tables is upgraded), at a schema
    version this code knows (a newer store is never altered by the command that refuses
    it), and, to be written, every block must read back (a damaged store is not written to).
    """
    tables = sorted(r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()"
    ).fetchall())
    if not tables:
        return
    info_columns = dict(con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'schema_info' "
        "AND table_catalog = current_database()").fetchall())
    if ("schema_info" not in tables or set(tables) - SCHEMA_TABLES
            or info_columns.get("schema_version") not in ("INTEGER", "BIGINT")):
        foreign = [t for t in tables if t not in SCHEMA_TABLES] or tables
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        _refuse(con, f"{path} is a DuckDB database with other tables ({shown}) and no shapebench schema; "
                     "refusing to use it as a store (pick another file)")
    try:
        [(version,)] = con.execute("SELECT max(schema_version) FROM schema_info").fetchall()
    except duckdb.Error:
        _refuse(con, f"{path} has a schema_info table that is not shapebench's; refusing to use it as a store")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        _refuse(con, f"{path} has schema version {version}, newer than this shapebench ({SCHEMA_VERSION}); "
                     "upgrade shapebench to open it (the file was left as it was)")
    if for_writing:
        try:
            for table in tables:  # reads every block of every column: DuckDB checks each block's checksum
                con.execute(f'SELECT count(hash(t)) FROM "{table}" t').fetchall()
        except duckdb.Error as error:
            _refuse(con, f"{path} is damaged ({str(error).splitlines()[0][:160]}); refusing to write to it "
                         "(restore it from a snapshot export or a backup)")


def connect(path: str | Path = DEFAULT_DB, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and create, unless read-only) a store file with its schema in place.

    A database that already holds tables but no shapebench schema is refused
    (NotAStoreError) and left untouched.
    """
    path = Path(path)
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"no store at {path}")
        con = duckdb.connect(str(path), read_only=True)
        _check_is_store(con, path)
        return con
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    _check_is_store(con, path, for_writing=True)
    init_schema(con)
    return con


LOCK_POLL_S = 0.05  # between attempts: a writer's lock goes as soon as it closes the file


class StoreBusyError(RuntimeError):
    """Another process held the store file for writing for the whole wait. `holder` is what
    DuckDB says of it (process and pid), so a caller's one line can name who has it."""

    def __init__(self, path: Path, holder: str, message: str | None = None) -> None:
        self.path, self.holder = Path(path), holder
        super().__init__(message or f"another process is writing {path} ({holder})")


def is_lock_error(error: Exception) -> bool:
    text = str(error)
    return "Could not set lock" in text or "Conflicting lock" in text


def connect_when_free(path: str | Path, read_only: bool = False, wait_s: float = 5.0) -> duckdb.DuckDBPyConnection:
    """`connect`, waiting up to `wait_s` while another process writes the file (DuckDB lets
    one process open it read-write and then no other at all): dashboard and CLI both write
    only for the length of an ingest or an import."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return connect(path, read_only=read_only)
        except duckdb.IOException as error:
            if not is_lock_error(error):
                raise
            if time.monotonic() >= deadline:
                first = str(error).splitlines()[0]
                holder = first.split("Conflicting lock is held in", 1)[-1].strip()
                raise StoreBusyError(Path(path), holder[:160]) from None
            time.sleep(LOCK_POLL_S)


def connect_memory() -> duckdb.DuckDBPyConnection:
    """An empty in-memory store with the schema: for tests and snapshot viewing."""
    con = duckdb.connect(":memory:")
    init_schema(con)
    return con


def copy_to_memory(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """An in-memory store holding `con`'s runs, cells and samples: a long read (derived results
    after an ingest) then holds no lock on the store file, so the dashboard can write it meanwhile."""
    from store.schema import TABLES

    mem = connect_memory()
    for table in TABLES:
        mem.register("_copied", con.sql(f"SELECT * FROM {table}").to_arrow_table())
        mem.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _copied")
        mem.unregister("_copied")
    return mem
