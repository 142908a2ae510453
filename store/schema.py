"""Schema version and table layout, read from schema.sql so there is one source of truth."""
from __future__ import annotations

import re
from pathlib import Path

import duckdb

# 2: runs.protocol_version, samples.round and samples.worker;
# 3: cells' memory and energy (weight_bytes ... resources, runner.trackers);
# 4: cells.family and cells.n_kv_head (model families, grouped-query attention);
# 5: cells.rounds_used, decode_half_width, precision_reached, stop_reason (adaptive rounds)
# 6: runs.machine_load (the run's busy-machine verdict, NULL before it was sampled)
SCHEMA_VERSION = 6
FAMILIES_VERSION = 4  # the first with cells.family and cells.n_kv_head
SCHEMA_SQL = (Path(__file__).with_name("schema.sql")).read_text()


def _added_columns(sql: str) -> dict[str, tuple[str, ...]]:
    """table -> the columns schema.sql adds with ALTER TABLE, in order."""
    added: dict[str, tuple[str, ...]] = {}
    for table, column in re.findall(r"^ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+)", sql, re.M):
        added[table] = (*added.get(table, ()), column)
    return added


# Columns a snapshot or store of an older schema version lacks (schema.sql's ALTER lines):
# they read as NULL ("not recorded"), never as zeros, except what is known of every older
# cell (`KNOWN_BEFORE`).
ADDED_COLUMNS = _added_columns(SCHEMA_SQL)
TABLES = ("runs", "cells", "samples")
# An added column whose value is known for every row written before it: SQL over the row's
# own columns (a read-only store, never upgraded, selects these instead of the column).
KNOWN_BEFORE: dict[tuple[str, str], str] = {
    ("runs", "protocol_version"): "1",  # every run before protocol 2 was protocol 1
    ("cells", "family"): "'gpt2'",  # every cell before families was GPT-2 ...
    ("cells", "n_kv_head"): "n_head",  # ... whose every head holds its own keys and values
}


def stored_schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version the store's tables are at. A store opened read-only is never
    upgraded, so its tables may be older than this code's SCHEMA_VERSION."""
    [(found,)] = con.execute("SELECT max(schema_version) FROM schema_info").fetchall()  # fetchall: no open result left
    return int(found or SCHEMA_VERSION)


def init_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables if missing and record the schema version once."""
    con.execute(SCHEMA_SQL)
    if con.execute("SELECT count(*) FROM schema_info").fetchone()[0] == 0:
        con.execute("INSERT INTO schema_info VALUES (?, now())", [SCHEMA_VERSION])
    else:
        found = con.execute("SELECT max(schema_version) FROM schema_info").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise ValueError(
                f"store has schema version {found}, newer than this shapebench ({SCHEMA_VERSION}); "
                "upgrade shapebench to open it"
            )
        if found < SCHEMA_VERSION:  # the ALTER lines above have just brought it up to date
            if found < FAMILIES_VERSION:  # every cell before families is GPT-2: each head its own KV
                con.execute("UPDATE cells SET n_kv_head = n_head WHERE n_kv_head IS NULL")
            con.execute("INSERT INTO schema_info VALUES (?, now())", [SCHEMA_VERSION])


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column name -> DuckDB type, in table order."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return {name: dtype for name, dtype in rows}
