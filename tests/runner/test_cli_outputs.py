"""The CLI in a terminal and in CI: `compare` gates a build on a regression between two runs,
`analyze` prints a screenful by default, `--version` says which shapebench this is; all
as real subprocesses on the bundled snapshot or a real DuckDB store made from it."""
from __future__ import annotations

import csv
import io
import json
import tomllib

import pytest

from analysis.export import safe_csv
from vocabulary import csv_safe
from analysis.run_compare import run_table
from store.dataset import BUNDLED_SNAPSHOT
from store.db import connect
from tests.runner.helpers import REPO_ROOT, run_cli

PLANTED = "planted-2x-slower"
SLOWDOWN = 2.0


@pytest.fixture(scope="module")
def baseline_run(bundled_con) -> str:
    """The bundled protocol-2 run (rounds, so CIs) with the most ok cells: chosen from the data."""
    runs = run_table(bundled_con)
    with_rounds = runs[(runs["rounds"].fillna(1) >= 2) & (runs["cells_ok"] > 0)]
    return str(with_rounds.sort_values("cells_ok", ascending=False).iloc[0]["run_id"])


@pytest.fixture(scope="module")
def store_with_planted_slowdown(tmp_path_factory, baseline_run):
    """A real store file holding the baseline run and a copy of it, under a new run id, whose
    every sample takes SLOWDOWN times as long."""
    db = tmp_path_factory.mktemp("compare") / "store.duckdb"
    con = connect(db)
    try:
        for table, where in (("runs", "run_id = ?"), ("cells", "run_id = ?"),
                             ("samples", "cell_id IN (SELECT cell_id FROM cells WHERE run_id = ?)")):
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?) WHERE {where}",
                        [str(BUNDLED_SNAPSHOT / f"{table}.parquet"), baseline_run])
        con.execute("INSERT INTO runs BY NAME SELECT * REPLACE (? AS run_id) FROM runs WHERE run_id = ?",
                    [PLANTED, baseline_run])
        con.execute("INSERT INTO cells BY NAME SELECT * REPLACE (? AS run_id, ? || cell_id AS cell_id) FROM cells WHERE run_id = ?",
                    [PLANTED, f"{PLANTED}/", baseline_run])
        con.execute("""INSERT INTO samples BY NAME SELECT * REPLACE (? || cell_id AS cell_id, latency_ms * ? AS latency_ms)
                       FROM samples WHERE cell_id IN (SELECT cell_id FROM cells WHERE run_id = ?)""",
                    [f"{PLANTED}/", SLOWDOWN, baseline_run])
        n_cells = con.execute("SELECT count(*) FROM cells WHERE run_id = ? AND status = 'ok'", [PLANTED]).fetchone()[0]
    finally:
        con.close()
    assert n_cells > 0
    return db


