"""Inversion significance controls the false discovery rate across a group's pairs (BH, 5%)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.inversions import FDR, inversions_summary, pair_ratios
from analysis.report import analyze, format_text
from analysis.stats import CellStats

N_CELLS = 30
N_SLOW = 6  # the smallest cells, truly slower than every larger cell by TRUE_EFFECT
TRUE_EFFECT = 0.12  # log ratio: about 2.4 standard errors of a pair, so power is partial
SE = 0.035  # standard error of a log median
N_DRAWS = 1000


def _experiment(rng: np.random.Generator) -> tuple[CellStats, np.ndarray]:
    """One group of cells with a calibrated bootstrap: point estimate and draws share the SE."""
    truth = np.where(np.arange(N_CELLS) < N_SLOW, TRUE_EFFECT, 0.0)
    observed = truth + SE * rng.standard_normal(N_CELLS)
    draws = np.exp(observed[:, None] + SE * rng.standard_normal((N_CELLS, N_DRAWS)))
    frame = pd.DataFrame({
        "group_id": "g", "regime": "r", "backend": "b", "phase": "decode", "dtype": "float32",
        "batch_size": 1, "prompt_len": 32, "gen_len": 16, "cell_id": [f"c{i}" for i in range(N_CELLS)],
        "model_name": [f"m{i}" for i in range(N_CELLS)], "n_layer": 1, "n_embd": 64,
        "params": 1_000_000 + np.arange(N_CELLS), "median": np.exp(observed),
        "median_ci_low": np.nan, "median_ci_high": np.nan,
    })
    return CellStats(frame=frame, draws=draws, confidence=0.95, seed=0), truth


def _false_discovery_proportions(n_experiments: int = 150) -> tuple[list[float], list[float], list[int]]:
    rng = np.random.default_rng(2024)
    fdp, fdp_uncorrected, true_found = [], [], []
    for _ in range(n_experiments):
        stats, truth = _experiment(rng)
        pairs = pair_ratios(stats, inversions_only=False)
        a = pairs["cell_id_a"].str[1:].astype(int).to_numpy()
        b = pairs["cell_id_b"].str[1:].astype(int).to_numpy()
        real = truth[a] > truth[b]
        for column, out in (("significant", fdp), ("ci_above_1", fdp_uncorrected)):
            called = pairs[column].to_numpy()
            out.append(float((called & ~real).sum() / max(called.sum(), 1)))
        true_found.append(int((pairs["significant"].to_numpy() & real).sum()))
    return fdp, fdp_uncorrected, true_found


def test_bh_keeps_the_false_discovery_proportion_near_five_percent_on_a_planted_mix():
    fdp, fdp_uncorrected, true_found = _false_discovery_proportions()
    # 6 x 24 = 144 true inversions among 435 pairs: BH's bound is FDR x m0 / m = 3.3%.
    assert np.mean(fdp) <= FDR + 0.02
    assert np.mean(fdp) < np.mean(fdp_uncorrected)
    assert np.mean(true_found) > 20  # still finds true inversions


def test_significant_pairs_have_q_at_most_fdr_and_a_ci_above_one():
    stats, _ = _experiment(np.random.default_rng(1))
    pairs = pair_ratios(stats, inversions_only=False)
    sig = pairs[pairs["significant"]]
    assert len(sig) and (sig["q_value"] <= FDR).all() and (sig["ratio_ci_low"] > 1).all() and (sig["ratio"] > 1).all()
    assert (pairs["q_value"] >= pairs["p_value"]).all() and pairs["p_value"].between(0, 1).all()


def test_inversions_only_applies_bh_over_all_pairs_not_just_the_inverted_ones():
    stats, _ = _experiment(np.random.default_rng(2))
    everything = pair_ratios(stats, inversions_only=False)
    inverted = pair_ratios(stats, inversions_only=True)
    merged = inverted.merge(everything, on=["cell_id_a", "cell_id_b"], suffixes=("", "_all"))
    assert len(merged) == len(inverted) == int((everything["ratio"] > 1).sum())
    assert np.allclose(merged["q_value"], merged["q_value_all"])


def test_summary_and_text_count_significant_at_fdr_five_percent(depth_store):
    stats, _ = _experiment(np.random.default_rng(3))
    summary = inversions_summary(pair_ratios(stats))
    assert summary["fdr"] == FDR and summary["n_significant"] <= summary["n_ci_above_1"]
    text = format_text(analyze(depth_store, n_resamples=200))
    assert "significant at FDR 5%" in text
