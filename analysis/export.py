"""Tables written for other programs: CSV that a spreadsheet opens as data, never as formulas.

A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (and, in some, a tab or a
carriage return) as a formula, so a model name, regime or error message that came from a
run directory could compute, or fetch, when a user opens an exported CSV (OWASP's "CSV
injection"). `neutralise_formulas` prefixes such text cells with an apostrophe, which
spreadsheets show as text and do not display; numbers are left as numbers.
"""
from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula


def neutralise_text(value: object) -> object:
    """`value` with a leading apostrophe when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells cannot start a formula (numeric columns unchanged)."""
    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column])):
            out[column] = out[column].map(neutralise_text)
    return out


def safe_csv(frame: pd.DataFrame) -> str:
    """`frame` as CSV text (no index), with formula-like text neutralised."""
    return neutralise_formulas(frame).to_csv(index=False)
