"""Pooling over runs: one row per configuration, whatever its name, never across batch or prompt length."""
from __future__ import annotations

import pytest

from analysis.headline import build_headline
from analysis.inversions import find_inversions, pair_ratios
from analysis.report import analyze
from analysis.reproducibility import pooled_stats
from analysis.stats import compute_cell_stats
from analysis.synthetic import SyntheticPlan, generate, insert
from store.db import connect_memory

from .conftest import ROUNDS, TEST_RESAMPLES

SHAPES = ((2, 128), (4, 128), (8, 128), (2, 256), (4, 256))
RENAMED = "4x256"  # measured as "gpt2-x" by run b of the first point, as the reference family names a grid shape
POINTS = (dict(batch_size=1, prompt_len=32), dict(batch_size=4, prompt_len=32), dict(batch_size=1, prompt_len=64))


@pytest.fixture(scope="module")
def store():
    """Three operating points (batch, prompt) of the same shapes, each in two runs; one shape renamed in one run."""
    con = connect_memory()
    for i, point in enumerate(POINTS):
        plan = SyntheticPlan(shapes=SHAPES, phases=("decode",), n_runs=2, cell_cv=0.02, seed=10 + i, **point, **ROUNDS)
        runs, cells, samples = generate(plan)
        prefix = {f"run-{k}": f"p{i}-{'ab'[k]}" for k in range(2)}
        runs["run_id"] = runs["run_id"].map(prefix)
        cells["run_id"] = cells["run_id"].map(prefix)
        old_ids = cells["cell_id"]
        if i == 0:  # another name and source give another stored cell key, as in the bundle
            renamed = (cells["run_id"] == "p0-b") & (cells["model_name"] == RENAMED)
            cells.loc[renamed, ["model_name", "model_source"]] = ["gpt2-x", "registry"]
            cells.loc[renamed, "cell_key"] = "registry/" + cells.loc[renamed, "cell_key"]
        cells["cell_id"] = cells["run_id"] + "/" + cells["cell_key"]
        samples["cell_id"] = samples["cell_id"].map(dict(zip(old_ids, cells["cell_id"])))
        insert(con, runs, cells, samples)
    yield con
    con.close()


@pytest.fixture(scope="module")
def stats(store):
    return compute_cell_stats(store, n_resamples=TEST_RESAMPLES, seed=0)


def test_one_pooled_row_per_configuration_and_never_across_batch_or_prompt_length(store, stats):
    pooled = pooled_stats(stats).frame
    assert len(pooled) == len(POINTS) * len(SHAPES)
    assert (pooled["n_runs"] == 2).all()
    config = store.execute("SELECT cell_id, batch_size, prompt_len FROM cells").df().set_index("cell_id")
    for cell_ids, batch, prompt in zip(pooled["cell_ids"], pooled["batch_size"], pooled["prompt_len"]):
        assert set(config.loc[cell_ids, "batch_size"]) == {batch} and set(config.loc[cell_ids, "prompt_len"]) == {prompt}
    renamed = pooled[pooled["model_names"].map(lambda names: "gpt2-x" in names)]
    assert list(renamed["model_name"]) == ["gpt2-x = 4x256"]
    assert renamed["batch_size"].item() == 1 and renamed["prompt_len"].item() == 32


def test_a_renamed_shape_counts_once_in_its_groups_pairs(stats):
    per_group = len(SHAPES) * (len(SHAPES) - 1) // 2
    pairs = pair_ratios(pooled_stats(stats), inversions_only=False)
    assert pairs.groupby("group_id").size().to_dict() == dict.fromkeys(sorted(pairs["group_id"].unique()), per_group)
    assert pairs["group_id"].nunique() == len(POINTS)
    # the stored cell key tells the two names apart: pooled by it, the shape is two rows and its pairs count twice
    by_key = pair_ratios(pooled_stats(stats, by="cell_key"), inversions_only=False)
    assert by_key.groupby("group_id").size().max() == per_group + len(SHAPES) - 1


def test_analyze_counts_the_inversions_the_headline_counts(store, stats):
    pairs = build_headline(stats).pairs
    inversions = analyze(store, n_resamples=TEST_RESAMPLES)["inversions"]
    assert inversions["n_inverted_pairs"] == int((pairs["ratio"] > 1).sum()) == len(find_inversions(pooled_stats(stats)))
    assert inversions["n_significant"] == int(pairs["significant"].sum())
