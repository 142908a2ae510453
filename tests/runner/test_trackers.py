"""Memory and energy per cell (runner.trackers): the shape's bytes follow their formulas, a real
CPU run records its peak RSS, and what cannot be measured here is stored as NULL, not 0."""
from __future__ import annotations

import json
import time

import pytest
import torch

from runner import trackers
from runner.executor import execute
from runner.models import build_model
from runner.plan import parse_plan
from vocabulary import DTYPES
from runner.runfiles import ENERGY_FIELDS, PEAK_FIELDS, RESOURCE_COLUMNS
from store.db import connect
from store.ingest import ingest_run_dir
from tests.runner.helpers import plan_dict, tiny_spec


@pytest.mark.parametrize("dtype, element", [("float32", 4), ("bfloat16", 2), ("float16", 2)])
def test_kv_cache_bytes_are_keys_and_values_of_every_layer_for_every_position_and_sequence(dtype, element):
    assert set(DTYPES) == {"float32", "bfloat16", "float16"}
    n_layer, n_embd, prompt_len, gen_len, batch = 6, 512, 128, 64, 8
    assert trackers.kv_cache_bytes(n_layer, n_embd, prompt_len, gen_len, batch, dtype) == (
        2 * n_layer * n_embd * (prompt_len + gen_len) * batch * element)


def test_kv_cache_bytes_equal_the_cache_a_real_model_holds_after_prompt_and_generated_tokens():
    spec = tiny_spec(n_layer=3, n_embd=64, n_head=4)
    model = build_model(spec, attn_implementation="eager", dtype=torch.float32, device="cpu", seed=0)
    prompt_len, gen_len, batch = 8, 5, 2
    with torch.inference_mode():
        out = model(torch.randint(0, spec.vocab_size, (batch, prompt_len)), use_cache=True)
        cache = out.past_key_values
        for _ in range(gen_len):  # a decode rep: gen_len steps after the prompt
            cache = model(torch.randint(0, spec.vocab_size, (batch, 1)), past_key_values=cache, use_cache=True).past_key_values
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert held == trackers.kv_cache_bytes(3, 64, prompt_len, gen_len, batch, "float32")


def test_weight_bytes_are_params_times_the_dtype_size_and_unknown_without_params():
    assert trackers.weight_bytes(5_040_000, "bfloat16") == 10_080_000
    assert trackers.weight_bytes(None, "float32") is None


def _steady_counter(period_s: float, watts: float) -> trackers.EnergyCounter:
    """A counter of a constant power that advances only every `period_s`, as nvml's does."""
    return trackers.EnergyCounter("nvml", lambda: (int(time.perf_counter() / period_s),),
                                  lambda a, b: (b[0] - a[0]) * period_s * watts)


def test_an_energy_window_runs_from_one_counter_update_to_another_so_a_coarse_counter_gives_the_true_power():
    window = trackers.energy_window(lambda: time.sleep(0.002), lambda: None, _steady_counter(0.1, 300.0), min_s=1.0)
    assert window["calls"] > 100 and window["energy_s"] >= 1.0
    # a reading 0.1 s coarse, yet the mean power is right to within the host's scheduling delays
    assert window["energy_j"] / window["energy_s"] == pytest.approx(300.0, rel=0.1)


def test_a_counter_that_never_moves_gives_unknown_energy_not_zero():
    stuck = trackers.EnergyCounter("nvml", lambda: (42,), lambda a, b: float(b[0] - a[0]))
    window = trackers.energy_window(lambda: None, lambda: None, stuck, min_s=0.0)
    assert window["energy_j"] is None


@pytest.fixture(scope="module")
def stored_cpu_run(tmp_path_factory):
    """A real CPU run of a tiny plan (hf-eager and hf-sdpa, two rounds), ingested into DuckDB."""
    models = {"custom": plan_dict()["models"]["custom"][1:]}
    plan = parse_plan(plan_dict(models=models, measure=plan_dict()["measure"] | {"rounds": 2}))
    [run] = execute(plan, tmp_path_factory.mktemp("runs"))
    con = connect(tmp_path_factory.mktemp("store") / "store.duckdb")
    ingest_run_dir(con, run.path)
    return run, con


