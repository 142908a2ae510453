"""Every refused snapshot: a clear one-line message, and the store left exactly as it was."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pyarrow as pa
import pytest

from store.snapshot import (
    Limits, SnapshotError, export_snapshot, export_snapshot_bytes, import_snapshot,
    open_snapshot, open_snapshot_bytes,
)
from tests.store.conftest import refused


def replace_table(forge, files, table, tbl):
    return forge.rezip({**files, f"{table}.parquet": forge.parquet(tbl)})


def test_a_file_that_is_not_a_zip_is_refused(store, tmp_path, dump_store):
    path = tmp_path / "snap.zip"
    path.write_text("run_id,status\nr1,finished\n")
    refused(store, path, dump_store, "not a readable zip")


def test_a_truncated_zip_is_refused(store, tmp_path, dump_store):
    data = export_snapshot_bytes(store)
    refused(store, data[: len(data) // 2], dump_store, "not a readable zip")
    refused(store, data[:-30], dump_store, "not a readable zip")


def test_a_corrupted_member_fails_its_crc_or_checksum(store, dump_store, good, forge):
    data = bytearray(export_snapshot_bytes(store))  # Parquet members are stored, not deflated
    offset = data.index(b"PAR1") + 40  # inside the first Parquet member's bytes
    data[offset] ^= 0xFF
    refused(store, bytes(data), dump_store, "not a readable zip|checksum mismatch")


@pytest.mark.parametrize("evil", ["../manifest.json", "../../etc/cron.d/x", "/etc/passwd",
                                  "snap/../../x", "C:/windows/x", "a\\..\\b"])
def test_zip_entries_that_escape_the_snapshot_are_refused(store, dump_store, good, evil):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in good.items():
            zf.writestr(name, data)
        zf.writestr(evil, b"x")
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert evil in zf.namelist()  # the hostile name really is in the archive
    refused(store, buf.getvalue(), dump_store, "escapes the snapshot directory")


def test_a_snapshot_without_a_manifest_is_refused(store, tmp_path, dump_store, good, forge):
    files = {k: v for k, v in good.items() if k != "manifest.json"}
    refused(store, forge.rezip(files), dump_store, "no manifest.json")
    export_snapshot(store, tmp_path / "snap")
    (tmp_path / "snap" / "manifest.json").unlink()
    refused(store, tmp_path / "snap", dump_store, "no manifest.json")


def test_a_manifest_from_a_newer_format_version_is_refused(store, dump_store, good, forge):
    manifest = json.loads(good["manifest.json"])
    manifest["format_version"] = 2
    message = refused(store, forge.rezip({**good, "manifest.json": json.dumps(manifest).encode()}),
                      dump_store, "newer than this shapebench")
    assert "upgrade" in message


@pytest.mark.parametrize("mutate, match", [
    (lambda m: m.pop("files"), "lacks required keys: files"),
    (lambda m: m.update(schema_version=99), "schema version 99"),
    (lambda m: m.update(format="something-else"), "not a shapebench snapshot"),
    (lambda m: m["row_counts"].update(runs=5), "manifest says 5"),
    (lambda m: m["files"].update({"runs; DROP TABLE runs; --.parquet": m["files"]["runs.parquet"]}),
     "must list exactly the files"),
])
def test_a_manifest_that_lies_or_lacks_keys_is_refused(store, dump_store, good, forge, mutate, match):
    manifest = json.loads(good["manifest.json"])
    mutate(manifest)
    files = {**good, "manifest.json": json.dumps(manifest).encode()}
    refused(store, forge.rezip(files, fix_manifest=False), dump_store, match)


def test_a_manifest_that_is_not_json_is_refused(store, dump_store, good, forge):
    refused(store, forge.rezip({**good, "manifest.json": b"{not json"}, fix_manifest=False),
            dump_store, "not valid JSON")


def test_a_file_that_does_not_match_its_checksum_is_refused(store, tmp_path, dump_store, forge, good):
    export_snapshot(store, tmp_path / "snap")
    runs = forge.table(good, "runs")
    altered = runs.set_column(runs.schema.get_field_index("status"), "status",
                              pa.array(["finished"] * runs.num_rows))
    (tmp_path / "snap" / "runs.parquet").write_bytes(forge.parquet(altered))
    refused(store, tmp_path / "snap", dump_store, "checksum mismatch for runs.parquet")


def test_a_table_with_a_missing_column_is_refused(store, dump_store, good, forge):
    cells = forge.table(good, "cells").drop_columns(["n_head"])
    refused(store, replace_table(forge, good, "cells", cells), dump_store, "lacks columns: n_head")


def test_a_table_with_an_extra_column_is_refused(store, dump_store, good, forge):
    runs = forge.table(good, "runs")
    runs = runs.append_column("owner", pa.array(["eve"] * runs.num_rows))
    refused(store, replace_table(forge, good, "runs", runs), dump_store, "unknown columns: 'owner'")


def test_a_column_name_that_carries_sql_is_refused_not_run(store, dump_store, good, forge):
    evil = 'x" VARCHAR); DROP TABLE runs; --'
    samples = forge.table(good, "samples")
    samples = samples.append_column(evil, pa.array(["1"] * samples.num_rows))
    refused(store, replace_table(forge, good, "samples", samples), dump_store, "unknown columns")
    assert store.execute("SELECT count(*) FROM runs").fetchall()[0][0] == 2


@pytest.mark.parametrize("table, column, values, match", [
    ("samples", "latency_ms", lambda n: pa.array(["1.5"] * n), "samples.latency_ms has type string"),
    ("cells", "n_layer", lambda n: pa.array([1.5] * n), "cells.n_layer has type double"),
    ("runs", "started_at", lambda n: pa.array([0] * n, pa.timestamp("us", tz="UTC")), "timestamp"),
    ("cells", "flags", lambda n: pa.array([[1]] * n), "cells.flags"),
])
def test_a_column_of_the_wrong_type_is_refused(store, dump_store, good, forge, table, column, values, match):
    tbl = forge.table(good, table)
    tbl = tbl.set_column(tbl.schema.get_field_index(column), column, values(tbl.num_rows))
    refused(store, replace_table(forge, good, table, tbl), dump_store, match)


def test_a_file_that_is_not_parquet_is_refused(store, dump_store, good, forge):
    files = {**good, "samples.parquet": b"PAR1 nothing here PAR1"}
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["samples.parquet"] = {"sha256": hashlib.sha256(files["samples.parquet"]).hexdigest(),
                                            "bytes": len(files["samples.parquet"])}
    files["manifest.json"] = json.dumps(manifest).encode()
    refused(store, forge.rezip(files, fix_manifest=False), dump_store,
            "samples.parquet is not a readable Parquet")


def test_repeated_keys_within_a_snapshot_are_refused(store, dump_store, good, forge):
    samples = forge.table(good, "samples")
    refused(store, replace_table(forge, good, "samples", pa.concat_tables([samples, samples.slice(0, 1)])),
            dump_store, "repeats a key")


def test_cells_without_their_run_are_refused(store, dump_store, good, forge):
    runs = forge.table(good, "runs").slice(0, 1)
    refused(store, replace_table(forge, good, "runs", runs), dump_store, "run_id missing from runs.parquet")


def test_a_row_that_breaks_a_store_constraint_rolls_back_the_whole_import(good, forge, dump_store):
    from store.db import connect_memory
    samples = forge.table(good, "samples")
    i = samples.schema.get_field_index("latency_ms")
    nulls = pa.array([None] + samples["latency_ms"].to_pylist()[1:], pa.float64())
    # runs and cells are inserted before samples, so a partial import would leave them
    target = connect_memory()
    refused(target, replace_table(forge, good, "samples", samples.set_column(i, "latency_ms", nulls)),
            dump_store, "import failed, store unchanged")
    assert dump_store(target) == {"runs": [], "cells": [], "samples": []}


def test_a_snapshot_over_the_size_limit_is_refused(store, tmp_path, dump_store):
    data = export_snapshot_bytes(store)
    refused(store, data, dump_store, "over the limit", limits=Limits(max_bytes=len(data) - 1))
    export_snapshot(store, tmp_path / "snap")
    refused(store, tmp_path / "snap", dump_store, "over the limit", limits=Limits(max_bytes=1000))
    with pytest.raises(SnapshotError, match="over the limit"):
        open_snapshot_bytes(data, max_bytes=1024)


def test_a_zip_bomb_is_refused_before_it_is_expanded(store, dump_store, good, forge):
    bomb = b"\0" * (8 << 20)  # 8 MiB of zeros deflates to ~8 KiB: a ratio near 1000
    files = {**good, "padding.bin": bomb}
    data = forge.rezip(files)
    assert len(data) < 100_000
    refused(store, data, dump_store, "decompression bomb")
    refused(store, data, dump_store, "would expand to", limits=Limits(max_uncompressed=4 << 20))


def test_a_parquet_bomb_is_refused_before_it_is_decoded(store, dump_store, good, forge):
    samples = forge.table(good, "samples")
    n = 400_000  # one long string repeated: tiny on disk, 400 MB decoded
    big = pa.table({c: pa.array([samples[c][0].as_py()] * n, samples.schema.field(c).type)
                    for c in samples.column_names})
    big = big.set_column(big.schema.get_field_index("phase"), "phase",
                         pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array(["p" * 1000])))
    big = big.set_column(big.schema.get_field_index("rep"), "rep", pa.array(range(n), pa.int32()))
    data = replace_table(forge, good, "samples", big)
    refused(store, data, dump_store, "expand past the size limit", limits=Limits(max_uncompressed=64 << 20))


def test_a_directory_without_a_snapshot_is_refused(tmp_path, store, dump_store):
    (tmp_path / "notes.txt").write_text("hello")
    refused(store, tmp_path, dump_store, "no manifest.json")
    refused(store, tmp_path / "notes.txt", dump_store, "neither a snapshot directory nor a .zip")
    refused(store, tmp_path / "missing.zip", dump_store, "no snapshot at")


def test_open_snapshot_refuses_with_the_same_checks(tmp_path, good, forge):
    path = tmp_path / "bad.zip"
    path.write_bytes(forge.rezip({k: v for k, v in good.items() if k != "manifest.json"}))
    with pytest.raises(SnapshotError, match="no manifest.json"):
        open_snapshot(path)
