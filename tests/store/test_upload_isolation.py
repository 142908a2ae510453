"""A visitor's upload is theirs alone: computed from its own rows, held in their session only,
bounded, never written to disk or to a cache another visitor reads; and the key of results
that are shared covers every column results read.

Two AppTest sessions in one server process stand for two visitors: one opens a snapshot of
one regime of the bundled data, the other uploads the same rows with other model names.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from analysis.load import content_id
from dashboard import cache, source
from store import kept
from store.hosted import open_upload
from store.snapshot import SnapshotError, export_snapshot, export_snapshot_bytes, open_snapshot, open_snapshot_bytes
from store.snapshot_read import UPLOAD_LIMITS
from tests.store.conftest import rezip, unzip

ROOT = Path(__file__).resolve().parents[2]
REGIME = "CPU Intel(R) Xeon(R) Processor | 2 threads"  # 3 runs of the same cells, small enough to compute
RENAMED = "-renamed-by-visitor"


@pytest.fixture(scope="module")
def shared_snapshot(bundled_con, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shared") / "snap"
    export_snapshot(bundled_con, out, regimes=[REGIME])
    return out


def _with_cells(files: dict[str, bytes], change) -> bytes:
    """The snapshot zip with cells.parquet changed by `change(table) -> table`, re-signed."""
    cells = change(pq.read_table(io.BytesIO(files["cells.parquet"])))
    buf = io.BytesIO()
    pq.write_table(cells, buf)
    return rezip({**files, "cells.parquet": buf.getvalue()})


def _set(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, values)


@pytest.fixture(scope="module")
def renamed_upload(bundled_con) -> bytes:
    """The shared rows with every model renamed: the same timings under other names."""
    files = unzip(export_snapshot_bytes(bundled_con, regimes=[REGIME]))
    return _with_cells(files, lambda t: _set(t, "model_name", pc.binary_join_element_wise(t["model_name"], RENAMED, "")))


@pytest.fixture
def visitors(tmp_path):
    """Environment of a server on the shared snapshot with its own disk cache; restored after."""
    saved = {k: os.environ.get(k) for k in ("SHAPEBENCH_SNAPSHOT", "SHAPEBENCH_CACHE", "SHAPEBENCH_DB",
                                            "SHAPEBENCH_RUNS", "SHAPEBENCH_HOSTED")}
    cache_dir = tmp_path / "cache"
    os.environ.update({"SHAPEBENCH_CACHE": str(cache_dir), "SHAPEBENCH_DB": str(tmp_path / "absent.duckdb"),
                       "SHAPEBENCH_RUNS": str(tmp_path / "runs")})
    os.environ.pop("SHAPEBENCH_HOSTED", None)
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield cache_dir
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _explore_models(at: AppTest) -> set[str]:
    at.switch_page("app_pages/explore.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return set(at.dataframe[0].value["model_name"].dropna())


def _uploader(data: bytes) -> AppTest:
    """A visitor whose session opened `data` as the Snapshots page does (store.hosted.open_upload)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state[source.UPLOAD_KEY] = ("upload-sha", open_upload(data), "mine.zip")
    at.session_state["_kept_dataset_kind"] = source.UPLOAD
    return at


def test_an_upload_with_other_names_never_changes_what_another_visitor_sees(
        shared_snapshot, renamed_upload, visitors, monkeypatch):
    monkeypatch.setenv("SHAPEBENCH_SNAPSHOT", str(shared_snapshot))
    uploader = _uploader(renamed_upload)
    mine = _explore_models(uploader)
    assert mine and all(name.endswith(RENAMED) for name in mine)
    assert not list(visitors.glob("*.pkl")), "an upload's results were written to disk"

    other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    theirs = _explore_models(other)
    assert theirs and not any(name.endswith(RENAMED) for name in theirs)
    assert list(visitors.glob("*.pkl")), "the shared snapshot's results are kept on disk"

    # and the other way round: the shared results, now kept, are not what the uploader sees
    again = _uploader(renamed_upload)
    assert _explore_models(again) == mine


def test_an_uploads_results_stay_in_its_session_within_a_bound(renamed_upload, visitors):
    at = _uploader(renamed_upload)
    _explore_models(at)
    held = at.session_state["_shapebench_private_results"]
    assert held.entries and 0 < held.held <= cache.SESSION_RESULT_BYTES
    assert held.held == sum(size for _, size in held.entries.values())


def test_session_results_drop_the_least_recently_used_past_their_bound():
    held = cache.SessionResults("upload:x", limit=3500)
    chunk = b"x" * 1000
    for name in ("a", "b", "c"):
        held.get_or_compute((name,), lambda: chunk)
    held.get_or_compute(("a",), lambda: pytest.fail("a is held"))
    held.get_or_compute(("d",), lambda: chunk)
    assert list(held.entries) == [("c",), ("a",), ("d",)] and held.held <= 3500
    assert held.get_or_compute(("huge",), lambda: b"y" * 5000) == b"y" * 5000
    assert ("huge",) not in held.entries


@pytest.mark.parametrize("column, value", [("model_name", "other-name"), ("params", 1), ("backend", "hf-sdpa-x"),
                                          ("backend_options", '{"x": 1}')])
def test_content_id_covers_every_column_results_read(shared_snapshot, column, value):
    con = open_snapshot(shared_snapshot)
    before = content_id(con)
    con.execute(f"UPDATE cells SET {column} = ? WHERE cell_id = (SELECT min(cell_id) FROM cells)", [value])
    assert content_id(con) != before


def test_an_upload_over_the_row_bound_is_refused_before_decoding(bundled_con):
    files = unzip(export_snapshot_bytes(bundled_con, regimes=[REGIME]))
    samples = pq.read_table(io.BytesIO(files["samples.parquet"]))
    copies = UPLOAD_LIMITS.max_rows // samples.num_rows + 1
    buf = io.BytesIO()
    pq.write_table(pa.concat_tables([samples] * copies), buf, compression="zstd")
    data = rezip({**files, "samples.parquet": buf.getvalue()})
    assert len(data) < UPLOAD_LIMITS.max_bytes
    with pytest.raises(SnapshotError, match=f"over the limit of {UPLOAD_LIMITS.max_rows} rows for this snapshot \\(all its tables together\\); refused$"):
        open_snapshot_bytes(data)


def test_a_frame_named_many_times_is_decoded_once():
    buf = io.BytesIO()
    pq.write_table(pa.table({"a": list(range(1000))}), buf)
    value = kept.decode(json.dumps([{"$frame": 0}] * 50), [buf.getvalue()], {})
    assert len(value) == 50 and all(frame is value[0] for frame in value)


def test_frames_of_one_result_share_one_size_bound(monkeypatch):
    blobs = []
    for shift in range(3):
        buf = io.BytesIO()
        pq.write_table(pa.table({"a": list(range(shift, 20_000 + shift))}), buf)
        blobs.append(buf.getvalue())
    one = pq.ParquetFile(io.BytesIO(blobs[0])).metadata.row_group(0).total_byte_size
    monkeypatch.setattr(kept, "MAX_RESULT_BYTES", int(one * 2.5))
    assert len(kept.decode(json.dumps([{"$frame": 0}, {"$frame": 1}]), blobs, {})) == 2
    with pytest.raises(kept.KeptError, match="size limit"):
        kept.decode(json.dumps([{"$frame": i} for i in range(3)]), blobs, {})
