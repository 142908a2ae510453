"""Analysis on a store that holds two families: groups stay within a family by default, pool
across families on request with family as a term of the fit, and an inversion names both
shapes in full."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.inversions import find_inversions, headline_text, inversions_summary
from analysis.load import ALL_FAMILIES, keys_by_group_id, load_cells
from analysis.regression import fit_across_families, fit_all
from analysis.reproducibility import has_repeats, pooled_stats, repeat_table, with_repeat_key
from analysis.stats import compute_cell_stats
from store.db import connect_memory
from tests.analysis.families import Shape, ingest, run_files
from tests.store.conftest import H100, StoreBuilder, insert

LLAMA_FACTOR = 1.5  # the simulated cost of the llama block over gpt2 at equal params and depth
# (family, n_layer, n_embd, n_head, n_kv_head, params): four shapes of each family, off one line
SHAPES = [
    ("gpt2", 2, 256, 4, 4, 20e6), ("gpt2", 4, 256, 4, 4, 24e6), ("gpt2", 8, 512, 8, 8, 60e6), ("gpt2", 12, 384, 6, 6, 45e6),
    ("llama", 2, 512, 8, 2, 40e6), ("llama", 6, 256, 4, 1, 22e6), ("llama", 10, 384, 6, 2, 42e6), ("llama", 16, 256, 4, 2, 30e6),
]
ROUNDS = 3


def latency(family: str, n_layer: int, params: float) -> float:
    """ms: a power law in params and depth, times the family's factor."""
    return 0.05 * (params / 1e6) ** 0.3 * n_layer ** 0.6 * (LLAMA_FACTOR if family == "llama" else 1.0)


@pytest.fixture(scope="module")
def mixed():
    """One run (three rounds) of eight shapes, four gpt2 and four llama with GQA."""
    builder = StoreBuilder(connect_memory())
    con = builder.con
    builder.run("run-mixed", n_cells=len(SHAPES))
    rng = np.random.default_rng(0)
    for index, (family, n_layer, n_embd, n_head, n_kv, params) in enumerate(SHAPES):
        cell_id = f"run-mixed/{family}{n_layer}x{n_embd}"
        insert(con, "cells", [{
            "cell_id": cell_id, "run_id": "run-mixed", "cell_key": f"{family}{n_layer}x{n_embd}", "order_index": index,
            "model_name": f"{family}-{n_layer}x{n_embd}", "model_source": "grid", "family": family, "n_layer": n_layer,
            "n_embd": n_embd, "n_head": n_head, "n_kv_head": n_kv, "n_inner": 4 * n_embd, "vocab_size": 32000,
            "n_positions": 2048, "params": int(params), "backend": "hf-eager", "backend_options": json.dumps({}),
            "device": "cuda", "dtype": "bfloat16", "batch_size": 1, "prompt_len": 128, "gen_len": 4, "status": "ok",
            "flags": [],
        }])
        base = latency(family, n_layer, params)
        insert(con, "samples", [
            {"cell_id": cell_id, "phase": "decode", "rep": r * 2 + rep, "step": step, "timer": "cuda_event",
             "latency_ms": float(base * rng.uniform(0.99, 1.01)), "round": r, "worker": 1}
            for r in range(ROUNDS) for rep in range(2) for step in range(4)
        ])
    return con


def test_cells_carry_their_family_and_kv_heads_and_filter_on_them(mixed):
    cells = load_cells(mixed)
    assert set(cells["family"]) == {"gpt2", "llama"}
    assert (cells.loc[cells["family"] == "gpt2", "n_kv_head"] == cells.loc[cells["family"] == "gpt2", "n_head"]).all()
    llama = load_cells(mixed, {"family": "llama"})
    assert len(llama) == 4 and set(llama["n_kv_head"]) == {1, 2}
    assert len(load_cells(mixed, {"n_kv_head": 1})) == 1


def test_groups_hold_one_family_by_default_and_a_gpt2_label_names_no_family(mixed):
    frame = compute_cell_stats(mixed, n_resamples=200).frame
    assert frame.groupby("group_id")["family"].nunique().max() == 1
    labels = {family: set(rows["group_id"]) for family, rows in frame.groupby("family")}
    [gpt2], [llama] = labels["gpt2"], labels["llama"]
    assert gpt2 == f"{H100} | hf-eager | decode | bfloat16 | batch 1 | prompt 128"
    assert llama == f"{H100} | llama | hf-eager | decode | bfloat16 | batch 1 | prompt 128"
    keys = keys_by_group_id(frame)
    assert {k.family for k in keys.values()} == {"gpt2", "llama"}
    assert {fit.key.family for fit in fit_all(frame)} == {"gpt2", "llama"}


