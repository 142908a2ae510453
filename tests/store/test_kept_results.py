"""Derived results kept with the data (store.kept, dashboard.results): an export keeps what a
first visit reads, a reopened snapshot serves it, a stale or tampered one is never served, and
nothing in a snapshot is ever unpickled.

Each test exports its own snapshot of one small regime of the bundled data (3 runs, 150
cells, with repeats), so they pass whether or not data/snapshot itself keeps results.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from analysis.load import content_id
from dashboard import results
from store import kept
from store.dataset import BUNDLED_SNAPSHOT
from store.db import connect
from store.hosted import open_upload
from store.snapshot import (
    SnapshotError, export_snapshot, export_snapshot_bytes, import_snapshot, open_snapshot, open_snapshot_bytes,
)
from tests.store.conftest import rezip, unzip

ROOT = Path(__file__).resolve().parents[2]
REGIME = "CPU Intel(R) Xeon(R) Processor | 2 threads"  # 3 runs of the same cells: every result has rows
PAGES = ("app_pages/overview.py", "app_pages/explore.py", "app_pages/depth_width.py", "app_pages/inversions.py",
         "app_pages/regimes.py", "app_pages/why.py", "app_pages/reproducibility.py")


@pytest.fixture(scope="module")
def bundle(bundled_con):
    return bundled_con


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kept") / "snap"
    export_snapshot(bundle, out, regimes=[REGIME], derive=results.derive)
    return out


def _key(con, name: str, args: tuple, code: str | None = None) -> str:
    return results.result_key(content_id(con), name, (), args, code or results.code_version())


def _same(kept_value, fresh) -> None:
    if isinstance(fresh, pd.DataFrame):
        pd.testing.assert_frame_equal(kept_value, fresh, check_dtype=False, check_index_type=False,
                                      check_column_type=False)
    elif dataclasses.is_dataclass(fresh):
        assert type(kept_value) is type(fresh)
        for f in dataclasses.fields(fresh):
            _same(getattr(kept_value, f.name), getattr(fresh, f.name))
    elif isinstance(fresh, (list, tuple)):
        assert len(kept_value) == len(fresh)
        for a, b in zip(kept_value, fresh):
            _same(a, b)
    elif isinstance(fresh, dict):
        assert list(kept_value) == list(fresh)
        for k in fresh:
            _same(kept_value[k], fresh[k])
    elif isinstance(fresh, (float, np.floating)) and np.isnan(fresh):
        assert np.isnan(kept_value)
    else:
        assert kept_value == fresh


def _app(snapshot: Path, cache: Path) -> AppTest:
    os.environ.update({"SHAPEBENCH_SNAPSHOT": str(snapshot), "SHAPEBENCH_CACHE": str(cache),
                       "SHAPEBENCH_DB": str(cache / "absent.duckdb"), "SHAPEBENCH_RUNS": str(cache / "runs")})
    os.environ.pop("SHAPEBENCH_HOSTED", None)
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)


@pytest.fixture
def app_env():
    saved = {k: os.environ.get(k) for k in ("SHAPEBENCH_SNAPSHOT", "SHAPEBENCH_CACHE", "SHAPEBENCH_DB",
                                            "SHAPEBENCH_RUNS", "SHAPEBENCH_HOSTED")}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _visit_every_page(at: AppTest) -> None:
    at.run()
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not [e for e in at.error if "could not be drawn" in e.value], (page, [e.value for e in at.error])


def test_export_keeps_every_first_visit_result_equal_to_a_fresh_computation(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["derived"]["bytes"] == (exported / kept.KEPT_FILE).stat().st_size
    con = open_snapshot(exported)
    fresh = results.Computing(con)
    wanted = list(results.first_visit(fresh))
    assert {n for n, _ in wanted} >= {"cell_frame", "headline", "fits", "inversions", "group_pairs", "repeat_table",
                                      "variance_table", "inversions_across_runs", "regressions_across_runs"}
    for name, args in wanted:
        found, value = kept.load(con, _key(con, name, args), results.kept_types())
        assert found, name
        _same(value, fresh.get(name, *args))
    # the draws (most of the size) are never kept
    assert not {"cell_stats", "pooled"} & {name for name, _ in kept.keys(con)}


def test_reopened_snapshot_serves_kept_results_and_computes_nothing(exported, tmp_path, app_env):
    cache = tmp_path / "cache"
    _visit_every_page(_app(exported, cache))
    # a computed result is kept in the cache directory (analysis.derived); a served one is not
    assert not list(cache.glob("*.pkl")), sorted(p.name for p in cache.glob("*.pkl"))


def test_a_stale_result_is_not_served_but_recomputed(bundle, tmp_path, app_env):
    def stale(snap):  # the same results, as if computed by other code
        return [dataclasses.replace(r, code_version="older-code", key=results.result_key(
            r.content_id, r.name, (), tuple(json.loads(r.args)), "older-code")) for r in results.derive(snap)]

    out = tmp_path / "snap"
    export_snapshot(bundle, out, regimes=[REGIME], derive=stale)
    con = open_snapshot(out)
    assert kept.keys(con), "the stale results are in the snapshot"
    assert kept.load(con, _key(con, "cell_frame", ()), results.kept_types()) == (False, None)
    cache = tmp_path / "cache"
    _visit_every_page(_app(out, cache))
    assert {p.name.split("-")[0] for p in cache.glob("*.pkl")} >= {"cell_stats", "headline", "repeat_table"}


def test_a_tampered_derived_file_fails_the_checksum_in_one_line(exported, tmp_path):
    out = tmp_path / "snap"
    out.mkdir()
    for f in exported.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    data = bytearray((out / kept.KEPT_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / kept.KEPT_FILE).write_bytes(bytes(data))
    with pytest.raises(SnapshotError) as info:
        open_snapshot(out)
    assert str(info.value) == "checksum mismatch for derived.parquet: the snapshot is corrupt or was altered"
    (out / kept.KEPT_FILE).unlink()
    with pytest.raises(SnapshotError, match="^snapshot lacks derived.parquet, which manifest.json lists$"):
        open_snapshot(out)


class _Touch:
    """Unpickling this creates a file: the proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_an_uploaded_snapshot_never_unpickles_anything(bundle, tmp_path):
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Touch(marker))
    files = unzip(export_snapshot_bytes(bundle, regimes=[REGIME]))
    snap = open_snapshot_bytes(rezip(files, fix_manifest=False))
    content = content_id(snap)
    code = results.code_version()
    rows = [  # each with the key the dashboard asks for, so only the format stands between it and a page
        kept.KeptResult(results.result_key(content, "cell_frame", (), (), code), "cell_frame", content, code,
                        "[]", "[]", json.dumps({"$frame": 0}), (evil,)),
        kept.KeptResult(results.result_key(content, "fits", (), (), code), "fits", content, code, "[]", "[]",
                        json.dumps([{"$type": "posix.system", "fields": {"command": f"touch {marker}"}}]), ()),
        kept.KeptResult(results.result_key(content, "inversions", (), (), code), "inversions", content, code,
                        "[]", "[]", json.dumps({"$frame": 0}), (_parquet_with_pickled_metadata(evil),)),
    ]
    files[kept.KEPT_FILE] = kept.file_bytes(rows)
    manifest = json.loads(files["manifest.json"])
    manifest["derived"] = {"sha256": hashlib.sha256(files[kept.KEPT_FILE]).hexdigest(),
                           "bytes": len(files[kept.KEPT_FILE])}
    files["manifest.json"] = json.dumps(manifest).encode()
    con = open_upload(rezip(files, fix_manifest=False))  # hosted mode's locked-down session of a stranger's zip
    assert len(kept.keys(con)) == 3
    for name in ("cell_frame", "fits", "inversions"):
        found, value = kept.load(con, results.result_key(content, name, (), (), code), results.kept_types())
        assert not found or not isinstance(value, _Touch), name
    assert not marker.exists()


def _parquet_with_pickled_metadata(evil: bytes) -> bytes:
    """A Parquet frame whose pandas metadata names a pickled payload where a dtype goes."""
    table = pa.table({"a": [1, 2]})
    meta = {b"pandas": json.dumps({"index_columns": [], "column_indexes": [], "columns": [
        {"name": "a", "field_name": "a", "pandas_type": "object", "numpy_type": "object",
         "metadata": {"pickled": evil.hex()}}]}).encode()}
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf)
    return buf.getvalue()


def test_ingest_keeps_results_in_the_store_for_its_rows(exported, tmp_path):
    from store.cli import derive_into_store

    db = tmp_path / "store.duckdb"
    con = connect(db)
    import_snapshot(con, exported)  # the runs and cells; a store keeps only results of its own rows
    assert kept.keys(con) == []
    con.close()
    derive_into_store(db)
    con = connect(db, read_only=True)
    names = {name for name, _ in kept.keys(con)}
    assert {"cell_frame", "headline", "repeat_table", "regressions_across_runs"} <= names
    found, frame = kept.load(con, _key(con, "cell_frame", ()), results.kept_types())
    assert found and len(frame) > 0
    con.close()
