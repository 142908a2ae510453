"""Latency inversions: planted ones are found, overlapping CIs are not called significant."""
from __future__ import annotations

import numpy as np

from analysis.inversions import find_inversions, headline_text, headlines, pair_ratios
from analysis.synthetic import SyntheticPlan

from .conftest import ROUNDS, make_stats

SHAPES = ((2, 128), (4, 128), (6, 256), (8, 256), (12, 512))


def _plan(law, **kw):
    return SyntheticPlan(law=law, shapes=SHAPES, phases=("decode",), reps=10, noise_cv=0.05, **{**ROUNDS, **kw})


def _by_params(cells):
    """latency grows with params (no inversion), each model 1.5x the previous one."""
    rank = cells["params"].rank().to_numpy()
    return 1.5 ** rank


def test_planted_inversion_is_found_and_significant():
    def law(cells):
        base = _by_params(cells)
        # 2.25 ms -> 5.6 ms: slower than 6x256 (3.4) and 8x256 (5.1), faster than 12x512 (7.6)
        return np.where(cells["model_name"] == "4x128", base * 2.5, base)

    inv = find_inversions(make_stats(_plan(law)))
    sig = inv[inv["significant"]]
    assert set(sig["model_name_a"]) == {"4x128"}
    assert set(sig["model_name_b"]) == {"6x256", "8x256"}
    assert (sig["params_a"] < sig["params_b"]).all() and (sig["ratio_ci_low"] > 1).all()


def test_monotone_latency_has_no_inversions():
    assert find_inversions(make_stats(_plan(_by_params))).empty


def test_overlapping_cis_are_not_called_significant():
    def law(cells):
        base = _by_params(cells)
        # 2x128 0.1% slower than 4x128: far inside the ~1% standard error of the ratio
        # of two cells' round medians (3 rounds, 1% round noise, 5% CV), so the CI straddles 1
        return np.where(cells["model_name"] == "2x128", base[cells["model_name"] == "4x128"][0] * 1.001, base)

    inv = pair_ratios(make_stats(_plan(law, seed=4)), inversions_only=False)
    pair = inv[(inv["model_name_a"] == "2x128") & (inv["model_name_b"] == "4x128")].iloc[0]
    assert pair["ratio_ci_low"] < 1 < pair["ratio_ci_high"]
    assert not pair["significant"]
    assert not inv[inv["significant"]].size


def test_inversions_are_ranked_by_ci_lower_bound_and_headline_is_the_strongest():
    def law(cells):
        base = _by_params(cells)
        return base * np.where(cells["model_name"] == "2x128", 20.0, 1.0)

    inv = find_inversions(make_stats(_plan(law)))
    assert (np.diff(inv["ratio_ci_low"].to_numpy()) <= 0).all()
    assert list(inv["rank"]) == list(range(1, len(inv) + 1))
    head = headlines(inv)
    assert len(head) == 1
    assert head.iloc[0]["ratio_ci_low"] == inv["ratio_ci_low"].max()
    assert "2x128" in headline_text(head.iloc[0]) and "slower" in headline_text(head.iloc[0])


def test_all_pairs_mode_keeps_every_smaller_larger_pair():
    pairs = pair_ratios(make_stats(_plan(_by_params)), inversions_only=False)
    assert len(pairs) == len(SHAPES) * (len(SHAPES) - 1) // 2
    assert (pairs["ratio"] < 1).all()
