"""The headless report: one JSON-ready dict and readable text, filters passed through."""
from __future__ import annotations

import json

from analysis.report import analyze, format_text
from analysis.synthetic import SyntheticPlan, build_store


def test_analyze_returns_strict_json_with_every_section(depth_store):
    result = analyze(depth_store, n_resamples=200)
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert set(result) == {"filters", "pool_families", "cell_stats", "regressions", "seed_form", "inversions", "regimes",
                           "backends", "reproducibility", "resources", "warnings"}
    assert result["cell_stats"]["n_cells"] == 40
    decode = next(r for r in result["regressions"] if r["group"]["phase"] == "decode")
    assert decode["verdict"]["single_variable_winner"] == "depth" and decode["verdict"]["winner"] == "both"
    assert result["inversions"]["n_significant"] > 0


def test_analyze_applies_filters(depth_store):
    result = analyze(depth_store, n_resamples=100, phase="decode", n_layer=[1, 2, 4, 8])
    assert result["filters"] == {"phase": "decode", "n_layer": [1, 2, 4, 8]}
    assert result["cell_stats"]["phases"] == {"decode": 20}


def test_format_text_has_sections_and_the_verdict(depth_store):
    text = format_text(analyze(depth_store, n_resamples=100, phase="decode"))
    for heading in ("== Cell statistics ==", "== Depth vs width, per group ==", "== Latency inversions",
                    "== Across regimes ==", "== Across backends =="):
        assert heading in text
    assert "depth explains latency better than parameter count here" in text
    assert "only one regime" in text


def test_an_empty_store_reports_nothing_without_failing():
    con = build_store(SyntheticPlan(shapes=((1, 64),), failed_shapes=((1, 64),), reps=1))
    result = analyze(con)
    assert result["cell_stats"]["n_cells"] == 0 and result["regressions"] == []
    assert "0 ok cells" in format_text(result)