def test_pooled_groups_compare_shapes_across_families_and_name_both_in_full(mixed):
    stats = compute_cell_stats(mixed, n_resamples=400, pool_families=True)
    frame = stats.frame
    assert frame["group_id"].nunique() == 1 and f"| {ALL_FAMILIES} |" in frame["group_id"].iloc[0]
    assert set(frame["family"]) == {"gpt2", "llama"}
    [key] = keys_by_group_id(frame).values()
    assert key.family == ALL_FAMILIES
    pairs = find_inversions(stats)
    across = pairs[pairs["family_a"] != pairs["family_b"]]
    assert len(across)  # llama's factor makes smaller llama shapes slower than larger gpt2 ones
    row = across.iloc[0]
    text = headline_text(row)
    llama_side = "a" if row["family_a"] == "llama" else "b"
    assert f"llama, {row[f'params_{llama_side}'] / 1e6:.1f}M params" in text
    assert f"{row[f'n_head_{llama_side}']}/{row[f'n_kv_head_{llama_side}']} heads" in text
    summary = inversions_summary(pairs)
    assert all({"family_a", "family_b", "n_kv_head_a"} <= set(r) for r in summary["significant"])


def test_a_pooled_fit_puts_family_in_the_seed_form_and_recovers_its_effect(mixed):
    frame = compute_cell_stats(mixed, n_resamples=200).frame
    [fit] = fit_across_families(frame)
    assert fit["status"] == "ok" and fit["families"] == ["gpt2", "llama"] and fit["reference"] == "gpt2"
    assert "C(family" in fit["formula"] and {"log_params", "log_depth", "family:llama"} <= set(fit["terms"])
    effect = fit["family_ratios"]["llama"]
    assert effect["ci_low"] <= LLAMA_FACTOR <= effect["ci_high"] and abs(effect["ratio"] - LLAMA_FACTOR) < 0.05
    assert fit["terms"]["log_params"]["ci_low"] <= 0.3 <= fit["terms"]["log_params"]["ci_high"]


def test_a_pooled_fit_of_one_family_or_too_few_shapes_says_why(mixed):
    frame = compute_cell_stats(mixed, {"family": "llama"}, n_resamples=50).frame
    [fit] = fit_across_families(frame)
    assert fit["status"] == "one_family" and "only llama" in fit["message"]
    few = compute_cell_stats(mixed, {"model_name": ["gpt2-2x256", "llama-2x512", "llama-6x256"]}, n_resamples=50).frame
    [fit] = fit_across_families(few)
    assert fit["status"] == "too_few_shapes" and "measure 2 more" in fit["message"]


def test_two_runs_differing_only_in_family_or_kv_heads_are_never_pooled_as_repeats():
    """A gpt2 and a llama cell of one depth, width, heads and parameter count are two
    measurements, and so are one llama shape with 4 and with 2 KV heads; the shape both runs
    measured alike is one repeat unit of two runs."""
    same = Shape("gpt2", 4, 256, 4, 4, 24e6)
    run_a = run_files("run-a", [same, Shape("gpt2", 8, 512, 8, 8, 60e6), Shape("llama", 6, 384, 6, 6, 40e6)], seed=1)
    run_b = run_files("run-b", [same, Shape("llama", 8, 512, 8, 8, 60e6), Shape("llama", 6, 384, 6, 2, 40e6)], seed=2,
                      run_factor=1.3)  # run b is slower: a pooled pair would show it as run-to-run spread
    con = connect_memory()
    ingest(con, run_a, run_b)
    stats = compute_cell_stats(con, {"phase": "decode"}, n_resamples=200)
    assert has_repeats(stats)
    pooled = pooled_stats(stats).frame
    runs = {(r.family, r.n_layer, r.n_kv_head): r.n_runs for r in pooled.itertuples()}
    assert runs == {("gpt2", 4, 4): 2, ("gpt2", 8, 8): 1, ("llama", 8, 8): 1, ("llama", 6, 6): 1, ("llama", 6, 2): 1}
    table = repeat_table(stats, pooled=pooled_stats(stats))
    assert len(table) == 1 and table["model_name"].iat[0] == same.name
    assert set(with_repeat_key(stats.frame)["repeat_key"].str.contains("llama")) == {True, False}
