"""What a new user reads first, on the bundled data the dashboard opens by default: the seed
pair's regime titles above their panels (never over a row) as the page draws the chart, the
Regimes legend at the top of its chart, and the Explore, Inversions and Reproducibility
tables without a raw None, nan or 2.51e-243."""
from __future__ import annotations

import json
import re

import pytest

from tests.analysis.test_chart_layout import TITLE_TEXT_PX, title_strips
from tests.ui.conftest import open_page, plotly_specs

RAW = re.compile(r"^(None|nan|NaN|<NA>|NaT)$")
TINY_FLOAT = re.compile(r"\de-\d")  # 2.51e-243: floating point, not a reading


def _chart(at, key: str) -> dict:
    """The spec of the chart the page drew under `key` (the figure after dashboard.ui.chart)."""
    [element] = [e for e in at.get("plotly_chart") if e.proto.id.endswith(f"-{key}")]
    return json.loads(element.proto.spec)


def test_seed_pair_titles_sit_above_their_panels_as_the_overview_draws_them(app_env):
    at = open_page(app_env(), "overview")
    layout = _chart(at, "overview_seed_pair")["layout"]
    regimes = [a["text"] for a in layout["annotations"] if a.get("yanchor") == "bottom"]
    assert len(regimes) >= 2, "the bundle measures the seed pair on several regimes"
    for offset, room_px in title_strips(layout, len(regimes)):
        assert offset == pytest.approx(0.0, abs=1e-9) and room_px >= TITLE_TEXT_PX
    assert layout["title"]["subtitle"]["text"], "the subtitle the page adds takes margin, not the titles' strips"


def test_regimes_legend_is_at_the_top_of_each_chart_and_names_each_level_once(app_env):
    at = open_page(app_env(), "regimes")
    specs = plotly_specs(at)
    assert len(specs) == 4, "per tab: the coefficient plot and the side-by-side chart"
    for spec in specs:
        legend, names = spec["layout"]["legend"], [t["name"] for t in spec["data"] if t.get("showlegend", True)]
        assert len(names) == len(set(names)), "each regime or backend once"
        assert legend["y"] >= 1, "at the top, never under a chart thousands of pixels tall"
        if legend["orientation"] == "h":
            assert legend["yanchor"] == "bottom" and spec["layout"]["margin"]["t"] >= 60 + 28, "a row in the margin"
        else:
            assert legend["x"] >= 1 and legend["yanchor"] == "top", "a column at the right, from the top"
    coefficients, side = specs[0], specs[1]
    colours = {t["name"]: t["marker"]["color"] for t in coefficients["data"]}
    assert all(colours[t["name"]] == t["marker"]["color"] for t in side["data"]), "one colour per regime on both charts"


@pytest.mark.parametrize("page", ["explore", "inversions", "reproducibility"])
def test_tables_show_a_dash_for_absent_values_and_no_raw_floats(app_env, page):
    at = open_page(app_env(), page)
    tables = list(at.dataframe)
    assert tables
    for table in tables:
        assert table.proto.placeholder == "—", "an absent value (null: None or nan) reads as a dash, not None"
        frame = table.value
        for column in frame.columns:
            if frame[column].dtype == object or str(frame[column].dtype) == "str":
                values = [v for v in frame[column] if isinstance(v, str)]
                assert not [v for v in values if RAW.match(v.strip())], (page, column)
                assert not [v for v in values if TINY_FLOAT.search(v) and column.startswith(("p", "q"))], (page, column)
    if page == "reproducibility":
        [cells] = [t.value for t in tables if "q_value" in t.value.columns]
        assert cells["q_value"].str.fullmatch(r"<0\.001|\d(\.\d+)?|—").all(), "p-values as '<0.001' or digits"
        assert (cells["q_value"] == "<0.001").any(), "the bundle's 2.51e-243 reads '<0.001'"
