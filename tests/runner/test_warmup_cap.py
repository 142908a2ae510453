"""Warm-up waits for stability within a time budget: a phase that never settles stops at the
budget, recorded as not converged, instead of looping to warmup_max_iters; one that settles
still converges by the unchanged rule."""
from __future__ import annotations

import time

from runner.protocol import measure_cell, warmup_cap_s
from runner.timing import warm_up
from tests.runner.helpers import fast_settings, tiny_cell

NEVER_ITERS = 100_000  # far more iterations than any budget below allows


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def drifting():
    """Each call 30% slower than the one before (a clock that keeps ramping): two windows of 5
    have medians ~3.7x apart, which no delay of single calls by the machine's load can close."""
    calls = []

    def step():
        spin(0.001 * 1.3 ** len(calls))
        calls.append(1)

    return step


def test_a_warm_up_that_never_settles_stops_at_its_time_cap_not_converged():
    iters, seconds, converged = warm_up(drifting(), "cpu", min_iters=3, min_s=0.0, max_iters=NEVER_ITERS,
                                        window=5, tolerance=0.01, max_s=0.3)
    assert not converged
    assert seconds >= 0.3 and iters < NEVER_ITERS


def test_the_cap_does_not_loosen_the_stability_rule():
    iters, _, converged = warm_up(lambda: spin(0.001), "cpu", min_iters=3, min_s=0.0, max_iters=NEVER_ITERS,
                                  window=5, tolerance=0.5)
    assert converged and iters >= 10  # two full windows compared, as without a cap
    _, _, converged = warm_up(drifting(), "cpu", min_iters=3, min_s=0.0, max_iters=20, window=5,
                              tolerance=0.01, max_s=60.0)
    assert not converged  # the cap is a bound on waiting, never a reason to call it stable


def test_the_cap_is_the_budget_times_the_rounds_timed_work_and_never_below_min_s():
    cell = tiny_cell(gen_len=4)
    reps = {"prefill": 4, "decode": 1, "e2e": 1}  # 4 + 5 + 4 = 13 forwards of 0.01 s each
    cap = warmup_cap_s(0.04, cell, reps, fast_settings(warmup_budget=2.0, warmup_min_s=0.0))
    assert abs(cap - 2.0 * 0.01 * 13) < 1e-9
    assert warmup_cap_s(0.04, cell, reps, fast_settings(warmup_budget=2.0, warmup_min_s=5.0)) == 5.0


def test_a_cell_whose_warm_up_never_settles_is_measured_in_bounded_time_and_marked_not_converged():
    settings = fast_settings(rounds=2, warmup_max_iters=NEVER_ITERS, warmup_tolerance=1e-9, warmup_budget=1.0,
                             check_correctness=False, energy_window_s=0)
    result = measure_cell(tiny_cell(), settings, seed=1)
    assert result.status == "ok", result.error
    assert result.warmup_converged is False and result.warmup_iters < NEVER_ITERS
    assert result.warmup_s < 60
