"""Integrity flags from constructed results, and the sample validation that guards the store."""
from __future__ import annotations

import math
import time

import pytest

from runner.runfiles import CellResult, integrity_flags, robust_cv, units_by_round
from runner.timing import InvalidSample, median, time_callable, validate_samples, warm_up
from tests.runner.helpers import fast_settings

SETTINGS = fast_settings(min_samples=4, cv_threshold=0.10)
STEADY = [10.0, 10.1, 9.9, 10.0, 10.05, 9.95, 10.0, 10.02]


def clean(**changes) -> CellResult:
    """A result nothing is wrong with; each test changes one thing."""
    result = CellResult(
        status="ok", warmup_converged=True, prefill=list(STEADY), decode=[[1.0, 1.01, 0.99, 1.0]] * 2,
        e2e=[5.0, 5.02, 4.98], correctness={"ok": True},
        telemetry={"before": {"sm_clock_mhz": 1980, "foreign_pids": []},
                   "after": {"sm_clock_mhz": 1965, "foreign_pids": []}},
    )
    for key, value in changes.items():
        setattr(result, key, value)
    return result


def test_a_clean_result_has_no_flags():
    assert integrity_flags(clean(), SETTINGS) == []


def test_cpu_result_without_telemetry_or_gate_has_no_flags():
    assert integrity_flags(clean(telemetry=None, correctness=None), SETTINGS) == []


def test_high_cv_is_flagged_on_any_phase():
    spread = [10.0, 14.0, 7.0, 12.0, 8.5, 13.0, 6.0, 11.0]
    assert robust_cv(spread) > 0.10
    assert integrity_flags(clean(prefill=spread), SETTINGS) == ["high_cv"]
    assert integrity_flags(clean(e2e=[5.0, 7.0, 3.5]), SETTINGS) == ["high_cv"]


def test_high_cv_ignores_a_rare_outlier():
    assert integrity_flags(clean(prefill=STEADY[:-1] + [40.0]), SETTINGS) == []


def test_warmup_not_converged_is_recorded_but_no_flag():
    # it fired on most cuda-graph cells, the most reproducible backend: it predicted nothing
    assert integrity_flags(clean(warmup_converged=False), SETTINGS) == []


def test_a_planted_shift_between_round_medians_is_flagged_round_shift_of_that_phase_only():
    steady = clean(prefill=STEADY * 2, prefill_round=[0] * len(STEADY) + [1] * len(STEADY))
    assert integrity_flags(steady, SETTINGS) == []
    shifted = clean(prefill=STEADY + [2 * v for v in STEADY], prefill_round=[0] * len(STEADY) + [1] * len(STEADY),
                    decode=[[1.0, 1.01, 0.99, 1.0]] * 2, decode_round=[0, 1])
    assert "round_shift_prefill" in integrity_flags(shifted, SETTINGS)
    assert "round_shift_decode" not in integrity_flags(shifted, SETTINGS)
    slow_decode = clean(decode=[[1.0, 1.01, 0.99, 1.0], [1.3, 1.31, 1.29, 1.3]], decode_round=[0, 1])
    flags = integrity_flags(slow_decode, SETTINGS)
    assert "round_shift_decode" in flags and "round_shift_prefill" not in flags


def test_a_decode_generation_is_one_unit_of_its_round_and_an_empty_one_is_skipped_in_place():
    """The median of a generation's steps is its unit; skipping an empty generation must not
    shift the later generations onto the wrong round."""
    decode = [[1.0, 3.0], [], [5.0, 7.0], [9.0]]
    assert units_by_round("decode", decode, [0, 0, 1, 1]) == {0: [2.0], 1: [6.0, 9.0]}


def test_values_without_rounds_form_round_zero_as_protocol_one_wrote_them():
    assert units_by_round("prefill", [3.0, 1.0], []) == {0: [3.0, 1.0]}
    assert units_by_round("prefill", [3.0, 1.0, 2.0], [1, 0, 1]) == {0: [1.0], 1: [3.0, 2.0]}


def test_host_speed_that_moves_between_rounds_is_recorded_but_no_flag():
    # on the H200 it moved by more than 25% in most cells and did not predict a re-run
    assert integrity_flags(clean(host_launch_us=[10.0, 10.5, 20.0]), SETTINGS) == []


