"""Opening the store: one read-write file, or an in-memory database for read-only use."""
from __future__ import annotations

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


def connect_memory() -> duckdb.DuckDBPyConnection:
    """An empty in-memory store with the schema: for tests and snapshot viewing."""
    con = duckdb.connect(":memory:")
    init_schema(con)
    return con
