"""The Overview's headline leaves protocol-1 runs out by default, says so, and shows them on request.

Expectations come from analysis.headline on the bundled snapshot, the function README and the
HTML report use, never from literal rows.
"""
from __future__ import annotations

import json

from analysis.headline import headline_for, headline_sections, split_by_regime
from store.dataset import BUNDLED_SNAPSHOT
from store.snapshot import open_snapshot
from tests.ui.conftest import assert_clean, texts

TOGGLE = "Include protocol-1 runs"


def shown_tables(at, sections) -> list[list[list[str]]]:
    expected = [rows for _, _, table in sections if len(table) for _, rows in split_by_regime(table)]
    return [frame.value.astype(str).values.tolist() for frame in at.dataframe[:len(expected)]]


def expected_tables(sections) -> list[list[list[str]]]:
    return [rows.astype(str).values.tolist() for _, _, table in sections if len(table)
            for _, rows in split_by_regime(table)]


def seed_chart_regimes(at) -> list[str]:
    """The regimes (one trace each) of the Overview's first chart, the seed-pair chart."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return [trace["name"] for trace in spec["data"]]


def test_the_headline_names_what_it_leaves_out_and_the_toggle_brings_protocol_1_back(app_env):
    con = open_snapshot(BUNDLED_SNAPSHOT)
    current, every = headline_for(con), headline_for(con, all_protocols=True)
    con.close()
    assert current.earlier_protocol_regimes, "the bundled data keeps protocol-1 runs"

    at = app_env()
    at.run()
    assert_clean(at)
    toggle = next(t for t in at.toggle if t.label == TOGGLE)
    assert toggle.value is False
    default = headline_sections(current)
    assert shown_tables(at, default) == expected_tables(default)
    captions = " ".join(texts(at, "caption"))
    assert all(regime in captions for regime in current.earlier_protocol_regimes), "every regime left out is named"
    assert seed_chart_regimes(at) == sorted(current.seed_pairs["regime"].unique()), "the seed pair drawn per regime"

    toggle.set_value(True).run()
    assert_clean(at)
    everything = headline_sections(every)
    assert shown_tables(at, everything) == expected_tables(everything)
    assert len(every.seed_pairs) > len(current.seed_pairs), "protocol-1 seed rows are back"
    assert len(expected_tables(everything)) > len(expected_tables(default)), "and their regimes' tables"
    assert seed_chart_regimes(at) == sorted(every.seed_pairs["regime"].unique()), "and their seed-pair panels"
