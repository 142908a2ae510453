"""Tables written for other programs: CSV that a spreadsheet opens as data, never as formulas.

The rule (which cells are neutralised, and how) is `vocabulary.csv_safe`, shared with the
dashboard's downloads; this module is the CLI's way to write such a table as text.
"""
from __future__ import annotations

import pandas as pd

from vocabulary import csv_safe


def safe_csv(frame: pd.DataFrame) -> str:
    """`frame` as CSV text (no index), with formula-like text neutralised (vocabulary.csv_safe)."""
    return csv_safe(frame).to_csv(index=False)
