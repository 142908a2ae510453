"""A DuckDB file that is someone else's database (tables, no shapebench schema) is refused as
a store, read-write and read-only, and left byte for byte as it was."""
from __future__ import annotations

import duckdb
import pytest

from store.dataset import Dataset, open_read_only
from store.db import NotAStoreError, connect
from store.snapshot import export_snapshot_bytes
from tests.runner.helpers import run_cli


@pytest.fixture
def foreign(tmp_path):
    path = tmp_path / "accounts.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id INTEGER, name VARCHAR)")
    con.execute("CREATE TABLE invoices (id INTEGER, total DOUBLE)")
    con.execute("INSERT INTO customers VALUES (1, 'Ada')")
    con.close()
    return path


@pytest.mark.parametrize("read_only", [False, True])
def test_a_foreign_database_is_refused_and_left_untouched(foreign, read_only):
    before = foreign.read_bytes()
    with pytest.raises(NotAStoreError) as info:
        connect(foreign, read_only=read_only)
    message = str(info.value)
    assert "\n" not in message and "customers, invoices" in message and "no shapebench schema" in message
    assert foreign.read_bytes() == before
    con = duckdb.connect(str(foreign), read_only=True)  # the refusal released the file
    assert sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()) == [
        "customers", "invoices"]


def test_the_dashboard_and_analyze_path_refuses_it_too(foreign):
    with pytest.raises(NotAStoreError):
        open_read_only(Dataset("store", foreign, writable=True))


def test_an_empty_file_and_a_shapebench_store_still_open(tmp_path, store):
    fresh = connect(tmp_path / "new.duckdb")
    fresh.close()
    again = connect(tmp_path / "new.duckdb")
    assert again.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]
    again.close()
    assert connect(tmp_path / "new.duckdb", read_only=True).execute("SELECT count(*) FROM cells").fetchall() == [(0,)]


def test_cli_snapshot_import_into_a_foreign_database_is_one_line(foreign, store, tmp_path):
    (tmp_path / "snap.zip").write_bytes(export_snapshot_bytes(store))
    before = foreign.read_bytes()
    done = run_cli("snapshot", "import", tmp_path / "snap.zip", "--db", foreign)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no shapebench schema" in lines[0]
    assert foreign.read_bytes() == before
