"""Values no measurement can have, and sizes no snapshot needs, in snapshots whose checksums
are right: refused with one line naming the table, the column and the first bad row, and the
store left row for row as it was."""
from __future__ import annotations

import json
import math
from datetime import datetime

import pyarrow as pa
import pytest

from store.snapshot import (
    LOCAL_LIMITS, UPLOAD_LIMITS, Limits, SnapshotError, export_snapshot_bytes, import_snapshot,
    open_snapshot_bytes,
)
from tests.store.conftest import refused as refused_in_one_line


def refused(con, source, dump_store, match: str, **kw) -> str:
    """The shared refusal check, with these messages kept short enough to read at a glance."""
    return refused_in_one_line(con, source, dump_store, match, max_chars=400, **kw)


def with_value(forge, files: dict[str, bytes], table: str, column: str, row: int, value) -> bytes:
    """The snapshot with one cell of one table replaced, re-signed so only that flaw remains."""
    tbl = forge.table(files, table)
    values = tbl[column].to_pylist()
    values[row] = value
    index = tbl.schema.get_field_index(column)
    tbl = tbl.set_column(index, tbl.schema.field(column), pa.array(values, tbl.schema.field(column).type))
    return forge.rezip({**files, f"{table}.parquet": forge.parquet(tbl)})


BAD_VALUES = [
    ("samples", "latency_ms", math.nan), ("samples", "latency_ms", math.inf),
    ("samples", "latency_ms", 0.0), ("samples", "latency_ms", -3.2), ("samples", "phase", "warmup"),
    ("samples", "timer", "Robert'); DROP TABLE runs;--"),
    ("cells", "n_layer", 0), ("cells", "n_embd", -80), ("cells", "params", -5_040_000),
    ("cells", "batch_size", 0), ("cells", "dtype", "float8"), ("cells", "status", "great"),
    ("cells", "backend", "hf-magic"), ("cells", "device", "tpu"), ("cells", "n_head", 7),
    ("cells", "setup_s", math.nan), ("cells", "started_at", datetime(1, 1, 1)),
    ("runs", "status", "done"), ("runs", "device_kind", "quantum"),
    ("runs", "started_at", datetime(1, 1, 1)), ("runs", "finished_at", datetime(9999, 12, 31)),
    ("runs", "regime", "   "),
]


@pytest.mark.parametrize(("table", "column", "value"), BAD_VALUES,
                         ids=[f"{t}.{c}={v!r}" for t, c, v in BAD_VALUES])
def test_a_value_no_measurement_can_have_is_refused_naming_table_column_and_row(
        store, dump_store, good, forge, table, column, value):
    row = 1
    data = with_value(forge, good, table, column, row, value)
    message = refused(store, data, dump_store, rf"^{table}\.{column}: row {row} ")
    assert "must be" in message
    with pytest.raises(SnapshotError, match=rf"^{table}\.{column}: row {row} "):
        open_snapshot_bytes(data)  # the hosted path checks the same


def test_a_cell_whose_run_id_disagrees_with_its_cell_id_is_refused(store, dump_store, good, forge):
    cells = forge.table(good, "cells")
    other = [r for r in forge.table(good, "runs")["run_id"].to_pylist() if r != cells["run_id"][0].as_py()][0]
    data = with_value(forge, good, "cells", "run_id", 0, other)  # a run that exists: links still hold
    refused(store, data, dump_store, r"^cells\.cell_id: row 0 .*run_id \+ '/' \+ cell_key")


def test_a_decode_step_outside_decode_is_refused(store, dump_store, good, forge):
    samples = forge.table(good, "samples")
    row = samples["phase"].to_pylist().index("prefill")
    data = with_value(forge, good, "samples", "step", row, 3)
    refused(store, data, dump_store, rf"^samples\.step: row {row} .*0 outside the decode phase")


def test_the_first_bad_row_is_named(store, dump_store, good, forge):
    tbl = forge.table(good, "samples")
    values = tbl["latency_ms"].to_pylist()
    values[5], values[9] = -1.0, math.nan
    tbl = tbl.set_column(tbl.schema.get_field_index("latency_ms"), "latency_ms", pa.array(values))
    data = forge.rezip({**good, "samples.parquet": forge.parquet(tbl)})
    message = refused(store, data, dump_store, r"^samples\.latency_ms: row 5 ")
    assert "has -1.0" in message and "cell_id 'run-" in message


