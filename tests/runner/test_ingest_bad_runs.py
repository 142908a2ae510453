"""Ingesting a folder of runs goes on past a run directory that cannot be stored, naming it
in one line, and the store holds nothing of that run."""
from __future__ import annotations

import json
import shutil

import pytest

from runner.executor import execute
from runner.runfiles import RunDir
from store.db import connect
from store.ingest import IngestError, ingest_run_dir, ingest_runs
from tests.runner.helpers import one_cell_run, run_cli, store_rows


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> RunDir:
    return one_cell_run(tmp_path_factory.mktemp("runs"))


def copy_run(run: RunDir, root, run_id: str, **meta_changes) -> RunDir:
    """A copy of a real run directory under another run id, with some meta fields changed."""
    target = RunDir(root / run_id)
    shutil.copytree(run.path, target.path)
    target.write_meta(target.read_meta() | {"run_id": run_id} | meta_changes)
    return target


@pytest.mark.parametrize(("change", "why"), [
    ({"shuffle_seed": 2**63 + 5}, "cannot ingest"),      # a seed the store's BIGINT cannot hold
    ({"regime": None}, "cannot ingest"),                  # NOT NULL column
    ({"started_at": "not a time"}, "cannot ingest"),
])
def test_a_bad_run_is_skipped_and_the_later_runs_are_ingested(one_run, tmp_path, change, why):
    root = tmp_path / "runs"
    root.mkdir()
    copy_run(one_run, root, "20261201-000000-aaaaaa", **change)
    good = [copy_run(one_run, root, f"20261201-00000{i}-bbbbb{i}") for i in (1, 2)]
    con = connect(tmp_path / "store.duckdb")
    report = ingest_runs(con, root)
    assert report.runs == 2 and report.cells_added == 2
    assert len(report.skipped) == 1
    line = report.skipped[0]
    assert "20261201-000000-aaaaaa" in line and why in line and "\n" not in line
    assert sorted(r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()) == [g.run_id for g in good]
    before = store_rows(con)
    with pytest.raises(IngestError):
        ingest_run_dir(con, root / "20261201-000000-aaaaaa")
    assert store_rows(con) == before


def test_a_meta_without_run_id_is_one_line(one_run, tmp_path):
    run = copy_run(one_run, tmp_path, "x")
    meta = run.read_meta()
    del meta["run_id"]
    run.write_meta(meta)
    con = connect(tmp_path / "store.duckdb")
    with pytest.raises(IngestError, match=r"cannot ingest \(KeyError: missing field 'run_id'\)"):
        ingest_run_dir(con, run.path)


def test_cli_ingest_reports_the_skipped_run_and_ingests_the_rest(one_run, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    copy_run(one_run, root, "20261201-000000-aaaaaa", shuffle_seed=2**64)
    copy_run(one_run, root, "20261201-000001-bbbbbb")
    done = run_cli("ingest", root, "--db", tmp_path / "store.duckdb")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("skipped: ")][0].count("aaaaaa") >= 1
    assert "1 runs read" in done.stdout and "1 run(s) skipped" in done.stdout


def test_cli_ingest_into_a_foreign_database_is_one_line(one_run, tmp_path):
    import duckdb

    foreign = tmp_path / "accounts.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE customers (id INTEGER, name VARCHAR)")
    con.execute("INSERT INTO customers VALUES (1, 'Ada')")
    con.close()
    done = run_cli("ingest", one_run.path, "--db", foreign)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot open {foreign}: ") and "shapebench" in lines[0]
    con = duckdb.connect(str(foreign), read_only=True)
    assert con.execute("SELECT table_name FROM information_schema.tables").fetchall() == [("customers",)]
