"""Showing text that comes from data (regimes, model names, run ids, errors) inside markdown.

Streamlit renders st.markdown, st.caption, st.info and widget labels as markdown, so a
regime holding `![x](https://...)` would make a visitor's browser fetch that URL. Every
value from a store or a snapshot goes through `md` before it is put into such a string:
markdown punctuation is backslash-escaped (CommonMark shows it as itself) and line breaks
are flattened, and control characters are shown as their escapes (vocabulary.printable),
so a value reads as the text it is and can never become an image, a link, a heading, a
colour directive or text shown in another order. Pure string code, no streamlit: testable on its own.
"""
from __future__ import annotations

import re

import pandas as pd

from vocabulary import printable

# CommonMark lets any ASCII punctuation be escaped with a backslash; these are the ones
# markdown, GFM and Streamlit's directives (:red[...], :material/icon:) give a meaning.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&\"'^])")
# A data value shown inline is never a page of text.
MAX_INLINE = 500


def md(value: object, limit: int = MAX_INLINE) -> str:
    """`value` as markdown that renders as exactly its text (shortened past `limit`)."""
    text = printable(" ".join(str(value).split()))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _SPECIAL.sub(r"\\\1", text)


# --- numbers in page tables --------------------------------------------------------------
# A table cell is read, not parsed: "—" where nothing was measured (never None, nan or <NA>),
# 4 significant digits, and p-values (and q-values) below 0.001 as "<0.001", as journals print
# them: no test here resolves smaller ones (a p of 2.51e-243 is a statement about floating
# point, not about the data), and the decisions are taken at 5%.
MISSING = "—"
P_FLOOR = 0.001
_MISSING_TEXT = ("", "None", "nan", "NaN", "<NA>", "NaT")  # how an absent value reads once made text


def is_missing(value: object) -> bool:
    """None, NaN, NaT and pandas' NA: what a table shows as MISSING."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and NaT are the only values unequal to themselves
    except (TypeError, ValueError):  # pandas.NA refuses a truth value
        return True


def number(value: object, digits: int = 4) -> str:
    """A number as a table shows it: `digits` significant digits, MISSING when absent."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int,)) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e6):
        return f"{int(value):,}"
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return str(value)


def p_value(value: object) -> str:
    """A p-value (or q-value) for a table: two significant digits, '<0.001' below P_FLOOR."""
    if is_missing(value):
        return MISSING
    p = float(value)
    return f"<{P_FLOOR:g}" if p < P_FLOOR else f"{p:.2g}"


def table_text(frame, p_columns=(), digits: int = 4):
    """`frame` with every cell as the text a reader should see: numbers through `number`,
    the `p_columns` through `p_value`, lists joined, and MISSING for every absent value.

    For tables read rather than sorted (headline, coefficients, comparisons); a copy, the
    frame itself is left as it is.
    """
    shown = frame.copy()
    for column in shown.columns:
        if column in p_columns:
            shown[column] = shown[column].map(p_value)
        else:
            shown[column] = shown[column].map(lambda v: _cell(v, digits))
    return shown


def _cell(value: object, digits: int) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else MISSING
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 0):
        items = value.tolist()
        return ", ".join(str(v) for v in items) if items else MISSING
    if isinstance(value, str):
        return value if value.strip() not in _MISSING_TEXT else MISSING
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        return number(value.item() if hasattr(value, "item") else value, digits)
    return MISSING if is_missing(value) else str(value)


def interval(low: object, high: object, digits: int = 3) -> str:
    """A 95% CI as "low-high", MISSING when absent, and "too wide to tell" past
    analysis.figures.DRAWABLE_CI_FACTOR (two rounds give intervals like 1e-7 to 1e6 ms)."""
    from analysis.figures import DRAWABLE_CI_FACTOR

    if is_missing(low) or is_missing(high):
        return MISSING
    low, high = float(low), float(high)
    if low <= 0 or high <= 0 or high / low > DRAWABLE_CI_FACTOR or high == float("inf"):
        return "too wide to tell"
    return f"{low:.{digits}g}-{high:.{digits}g}"


def table_frame(frame, p_columns=()):
    """`frame` for a sortable page table (`dashboard.ui.table`: st.dataframe showing MISSING
    for every absent value). Numbers stay numbers, so a column sorts as numbers and its
    NumberColumn format applies; the `p_columns` become `p_value` text ('<0.001', never
    2.51e-243); lists and arrays are joined; text that only says "absent" ('None', 'nan', '')
    becomes absent. A copy: the frame itself is left as it is."""
    shown = frame.copy()
    for column in shown.columns:
        if column in p_columns:
            shown[column] = shown[column].map(p_value)
        elif not _numeric(shown[column]):
            # built as objects: pandas' text dtype would turn each None back into nan
            shown[column] = pd.Series([_text_or_absent(v) for v in shown[column]], index=shown.index, dtype=object)
    return shown


def _numeric(column) -> bool:
    kind = getattr(column.dtype, "kind", "O")
    return kind in "biufcmM"  # bool, integers, floats, complex, times: shown by their column type


def _text_or_absent(value: object):
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and getattr(value, "ndim", 0)):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return ", ".join(str(v) for v in items) if items else None
    if isinstance(value, str):
        return None if value.strip() in _MISSING_TEXT else value
    return None if is_missing(value) else value
