"""Opening the store: one read-write file, or an in-memory database for read-only use."""
from __future__ import annotations

from pathlib import Path

import duckdb

from store.schema import init_schema

DEFAULT_DB = Path("shapebench.duckdb")


def connect(path: str | Path = DEFAULT_DB, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and create, unless read-only) a store file with its schema in place."""
    path = Path(path)
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"no store at {path}")
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    init_schema(con)
    return con


def connect_memory() -> duckdb.DuckDBPyConnection:
    """An empty in-memory store with the schema: for tests and snapshot viewing."""
    con = duckdb.connect(":memory:")
    init_schema(con)
    return con
