"""Timers: CUDA events on the GPU, perf_counter_ns on the CPU.

Each timed region is bracketed individually; on the GPU the events are recorded on the
current stream and read only after one synchronize at the end, so the timer adds a few
microseconds per region and never a host sync inside the measured loop.
"""
from __future__ import annotations

import math
import time
from typing import Callable


class RegionTimer:
    """Collects the latency of many regions; `start()`/`stop()` around each one."""

    kind = "perf_counter_ns"

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []

    def start(self) -> None:
        self._starts.append(time.perf_counter_ns())

    def stop(self) -> None:
        self._stops.append(time.perf_counter_ns())

    def results_ms(self) -> list[float]:
        return [(b - a) / 1e6 for a, b in zip(self._starts, self._stops)]


class CudaRegionTimer(RegionTimer):
    """CUDA events on the current stream; one synchronize when the results are read."""

    kind = "cuda_event"

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._pairs: list[tuple] = []

    def start(self) -> None:
        event = self._torch.cuda.Event(enable_timing=True)
        event.record()
        self._pairs.append((event, None))

    def stop(self) -> None:
        event = self._torch.cuda.Event(enable_timing=True)
        event.record()
        start, _ = self._pairs[-1]
        self._pairs[-1] = (start, event)

    def results_ms(self) -> list[float]:
        self._torch.cuda.synchronize()
        return [start.elapsed_time(stop) for start, stop in self._pairs]


def make_timer(device: str) -> RegionTimer:
    return CudaRegionTimer() if device == "cuda" else RegionTimer()


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class InvalidSample(ValueError):
    """A zero, negative or NaN latency: the measurement is broken and is not stored."""


def validate_samples(samples: list[float], phase: str) -> list[float]:
    for value in samples:
        if not (isinstance(value, float) and math.isfinite(value) and value > 0):
            raise InvalidSample(f"{phase}: invalid latency sample {value!r} (zero, negative or NaN)")
    return samples


def time_callable(fn: Callable[[], object], n: int, device: str) -> list[float]:
    """Time `fn` n times, each call its own region: the runner's primitive for one phase."""
    timer = make_timer(device)
    for _ in range(n):
        timer.start()
        fn()
        timer.stop()
    return validate_samples(timer.results_ms(), "callable")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def warm_up(
    fn: Callable[[], object],
    device: str,
    *,
    min_iters: int,
    min_s: float,
    max_iters: int,
    window: int,
    tolerance: float,
    max_s: float = math.inf,
) -> tuple[int, float, bool]:
    """Run fn until stable: at least min_iters and min_s, then until two consecutive windows'
    medians differ by less than `tolerance`. Returns (iterations, seconds, converged).

    Gives up, not converged, after max_iters iterations or, once min_iters have run, after
    max_s seconds: the stability rule is never loosened, only the wait for it bounded (on a
    loaded CPU two window medians may never agree within `tolerance`)."""
    timings: list[float] = []
    began = time.perf_counter()
    while len(timings) < max_iters:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        timings.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - began
        if len(timings) >= max(min_iters, 2 * window) and elapsed >= min_s:
            previous = median(timings[-2 * window : -window])
            current = median(timings[-window:])
            if abs(current - previous) <= tolerance * previous:
                return len(timings), elapsed, True
        if len(timings) >= min_iters and elapsed >= max(max_s, min_s):
            break
    return len(timings), time.perf_counter() - began, False
