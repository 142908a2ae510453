"""Energy per token of the seed pair: the ratio and its interval come from the level that
replicates (runs, else paired rounds), and a single round says it has no CI."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.resources import pair_energy, pair_ratio_text

KEY = {"regime": "GPU X | driver 1", "backend": "cuda-graph", "dtype": "float32", "batch_size": 1, "prompt_len": 128,
       "phase": "decode"}


def _frame(runs: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """resource_frame-like decode rows: run -> model -> joules per decode step, per round."""
    return pd.DataFrame([KEY | {"cell_id": f"{run}/{model}", "model_name": model, "energy_j_rounds": rounds}
                         for run, models in runs.items() for model, rounds in models.items()])


def test_two_runs_give_an_interval_across_runs_around_the_planted_ratio():
    rng = np.random.default_rng(0)
    runs = {f"r{i}": {"gpt2-5m": list(0.1 * (1 + rng.normal(0, 0.02, 3))),
                      "gpt2-25m": list(0.05 * (1 + rng.normal(0, 0.02, 3)))} for i in range(3)}
    (row,) = pair_energy(_frame(runs)).to_dict("records")
    assert row["ci_kind"] == "across runs" and row["runs"] == 3
    assert row["ratio_ci_low"] < 2.0 < row["ratio_ci_high"]
    assert row["small_mj_per_token"] == pytest.approx(100, rel=0.05)


def test_one_run_pairs_its_rounds_so_a_shared_drift_cancels():
    drift = [1.0, 1.3, 0.8]  # the whole round ran hotter or cooler: both cells move together
    runs = {"r1": {"gpt2-5m": [0.08 * d for d in drift], "gpt2-25m": [0.1 * d for d in drift]}}
    (row,) = pair_energy(_frame(runs)).to_dict("records")
    assert row["ci_kind"] == "across rounds"
    assert row["ratio"] == pytest.approx(0.8)
    assert row["ratio_ci_high"] - row["ratio_ci_low"] < 1e-9


def test_a_single_round_has_no_ci_and_says_so():
    (row,) = pair_energy(_frame({"r1": {"gpt2-5m": [0.1], "gpt2-25m": [0.05]}})).to_dict("records")
    assert row["ci_kind"] == "none" and math.isnan(row["ratio_ci_low"])
    assert pair_ratio_text(row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"], row["ci_kind"]) == "2.00x (no CI)"


def test_a_run_that_measured_only_one_model_of_the_pair_is_left_out():
    runs = {"r1": {"gpt2-5m": [0.1, 0.1], "gpt2-25m": [0.05, 0.05]}, "r2": {"gpt2-5m": [0.3, 0.3]}}
    (row,) = pair_energy(_frame(runs)).to_dict("records")
    assert row["runs"] == 1 and row["ratio"] == pytest.approx(2.0)


def test_unknown_energy_is_no_pair_not_a_zero():
    runs = {"r1": {"gpt2-5m": [math.nan, math.nan], "gpt2-25m": [0.05, 0.05]}}
    assert pair_energy(_frame(runs)).empty