@pytest.mark.parametrize("version", [-5, 0, True, "1"])
def test_a_manifest_schema_version_that_cannot_be_is_refused(store, dump_store, good, forge, version):
    manifest = json.loads(good["manifest.json"]) | {"schema_version": version}
    data = forge.rezip({**good, "manifest.json": json.dumps(manifest).encode()})
    refused(store, data, dump_store, "schema version")


@pytest.mark.parametrize(("key", "value", "match"), [
    ("created_at", "0001-01-01T00:00:00+00:00", "not a plausible time"),
    ("created_at", "yesterday", "not an ISO 8601 time"),
    ("created_at", 12, "must be a string"),
    ("tool_version", "x" * 10_000, "must be a string of at most"),
    ("regimes", ["a regime that is not in runs.parquet"], "regimes do not match"),
    ("filters", "all", "filters must be an object"),
    ("row_counts", {"runs": True, "cells": 3, "samples": 54}, "row_counts"),
])
def test_manifest_fields_are_checked(store, dump_store, good, forge, key, value, match):
    manifest = json.loads(good["manifest.json"]) | {key: value}
    data = forge.rezip({**good, "manifest.json": json.dumps(manifest).encode()}, fix_manifest=key != "row_counts")
    refused(store, data, dump_store, match)


# --- sizes ------------------------------------------------------------------------------

def test_a_huge_model_name_is_refused_from_the_metadata_before_decoding(store, dump_store, good, forge, monkeypatch):
    data = with_value(forge, good, "cells", "model_name", 0, "m" * (20 << 20))
    assert len(data) < 200_000  # 20 MB of name compresses to almost nothing
    import pyarrow.parquet as pq

    decoded = []
    real_read = pq.ParquetFile.read
    monkeypatch.setattr(pq.ParquetFile, "read", lambda self, *a, **k: decoded.append(1) or real_read(self, *a, **k))
    message = refused(store, data, dump_store, r"^cells\.model_name: values would decode to \d+ bytes")
    assert "refused before decoding" in message
    assert len(decoded) <= 1  # runs.parquet only: cells.parquet was never decoded


def test_a_huge_regime_is_refused(store, dump_store, good, forge):
    data = with_value(forge, good, "runs", "regime", 0, "NVIDIA H100 " + "x" * (5 << 20))
    refused(store, data, dump_store, r"^runs\.regime: values would decode to")


def test_one_value_over_its_bound_is_named_by_row(store, dump_store, good, forge):
    # 70 KiB of error text: small enough for the metadata check over 3 rows, too long a value.
    data = with_value(forge, good, "cells", "error", 2, "e" * (70 << 10))
    refused(store, data, dump_store, r"^cells\.error: row 2 .* has 71680 bytes; must be at most 65536 bytes")


def test_too_many_flags_are_refused(store, dump_store, good, forge):
    data = with_value(forge, good, "cells", "flags", 0, ["high_cv"] * 65)
    refused(store, data, dump_store, r"^cells\.flags: row 0 .*at most 64 flags")


def test_row_counts_are_bounded_from_the_footer(store, dump_store, good, forge):
    data = forge.rezip(good)
    rows = sum(forge.table(good, t).num_rows for t in ("runs", "cells", "samples"))
    message = refused(store, data, dump_store, "rows, over the limit", limits=Limits(max_rows=rows - 1))
    assert message.startswith("samples.parquet has")
    import_snapshot(store, data, limits=Limits(max_rows=rows))  # exactly at the bound: fine


def test_default_row_bounds_refuse_the_fifty_million_row_snapshot():
    assert LOCAL_LIMITS.max_rows < 50_000_000
    assert UPLOAD_LIMITS.max_rows < LOCAL_LIMITS.max_rows


def test_the_bundled_snapshot_passes_every_value_check():
    from store.dataset import BUNDLED_SNAPSHOT
    from store.snapshot import open_snapshot

    con = open_snapshot(BUNDLED_SNAPSHOT)
    assert con.execute("SELECT count(*) FROM cells").fetchall()[0][0] > 0


def test_a_float16_latency_column_is_refused_by_type_in_one_line(store, dump_store, good, forge):
    import pyarrow.compute as pc

    samples = forge.table(good, "samples")
    half = pc.cast(samples["latency_ms"], pa.float16())
    data = forge.rezip({**good, "samples.parquet": forge.parquet(
        samples.set_column(samples.schema.get_field_index("latency_ms"), "latency_ms", half))})
    refused(store, data, dump_store, r"^samples\.latency_ms has type halffloat, incompatible with the store's DOUBLE$")
    with pytest.raises(SnapshotError, match="halffloat"):
        open_snapshot_bytes(data)
