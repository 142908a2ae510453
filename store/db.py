"""Opening the store: one read-write file, or an in-memory database for read-only use."""
from __future__ import annotations

import time
from pathlib import Path

import duckdb

from store.schema import init_schema
from vocabulary import DEFAULT_DB


class NotAStoreError(ValueError):
    """A DuckDB file that holds other tables: not ours to add tables or runs to."""


def _check_is_store(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse a database that has tables but no shapebench schema (someone else's file)."""
    tables = sorted(r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()"
    ).fetchall())
    if tables and "schema_info" not in tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        con.close()
        raise NotAStoreError(
            f"{path} is a DuckDB database with other tables ({shown}) and no shapebench schema; "
            "refusing to use it as a store (pick another file)"
        )


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
    _check_is_store(con, path)
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
