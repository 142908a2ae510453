"""Merging never mixes two measurements: the same run, cell or sample key with different
content is a conflict, refused whole, and a run still running here is never changed."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from store.db import connect, connect_memory
from store.snapshot import SnapshotError, export_snapshot_bytes, import_snapshot
from tests.runner.helpers import run_cli


def refused(con, source, dump_store, match: str, **kw) -> str:
    before = dump_store(con)
    with pytest.raises(SnapshotError, match=match) as info:
        import_snapshot(con, source, **kw)
    assert dump_store(con) == before
    assert "\n" not in str(info.value)
    return str(info.value)


def replaced(forge, files, **tables) -> bytes:
    return forge.rezip({**files, **{f"{t}.parquet": forge.parquet(tbl) for t, tbl in tables.items()}})


def local_copy(store):
    """A second store that already holds everything `store` has (as after an earlier import)."""
    target = connect_memory()
    import_snapshot(target, export_snapshot_bytes(store))
    return target


def test_a_cell_with_extra_reps_is_refused_not_appended(store, dump_store, forge):
    target = local_copy(store)
    files = forge.unzip(export_snapshot_bytes(store))
    samples = forge.table(files, "samples")
    cell = samples["cell_id"][0].as_py()
    extra = samples.filter(pc.equal(samples["cell_id"], cell))
    extra = extra.set_column(extra.schema.get_field_index("rep"), "rep",
                             pa.array([r + 100 for r in extra["rep"].to_pylist()], pa.int32()))
    data = replaced(forge, files, samples=pa.concat_tables([samples, extra.cast(samples.schema)]))
    message = refused(target, data, dump_store, rf"^conflict: cell '{cell}' .*different samples")
    assert "nothing imported" in message


def test_a_cell_measured_again_with_other_latencies_is_refused(store, dump_store, forge):
    target = local_copy(store)
    files = forge.unzip(export_snapshot_bytes(store))
    samples = forge.table(files, "samples")
    slower = pc.multiply(samples["latency_ms"], 1.5)
    data = replaced(forge, files, samples=samples.set_column(
        samples.schema.get_field_index("latency_ms"), samples.schema.field("latency_ms"), slower))
    refused(target, data, dump_store, r"^conflict: cell '.*' is already in the store with different samples")


def test_a_cell_with_other_results_is_refused(store, dump_store, forge):
    target = local_copy(store)
    files = forge.unzip(export_snapshot_bytes(store))
    cells = forge.table(files, "cells")
    params = pa.array([p * 2 for p in cells["params"].to_pylist()], cells.schema.field("params").type)
    data = replaced(forge, files, cells=cells.set_column(cells.schema.get_field_index("params"),
                                                         cells.schema.field("params"), params))
    refused(target, data, dump_store, r"^conflict: cell '.*' .*different settings or results")


def test_a_finished_run_with_another_regime_is_refused(store, dump_store, forge):
    target = local_copy(store)
    files = forge.unzip(export_snapshot_bytes(store))
    runs = forge.table(files, "runs")
    assert runs["run_id"].to_pylist() == ["run-epyc-b", "run-h100-a"]  # the finished one second
    regimes = [runs["regime"][0].as_py(), "NVIDIA A100-SXM4-40GB | driver 535 | CUDA 12.2"]
    data = forge.rezip({**files, "runs.parquet": forge.parquet(runs.set_column(
        runs.schema.get_field_index("regime"), "regime", pa.array(regimes)))}
        | {"manifest.json": json.dumps(json.loads(files["manifest.json"]) | {"regimes": sorted(set(regimes))}).encode()})
    refused(target, data, dump_store, r"^conflict: run 'run-h100-a' is already in the store with different content")


def test_a_running_run_is_not_overwritten_by_a_copy_with_another_regime(builder, dump_store, forge):
    b = builder
    b.run("run-1", status="running")
    b.cell("run-1", "gpt2-5m")
    target = local_copy(b.con)
    b.con.execute("UPDATE runs SET status = 'finished', finished_at = TIMESTAMP '2026-11-20 09:45:00', "
                  "regime = 'AMD EPYC 9654 96-Core Processor x16 threads', device_kind = 'cpu'")
    refused(target, export_snapshot_bytes(b.con), dump_store, r"^conflict: run 'run-1' .*different content")
    assert target.execute("SELECT status FROM runs").fetchall() == [("running",)]


def test_a_run_still_running_here_is_never_changed(builder, dump_store):
    b = builder
    b.run("run-1", status="running")
    b.cell("run-1", "gpt2-5m")
    target = local_copy(b.con)
    b.con.execute("UPDATE runs SET status = 'finished', finished_at = TIMESTAMP '2026-11-20 09:45:00'")
    ended = export_snapshot_bytes(b.con)
    refused(target, ended, dump_store, r"^conflict: run 'run-1' is still running on this machine", live_runs=["run-1"])
    # not live here (a copy of someone else's run): the ended row is taken, as before
    assert import_snapshot(target, ended).updated["runs"] == 1


def test_a_run_still_running_here_gets_no_cells_from_a_snapshot(builder, dump_store):
    b = builder
    b.run("run-1", status="running")
    b.cell("run-1", "gpt2-5m")
    target = local_copy(b.con)
    b.cell("run-1", "gpt2-25m")
    refused(target, export_snapshot_bytes(b.con), dump_store, "still running on this machine", live_runs={"run-1"})


def test_an_identical_copy_of_a_live_run_is_fine(builder):
    b = builder
    b.run("run-1", status="running")
    b.cell("run-1", "gpt2-5m")
    target = local_copy(b.con)
    report = import_snapshot(target, export_snapshot_bytes(b.con), live_runs=["run-1"])
    assert not report.changed


def test_cli_import_refuses_a_conflict_in_one_line_and_leaves_the_file_unchanged(store, dump_store, forge, tmp_path):
    db = tmp_path / "store.duckdb"
    con = connect(db)
    import_snapshot(con, export_snapshot_bytes(store))
    before = dump_store(con)
    con.close()
    files = forge.unzip(export_snapshot_bytes(store))
    samples = forge.table(files, "samples")
    data = replaced(forge, files, samples=samples.set_column(
        samples.schema.get_field_index("latency_ms"), samples.schema.field("latency_ms"),
        pc.add(samples["latency_ms"], 0.25)))
    (tmp_path / "snap.zip").write_bytes(data)
    result = run_cli("snapshot", "import", tmp_path / "snap.zip", "--db", db, "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refused: conflict: cell ")
    con = connect(db, read_only=True)
    assert dump_store(con) == before
