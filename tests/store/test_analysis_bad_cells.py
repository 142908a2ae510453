"""A store that holds cells no measurement can produce (written before the import checks, or
by hand): analysis leaves them out with a one-line warning instead of failing whole."""
from __future__ import annotations

import pytest

from analysis.html_report import build_report
from analysis.load import left_out, load_cells
from analysis.report import analyze, format_text
from analysis.stats import compute_cell_stats
from analysis.synthetic import SyntheticPlan, build_store

SHAPES = tuple((d, w) for d in (1, 2, 4, 8) for w in (64, 128, 256))


@pytest.fixture
def poisoned():
    """12 sane shapes plus the two poisoned cells of the issue: a 0-layer shape, a NaN latency."""
    con = build_store(SyntheticPlan(shapes=SHAPES, phases=("decode",), reps=3, gen_len=4))
    first, second = [r[0] for r in con.execute("SELECT cell_id FROM cells ORDER BY cell_id LIMIT 2").fetchall()]
    con.execute("UPDATE cells SET n_layer = 0, params = -40000 WHERE cell_id = ?", [first])
    con.execute("UPDATE samples SET latency_ms = 'nan'::DOUBLE WHERE cell_id = ? AND rep = 1 AND step = 2", [second])
    return con, (first, second)


def test_impossible_cells_are_left_out_with_a_warning(poisoned):
    con, bad = poisoned
    assert set(load_cells(con)["cell_id"]).isdisjoint(bad)
    assert set(compute_cell_stats(con, n_resamples=50).frame["cell_id"]).isdisjoint(bad)
    warning = left_out(con)
    assert warning.startswith("2 cells left out of the analysis: impossible values") and "\n" not in warning
    assert all(repr(cell) in warning for cell in bad)


def test_analyze_runs_on_the_rest_and_says_what_it_left_out(poisoned):
    con, _ = poisoned
    result = analyze(con, n_resamples=50)
    assert result["cell_stats"]["n_cells"] == len(SHAPES) - 2
    assert all(r["status"] == "ok" for r in result["regressions"])
    assert result["warnings"] and result["warnings"][0].startswith("2 cells left out")
    text = format_text(result)
    assert text.splitlines()[0].startswith("warning: 2 cells left out")
    assert "-0.0M" not in text


def test_the_html_report_builds_and_carries_the_warning(poisoned):
    con, _ = poisoned
    page = build_report(con)
    assert "2 cells left out of the analysis" in page


def test_a_clean_store_has_no_warning():
    con = build_store(SyntheticPlan(shapes=SHAPES[:4], phases=("decode",), reps=2, gen_len=2))
    assert left_out(con) is None
    assert analyze(con, n_resamples=20)["warnings"] == []
