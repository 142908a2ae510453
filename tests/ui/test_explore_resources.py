"""Explore's table carries each cell and phase's memory and energy beside its latency, and
leaves them empty (NaN, never 0) where they were not measured."""
from __future__ import annotations

import json

import numpy as np

from analysis.load import cells_table
from analysis.stats import compute_cell_stats
from analysis.synthetic import SyntheticPlan, build_store
from dashboard import data

PHASE = {"peak_allocated_bytes": 3 << 20, "peak_reserved_bytes": 4 << 20, "peak_rss_bytes": 1 << 30,
         "energy_j": [2.0, 2.2], "energy_s": [0.01, 0.011], "calls": [10, 10]}


def test_explore_rows_show_peak_memory_energy_per_token_and_power_where_measured():
    con = build_store(SyntheticPlan(shapes=((2, 64), (4, 128)), gen_len=4))
    measured, other = (r[0] for r in con.execute("SELECT cell_id FROM cells ORDER BY cell_id").fetchall())
    resources = {"phases": {p: dict(PHASE) for p in ("prefill", "decode", "e2e")}, "energy_source": "nvml"}
    con.execute("UPDATE cells SET resources = ?, energy_source = 'nvml' WHERE cell_id = ?", [json.dumps(resources), measured])
    table = data.explore_table(cells_table(con), compute_cell_stats(con, n_resamples=50).frame)
    assert {"peak_memory_mib", "mj_per_token", "power_w"} <= set(table.columns)
    prefill = table[(table["cell_id"] == measured) & (table["phase"] == "prefill")].iloc[0]
    assert prefill["peak_memory_mib"] == 3.0  # a cuda cell: the allocator's peak
    assert np.isclose(prefill["power_w"], 200.0)
    # the rounds' geometric mean of J per prefill, over the prompt's 32 tokens
    assert np.isclose(prefill["mj_per_token"], np.sqrt(0.2 * 0.22) / 32 * 1e3)
    unmeasured = table[table["cell_id"] == other]
    assert len(unmeasured) == 3 and unmeasured[["peak_memory_mib", "mj_per_token", "power_w"]].isna().all().all()
