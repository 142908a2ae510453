"""One filter builder (analysis.load.where_clause) for every query over cells: the analysis
reads ok, sane cells; the dashboard's cell tables read every status; a phase filter narrows
samples and is ignored where a query reads cells. A misspelt filter is one line naming the
allowed keys, whichever use."""
from __future__ import annotations

import pytest

from analysis.load import CELL_SCOPES, FILTER_COLUMNS, cells_table, left_out, load_cells, load_samples, where_clause


@pytest.fixture
def cells(store):
    """The store fixture's three cells, one of them failed and one impossible (0 layers)."""
    ids = [r[0] for r in store.execute("SELECT cell_id FROM cells ORDER BY cell_id").fetchall()]
    store.execute("UPDATE cells SET status = 'failed', error = 'CUDA out of memory' WHERE cell_id = ?", [ids[0]])
    store.execute("UPDATE cells SET n_layer = 0 WHERE cell_id = ?", [ids[1]])
    return store, {"failed": ids[0], "impossible": ids[1], "sane": ids[2]}


def ids_where(con, filters=None, **options) -> set[str]:
    where, params = where_clause(filters, **options)
    return {r[0] for r in con.execute(f"SELECT c.cell_id FROM cells c JOIN runs r USING (run_id) WHERE {where}",
                                      params).fetchall()}


def test_each_scope_reads_its_cells(cells):
    con, ids = cells
    assert ids_where(con) == {ids["sane"]}
    assert ids_where(con, cells="left_out") == {ids["impossible"]}
    assert ids_where(con, cells="any") == set(ids.values())


def test_the_analysis_and_the_dashboard_read_through_the_same_builder(cells):
    con, ids = cells
    assert set(load_cells(con)["cell_id"]) == {ids["sane"]}
    assert "1 cell left out" in left_out(con) and ids["impossible"] in left_out(con)
    table = cells_table(con)
    assert set(table["cell_id"]) == set(ids.values())
    assert table.set_index("cell_id").loc[ids["failed"], "error"] == "CUDA out of memory"


def test_a_filter_narrows_every_scope_alike(cells):
    con, ids = cells
    eager = {r[0] for r in con.execute("SELECT cell_id FROM cells WHERE backend = 'hf-eager'").fetchall()}
    assert ids_where(con, {"backend": ["hf-eager"]}, cells="any") == eager
    assert set(cells_table(con, {"backend": ["hf-eager"]})["cell_id"]) == eager
    assert ids_where(con, {"backend": ["hf-eager"]}) == eager & {ids["sane"]}


def test_a_phase_filter_narrows_samples_and_is_ignored_for_cells(cells):
    con, _ = cells
    assert set(load_samples(con, {"phase": "decode"})["phase"]) == {"decode"}
    assert ids_where(con, {"phase": ["decode"]}, phase=False) == ids_where(con)
    assert load_cells(con, {"phase": "decode"}).equals(load_cells(con))
    assert len(cells_table(con, {"phase": ["decode"]})) == len(cells_table(con))


@pytest.mark.parametrize("scope", list(CELL_SCOPES))
@pytest.mark.parametrize("phase", [True, False])
def test_an_unknown_filter_is_one_line_naming_the_allowed_keys(scope, phase):
    with pytest.raises(ValueError) as error:
        where_clause({"backnd": ["hf-eager"]}, cells=scope, phase=phase)
    message = str(error.value)
    assert message == f"unknown filter 'backnd'; allowed: {', '.join(FILTER_COLUMNS)}" and "\n" not in message


@pytest.mark.parametrize("scope", list(CELL_SCOPES))
def test_an_empty_list_of_values_is_refused_rather_than_matching_nothing_or_everything(scope):
    with pytest.raises(ValueError, match="filter 'dtype' has an empty list of values"):
        where_clause({"dtype": []}, cells=scope)


def test_none_is_no_filter_and_one_value_is_a_list_of_one():
    assert where_clause({"dtype": None}, cells="any") == ("TRUE", [])
    assert where_clause({"batch_size": 8}, cells="any") == where_clause({"batch_size": [8]}, cells="any")
    assert where_clause({"dtype": "float32"}, cells="any") == ("c.dtype IN (?)", ["float32"])


def test_an_unknown_scope_is_refused_naming_the_scopes():
    with pytest.raises(ValueError, match="unknown cell scope 'ok'; allowed: analysed, left_out, any"):
        where_clause({}, cells="ok")
