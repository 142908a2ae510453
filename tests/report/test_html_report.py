"""The static HTML report: one self-contained file with the headline, verdicts and charts."""
from __future__ import annotations

import re
from pathlib import Path

from analysis.html_report import build_report
from store.db import connect_memory
from store.snapshot import open_snapshot

BUNDLED = Path(__file__).resolve().parents[2] / "data" / "snapshot"


def test_report_on_the_bundled_data_is_self_contained_with_interactive_charts():
    page = build_report(open_snapshot(BUNDLED), {"phase": "decode"})
    assert page.startswith("<!DOCTYPE html>")
    assert "Strongest inversions" in page and "Depth or parameter count?" in page
    assert page.count("Plotly.newPlot") >= 3  # depth, params, heatmap (+ comparisons)
    assert "plotly.js" in page.lower() or "plotly" in page[:200000].lower()
    assert not re.search(r"<script[^>]+src=['\"]https?://", page), "no script may load from the network"


def test_report_of_an_empty_store_says_so():
    page = build_report(connect_memory())
    assert "No measured cells match this selection." in page
    assert "Plotly.newPlot" not in page


def test_report_escapes_text_from_the_data():
    con = open_snapshot(BUNDLED)
    page = build_report(con, {"phase": "decode"}, title="<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in page
