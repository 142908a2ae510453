"""Snapshots can neither mix nor break: a run's cell set is part of its identity (no cell
joins a finished run, no run holds more cells than it planned or one configuration twice),
and every JSON column has the shape the analysis reads, checked by `snapshot check` and on
every import."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from store.db import connect
from store.schema import TABLES
from store.snapshot import SnapshotError, export_snapshot_bytes, import_snapshot, open_snapshot_bytes
from tests.runner.helpers import run_cli
from tests.store.conftest import rezip, unzip

REGIME = "CPU Intel(R) Xeon(R) Processor | 2 threads"


def _table(files, name) -> pa.Table:
    return pq.read_table(io.BytesIO(files[f"{name}.parquet"]))


def _put(files, name, table) -> dict:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return {**files, f"{name}.parquet": buf.getvalue()}


def dump(con) -> dict:
    return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


@pytest.fixture(scope="module")
def files(bundled_con) -> dict[str, bytes]:
    return unzip(export_snapshot_bytes(bundled_con, regimes=[REGIME]))


def _without_one_cell(files) -> tuple[dict, str]:
    cells, samples = _table(files, "cells"), _table(files, "samples")
    dropped = cells["cell_id"][0].as_py()
    keep = pc.not_equal(cells["cell_id"], dropped)
    out = _put(files, "cells", cells.filter(keep))
    return _put(out, "samples", samples.filter(pc.not_equal(samples["cell_id"], dropped))), dropped


def test_a_cell_never_joins_a_finished_run_already_in_the_store(files, tmp_path):
    partial, dropped = _without_one_cell(files)
    store = connect(tmp_path / "store.duckdb")
    import_snapshot(store, rezip(partial))
    run_id = dropped.split("/")[0]
    assert store.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchall() == [("finished",)]
    before = dump(store)
    with pytest.raises(SnapshotError, match=f"run '{run_id}' is already in the store with another set of cells"):
        import_snapshot(store, rezip(files))
    assert dump(store) == before


def test_a_run_with_more_cells_than_it_planned_is_refused(files):
    runs = _table(files, "runs")
    planned = pc.subtract(runs["n_cells_planned"], pa.scalar(1, runs["n_cells_planned"].type))
    forged = _put(files, "runs", runs.set_column(runs.schema.get_field_index("n_cells_planned"), "n_cells_planned",
                                                 planned))
    with pytest.raises(SnapshotError, match=r"^cells.parquet: run '.*' has \d+ cells where it planned \d+; refused$"):
        open_snapshot_bytes(rezip(forged))


def test_one_configuration_twice_in_a_run_is_refused(files):
    cells = _table(files, "cells")
    first = cells.slice(0, 1)
    twin_key = "f" * 12
    twin = first.set_column(first.schema.get_field_index("cell_key"), "cell_key", pa.array([twin_key]))
    run_id = first["run_id"][0].as_py()
    twin = twin.set_column(twin.schema.get_field_index("cell_id"), "cell_id", pa.array([f"{run_id}/{twin_key}"]))
    runs = _table(files, "runs")
    roomy = runs.set_column(runs.schema.get_field_index("n_cells_planned"), "n_cells_planned",
                            pc.add(runs["n_cells_planned"], pa.scalar(1, runs["n_cells_planned"].type)))
    forged = _put(_put(files, "cells", pa.concat_tables([cells, twin])), "runs", roomy)
    with pytest.raises(SnapshotError, match="holds one configuration twice"):
        open_snapshot_bytes(rezip(forged))


@pytest.mark.parametrize("table, column, value, must", [
    ("runs", "environment", json.dumps(["a", "list"]), "must be a JSON object"),
    ("runs", "plan", "42", "must be a JSON object"),
    ("cells", "telemetry", "not json at all", "must be a JSON object"),
    ("cells", "resources", json.dumps({"phases": 3}), '"phases" is an object of objects'),
    ("cells", "resources", json.dumps({"phases": {"decode": [1, 2]}}), '"phases" is an object of objects'),
])
def test_json_columns_of_the_wrong_shape_fail_snapshot_check_in_one_line(files, tmp_path, table, column, value, must):
    tbl = _table(files, table)
    values = [value] + tbl[column].to_pylist()[1:]
    forged = _put(files, table, tbl.set_column(tbl.schema.get_field_index(column), column, pa.array(values, pa.string())))
    path = tmp_path / "forged.zip"
    path.write_bytes(rezip(forged))
    done = run_cli("snapshot", "check", path)
    assert done.returncode == 2, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{table}.{column}: row 0" in lines[0] and must in lines[0], done.stderr