def test_a_run_compared_with_itself_exits_0_with_nothing_moved(baseline_run):
    done = run_cli("compare", baseline_run, baseline_run, "--format", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["summary"]["n"] > 0 and result["summary"]["moved"] == 0 and result["summary"]["regressions"] == 0
    assert {cell["phase"] for cell in result["cells"]} == {"decode"}  # the default phase
    assert all(cell["ratio"] == 1.0 and cell["moved"] is False for cell in result["cells"])
    # the bundle repeats this run's cells: each ratio's re-run interval, from that history, holds 1
    judged = [cell for cell in result["cells"] if cell["rerun_basis"] != "no history"]
    assert judged and all(cell["rerun_ci_low"] < 1.0 < cell["rerun_ci_high"] for cell in judged)


def test_a_planted_2x_slowdown_exits_1_and_lists_every_moved_cell(store_with_planted_slowdown, baseline_run):
    done = run_cli("compare", baseline_run, PLANTED, "--db", store_with_planted_slowdown, "--threshold", "0.05")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| decode")]
    assert rows and all(f"| {SLOWDOWN:.3f}x |" in row for row in rows)
    # cells whose rounds are noisier than a doubling stay "within noise": only the others moved
    moved = [row for row in rows if row.endswith("| REGRESSION |")]
    assert moved and rows[:len(moved)] == moved  # the moved cells come first
    assert f"{len(moved)} moved beyond noise" in lines[0] and f"{len(moved)} regression(s)" in lines[0]


def test_a_slowdown_below_the_threshold_is_not_a_regression(store_with_planted_slowdown, baseline_run):
    done = run_cli("compare", baseline_run, PLANTED, "--db", store_with_planted_slowdown, "--threshold", str(SLOWDOWN))
    assert done.returncode == 0, done.stderr
    assert "0 regression(s)" in done.stdout


def test_compare_csv_parses_and_chooses_phases(store_with_planted_slowdown, baseline_run):
    done = run_cli("compare", baseline_run, PLANTED, "--db", store_with_planted_slowdown, "--format", "csv",
                   "--phase", "prefill", "--phase", "decode")
    assert done.returncode == 1, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows and {r["phase"] for r in rows} == {"prefill", "decode"}
    assert all(abs(float(r["ratio"]) - SLOWDOWN) < 1e-9 for r in rows)
    assert all(r["regression"] == r["moved"] for r in rows) and any(r["regression"] == "True" for r in rows)
    assert "regression(s)" in done.stderr  # the summary line stays off the CSV


@pytest.mark.parametrize("run_b, args, message", [
    ("no-such-run", (), "unknown run id 'no-such-run'; known runs: "),
    (None, ("--phase", "decoding"), "unknown phase 'decoding'"),
    (None, ("--format", "xlsx"), "--format must be one of md, csv, json"),
])
def test_bad_compare_input_is_one_line_saying_what_is_allowed(baseline_run, run_b, args, message):
    done = run_cli("compare", baseline_run, run_b or baseline_run, *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_runs_without_common_cells_are_one_line(bundled_con, baseline_run):
    runs = run_table(bundled_con)
    other_regime = runs[(runs["regime"] != runs.set_index("run_id").loc[baseline_run, "regime"]) & (runs["cells_ok"] > 0)]
    done = run_cli("compare", baseline_run, other_regime.iloc[0]["run_id"])
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no (cell, phase) in common" in done.stderr


def test_analyze_prints_a_screenful_by_default_and_says_how_to_get_more():
    done = run_cli("analyze", timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) <= 100
    for heading in ("== The seed pair", "== Strongest inversions ==", "== Depth or parameter count?", "== Across regimes =="):
        assert any(line.startswith(heading) for line in lines), heading
    assert "--full" in lines[-1] and "--format csv" in lines[-1]


def test_analyze_csv_is_one_flat_row_per_cell_and_phase(bundled_con):
    done = run_cli("analyze", "--format", "csv", "--phase", "decode", timeout=600)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    expected = bundled_con.execute("""SELECT count(DISTINCT s.cell_id) FROM samples s JOIN cells c USING (cell_id)
                                      WHERE c.status = 'ok' AND s.phase = 'decode'""").fetchone()[0]
    assert len(rows) == expected and {r["phase"] for r in rows} == {"decode"}
    assert all(float(r["median"]) > 0 for r in rows)


def test_version_prints_the_pyproject_version():
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout == f"shapebench {version}\n"


def test_csv_text_that_would_start_a_formula_is_neutralised():
    import pandas as pd

    frame = pd.DataFrame({"name": ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "plain", "\tx"], "value": [-1.5] * 6})
    safe = csv_safe(frame)
    assert safe["name"].tolist() == ["'=HYPERLINK(\"x\")", "'+1", "'-2", "'@SUM(A1)", "plain", "'\tx"]
    assert safe["value"].tolist() == [-1.5] * 6  # numbers stay numbers
    assert list(csv.reader(io.StringIO(safe_csv(frame))))[1][0] == "'=HYPERLINK(\"x\")"


def test_analyze_of_a_store_without_the_seed_pair_leads_with_its_own_shapes(tmp_path, baseline_run):
    """A user's store (here: one bundled run without gpt2-25m) gets the answer in a sentence and
    its own shapes first, not a section saying the reference pair was not measured."""
    db = tmp_path / "mine.duckdb"
    con = connect(db)
    try:
        cells = (f"SELECT cell_id FROM read_parquet('{BUNDLED_SNAPSHOT / 'cells.parquet'}') "
                 "WHERE run_id = ? AND model_name <> 'gpt2-25m'")
        for table, where in (("runs", "run_id = ?"), ("cells", f"cell_id IN ({cells})"),
                             ("samples", f"cell_id IN ({cells})")):
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?) WHERE {where}",
                        [str(BUNDLED_SNAPSHOT / f"{table}.parquet"), baseline_run])
        assert con.execute("SELECT count(*) FROM cells").fetchone()[0] > 0
    finally:
        con.close()
    done = run_cli("analyze", "--db", str(db), timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    headings = [line for line in lines if line.startswith("== ")]
    assert headings[:2] == ["== Does shape drive latency? =="] + [h for h in headings if h.startswith("== Your shapes")]
    assert not any(h.startswith("== The seed pair") for h in headings)
    answer = lines[lines.index("== Does shape drive latency? ==") + 1]
    assert answer.startswith(("GPUs: ", "CPUs: ")) and "measured" in answer
