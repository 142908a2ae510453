"""cells.family and cells.n_kv_head (schema 4): a real run of llama, qwen2 and gpt2 shapes
ingested into a DuckDB file; older stores and snapshots read as gpt2 with n_kv_head = n_head;
snapshots carry the columns both ways and refuse values no model can have."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from analysis.load import filter_options, load_cells
from runner.executor import execute
from runner.plan import parse_plan
from store.db import connect, connect_memory
from store.ingest import ingest_runs
from store.schema import SCHEMA_VERSION
from store.snapshot import export_snapshot_bytes, import_snapshot, open_snapshot
from tests.runner.helpers import FAST_MEASURE, plan_dict
from tests.store.conftest import refused

BUNDLED_SNAPSHOT = Path(__file__).resolve().parents[2] / "data" / "snapshot"
SHAPE = dict(n_layer=1, n_embd=64, vocab_size=256, n_positions=64)
CUSTOM = [
    {"name": "llama-kv1", "family": "llama", "n_head": 4, "n_kv_head": 1, **SHAPE},
    {"name": "qwen2-kv2", "family": "qwen2", "n_head": 4, "n_kv_head": 2, **SHAPE},
    {"name": "gpt2", "n_head": 4, **SHAPE},
]


@pytest.fixture(scope="module")
def families_store(tmp_path_factory):
    """A finished CPU run of three tiny shapes (two with GQA) under hf-eager, ingested."""
    root = tmp_path_factory.mktemp("families")
    plan = parse_plan(plan_dict(backends=["hf-eager"], models={"custom": CUSTOM},
                                measure=FAST_MEASURE | {"rounds": 1, "energy_window_s": 0}))
    execute(plan, root / "runs")
    con = connect(root / "store.duckdb")
    assert not ingest_runs(con, root / "runs").skipped
    yield con
    con.close()


def test_an_ingested_run_stores_each_cells_family_kv_heads_and_kv_bytes(families_store):
    rows = families_store.execute(
        "SELECT model_name, status, family, n_head, n_kv_head, n_inner, kv_cache_bytes, batch_size, prompt_len, gen_len "
        "FROM cells ORDER BY model_name").fetchall()
    by_name = {r[0]: r[1:] for r in rows}
    assert {n: (r[0], r[1], r[2], r[3]) for n, r in by_name.items()} == {
        "gpt2": ("ok", "gpt2", 4, 4), "llama-kv1": ("ok", "llama", 4, 1), "qwen2-kv2": ("ok", "qwen2", 4, 2)}
    assert by_name["gpt2"][4] == 4 * 64 and by_name["llama-kv1"][4] == 192  # 4 x width; SwiGLU's 8/3 x width
    for name, (_, _, n_head, n_kv, _, kv_bytes, batch, prompt, gen) in by_name.items():
        assert kv_bytes == 2 * 1 * n_kv * (64 // n_head) * (prompt + gen) * batch * 4, name


def test_a_family_store_exports_and_imports_with_its_columns(families_store):
    copy = connect_memory()
    import_snapshot(copy, export_snapshot_bytes(families_store))
    query = "SELECT cell_id, family, n_kv_head FROM cells ORDER BY cell_id"
    assert copy.execute(query).fetchall() == families_store.execute(query).fetchall()


def test_the_bundled_snapshot_names_every_cells_family_and_its_gpt2_cells_have_as_many_kv_heads_as_heads():
    con = open_snapshot(BUNDLED_SNAPSHOT)
    try:
        total, gpt2, full, unnamed = con.execute(
            "SELECT count(*), count(*) FILTER (family = 'gpt2'), count(*) FILTER (family = 'gpt2' AND n_kv_head = n_head), "
            "count(*) FILTER (family IS NULL OR n_kv_head IS NULL) FROM cells").fetchone()
        assert total > 0 and gpt2 > 0 and gpt2 == full and unnamed == 0
        cells = load_cells(con)
        assert set(cells["family"]) <= {"gpt2", "llama", "qwen2"}
        gpt2_cells = cells[cells["family"] == "gpt2"]
        assert len(gpt2_cells) and (gpt2_cells["n_kv_head"] == gpt2_cells["n_head"]).all()
        assert (cells["n_head"] % cells["n_kv_head"] == 0).all()
    finally:
        con.close()


def schema_3_store(source, path: Path) -> int:
    """A store file as schema-3 shapebench left it: cells without family and n_kv_head."""
    old = duckdb.connect(str(path))
    for table in ("runs", "samples"):
        old.register(f"old_{table}", source.sql(f"SELECT * FROM {table}").to_arrow_table())
        old.execute(f"CREATE TABLE {table} AS SELECT * FROM old_{table}")
    old.register("old_cells", source.sql("SELECT * FROM cells").to_arrow_table().drop_columns(["family", "n_kv_head"]))
    old.execute("CREATE TABLE cells AS SELECT * FROM old_cells")
    old.execute("CREATE TABLE schema_info (schema_version INTEGER NOT NULL, created_at TIMESTAMP NOT NULL)")
    old.execute("INSERT INTO schema_info VALUES (3, now())")
    n_cells = old.execute("SELECT count(*) FROM cells").fetchone()[0]
    old.close()
    return n_cells


def test_a_schema_3_store_read_only_reads_as_gpt2_and_opened_to_write_gains_the_columns(store, tmp_path):
    path = tmp_path / "old.duckdb"
    n_cells = schema_3_store(store, path)
    read_only = connect(path, read_only=True)
    try:
        cells = load_cells(read_only)
        assert set(cells["family"]) == {"gpt2"} and (cells["n_kv_head"] == cells["n_head"]).all()
    finally:
        read_only.close()
    read_only = connect(path, read_only=True)
    try:  # the dashboard's and the CLI's filters on family and KV heads read it the same way
        assert filter_options(read_only)["family"] == ["gpt2"]
        assert len(load_cells(read_only, {"family": ["gpt2"]})) == len(load_cells(read_only))
        assert load_cells(read_only, {"family": ["llama"]}).empty
        heads = sorted(int(h) for h in load_cells(read_only)["n_head"].unique())
        assert filter_options(read_only)["n_kv_head"] == heads
        assert set(load_cells(read_only, {"n_kv_head": heads[:1]})["n_head"]) == set(heads[:1])
    finally:
        read_only.close()
    con = connect(path)
    try:
        assert con.execute("SELECT count(*) FROM cells WHERE family = 'gpt2' AND n_kv_head = n_head").fetchone()[0] == n_cells
        assert con.execute("SELECT max(schema_version) FROM schema_info").fetchone()[0] == SCHEMA_VERSION >= 4
    finally:
        con.close()


def _with_cells_column(good, forge, column: str, values: list) -> bytes:
    files = dict(good)
    cells = forge.table(files, "cells")
    index = cells.schema.get_field_index(column)
    files["cells.parquet"] = forge.parquet(cells.set_column(index, column, pa.array(values, cells.schema.field(column).type)))
    return forge.rezip(files)


def test_a_snapshot_with_an_unknown_family_is_refused_naming_the_column(good, forge, dump_store):
    n = forge.table(good, "cells").num_rows
    message = refused(connect_memory(), _with_cells_column(good, forge, "family", ["mamba"] * n), dump_store, "family")
    assert "one of gpt2, llama, qwen2" in message


def test_a_snapshot_whose_kv_heads_do_not_divide_the_heads_is_refused(good, forge, dump_store):
    heads = forge.table(good, "cells")["n_head"].to_pylist()
    bad = _with_cells_column(good, forge, "n_kv_head", [h + 1 for h in heads])
    assert "a divisor of n_head" in refused(connect_memory(), bad, dump_store, "n_kv_head")


def test_the_filters_list_and_narrow_to_each_family_and_kv_heads(families_store):
    options = filter_options(families_store)
    assert options["family"] == ["gpt2", "llama", "qwen2"] and options["n_kv_head"] == [1, 2, 4]
    assert set(load_cells(families_store, {"family": ["llama", "qwen2"]})["model_name"]) == {"llama-kv1", "qwen2-kv2"}
    assert set(load_cells(families_store, {"n_kv_head": [4]})["model_name"]) == {"gpt2"}
    assert load_cells(families_store, {"family": "gpt2", "n_kv_head": 1}).empty