def test_setup_leak_is_flagged_when_early_samples_sit_far_above_the_median():
    leaked = [40.0, 35.0, 30.0] + STEADY
    assert "setup_leak" in integrity_flags(clean(prefill=leaked), SETTINGS)
    decode_leak = [[9.0, 8.0, 7.0, 1.0, 1.01, 0.99], [1.0, 1.0, 1.01, 0.99, 1.0, 1.0]]
    assert "setup_leak" in integrity_flags(clean(decode=decode_leak), SETTINGS)


def test_setup_leak_flagged_once_even_when_both_phases_leak():
    flags = integrity_flags(clean(prefill=[40.0, 35.0, 30.0] + STEADY,
                                  decode=[[9.0, 8.0, 7.0, 1.0, 1.0, 1.0, 1.0]]), SETTINGS)
    assert flags.count("setup_leak") == 1


def test_too_few_samples_is_flagged():
    assert integrity_flags(clean(prefill=[10.0, 10.01, 9.99]), SETTINGS) == ["too_few_samples"]
    assert integrity_flags(clean(decode=[[1.0, 1.0, 1.0]]), SETTINGS) == ["too_few_samples"]


def test_clock_drop_is_flagged_below_ninety_percent_of_the_clock_before():
    telemetry = {"before": {"sm_clock_mhz": 1980}, "after": {"sm_clock_mhz": 1500}}
    assert integrity_flags(clean(telemetry=telemetry), SETTINGS) == ["clock_drop"]
    steady = {"before": {"sm_clock_mhz": 1980}, "after": {"sm_clock_mhz": 1800}}
    assert integrity_flags(clean(telemetry=steady), SETTINGS) == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_foreign_gpu_process_is_flagged(when):
    telemetry = {"before": {"sm_clock_mhz": 1980}, "after": {"sm_clock_mhz": 1980}}
    telemetry[when]["foreign_pids"] = [4242]
    assert integrity_flags(clean(telemetry=telemetry), SETTINGS) == ["foreign_gpu_process"]


def test_output_mismatch_is_flagged():
    assert integrity_flags(clean(correctness={"ok": False}), SETTINGS) == ["output_mismatch"]


def test_every_flag_at_once():
    result = clean(
        prefill=[40.0, 35.0, 30.0, 10.0, 14.0, 7.0, 12.0], prefill_round=[0, 0, 0, 1, 1, 1, 1],
        host_launch_us=[5.0, 9.0], decode=[[1.0]],
        telemetry={"before": {"sm_clock_mhz": 2000}, "after": {"sm_clock_mhz": 1000, "foreign_pids": [7]}},
        correctness={"ok": False},
    )
    assert integrity_flags(result, SETTINGS) == [
        "high_cv", "round_shift_prefill", "setup_leak", "too_few_samples", "clock_drop",
        "foreign_gpu_process", "output_mismatch"]


@pytest.mark.parametrize("bad", [0.0, -1.5, math.nan, math.inf, -math.inf])
def test_validate_samples_refuses_zero_negative_nan_and_infinite(bad):
    with pytest.raises(InvalidSample, match=r"decode: invalid latency sample"):
        validate_samples([1.0, bad, 2.0], "decode")


def test_validate_samples_refuses_a_non_float():
    with pytest.raises(InvalidSample):
        validate_samples([1.0, None], "prefill")


def test_validate_samples_returns_valid_samples_unchanged():
    samples = [0.001, 3.5, 1e6]
    assert validate_samples(samples, "e2e") is samples


def test_time_callable_gives_one_positive_sample_per_call():
    calls = []
    samples = time_callable(lambda: calls.append(sum(range(1000))), 5, "cpu")
    assert len(samples) == len(calls) == 5 and all(v > 0 for v in samples)


def test_median():
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_warm_up_stops_once_two_windows_agree():
    iters, seconds, converged = warm_up(lambda: sum(range(20000)), "cpu", min_iters=3, min_s=0.0,
                                        max_iters=200, window=3, tolerance=0.5)
    assert converged and 6 <= iters < 200 and seconds > 0


def test_warm_up_reports_not_converged_at_its_limit():
    durations = iter(range(1, 100))

    def slower_each_time():  # the median keeps moving: never stable
        target = next(durations) * 2e-4
        end = time.perf_counter() + target
        while time.perf_counter() < end:
            pass

    iters, _, converged = warm_up(slower_each_time, "cpu", min_iters=1, min_s=0.0, max_iters=12,
                                  window=2, tolerance=0.01)
    assert (iters, converged) == (12, False)
