"""Across regimes and backends: per-level depth effects side by side, a Wald test, messages."""
from __future__ import annotations

import pytest

from analysis.regimes import compare


def test_depth_effect_per_regime_with_ci_and_wald_detects_the_difference(two_regime_stats):
    comps = compare(two_regime_stats.frame, "regime")
    assert len(comps) == 2  # one per backend
    for comp in comps:
        assert comp["status"] == "ok"
        levels = {lv["level"]: lv for lv in comp["levels"]}
        assert set(levels) == {"fast-launch", "slow-launch"}
        assert levels["slow-launch"]["depth_effect"] > levels["fast-launch"]["depth_effect"]
        assert all(lv["depth_ci_low"] > 0 for lv in levels.values())
        assert comp["wald_depth"]["p_value"] < 0.05 and comp["wald_depth"]["df"] == 1
        assert comp["message"].startswith("the depth effect differs across regimes")


def test_equal_backends_show_no_evidence_of_a_difference(two_regime_stats):
    comps = compare(two_regime_stats.frame, "backend")
    assert len(comps) == 2  # one per regime
    for comp in comps:
        assert comp["status"] == "ok"
        assert comp["wald_depth"]["p_value"] > 0.05
        assert comp["message"].startswith("no evidence that the depth effect differs across backends")


def test_single_regime_gives_a_message_not_an_exception(depth_stats):
    comps = compare(depth_stats.frame, "regime")
    assert comps and all(c["status"] == "single_level" for c in comps)
    assert "only one regime" in comps[0]["message"]


def test_unknown_factor_is_refused(depth_stats):
    with pytest.raises(ValueError, match="factor must be 'regime' or 'backend'"):
        compare(depth_stats.frame, "dtype")
