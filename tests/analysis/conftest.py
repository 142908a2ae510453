"""Synthetic stores for the analysis tests: real in-memory DuckDB, known latency laws."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.stats import CellStats, compute_cell_stats
from analysis.synthetic import SyntheticPlan, build_store, depth_width_law, params_law

DEPTH_LAW = dict(a=1.0, b=0.5, c=0.002)  # ms, ms per layer, ms per unit of width
TEST_RESAMPLES = 1000  # enough for stable 95% bounds, keeps the suite fast
# Protocol 2: each cell in 3 interleaved rounds, so a cell has a CI (across rounds). A
# protocol-1 store (one round) has none: tests about CIs measure in rounds, as the runner does.
ROUNDS = dict(rounds=3, round_cv=0.01)


def make_stats(plan: SyntheticPlan, **filters) -> CellStats:
    """Build a store from `plan` and return its cell statistics."""
    con = build_store(plan)
    try:
        return compute_cell_stats(con, filters or None, n_resamples=TEST_RESAMPLES, seed=0)
    finally:
        con.close()


@pytest.fixture(scope="session")
def depth_store():
    """One regime, one backend, 40 shapes, latency = 1 + 0.5 depth + 0.002 width, 3 rounds per cell."""
    con = build_store(SyntheticPlan(law=depth_width_law(**DEPTH_LAW), cell_cv=0.01, seed=1, **ROUNDS))
    yield con
    con.close()


@pytest.fixture(scope="session")
def depth_stats(depth_store) -> CellStats:
    return compute_cell_stats(depth_store, n_resamples=TEST_RESAMPLES, seed=0)


@pytest.fixture(scope="session")
def params_stats() -> CellStats:
    """latency = 1 + 0.05 ms per million parameters: bandwidth-bound."""
    return make_stats(SyntheticPlan(law=params_law(), phases=("decode",), cell_cv=0.01, seed=2, **ROUNDS))


@pytest.fixture(scope="session")
def two_regime_stats() -> CellStats:
    """Two regimes where depth costs twice as much on the second."""

    def law(cells):
        slope = np.where(cells["regime"] == "slow-launch", 1.0, 0.5)
        return 1.0 + slope * cells["n_layer"].to_numpy() + 0.002 * cells["n_embd"].to_numpy()

    plan = SyntheticPlan(law=law, regimes=("fast-launch", "slow-launch"), backends=("hf-eager", "hf-sdpa"),
                         phases=("decode",), cell_cv=0.02, seed=3, **ROUNDS)
    return make_stats(plan)
