"""Schema 2 (protocol v2's samples.round / samples.worker / runs.protocol_version) reads the
schema-1 snapshots made before it: the new columns arrive as "not recorded", never as zeros."""
from __future__ import annotations

import json

import duckdb
import pyarrow as pa

from store.dataset import BUNDLED_SNAPSHOT
from store.db import connect
from store.schema import ADDED_COLUMNS
from store.snapshot import import_snapshot, open_snapshot, open_snapshot_bytes


def schema_1_snapshot(forge) -> bytes:
    """The bundled snapshot as schema-1 shapebench wrote such data: the runs it could hold (GPT-2
    only: a llama cell without its KV heads would be another cell's double), none of the columns
    later schemas add (schema.sql's ALTER lines), no derived results, manifest version 1, counts
    and checksums re-signed."""
    import pyarrow.compute as pc

    files = {p.name: p.read_bytes() for p in BUNDLED_SNAPSHOT.iterdir() if p.name != "derived.parquet"}
    cells = forge.table(files, "cells")
    later = set(pc.filter(cells["run_id"], pc.not_equal(cells["family"], "gpt2")).to_pylist())
    kept = {}
    for table in ("runs", "cells", "samples"):
        tbl = forge.table(files, table)
        if table == "samples":
            tbl = tbl.filter(pc.is_in(tbl["cell_id"], value_set=kept["cells"]["cell_id"]))
        else:
            tbl = tbl.filter(pc.invert(pc.is_in(tbl["run_id"], value_set=pa.array(sorted(later), pa.string()))))
        kept[table] = tbl.drop_columns([c for c in ADDED_COLUMNS.get(table, ()) if c in tbl.column_names])
        files[f"{table}.parquet"] = forge.parquet(kept[table])
    manifest = json.loads(files["manifest.json"])
    manifest.pop("derived", None)
    manifest["row_counts"] = {table: kept[table].num_rows for table in ("runs", "cells", "samples")}
    manifest["regimes"] = sorted(set(kept["runs"]["regime"].to_pylist()))
    files["manifest.json"] = json.dumps(manifest | {"schema_version": 1}).encode()
    return forge.rezip(files)


def test_a_schema_1_snapshot_opens_with_rounds_unrecorded_and_protocol_1(forge):
    con = open_snapshot_bytes(schema_1_snapshot(forge))
    try:
        assert con.execute("SELECT count(*) FILTER (round IS NOT NULL OR worker IS NOT NULL) FROM samples").fetchone()[0] == 0
        assert con.execute("SELECT DISTINCT protocol_version FROM runs").fetchall() == [(1,)]
        gpt2_only = open_snapshot(BUNDLED_SNAPSHOT).execute(
            "SELECT count(DISTINCT run_id) FILTER (run_id NOT IN (SELECT run_id FROM cells WHERE family <> 'gpt2')) "
            "FROM runs").fetchone()[0]
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == gpt2_only > 0
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
