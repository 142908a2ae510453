"""Predicting an unmeasured shape, and the samples a comparison needs."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.predict import predict_latency, samples_needed

GROUP = dict(regime="synthetic-gpu-a", backend="hf-eager", phase="decode", dtype="float32", batch_size=1, prompt_len=32)


def test_prediction_inside_the_measured_range_is_close_with_no_warning(depth_stats):
    # 10 x 384 is not measured; the law gives 1 + 5 + 0.768 = 6.77 ms
    out = predict_latency(depth_stats.frame, n_layer=10, n_embd=384, **GROUP)
    assert out["status"] == "ok" and not out["extrapolation"] and out["warnings"] == []
    low, high = out["prediction_interval"]
    assert low < 6.77 < high
    assert out["ci"][0] <= out["median_ms"] <= out["ci"][1]
    assert out["prediction_interval"][0] <= out["ci"][0]


def test_prediction_outside_the_measured_range_warns_of_extrapolation(depth_stats):
    out = predict_latency(depth_stats.frame, n_layer=48, n_embd=2048, **GROUP)
    assert out["extrapolation"]
    assert any("depth 48 is outside the measured range 1..24" in w for w in out["warnings"])
    assert any("width 2048 is outside" in w for w in out["warnings"])


def test_prediction_for_an_unmeasured_group_is_a_message(depth_stats):
    out = predict_latency(depth_stats.frame, n_layer=4, n_embd=128, **{**GROUP, "backend": "vllm"})
    assert out["status"] == "no_data" and "no measured cells" in out["message"]


def test_samples_needed_matches_the_normal_approximation():
    # means: 2 (1.96 + 0.8416)^2 0.1^2 / 0.05^2 = 62.8 -> 63; medians: x pi/2 -> 99
    assert samples_needed(0.10, 0.05, statistic="mean") == 63
    assert samples_needed(0.10, 0.05) == math.ceil(2 * (1.959964 + 0.841621) ** 2 * 4 * math.pi / 2)


@given(st.floats(0.005, 0.5), st.floats(0.005, 0.5))
def test_noisier_cells_and_smaller_differences_need_more_samples(cv, diff):
    n = samples_needed(cv, diff)
    assert samples_needed(cv * 2, diff) >= n
    assert samples_needed(cv, diff / 2) >= n
    assert samples_needed(cv, diff, power=0.9) >= n


def test_samples_needed_refuses_nonsense():
    with pytest.raises(ValueError, match="must be positive"):
        samples_needed(0, 0.05)
