"""An interval too wide to mean anything is shown as "too noisy (N rounds would be needed)",
with N from the t interval's width scaling, in `analyze`'s text and in Explore's table."""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

from analysis.intervals import (
    CI_ACROSS_ROUNDS, CI_ACROSS_RUNS, CI_NONE, NO_CI, NOISY_RATIO, TARGET_HALF_WIDTH, interval_text, rounds_needed,
    t_interval,
)
from analysis.report import analyze, format_text
from analysis.stats import compute_cell_stats
from analysis.synthetic import SyntheticPlan, build_store
from dashboard.data import explore_table

# Three rounds of one cell whose medians were 0.01, 1 and 100 ms (a machine busy in one round).
WILD_ROUNDS = np.log([0.01, 1.0, 100.0])


def test_wide_interval_says_too_noisy_with_the_rounds_a_ten_percent_interval_would_need():
    [low], [high] = t_interval(WILD_ROUNDS[None, :])
    low, high = np.exp(low), np.exp(high)
    assert high / low > NOISY_RATIO
    needed = rounds_needed(WILD_ROUNDS)
    assert interval_text(low, high, CI_ACROSS_ROUNDS, WILD_ROUNDS) == f"too noisy ({needed} rounds would be needed)"
    assert interval_text(low, high, CI_ACROSS_RUNS, WILD_ROUNDS).endswith("runs would be needed)")
    # the smallest k whose t interval, at the spread observed, is within +-10%
    spread, half = WILD_ROUNDS.std(ddof=1), np.log1p(TARGET_HALF_WIDTH)
    assert sps.t.ppf(0.975, needed - 1) * spread / np.sqrt(needed) <= half
    assert sps.t.ppf(0.975, needed - 2) * spread / np.sqrt(needed - 1) > half


def test_narrow_interval_keeps_its_bounds_and_a_missing_one_says_no_ci():
    assert interval_text(1.02, 1.09, CI_ACROSS_ROUNDS, np.log([1.03, 1.05, 1.08])) == "[1.02, 1.09]"
    assert interval_text(np.nan, np.nan, CI_NONE) == NO_CI
    assert rounds_needed(np.log([1.0])) is None  # one round shows no spread
    assert rounds_needed(np.log([1.0, 1.0, 1.0])) == 2


def test_noisy_rounds_show_too_noisy_in_analyze_text_and_explore_instead_of_bounds():
    # round-to-round noise of ~2.5 on the log scale: a busy machine's kind of spread
    con = build_store(SyntheticPlan(rounds=3, round_cv=2.5, shapes=((2, 64), (4, 64)), seed=3))
    try:
        stats = compute_cell_stats(con, n_resamples=200, seed=0).frame
        noisy = stats[stats["median_ci_high"] / stats["median_ci_low"] > NOISY_RATIO]
        assert len(noisy), "the planted spread makes some interval over 10x wide"
        text = format_text(analyze(con, n_resamples=200))
        assert "too noisy (" in text and "rounds would be needed)" in text
        cells = con.execute("SELECT c.*, r.regime FROM cells c JOIN runs r USING (run_id)").df()
    finally:
        con.close()
    table = explore_table(cells, stats)
    rows = table.merge(noisy[["cell_id", "phase"]], on=["cell_id", "phase"])
    assert rows["median_ci"].str.startswith("too noisy (").all()
    assert rows["median_ci_low"].isna().all() and rows["median_ci_high"].isna().all()
