"""Schema 3 (cells' memory and energy) reads what schema 2 wrote: a schema-2 snapshot imports
and opens, and a schema-2 store gains the columns when opened, the old cells' memory and
energy arriving as NULL ("not recorded"), never as zeros."""
from __future__ import annotations

import json

import duckdb
import pyarrow as pa

from store.db import connect, connect_memory
from store.schema import ADDED_COLUMNS, SCHEMA_VERSION
from store.snapshot import import_snapshot, open_snapshot_bytes
from tests.store.conftest import refused

SCHEMA_3_COLUMNS = ("weight_bytes", "kv_cache_bytes", "peak_allocated_bytes", "peak_reserved_bytes",
                    "peak_rss_bytes", "energy_source", "resources")


def _unknown_counts(con) -> tuple:
    """(cells, cells with any schema-3 value, cells with a zero among them)."""
    known = " OR ".join(f"{c} IS NOT NULL" for c in SCHEMA_3_COLUMNS)
    zero = " OR ".join(f"{c} = 0" for c in SCHEMA_3_COLUMNS if c.endswith("_bytes"))
    return con.execute(f"SELECT count(*), count(*) FILTER ({known}), count(*) FILTER ({zero}) FROM cells").fetchone()


def schema_2_snapshot(good: dict[str, bytes], forge) -> bytes:
    """The snapshot schema-2 shapebench wrote of the same store: no schema-3 columns, version 2."""
    files = dict(good)
    cells = forge.table(files, "cells")
    files["cells.parquet"] = forge.parquet(cells.drop_columns(list(SCHEMA_3_COLUMNS)))
    files["manifest.json"] = json.dumps(json.loads(files["manifest.json"]) | {"schema_version": 2}).encode()
    return forge.rezip(files)


def test_schema_3_adds_exactly_the_memory_and_energy_columns_to_cells():
    assert SCHEMA_VERSION >= 3
    assert ADDED_COLUMNS["cells"][:len(SCHEMA_3_COLUMNS)] == SCHEMA_3_COLUMNS


def test_a_schema_2_snapshot_imports_with_memory_and_energy_unknown(store, good, forge, tmp_path):
    old = schema_2_snapshot(good, forge)
    con = connect(tmp_path / "new.duckdb")
    report = import_snapshot(con, old)
    n_cells = store.execute("SELECT count(*) FROM cells").fetchone()[0]
    assert report.added["cells"] == n_cells
    assert _unknown_counts(con) == (n_cells, 0, 0)


def test_a_schema_2_snapshot_opens_in_memory_as_the_hosted_dashboard_reads_it(store, good, forge):
    con = open_snapshot_bytes(schema_2_snapshot(good, forge))
    try:
        assert _unknown_counts(con) == (store.execute("SELECT count(*) FROM cells").fetchone()[0], 0, 0)
    finally:
        con.close()


def schema_2_store(store, path) -> int:
    """A store file as schema-2 shapebench left it (no schema-3 columns); returns its cells."""
    old = duckdb.connect(str(path))
    for table in ("runs", "samples"):
        old.register(f"old_{table}", store.sql(f"SELECT * FROM {table}").to_arrow_table())
        old.execute(f"CREATE TABLE {table} AS SELECT * FROM old_{table}")
    old.register("old_cells", store.sql("SELECT * FROM cells").to_arrow_table().drop_columns(list(SCHEMA_3_COLUMNS)))
    old.execute("CREATE TABLE schema_info (schema_version INTEGER NOT NULL, created_at TIMESTAMP NOT NULL)")
    old.execute("INSERT INTO schema_info VALUES (2, now())")
    old.execute("CREATE TABLE cells AS SELECT * FROM old_cells")
    n_cells = old.execute("SELECT count(*) FROM cells").fetchone()[0]
    old.close()
    return n_cells


def test_a_schema_2_store_read_without_upgrading_exports_a_snapshot_that_imports(store, tmp_path):
    from store.snapshot import export_snapshot

    n_cells = schema_2_store(store, tmp_path / "old.duckdb")
    con = connect(tmp_path / "old.duckdb", read_only=True)  # the dashboard and `snapshot export` read so
    try:
        manifest = export_snapshot(con, tmp_path / "old.zip")
    finally:
        con.close()
    assert manifest.schema_version == 2, "the snapshot says what its tables hold"
    fresh = connect(tmp_path / "new.duckdb")
    try:
        assert import_snapshot(fresh, (tmp_path / "old.zip").read_bytes()).added["cells"] == n_cells
        assert _unknown_counts(fresh) == (n_cells, 0, 0)
    finally:
        fresh.close()


def test_a_schema_2_store_gains_the_columns_and_records_the_current_version_when_opened(store, tmp_path):
    path = tmp_path / "old.duckdb"
    n_cells = schema_2_store(store, path)
    con = connect(path)
    try:
        columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'cells'").fetchall()}
        assert set(SCHEMA_3_COLUMNS) <= columns
        assert _unknown_counts(con) == (n_cells, 0, 0)
        assert con.execute("SELECT max(schema_version) FROM schema_info").fetchone()[0] == SCHEMA_VERSION
    finally:
        con.close()


def test_a_snapshot_claiming_zero_bytes_of_memory_is_refused_since_unknown_is_null(good, forge, dump_store):
    files = dict(good)
    cells = forge.table(files, "cells")
    zeros = pa.array([0] * cells.num_rows, pa.int64())
    files["cells.parquet"] = forge.parquet(cells.set_column(cells.schema.get_field_index("peak_rss_bytes"), "peak_rss_bytes", zeros))
    message = refused(connect_memory(), forge.rezip(files), dump_store, "peak_rss_bytes")
    assert "unknown is NULL, not 0" in message
