"""Schema 2 (protocol v2's samples.round / samples.worker / runs.protocol_version) reads the
schema-1 snapshots made before it: the new columns arrive as "not recorded", never as zeros."""
from __future__ import annotations

import json

import duckdb

from store.dataset import BUNDLED_SNAPSHOT
from store.db import connect
from store.schema import ADDED_COLUMNS
from store.snapshot import import_snapshot, open_snapshot_bytes


def schema_1_snapshot(forge) -> bytes:
    """The bundled snapshot as schema-1 shapebench wrote such data: none of the columns later
    schemas add (schema.sql's ALTER lines), manifest version 1, checksums re-signed."""
    files = {p.name: p.read_bytes() for p in BUNDLED_SNAPSHOT.iterdir()}
    for table, columns in ADDED_COLUMNS.items():
        tbl = forge.table(files, table)
        files[f"{table}.parquet"] = forge.parquet(tbl.drop_columns([c for c in columns if c in tbl.column_names]))
    files["manifest.json"] = json.dumps(json.loads(files["manifest.json"]) | {"schema_version": 1}).encode()
    return forge.rezip(files)


def test_a_schema_1_snapshot_opens_with_rounds_unrecorded_and_protocol_1(forge):
    con = open_snapshot_bytes(schema_1_snapshot(forge))
    try:
        assert con.execute("SELECT count(*) FILTER (round IS NOT NULL OR worker IS NOT NULL) FROM samples").fetchone()[0] == 0
        assert con.execute("SELECT DISTINCT protocol_version FROM runs").fetchall() == [(1,)]
        manifest = json.loads((BUNDLED_SNAPSHOT / "manifest.json").read_text())
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == manifest["row_counts"]["runs"]
    finally:
        con.close()


def test_a_store_made_before_schema_2_gains_the_new_columns_when_opened(tmp_path, forge):
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
        import_snapshot(con, schema_1_snapshot(forge))
        assert con.execute("SELECT count(*) FILTER (round IS NOT NULL) FROM samples").fetchone()[0] == 0
    finally:
        con.close()
