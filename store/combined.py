"""One read-only view of several datasets: the bundled reference beside a user's own store.

A user who measured a few shapes wants to see them next to the reference measurements, not
instead of them. DuckDB lets a store file be opened by one writer or by readers, never
both, and the runner's ingest writes it, so the view must not keep the file open: it copies
the store's rows into an in-memory database that already holds the reference snapshot's
rows (a user's store is small; the copy takes a fraction of a second), and is rebuilt when
the store file changes. Nothing is ever written back.
"""
from __future__ import annotations

import duckdb
import pyarrow as pa

from store.db import connect_memory
from store.schema import TABLES, table_columns

# What identifies a row of each table, so a run present in both (a store that imported the
# bundled snapshot) is counted once. Samples follow their cell.
ROW_KEYS = {"runs": "run_id", "cells": "cell_id", "samples": "cell_id"}


def combine(*sources: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """An in-memory store holding the runs, cells and samples of every source, first source first.

    A run or cell already taken from an earlier source is skipped in a later one (its
    samples too), so combining a store with a snapshot it imported counts each run once.
    """
    combined = connect_memory()
    for source in sources:
        known = {table: {row[0] for row in combined.execute(f"SELECT DISTINCT {key} FROM {table}").fetchall()}
                 for table, key in ROW_KEYS.items() if table != "samples"}
        known["samples"] = known["cells"]
        for table in TABLES:
            columns = [c for c in table_columns(combined, table) if c in set(table_columns(source, table))]
            names = ", ".join(f'"{c}"' for c in columns)
            rows = source.sql(f"SELECT {names} FROM {table}").to_arrow_table()
            combined.register("incoming", rows)
            combined.register("known_keys", pa.table({"k": pa.array(sorted(str(k) for k in known[table]), pa.string())}))
            key = ROW_KEYS[table]
            combined.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM incoming "
                             f"WHERE CAST({key} AS VARCHAR) NOT IN (SELECT k FROM known_keys)")
            combined.unregister("incoming")
            combined.unregister("known_keys")
    return combined