def test_a_real_cpu_run_records_each_phases_peak_rss_positive_and_at_least_the_weights(stored_cpu_run):
    run, con = stored_cpu_run
    rows = con.execute("SELECT peak_rss_bytes, weight_bytes, resources FROM cells").fetchall()
    assert len(rows) == 2
    for peak, weights, resources in rows:
        assert peak > weights > 0
        phases = json.loads(resources)["phases"]
        assert set(phases) == {"prefill", "decode", "e2e"}
        assert all(p["peak_rss_bytes"] > weights for p in phases.values())
        assert peak == max(p["peak_rss_bytes"] for p in phases.values())


def test_a_stored_cell_holds_the_kv_cache_and_weight_bytes_of_its_shape(stored_cpu_run):
    _, con = stored_cpu_run
    for row in con.execute("SELECT n_layer, n_embd, prompt_len, gen_len, batch_size, dtype, params, kv_cache_bytes, "
                           "weight_bytes FROM cells").fetchall():
        *shape, dtype, params, kv, weights = row
        assert kv == trackers.kv_cache_bytes(*shape, dtype)
        assert weights == params * 4


def test_device_memory_and_energy_a_cpu_without_rapl_cannot_measure_are_null_never_zero(stored_cpu_run):
    _, con = stored_cpu_run
    if trackers.energy_counter("cpu") is not None:
        pytest.skip("this machine's RAPL counters are readable: CPU energy is measured here")
    row = con.execute("SELECT count(*), count(peak_allocated_bytes), count(peak_reserved_bytes), count(energy_source), "
                      "count(*) FILTER (peak_allocated_bytes = 0 OR peak_reserved_bytes = 0) FROM cells").fetchone()
    assert row == (2, 0, 0, 0, 0)
    for (resources,) in con.execute("SELECT resources FROM cells").fetchall():
        for phase in json.loads(resources)["phases"].values():
            assert all(value is None for field in ENERGY_FIELDS for value in phase[field])
            # one entry per tracked round, each unknown: the last round only (the plan does not ask for energy)
            assert len(phase["energy_j"]) == 1


def test_the_cell_file_carries_every_resource_column_the_store_has(stored_cpu_run):
    run, con = stored_cpu_run
    columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'cells'").fetchall()}
    assert {*RESOURCE_COLUMNS, "resources"} <= columns
    for record in run.cell_records():
        assert set(RESOURCE_COLUMNS) <= set(record["resources"])
        assert set(PEAK_FIELDS) <= set(record["resources"]["phases"]["decode"])


def test_memory_and_energy_travel_in_a_snapshot_unchanged_nulls_included(stored_cpu_run):
    from store.snapshot import export_snapshot_bytes, open_snapshot_bytes

    _, con = stored_cpu_run
    columns = ", ".join((*RESOURCE_COLUMNS, "resources"))
    query = f"SELECT cell_id, {columns} FROM cells ORDER BY cell_id"
    copy = open_snapshot_bytes(export_snapshot_bytes(con))
    try:
        assert copy.execute(query).fetchall() == con.execute(query).fetchall()
    finally:
        copy.close()


def test_working_memory_is_what_a_phase_adds_above_what_was_resident_when_its_window_began():
    import numpy as np

    resident = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB held through both windows, like another cell's model
    held = []
    ops = {"prefill": lambda: None, "decode": lambda: held.append(np.ones(48 << 20, dtype=np.uint8))}
    record = trackers.track_round(ops, "cpu", window_s=0)
    if record["rss_scope"] != "phase":
        pytest.skip("this kernel refuses to reset the peak RSS (/proc/self/clear_refs)")
    prefill, decode = record["phases"]["prefill"], record["phases"]["decode"]
    assert decode["working_rss_bytes"] >= 40 << 20, "the 48 MiB the phase allocated"
    assert prefill["working_rss_bytes"] < 16 << 20, "a phase that allocates nothing adds little"
    assert prefill["peak_rss_bytes"] > 64 << 20, "the absolute peak counts what others hold"
    assert decode["working_allocated_bytes"] is None, "no device allocator on the CPU: unknown, not 0"
    del resident, held
