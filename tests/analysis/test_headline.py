"""The headline on the bundled data: one function, the same rows in README, report and Overview.

Every expectation is derived from the bundled snapshot's own rows (runs, cells, samples),
never written out, so the tests hold for a newer snapshot too.
"""
from __future__ import annotations

import html
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from analysis.headline import (DEEP_NARROW, NO_CI, SEED_PHASE, SEED_POINT, SHALLOW_WIDE, build_headline,
                               headline_for, headline_markdown, headline_sections, inversion_table, seed_table)
from analysis.readme_results import RESULTS_PAGE
from analysis.reproducibility import pooled_stats
from analysis.html_report import build_report
from analysis.intervals import CI_ACROSS_RUNS, CI_NONE
from analysis.stats import compute_cell_stats
from vocabulary import PROTOCOL_VERSION

NAMED = ("regime", "backend", "phase", "dtype")


@pytest.fixture(scope="module")
def con(bundled_con):
    return bundled_con


@pytest.fixture(scope="module")
def per_run(con):
    return compute_cell_stats(con)


@pytest.fixture(scope="module")
def headline(per_run):
    """Every protocol: the tables' arithmetic is the same whichever runs they hold."""
    return build_headline(per_run, all_protocols=True)


@pytest.fixture(scope="module")
def current(per_run):
    """The default headline: runs of the current protocol only."""
    return build_headline(per_run)


def seed_cells(frame):
    """Per-run decode cells of the two seed models at the seed point."""
    at = (frame["phase"] == SEED_PHASE) & frame["model_name"].isin([DEEP_NARROW, SHALLOW_WIDE])
    for key, value in SEED_POINT.items():
        at &= frame[key] == value
    return frame[at]


def test_the_generated_results_open_with_the_headline_functions_output(con):
    results = RESULTS_PAGE.read_text()
    generated = re.search(r"<!-- results:start -->\n(### Headline\n.*?)(?=^### )", results, re.S | re.M)
    assert generated, "the generated results (docs/results.md) open with a Headline part"
    assert generated.group(1) == headline_markdown(headline_for(con)) + "\n"


def test_every_headline_row_names_its_regime_backend_phase_and_dtype(headline, con):
    regimes = {r[0] for r in con.execute("SELECT regime FROM runs").fetchall()}
    for table in (seed_table(headline), inversion_table(headline)):
        assert len(table), "the bundled data has seed pairs and significant inversions"
        for column in NAMED:
            assert table[column].map(lambda v: isinstance(v, str) and v != "").all(), column
        assert set(table["regime"]) <= regimes


def test_seed_pair_rows_pool_each_models_run_medians_at_the_seed_point(headline, per_run):
    cells = seed_cells(per_run.frame)
    expected = {}
    for (regime, backend, dtype), group in cells.groupby(["regime", "backend", "dtype"]):
        by_model = {name: np.log(sub["median"].to_numpy()) for name, sub in group.groupby("model_name")}
        if set(by_model) == {DEEP_NARROW, SHALLOW_WIDE}:
            expected[(regime, backend, dtype)] = by_model
    rows = headline.seed_pairs.set_index(["regime", "backend", "dtype"])
    assert set(rows.index) == set(expected)
    for key, by_model in expected.items():
        row = rows.loc[key]
        deep, wide = np.exp(by_model[DEEP_NARROW].mean()), np.exp(by_model[SHALLOW_WIDE].mean())
        assert row["phase"] == SEED_PHASE
        assert row["median_a"] == pytest.approx(deep) and row["median_b"] == pytest.approx(wide)
        assert row["ratio"] == pytest.approx(deep / wide)
        both_repeated = min(len(v) for v in by_model.values()) >= 2
        assert (row["ci_kind"] == CI_ACROSS_RUNS) == both_repeated
        if both_repeated:
            assert row["ratio_ci_low"] < row["ratio"] < row["ratio_ci_high"]


def test_a_ratio_of_cells_measured_in_one_round_of_one_run_says_no_ci(con):
    one_round_runs = [r[0] for r in con.execute(
        "SELECT c.run_id FROM samples s JOIN cells c USING (cell_id) WHERE c.model_name IN (?, ?) AND s.phase = ? "
        "GROUP BY c.run_id HAVING count(DISTINCT c.model_name) = 2 AND count(DISTINCT coalesce(s.round, 0)) = 1 "
        "ORDER BY c.run_id", [DEEP_NARROW, SHALLOW_WIDE, SEED_PHASE]).fetchall()]
    assert one_round_runs, "the bundled data holds protocol-1 runs of the seed pair"
    single = headline_for(con, {"run_id": one_round_runs[0]}, all_protocols=True)
    table = seed_table(single)
    assert len(table)
    assert (table["CI kind"] == CI_NONE).all()
    assert (table["95% CI"] == NO_CI).all()
    assert (table["runs"] == "1").all()
    assert not single.pairs["significant"].any(), "a pair without a CI is never significant"


