"""Snapshots: export, merge into a store, open in memory."""
from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from store.db import connect, connect_memory
from store.schema import SCHEMA_VERSION
from store.snapshot import (
    SNAPSHOT_FORMAT_VERSION, export_snapshot, export_snapshot_bytes, import_snapshot,
    open_snapshot, open_snapshot_bytes,
)


@pytest.mark.parametrize("name", ["snap", "snap.zip"])
def test_export_then_import_into_empty_store_gives_identical_rows(store, tmp_path, dump_store, name):
    export_snapshot(store, tmp_path / name)
    target = connect_memory()
    report = import_snapshot(target, tmp_path / name)
    assert dump_store(target) == dump_store(store)
    assert report.added == {"runs": 2, "cells": 3, "samples": 54}
    assert report.present == {"runs": 0, "cells": 0, "samples": 0}


def test_directory_export_has_one_parquet_per_table_and_a_manifest(store, tmp_path):
    export_snapshot(store, tmp_path / "snap")
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == [
        "cells.parquet", "manifest.json", "runs.parquet", "samples.parquet"]


def test_manifest_records_versions_regimes_counts_and_checksums(store, tmp_path):
    manifest = export_snapshot(store, tmp_path / "snap")
    on_disk = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert on_disk["format_version"] == SNAPSHOT_FORMAT_VERSION == manifest.format_version
    assert on_disk["schema_version"] == SCHEMA_VERSION
    assert on_disk["regimes"] == sorted(["NVIDIA H100 80GB HBM3 x1 | driver 580.65 | CUDA 13.0",
                                         "AMD EPYC 9654 96-Core Processor x16 threads"])
    assert on_disk["row_counts"] == {"runs": 2, "cells": 3, "samples": 54}
    assert on_disk["created_at"] and on_disk["tool_version"]
    for name, entry in on_disk["files"].items():
        data = (tmp_path / "snap" / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_parquet_files_are_zstd_compressed(store, tmp_path):
    import pyarrow.parquet as pq
    export_snapshot(store, tmp_path / "snap")
    meta = pq.ParquetFile(tmp_path / "snap" / "samples.parquet").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_zip_export_is_one_file_that_matches_the_in_memory_bytes(store, tmp_path):
    export_snapshot(store, tmp_path / "out" / "snap.zip")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["snap.zip"]  # no temp file left
    with zipfile.ZipFile(tmp_path / "out" / "snap.zip") as zf:
        on_disk = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
    with zipfile.ZipFile(__import__("io").BytesIO(export_snapshot_bytes(store))) as zf:
        in_memory = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
    assert on_disk == in_memory


@pytest.mark.parametrize("filters, runs, cells", [
    ({"regimes": ["AMD EPYC 9654 96-Core Processor x16 threads"]}, {"run-epyc-b"}, 1),
    ({"run_ids": ["run-h100-a"]}, {"run-h100-a"}, 2),
    ({"backends": ["hf-sdpa"]}, {"run-h100-a"}, 1),
    ({"backends": ["hf-eager"]}, {"run-h100-a", "run-epyc-b"}, 2),
    ({"run_ids": ["run-h100-a"], "backends": ["vllm"]}, set(), 0),
])
def test_filters_select_runs_then_their_cells_and_samples(store, filters, runs, cells):
    con = open_snapshot_bytes(export_snapshot_bytes(store, **filters))
    assert {r for (r,) in con.execute("SELECT run_id FROM runs").fetchall()} == runs
    assert con.execute("SELECT count(*) FROM cells").fetchall()[0][0] == cells
    # every sample belongs to an exported cell, and all of that cell's samples came along
    assert con.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 18 * cells


def test_importing_twice_changes_nothing(store, tmp_path, dump_store):
    export_snapshot(store, tmp_path / "snap.zip")
    target = connect_memory()
    import_snapshot(target, tmp_path / "snap.zip")
    before = dump_store(target)
    again = import_snapshot(target, tmp_path / "snap.zip")
    assert dump_store(target) == before
    assert not again.changed
    assert again.present == {"runs": 2, "cells": 3, "samples": 54}


def test_two_overlapping_snapshots_merge_without_duplicates(builder, dump_store):
    b = builder
    for run in ("run-1", "run-2", "run-3"):
        b.run(run)
        b.cell(run, "gpt2-5m", "hf-sdpa")
    first = export_snapshot_bytes(b.con, run_ids=["run-1", "run-2"])
    second = export_snapshot_bytes(b.con, run_ids=["run-2", "run-3"])
    target = connect_memory()
    import_snapshot(target, first)
    report = import_snapshot(target, second)
    assert report.added == {"runs": 1, "cells": 1, "samples": 18}
    assert report.present == {"runs": 1, "cells": 1, "samples": 18}
    assert dump_store(target) == dump_store(b.con)


def test_a_running_run_that_has_since_finished_is_updated(builder):
    b = builder
    b.run("run-1", status="running")
    b.cell("run-1", "gpt2-5m")
    early = export_snapshot_bytes(b.con)
    b.con.execute("UPDATE runs SET status = 'finished', finished_at = TIMESTAMP '2026-11-20 09:45:00'")
    b.cell("run-1", "gpt2-25m")
    late = export_snapshot_bytes(b.con)

    target = connect_memory()
    import_snapshot(target, early)
    report = import_snapshot(target, late)
    assert report.updated["runs"] == 1 and report.added["cells"] == 1
    assert target.execute("SELECT status, finished_at IS NOT NULL FROM runs").fetchall() == [("finished", True)]
    assert target.execute("SELECT count(*) FROM cells").fetchall()[0][0] == 2


def test_an_older_running_snapshot_does_not_undo_a_finished_run(builder):
    b = builder
    b.run("run-1", status="running")
    early = export_snapshot_bytes(b.con)
    b.con.execute("UPDATE runs SET status = 'finished'")
    late = export_snapshot_bytes(b.con)
    target = connect_memory()
    import_snapshot(target, late)
    report = import_snapshot(target, early)
    assert not report.changed
    assert target.execute("SELECT status FROM runs").fetchall()[0][0] == "finished"


def test_export_works_on_a_read_only_store_file(store, tmp_path, dump_store):
    path = tmp_path / "shapebench.duckdb"
    con = connect(path)
    import_snapshot(con, export_snapshot_bytes(store))
    con.close()
    ro = connect(path, read_only=True)
    assert dump_store(open_snapshot_bytes(export_snapshot_bytes(ro))) == dump_store(store)


def test_open_snapshot_holds_the_tables_in_memory(store, tmp_path, dump_store):
    export_snapshot(store, tmp_path / "snap")
    con = open_snapshot(tmp_path / "snap")
    assert dump_store(con) == dump_store(store)
    assert con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
                       ).fetchall()[0][0] is None  # in memory: no file behind it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]


def test_report_reads_as_one_line(store):
    report = import_snapshot(connect_memory(), export_snapshot_bytes(store))
    assert "\n" not in str(report) and "runs: +2 new" in str(report)


def test_a_filter_given_as_a_bare_string_is_an_error(store):
    with pytest.raises(ValueError, match="list of names"):
        export_snapshot_bytes(store, backends="hf-sdpa")


def test_parquet_written_by_duckdb_copy_is_accepted(store, tmp_path, forge, dump_store):
    """DuckDB tags JSON columns as arrow.json and marks NOT NULL: both must read back."""
    files = forge.unzip(export_snapshot_bytes(store))
    for table in ("runs", "cells", "samples"):
        path = tmp_path / f"{table}.parquet"
        store.execute(f"COPY {table} TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
        files[path.name] = path.read_bytes()
    assert dump_store(open_snapshot_bytes(forge.rezip(files))) == dump_store(store)
