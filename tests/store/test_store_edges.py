"""Stores on the edge are decided before any DDL and refused in one line, the file left byte
for byte as it was: a store of a newer schema, a foreign database that happens to hold a table
named schema_info, and a store whose blocks fail their checksums (never written to)."""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from store.db import NotAStoreError, connect
from store.schema import SCHEMA_VERSION
from store.snapshot import export_snapshot_bytes, import_snapshot
from tests.runner.helpers import run_cli

REGIME = "CPU Intel(R) Xeon(R) Processor | 2 threads"


@pytest.fixture
def real_store(bundled_con, tmp_path) -> Path:
    path = tmp_path / "store.duckdb"
    con = connect(path)
    import_snapshot(con, export_snapshot_bytes(bundled_con, regimes=[REGIME]))
    con.execute("CHECKPOINT")
    con.close()
    return path


def _ingest_line(store: Path, tmp_path: Path) -> str:
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    done = run_cli("ingest", runs, "--db", store, "--no-derive")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_store_of_a_newer_schema_is_refused_and_not_altered(real_store, tmp_path):
    con = duckdb.connect(str(real_store))
    con.execute("INSERT INTO schema_info VALUES (?, now())", [SCHEMA_VERSION + 1])
    con.close()
    before = real_store.read_bytes()
    with pytest.raises(NotAStoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this shapebench"):
        connect(real_store)
    assert "newer than this shapebench" in _ingest_line(real_store, tmp_path)
    assert real_store.read_bytes() == before


@pytest.mark.parametrize("read_only", [False, True])
def test_a_foreign_database_with_a_schema_info_table_is_still_foreign(tmp_path, read_only):
    path = tmp_path / "app.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_info (migration VARCHAR, applied TIMESTAMP)")
    con.execute("CREATE TABLE users (id INTEGER, email VARCHAR)")
    con.close()
    before = path.read_bytes()
    with pytest.raises(NotAStoreError, match="no shapebench schema") as info:
        connect(path, read_only=read_only)
    assert "users" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before
    check = duckdb.connect(str(path), read_only=True)
    assert sorted(r[0] for r in check.execute("SELECT table_name FROM information_schema.tables").fetchall()) == [
        "schema_info", "users"]


def test_a_store_whose_blocks_fail_checksums_is_never_written_to(real_store, tmp_path):
    data = bytearray(real_store.read_bytes())
    size = len(data)
    for offset in range(int(size * 0.3), int(size * 0.7), 4096 * 7):  # inside the data blocks, not the header
        data[offset + 100] ^= 0xFF
    real_store.write_bytes(bytes(data))
    before = real_store.read_bytes()
    with pytest.raises(NotAStoreError, match="is damaged .*refusing to write to it"):
        connect(real_store)
    line = _ingest_line(real_store, tmp_path)
    assert "damaged" in line or "Corrupt" in line
    assert real_store.read_bytes() == before


def test_a_healthy_store_still_opens_for_writing_and_reading(real_store):
    con = connect(real_store)
    assert con.execute("SELECT count(*) FROM cells").fetchall()[0][0] > 0
    con.close()
    assert connect(real_store, read_only=True).execute("SELECT count(*) FROM runs").fetchall()[0][0] > 0
