"""At equal parameters: the depth and KV-heads comparisons recover a planted law, name both
shapes in full, and say where the answer flips between devices."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.budget import (DEPTH, FASTER, KV, SAME, SLOWER, budget_comparisons, budget_sentences, budget_table,
                             device_label, flips)
from analysis.headline import build_headline
from analysis.stats import compute_cell_stats
from store.db import connect_memory
from tests.store.conftest import H100, StoreBuilder, insert

CPU = "CPU Intel(R) Xeon(R) Processor | 2 threads | host de86c054"
# (n_layer, n_embd, n_head, n_kv_head, params): a 125M budget grid as plans/families-budget.toml builds it
SHAPES = [(6, 1216, 19, 1, 125.6e6), (6, 1152, 18, 3, 124.0e6), (18, 768, 12, 1, 126.1e6), (18, 768, 12, 3, 129.6e6),
          (30, 576, 9, 1, 124.9e6), (30, 576, 9, 3, 126.5e6), (30, 256, 4, 1, 20e6)]
KV_COST = 1.05  # planted: three KV heads cost 5% more than one on the GPU
ROUNDS = 4


def gpu_ms(n_layer: int, n_kv: int, params: float) -> float:
    """Launch-bound: 0.09 ms a layer, KV heads a little."""
    return 0.09 * n_layer * (KV_COST if n_kv == 3 else 1.0)


def cpu_ms(n_layer: int, n_kv: int, params: float) -> float:
    """Compute-bound, with wide matmuls a little less efficient: the shallow shape is slower."""
    return 40.0 * params / 125e6 * (1.0 + 0.3 * (6 / n_layer) ** 0.5)


@pytest.fixture(scope="module")
def budget_store():
    builder = StoreBuilder(connect_memory())
    con = builder.con
    rng = np.random.default_rng(1)
    for regime, law, backend in ((H100, gpu_ms, "cuda-graph"), (CPU, cpu_ms, "hf-sdpa")):
        run_id = f"run-{backend}"
        builder.run(run_id, regime=regime, n_cells=len(SHAPES))
        for index, (n_layer, n_embd, n_head, n_kv, params) in enumerate(SHAPES):
            cell_id = f"{run_id}/{n_layer}x{n_embd}-kv{n_kv}"
            insert(con, "cells", [{
                "cell_id": cell_id, "run_id": run_id, "cell_key": f"{n_layer}x{n_embd}-kv{n_kv}", "order_index": index,
                "model_name": f"{n_layer}x{n_embd}-kv{n_kv}", "model_source": "grid", "family": "llama",
                "n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "n_kv_head": n_kv, "n_inner": 4 * n_embd,
                "vocab_size": 32000, "n_positions": 2048, "params": int(params), "backend": backend,
                "backend_options": json.dumps({}), "device": "cuda" if regime == H100 else "cpu",
                "dtype": "bfloat16" if regime == H100 else "float32", "batch_size": 1, "prompt_len": 128,
                "gen_len": 4, "status": "ok", "flags": [],
            }])
            base = law(n_layer, n_kv, params)
            insert(con, "samples", [
                {"cell_id": cell_id, "phase": "decode", "rep": r * 2 + rep, "step": step, "timer": "cuda_event",
                 "latency_ms": float(base * rng.uniform(0.995, 1.005)), "round": r, "worker": 1}
                for r in range(ROUNDS) for rep in range(2) for step in range(4)
            ])
    con.execute("UPDATE runs SET protocol_version = 2")
    return con


@pytest.fixture(scope="module")
def comparisons(budget_store):
    return budget_comparisons(build_headline(compute_cell_stats(budget_store, n_resamples=400)).pairs)


def test_depth_compares_the_deepest_and_shallowest_shape_of_equal_parameters_and_kv_heads(comparisons):
    gpu = comparisons[(comparisons["comparison"] == DEPTH) & (comparisons["backend"] == "cuda-graph")]
    assert sorted(gpu["first_kv_heads"]) == [1, 3]
    for row in gpu.itertuples():
        # the 20M 30-layer shape is not of equal parameters: never the partner
        assert (row.first_layers, row.second_layers) == (30, 6)
        assert row.first_kv_heads == row.second_kv_heads
        assert row.ci_low < 5.0 < row.ci_high or abs(row.ratio - 5.0) < 0.05
        assert row.verdict == SLOWER
        assert "30 x 576" in row.first and "6 x 1" in row.second and f"/{row.first_kv_heads} heads" in row.first


def test_kv_heads_compare_at_equal_depth_and_recover_the_planted_cost(comparisons):
    kv = comparisons[(comparisons["comparison"] == KV) & (comparisons["backend"] == "cuda-graph")]
    assert sorted(kv["first_layers"]) == [6, 18, 30]
    assert (kv["first_kv_heads"] == 3).all() and (kv["second_kv_heads"] == 1).all()
    assert np.allclose(kv["ratio"], KV_COST, atol=0.01)
    assert (kv["verdict"] == SLOWER).all()


def test_the_cpu_answers_for_itself_and_flips_name_where(comparisons):
    cpu = comparisons[(comparisons["comparison"] == DEPTH) & (comparisons["backend"] == "hf-sdpa")]
    assert (cpu["verdict"] == FASTER).all() and (cpu["ratio"] < 1).all()
    [flip] = flips(comparisons)
    assert flip.startswith("llama: deep-and-thin is slower with cuda-graph bfloat16 batch 1 on NVIDIA H100")
    assert "faster with hf-sdpa float32 batch 1 on CPU Intel(R) Xeon(R) Processor (host de86c054)" in flip


def test_sentences_and_table_say_which_shapes_and_the_interval(comparisons):
    sentences = budget_sentences(comparisons)
    depth = [s for s in sentences if "layers against" in s]
    assert any(s.startswith("On NVIDIA H100 80GB HBM3 x1, llama at about 125M parameters, 30 layers against 6 "
                            "(time per token, 95% CI): cuda-graph bfloat16 batch 1, 1 KV head ") for s in depth)
    assert any("cuda-graph bfloat16 batch 1, 3 KV heads " in s for s in depth)  # each row says what sets it apart
    assert any("3 KV heads against 1" in s for s in sentences)
    table = budget_table(comparisons)
    assert set(table["slower?"]) <= {SLOWER, FASTER, SAME}
    assert table["95% CI"].str.match(r"^\[\d+\.\d\d, \d+\.\d\d\]$").all()


def test_an_earlier_protocol_leads_nowhere_and_nothing_comparable_gives_an_empty_table(budget_store):
    budget_store.execute("UPDATE runs SET protocol_version = 1")
    try:
        pairs = build_headline(compute_cell_stats(budget_store, n_resamples=100), all_protocols=True).pairs
        assert budget_comparisons(pairs).empty
        assert not budget_comparisons(pairs, all_protocols=True).empty
    finally:
        budget_store.execute("UPDATE runs SET protocol_version = 2")
    assert budget_sentences(budget_comparisons(pairs.iloc[0:0])) == []


def test_a_device_is_named_with_its_host_class_and_without_versions():
    assert device_label("NVIDIA H200 | driver 580.159.04 | CUDA 13.0 | host 5be464da") == "NVIDIA H200 (host 5be464da)"
    assert device_label("NVIDIA H100 80GB HBM3 | driver 580.159.04 | CUDA 13.0") == "NVIDIA H100 80GB HBM3"