def test_pairs_are_counted_once_per_shape_pair_however_many_runs_or_names_measured_it(headline, per_run):
    frame = per_run.frame
    shapes = frame.groupby(["group_id", "n_layer", "n_embd", "params"])["model_name"].nunique()
    assert (shapes > 1).any(), "the bundled data names some shape twice (reference family and grid)"
    for group_id, group in frame.groupby("group_id"):
        distinct = group.drop_duplicates(["n_layer", "n_embd", "params"])["params"].to_numpy()
        expected = sum(1 for a, b in combinations(distinct, 2) if a != b)
        pairs = headline.pairs[headline.pairs["group_id"] == group_id]
        assert len(pairs) == expected, group_id
        # a shape is its depth, width, KV heads and parameter count (30 x 576 with 1 or 3 KV heads, or
        # with another vocabulary, are other shapes)
        keys = pairs[["n_layer_a", "n_embd_a", "n_kv_head_a", "params_a", "n_layer_b", "n_embd_b", "n_kv_head_b",
                      "params_b"]].apply(tuple, axis=1)
        assert keys.is_unique, group_id
    counts = headline.counts.set_index("regime")
    per_regime = headline.pairs.groupby("regime")
    assert (counts["shape_pairs"] == per_regime.size()).all()
    assert (counts["significant"] == per_regime["significant"].sum()).all()
    assert (counts["significant"] <= counts["inverted"]).all() and (counts["inverted"] <= counts["shape_pairs"]).all()


def test_strongest_inversions_are_each_groups_best_significant_pair_ranked_by_ci_lower_bound(headline):
    top = headline.inversions
    assert top["group_id"].is_unique
    assert list(top["ratio_ci_low"]) == sorted(top["ratio_ci_low"], reverse=True)
    significant = headline.pairs[headline.pairs["significant"]]
    for row in top.itertuples():
        group = significant[significant["group_id"] == row.group_id]
        assert row.ratio > 1 and row.ratio_ci_low == group["ratio_ci_low"].max()
        assert row.significant == len(group)
    others = significant[~significant["group_id"].isin(top["group_id"])]
    if len(others):
        assert others.groupby("group_id")["ratio_ci_low"].max().max() <= top["ratio_ci_low"].min()


def test_by_default_the_tables_hold_only_runs_of_the_current_protocol_and_name_the_regimes_left_out(
        current, headline, con):
    protocol = dict(con.execute("SELECT run_id, coalesce(protocol_version, 1) FROM runs").fetchall())
    earlier = {run for run, version in protocol.items() if version < PROTOCOL_VERSION}
    assert earlier, "the bundled data keeps protocol-1 runs"
    assert len(current.seed_pairs) and len(current.inversions)
    for table in (current.seed_pairs, current.inversions):
        assert (table["protocol_version"] >= PROTOCOL_VERSION).all()
    expected_left_out = sorted(headline.pairs.loc[headline.pairs["protocol_version"] < PROTOCOL_VERSION, "regime"].unique())
    assert list(current.earlier_protocol_regimes) == expected_left_out
    assert set(current.counts["regime"]).isdisjoint(
        set(expected_left_out) - set(headline.pairs.loc[headline.pairs["protocol_version"] >= PROTOCOL_VERSION, "regime"]))
    text = headline_sections(current)[0][1]
    assert all(regime in text for regime in expected_left_out), "every regime left out is named"
    assert not headline.earlier_protocol_regimes and len(headline.seed_pairs) > len(current.seed_pairs)
    # the shape pairs behind the README's per-regime tables keep every protocol
    assert len(current.pairs) == len(headline.pairs)


def test_a_pooled_pair_is_as_current_as_its_oldest_run(per_run, headline):
    """A shape pooled over a protocol-1 and a protocol-2 run carries protocol 1: its CI spans an uncontrolled run."""
    runs_protocol = per_run.frame.drop_duplicates("run_id").set_index("run_id")["protocol_version"]
    pooled = pooled_stats(per_run).frame
    for row in pooled.itertuples():
        assert row.protocol_version == min(runs_protocol[run] for run in row.run_ids)


def test_the_html_report_shows_the_same_headline_rows(con):
    filters = {"phase": [SEED_PHASE]}
    page = build_report(con, filters)
    head = headline_for(con, filters)
    for table in (seed_table(head), inversion_table(head)):
        assert len(table)
        for row in table.itertuples(index=False):
            cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
            assert cells in page


def test_a_wide_table_splits_per_regime_in_first_seen_order_and_a_narrow_one_stays_whole():
    import pandas as pd

    from analysis.headline import WIDE_TABLE_COLUMNS, split_by_regime

    wide = pd.DataFrame({"regime": ["B", "A", "B"], **{f"c{i}": [1, 2, 3] for i in range(WIDE_TABLE_COLUMNS)}})
    parts = split_by_regime(wide)
    assert [regime for regime, _ in parts] == ["B", "A"]
    assert parts[0][1]["c0"].tolist() == [1, 3] and "regime" not in parts[0][1].columns
    narrow = wide.iloc[:, :3]
    [(regime, whole)] = split_by_regime(narrow)
    assert regime is None and whole.equals(narrow)
