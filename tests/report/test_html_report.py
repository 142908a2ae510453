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


def test_report_on_the_bundled_data_stays_under_a_megabyte_with_a_latency_table(bundled_con):
    """plotly.js (the bulk of an embedded report) is loaded from beside the file; the rest fits."""
    from analysis.html_report import PLOTLY_FILE

    page = build_report(bundled_con, plotly_js="file")
    size = len(page.encode("utf-8"))
    print(f"report on the bundled snapshot: {size / 1e6:.2f} MB")
    assert size < 1_000_000
    assert f"src=\"{PLOTLY_FILE}\"" in page and page.count("Plotly.newPlot") >= 3
    assert "Latency per configuration" in page
    assert "<th>decode ms/token [95% CI]</th>" in page and "<th>prefill ms [95% CI]</th>" in page
    # every run the report covers is named above its latency table
    runs = [r for (r,) in bundled_con.execute("SELECT DISTINCT run_id FROM cells WHERE status = 'ok'").fetchall()]
    assert all(run_id in page for run_id in runs)


def test_latency_table_has_one_row_per_configuration_with_decode_and_prefill(bundled_con):
    from analysis.html_report import latency_table
    from analysis.reproducibility import pooled_stats
    from analysis.stats import compute_cell_stats

    pooled = pooled_stats(compute_cell_stats(bundled_con, {"phase": ["decode", "prefill"]})).frame
    table = latency_table(pooled)
    assert len(table) == (pooled["phase"] == "decode").sum()
    decode = table["decode ms/token [95% CI]"]
    assert decode.str.len().gt(0).all() and table["prefill ms [95% CI]"].str.len().gt(0).any()
