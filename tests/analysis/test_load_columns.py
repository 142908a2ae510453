"""The column names analysis.load chooses (the cell projection, the filterable columns) are
columns of the store's schema, in the table their alias names: a rename in schema.sql fails
here, not as a query error on a page."""
from __future__ import annotations

from analysis.load import CELL_COLUMNS, FILTER_COLUMNS
from store.db import connect_memory
from store.schema import table_columns

TABLE_OF_ALIAS = {"c": "cells", "r": "runs", "s": "samples"}


def test_the_cell_projection_names_only_columns_of_the_cells_table():
    assert set(CELL_COLUMNS) <= set(table_columns(connect_memory(), "cells"))


def test_every_filter_names_a_column_of_the_table_its_alias_names():
    con = connect_memory()
    for key, alias in FILTER_COLUMNS.items():
        assert key in table_columns(con, TABLE_OF_ALIAS[alias]), (key, alias)
