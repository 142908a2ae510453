"""Memory and energy beside latency (analysis.resources): per-sample and per-token energy from
the stored windows, unknowns kept unknown, and the seed form recovering planted elasticities
of energy per token and of peak memory."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.load import keys_by_group_id
from analysis.report import analyze, format_text
from analysis.resources import resource_frame, resource_fits, tokens_per_sample
from analysis.synthetic import SyntheticPlan, build_store

GEN_LEN = 16
ROUNDS = 3
CALLS = 40
# Planted laws: a decode step's joules and a phase's peak bytes as powers of params and depth.
STEP_ELASTICITIES = (0.8, 0.3)  # params, n_layer
MEMORY_ELASTICITIES = (1.0, 0.0)


def step_joules(params: float, n_layer: float) -> float:
    return 2e-9 * params ** STEP_ELASTICITIES[0] * n_layer ** STEP_ELASTICITIES[1]


def prefill_joules(params: float, n_layer: float) -> float:
    return 5 * step_joules(params, n_layer)


def planted_resources(params: int, n_layer: int, rng: np.random.Generator | None, rounds: int = ROUNDS) -> dict:
    """A cell's `resources` record as the runner's trackers write it, from the planted laws."""
    noise = (lambda: 1.0) if rng is None else (lambda: float(rng.lognormal(0, 0.02)))
    e_pre, e_step = prefill_joules(params, n_layer), step_joules(params, n_layer)
    per_call = {"prefill": lambda: e_pre, "decode": lambda: e_pre + GEN_LEN * e_step,
                "e2e": lambda: e_pre + (GEN_LEN - 1) * e_step}
    peak = int(2.0 * params * 4)
    phases = {}
    for phase, joules in per_call.items():
        energy = [CALLS * joules() * noise() for _ in range(rounds)]
        phases[phase] = {"peak_allocated_bytes": peak, "peak_reserved_bytes": 2 * peak, "peak_rss_bytes": 3 << 30,
                         "energy_j": energy, "energy_s": [e / 250.0 for e in energy], "calls": [CALLS] * rounds}
    return {"weight_bytes": params * 4, "kv_cache_bytes": 2 * n_layer * 64 * (32 + GEN_LEN) * 4, "energy_source": "nvml",
            "peak_allocated_bytes": peak, "peak_reserved_bytes": 2 * peak, "peak_rss_bytes": 3 << 30,
            "rss_scope": "phase", "device_memory": "torch.cuda allocator peaks", "phases": phases}


def store_with_resources(noise: bool = True):
    con = build_store(SyntheticPlan(gen_len=GEN_LEN, prompt_len=32))
    rng = np.random.default_rng(1) if noise else None
    for cell_id, params, n_layer in con.execute("SELECT cell_id, params, n_layer FROM cells").fetchall():
        res = planted_resources(params, n_layer, rng)
        con.execute("UPDATE cells SET resources = ?, weight_bytes = ?, kv_cache_bytes = ?, peak_allocated_bytes = ?, "
                    "energy_source = 'nvml' WHERE cell_id = ?",
                    [json.dumps(res), res["weight_bytes"], res["kv_cache_bytes"], res["peak_allocated_bytes"], cell_id])
    return con


@pytest.fixture(scope="module")
def exact():
    return store_with_resources(noise=False)


@pytest.fixture(scope="module")
def noisy():
    return store_with_resources(noise=True)


def test_tokens_per_sample_are_prompt_tokens_for_prefill_one_per_sequence_per_decode_step_and_gen_len_for_e2e():
    import pandas as pd

    phase = pd.Series(["prefill", "decode", "e2e"])
    got = tokens_per_sample(phase, pd.Series([4, 4, 4]), pd.Series([128] * 3), pd.Series([64] * 3))
    assert got.tolist() == [512, 4, 256]


def test_decode_energy_per_token_is_the_decode_repetition_less_its_prefill_over_its_steps(exact):
    frame = resource_frame(exact).set_index(["cell_id", "phase"])
    for (cell_id, phase), row in frame.iterrows():
        e_step = step_joules(row["params"], row["n_layer"])
        expected = {"prefill": prefill_joules(row["params"], row["n_layer"]), "decode": e_step,
                    "e2e": prefill_joules(row["params"], row["n_layer"]) + (GEN_LEN - 1) * e_step}[phase]
        assert row["energy_j"] == pytest.approx(expected, rel=1e-9)
        assert row["power_w"] == pytest.approx(250.0)
    decode = frame.xs("decode", level="phase")
    assert (decode["energy_j_per_token"] == decode["energy_j"]).all()  # batch 1: one token per step


def test_energy_per_token_carries_a_t_interval_across_rounds_and_their_spread(noisy):
    frame = resource_frame(noisy, {"phase": "decode"})
    assert set(frame["phase"]) == {"decode"} and (frame["energy_rounds"] == ROUNDS).all()
    assert (frame["energy_j_per_token_ci_low"] < frame["energy_j_per_token"]).all()
    assert (frame["energy_j_per_token"] < frame["energy_j_per_token_ci_high"]).all()
    assert frame["energy_spread"].between(0.0, 0.2).all()


def test_a_cell_without_an_energy_counter_reads_unknown_and_one_round_gives_no_interval():
    con = build_store(SyntheticPlan(shapes=((2, 64), (4, 128)), gen_len=GEN_LEN))
    first, second = (r[0] for r in con.execute("SELECT cell_id FROM cells ORDER BY cell_id").fetchall())
    unknown = planted_resources(1_000_000, 2, None)
    for entry in unknown["phases"].values():
        entry.update(energy_j=[None] * ROUNDS, energy_s=[None] * ROUNDS, calls=[None] * ROUNDS)
    con.execute("UPDATE cells SET resources = ? WHERE cell_id = ?", [json.dumps(unknown), first])
    con.execute("UPDATE cells SET resources = ? WHERE cell_id = ?", [json.dumps(planted_resources(2_000_000, 4, None, rounds=1)), second])
    frame = resource_frame(con, {"phase": "decode"}).set_index("cell_id")
    assert np.isnan(frame.loc[first, ["energy_j", "energy_j_per_token", "power_w"]].astype(float)).all()
    assert frame.loc[first, "energy_rounds"] == 0
    assert np.isfinite(frame.loc[second, "energy_j"]) and np.isnan(frame.loc[second, "energy_j_per_token_ci_low"])


def test_the_seed_form_recovers_planted_elasticities_of_energy_per_token_and_of_peak_memory(noisy):
    frame = resource_frame(noisy)
    keys = keys_by_group_id(frame)
    fits = {(keys[f["group_id"]].phase, f["metric"]): f for f in resource_fits(frame)}
    energy = fits[("decode", "energy_j_per_token")]
    assert energy["status"] == "ok"
    assert energy["coef_log_params_lo"] < STEP_ELASTICITIES[0] < energy["coef_log_params_hi"]
    assert energy["coef_log_n_layer_lo"] < STEP_ELASTICITIES[1] < energy["coef_log_n_layer_hi"]
    assert energy["winner"] == "both"
    memory = fits[("decode", "peak_memory_bytes")]
    assert memory["coef_log_params"] == pytest.approx(MEMORY_ELASTICITIES[0], abs=1e-6)
    assert memory["coef_log_n_layer"] == pytest.approx(MEMORY_ELASTICITIES[1], abs=1e-6)


def test_analyze_reports_memory_and_energy_beside_latency_in_json_and_text(noisy):
    result = analyze(noisy, n_resamples=200, phase="decode")
    res = result["resources"]
    assert res["n_with_energy"] == res["n_cells"] > 0 and "nvml" in res["message"]
    assert all(r["energy_j_per_token"] > 0 for r in res["cells"])
    energy_fit = next(f for f in res["fits"] if f["metric"] == "energy_j_per_token")
    assert "latency_coef_log_n_layer" in energy_fit and "latency:" in energy_fit["text"]
    text = format_text(result)
    assert "== Memory and energy ==" in text and "mj_per_token" in text
    json.dumps(result, allow_nan=False)


def test_a_store_from_before_schema_3_reads_as_nothing_measured():
    con = build_store(SyntheticPlan(shapes=((2, 64), (4, 128))))
    con.execute("ALTER TABLE cells DROP COLUMN resources")
    assert resource_frame(con).empty
    assert analyze(con, n_resamples=100)["resources"]["n_cells"] == 0


def test_own_memory_is_weights_plus_kv_cache_plus_what_the_phase_adds_and_unknown_without_it():
    con = store_with_resources(noise=False)
    cell_id, = con.execute("SELECT cell_id FROM cells ORDER BY cell_id LIMIT 1").fetchone()
    res = json.loads(con.execute("SELECT resources FROM cells WHERE cell_id = ?", [cell_id]).fetchone()[0])
    res["phases"]["decode"]["working_allocated_bytes"] = 5 << 20  # the tracker's peak above the resident
    con.execute("UPDATE cells SET resources = ? WHERE cell_id = ?", [json.dumps(res), cell_id])
    frame = resource_frame(con, {"phase": "decode"}).set_index("cell_id")
    mine = frame.loc[cell_id]
    assert mine["own_memory_bytes"] == res["weight_bytes"] + res["kv_cache_bytes"] + (5 << 20)
    assert mine["own_memory_bytes"] < mine["peak_memory_bytes"], "the round's peak counts the other cells too"
    others = frame.drop(index=cell_id)
    assert others["own_memory_bytes"].isna().all(), "a run without working figures: unknown, never 0"
