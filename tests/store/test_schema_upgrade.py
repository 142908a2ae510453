"""Schema 2 (protocol v2's samples.round / samples.worker / runs.protocol_version) reads the
schema-1 snapshots made before it: the new columns arrive as "not recorded", never as zeros."""
from __future__ import annotations

import json

import duckdb

from store.dataset import BUNDLED_SNAPSHOT
from store.db import connect
from store.snapshot import import_snapshot, open_snapshot


def test_a_schema_1_snapshot_opens_with_rounds_unrecorded_and_protocol_1():
    assert json.loads((BUNDLED_SNAPSHOT / "manifest.json").read_text())["schema_version"] == 1
    con = open_snapshot(BUNDLED_SNAPSHOT)
    try:
        assert con.execute("SELECT count(*) FILTER (round IS NOT NULL OR worker IS NOT NULL) FROM samples").fetchone()[0] == 0
        assert con.execute("SELECT DISTINCT protocol_version FROM runs").fetchall() == [(1,)]
    finally:
        con.close()


def test_a_store_made_before_schema_2_gains_the_new_columns_when_opened(tmp_path):
    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute("CREATE TABLE schema_info (schema_version INTEGER NOT NULL, created_at TIMESTAMP NOT NULL)")
    old.execute("INSERT INTO schema_info VALUES (1, now())")
    old.execute("CREATE TABLE samples (cell_id VARCHAR NOT NULL, phase VARCHAR NOT NULL, rep INTEGER NOT NULL, "
                "step INTEGER NOT NULL, latency_ms DOUBLE NOT NULL, timer VARCHAR NOT NULL)")
    old.close()
    con = connect(path)
    try:
        columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'samples'").fetchall()}
        assert {"round", "worker"} <= columns
        import_snapshot(con, BUNDLED_SNAPSHOT)
        assert con.execute("SELECT count(*) FROM samples WHERE round IS NULL").fetchone()[0] > 0
    finally:
        con.close()
