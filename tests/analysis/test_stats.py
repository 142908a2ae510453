"""Cell statistics: DuckDB aggregates agree with pandas; the bootstrap CI is reproducible
and has the distribution of a literal resampling bootstrap."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from analysis.bootstrap import median_draws, percentile_ci
from analysis.load import load_cells, load_samples
from analysis.stats import compute_cell_stats
from analysis.synthetic import SyntheticPlan, build_store


def test_plain_statistics_match_pandas(depth_store, depth_stats):
    samples = load_samples(depth_store)
    g = samples.groupby(["cell_id", "phase"])["latency_ms"]
    expected = pd.DataFrame(
        {
            "n": g.size(), "median": g.median(), "mean": g.mean(), "std": g.std(),
            "p5": g.quantile(0.05), "p95": g.quantile(0.95),
        }
    ).reset_index()
    got = depth_stats.frame.merge(expected, on=["cell_id", "phase"], suffixes=("", "_pd"))
    assert len(got) == len(depth_stats.frame) == len(expected)
    for col in ("n", "median", "mean", "std", "p5", "p95"):
        np.testing.assert_allclose(got[col], got[f"{col}_pd"], rtol=1e-9, err_msg=col)
    np.testing.assert_allclose(got["cv"], got["std_pd"] / got["mean_pd"], rtol=1e-9)


def test_bootstrap_ci_is_reproducible_with_a_seed(depth_store):
    a = compute_cell_stats(depth_store, {"phase": "decode"}, n_resamples=500, seed=7)
    b = compute_cell_stats(depth_store, {"phase": "decode"}, n_resamples=500, seed=7)
    c = compute_cell_stats(depth_store, {"phase": "decode"}, n_resamples=500, seed=8)
    np.testing.assert_array_equal(a.draws, b.draws)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not np.array_equal(a.draws, c.draws)


def test_ci_of_the_median_brackets_the_median(depth_stats):
    f = depth_stats.frame
    assert (f["median_ci_low"] <= f["median"]).all() and (f["median"] <= f["median_ci_high"]).all()
    assert (f["median_ci_low"] < f["median_ci_high"]).all()


@pytest.mark.parametrize("n", [7, 40, 301])
def test_order_statistic_bootstrap_matches_scipy_resampling(n):
    rng = np.random.default_rng(n)
    x = rng.lognormal(0, 0.3, n)
    draws = median_draws(np.sort(x), np.array([n]), n_resamples=20000, seed=1)[0]
    ours = percentile_ci(draws)
    ref = sps.bootstrap((x,), np.median, n_resamples=20000, method="percentile", random_state=2).confidence_interval
    spread = np.quantile(x, 0.75) - np.quantile(x, 0.25)
    assert abs(ours[0] - ref.low) < 0.05 * spread
    assert abs(ours[1] - ref.high) < 0.05 * spread
    # and the whole distribution matches a literal resampling, including how often an
    # even-n median lands exactly on a sample value (both middle values the same index)
    literal = np.median(x[np.random.default_rng(3).integers(0, n, (20000, n))], axis=1)
    levels = [0.025, 0.25, 0.5, 0.75, 0.975]
    np.testing.assert_allclose(np.quantile(draws, levels), np.quantile(literal, levels), atol=0.05 * spread)
    assert abs(np.isin(draws, x).mean() - np.isin(literal, x).mean()) < 0.02


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 1000))
def test_every_cell_draws_stay_within_its_own_range(counts, seed):
    rng = np.random.default_rng(seed)
    blocks = [np.sort(rng.normal(100 * i, 1, k)) for i, k in enumerate(counts)]
    draws = median_draws(np.concatenate(blocks), np.array(counts), n_resamples=50, seed=seed)
    for block, row in zip(blocks, draws):
        assert row.min() >= block[0] and row.max() <= block[-1]


def test_tokens_per_second_for_every_phase_prefill_counting_the_prompt_tokens_it_reads():
    con = build_store(SyntheticPlan(shapes=((2, 64), (4, 128)), batch_size=4, prompt_len=32, gen_len=8, reps=3))
    f = compute_cell_stats(con, n_resamples=100).frame
    decode, e2e, prefill = (f[f["phase"] == p] for p in ("decode", "e2e", "prefill"))
    np.testing.assert_allclose(decode["tokens_per_s"], 4 * 1000 / decode["median"])
    np.testing.assert_allclose(e2e["tokens_per_s"], 4 * 8 * 1000 / e2e["median"])
    np.testing.assert_allclose(prefill["tokens_per_s"], 4 * 32 * 1000 / prefill["median"])


def test_failed_cells_are_not_analysed():
    con = build_store(SyntheticPlan(shapes=((2, 64), (4, 128), (8, 64)), failed_shapes=((4, 128),), reps=2))
    assert set(compute_cell_stats(con, n_resamples=50).frame["model_name"]) == {"2x64", "8x64"}
    assert set(load_cells(con)["model_name"]) == {"2x64", "8x64"}


def test_filters_select_and_unknown_filters_name_the_allowed_ones(depth_store):
    f = compute_cell_stats(depth_store, {"phase": ["decode"], "n_layer": [1, 2]}, n_resamples=50).frame
    assert set(f["phase"]) == {"decode"} and set(f["n_layer"]) == {1, 2}
    with pytest.raises(ValueError, match="unknown filter 'depth'.*allowed: run_id"):
        compute_cell_stats(depth_store, {"depth": 3})


def test_an_empty_selection_gives_an_empty_frame(depth_store):
    stats = compute_cell_stats(depth_store, {"backend": "no-such-backend"})
    assert stats.frame.empty and stats.draws.shape[0] == 0
