"""Memory and energy of a cell, per phase: after "how fast", what someone choosing a model
for a small device asks next (the trackers optimum-benchmark users expect).

Each round of a cell, after its timed phases and never inside them, runs every phase's
operation in a tracked window of its own:

- prefill: one prefill; decode: one prefill then gen_len decode steps (a timed decode rep);
  e2e: one whole greedy generation. The analysis (analysis.resources) turns these into
  energy per sample and per token, subtracting the prefill that each decode rep starts with.
- device memory: `torch.cuda.reset_peak_memory_stats()` before the window,
  `max_memory_allocated()` / `max_memory_reserved()` after: the caching allocator's peaks,
  so weights + KV cache + activations + allocator slack. A backend whose engine allocates
  device memory itself (`Backend.device_allocator` other than "torch": ONNX Runtime's
  arena) is not seen by those counters, so its device peaks are unknown, not a wrong number.
- host memory: the process's peak RSS (VmHWM), reset per window by writing 5 to
  /proc/self/clear_refs (Linux >= 4.0); where that is refused, `getrusage`'s lifetime peak,
  and the record says so (`rss_scope`).
- working memory (WORKING_FIELDS): each peak less what was resident when its window began.
  A round holds every cell's session at once (rounds interleave cells), so the absolute
  peaks are the round's; the working figure is what the phase itself adds (activations,
  workspaces, a growing cache), and weights + KV cache (from the shape) + working memory
  is the cell's own footprint.
- energy: the device's cumulative energy counter read around the window; on NVIDIA GPUs
  nvml's nvmlDeviceGetTotalEnergyConsumption (mJ), on the CPU the RAPL package counters
  under /sys/class/powercap where readable (the kernel makes them root-only by default since
  CVE-2020-8694), else unknown. See `energy_window` for how the window is sized.

Weight and KV-cache bytes are computed from the shape (`weight_bytes`, `kv_cache_bytes`).
"""
from __future__ import annotations

import re
import resource
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from runner import telemetry
from runner.runfiles import ENERGY_FIELDS, PEAK_FIELDS, WORKING_FIELDS

# Shortest energy window per phase (the plan's measure.energy_window_s, this by default). nvml's energy counter is kept in mJ but advances only
# when the driver refreshes its power reading, about every 100 ms on A100/H100-class parts
# (Yang et al., "Part-time power measurements", 2024), so one reading is ~0.1 s x power
# coarse. The window starts on a counter update and ends on the first update after this
# long (`energy_window`), so the quantisation left is at most one repetition of the phase
# at either end, and 1 s is >= 10 counter updates: the mean power it gives moves by well
# under 10% from one update more or less. RAPL updates every ~1 ms and needs far less; one
# constant keeps the two sources comparable.
ENERGY_WINDOW_S = 1.0
# Longest wait for the counter's next update before calling it stuck (10x the 100 ms period).
TICK_WAIT_S = 1.0
POWERCAP = Path("/sys/class/powercap")
# Top-level RAPL packages only (intel-rapl:0, :1): their subdomains (cores, dram) are inside them.
RAPL_PACKAGE = re.compile(r"intel-rapl:\d+")


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a plan dtype ("float32" -> 4), as torch stores it."""
    import torch

    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


def weight_bytes(params: int | None, dtype: str) -> int | None:
    """Bytes of the weights at the cell's dtype: params (tied embedding counted once) x element size."""
    return None if not params else params * dtype_bytes(dtype)


def kv_cache_bytes(n_layer: int, kv_width: int, prompt_len: int, gen_len: int, batch_size: int, dtype: str) -> int:
    """The KV cache a generation ends with: 2 (keys and values) x n_layer x kv_width
    (= n_kv_head x head_dim: n_embd for GPT-2, less under grouped-query attention) x
    (prompt_len + gen_len) positions x batch x dtype bytes.

    The logical cache of the cell's longest sequence; a static-cache backend may reserve a
    few positions more, and the allocator rounds up, which the measured peaks include.
    """
    return 2 * n_layer * kv_width * (prompt_len + gen_len) * batch_size * dtype_bytes(dtype)


@dataclass(frozen=True)
class EnergyCounter:
    """A cumulative energy counter: `read()` gives raw values, `joules(a, b)` the energy between."""

    source: str  # one of runfiles.ENERGY_SOURCES
    read: Callable[[], tuple[int, ...]]
    joules: Callable[[tuple[int, ...], tuple[int, ...]], float]


def _nvml_counter() -> EnergyCounter | None:
    if telemetry.gpu_energy_mj() is None:
        return None
    return EnergyCounter("nvml", lambda: (telemetry.gpu_energy_mj() or 0,), lambda a, b: (b[0] - a[0]) / 1e3)


def _rapl_counter(root: Path = POWERCAP) -> EnergyCounter | None:
    """The sum of the RAPL package counters (µJ, each wrapping at its max_energy_range_uj)."""
    packages = sorted(p for p in root.glob("intel-rapl:*") if RAPL_PACKAGE.fullmatch(p.name))
    try:
        ranges = [int((p / "max_energy_range_uj").read_text()) for p in packages]
        files = [p / "energy_uj" for p in packages]
        for f in files:
            int(f.read_text())
    except (OSError, ValueError):  # absent, or root-only: energy is unknown
        return None
    if not files:
        return None

    def read() -> tuple[int, ...]:
        return tuple(int(f.read_text()) for f in files)

    def joules(a: tuple[int, ...], b: tuple[int, ...]) -> float:
        return sum((y - x) % (r + 1) for x, y, r in zip(a, b, ranges)) / 1e6

    return EnergyCounter("rapl", read, joules)


def energy_counter(device: str) -> EnergyCounter | None:
    """The counter that sees the cell's work: nvml on cuda, RAPL on the CPU; None where unreadable."""
    return _nvml_counter() if device == "cuda" else _rapl_counter()


def energy_window(op: Callable[[], object], sync: Callable[[], None], counter: EnergyCounter,
                  min_s: float = ENERGY_WINDOW_S) -> dict:
    """Repeat `op` for at least `min_s`, from one counter update to the first update after.

    Starting on an update and stopping on the next one after `min_s` makes the counter's
    span and the wall-clock span the same, up to the one repetition during which the last
    update came. Returns energy_j, energy_s and calls (ENERGY_FIELDS); energy_j is None when
    the counter did not move within TICK_WAIT_S (a stuck or virtualised counter).
    """
    first = counter.read()
    began = time.perf_counter()
    start = first
    while start == first and time.perf_counter() - began < TICK_WAIT_S:
        start = counter.read()
    t_start = time.perf_counter()
    calls, mark, end = 0, None, None
    while True:
        op()
        sync()
        calls += 1
        now = time.perf_counter()
        if now - t_start < min_s:
            continue
        reading = counter.read()
        if mark is None:
            mark, t_mark = reading, now
        elif reading != mark:
            end = reading
            break
        if now - t_mark > TICK_WAIT_S:
            break
    elapsed = time.perf_counter() - t_start
    energy = counter.joules(start, end) if end is not None and start != first else None
    return dict(zip(ENERGY_FIELDS, (energy, elapsed, calls)))


def _reset_peak_rss() -> bool:
    """Reset the process's VmHWM to its current RSS; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int | None:
    """A kB field of /proc/self/status (VmRSS, VmHWM) in bytes, None where it is absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def _peak_rss_bytes(phase_scoped: bool) -> int | None:
    if phase_scoped:
        peak = _status_bytes("VmHWM")
        if peak is not None:
            return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def phase_ops(session, input_ids, gen_len: int, generate: Callable) -> dict[str, Callable[[], object]]:
    """The operation of each phase, as a timed sample of it runs (see the module docstring)."""

    def decode_rep():
        token = session.prefill(input_ids).argmax(-1, keepdim=True)
        for _ in range(gen_len):
            token = session.decode(token).argmax(-1, keepdim=True)

    return {
        "prefill": lambda: session.prefill(input_ids).argmax(-1),
        "decode": decode_rep,
        "e2e": lambda: generate(session, input_ids, gen_len),
    }


def track_round(ops: dict[str, Callable[[], object]], device: str, device_allocator: str = "torch",
                window_s: float = ENERGY_WINDOW_S) -> dict:
    """Peaks and energy of each phase's operation in its own window: one round's resources.
    `window_s` 0 runs each operation once, for its peaks only (energy unknown)."""
    import torch

    from runner.timing import synchronize

    counter = energy_counter(device) if window_s > 0 else None
    torch_peaks = device == "cuda" and device_allocator == "torch"
    if device != "cuda":
        device_memory = None
    elif torch_peaks:
        device_memory = "torch.cuda allocator peaks"
    else:
        device_memory = f"unknown: {device_allocator} allocates device memory outside torch's allocator"
    record = {
        "energy_source": counter.source if counter else None,
        "rss_scope": "phase" if _reset_peak_rss() else "process",
        "device_memory": device_memory,
        "phases": {},
    }
    for phase, op in ops.items():
        synchronize(device)
        if torch_peaks:
            torch.cuda.reset_peak_memory_stats()
        allocated_before = int(torch.cuda.memory_allocated()) if torch_peaks else None
        scoped = _reset_peak_rss()
        rss_before = _status_bytes("VmRSS") if scoped else None
        if counter is not None:
            entry = energy_window(op, lambda: synchronize(device), counter, window_s)
        else:
            op()
            synchronize(device)
            entry = dict.fromkeys(ENERGY_FIELDS)
        entry["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated()) if torch_peaks else None
        entry["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved()) if torch_peaks else None
        entry["peak_rss_bytes"] = _peak_rss_bytes(scoped)
        entry["working_allocated_bytes"] = (max(entry["peak_allocated_bytes"] - allocated_before, 0)
                                            if allocated_before is not None else None)
        entry["working_rss_bytes"] = (max(entry["peak_rss_bytes"] - rss_before, 0)
                                      if rss_before is not None and entry["peak_rss_bytes"] is not None else None)
        record["phases"][phase] = entry
    return record


def cell_resources(cell, params: int | None, rounds: Iterable[dict | None]) -> dict:
    """The cell's `resources` record (runfiles) from its rounds' records: the shape's bytes,
    each phase's peaks (max over rounds) and energy windows (one entry per round), and the
    cell's peaks (max over phases). Unknown stays None; a cell with no tracked round (an
    engine measured in a child process) still has its weight and KV-cache bytes."""
    rounds = [r for r in rounds if r]
    out: dict = {
        "weight_bytes": weight_bytes(params, cell.dtype),
        "kv_cache_bytes": kv_cache_bytes(cell.model.n_layer, cell.model.kv_width, cell.prompt_len, cell.gen_len,
                                         cell.batch_size, cell.dtype),
        "energy_source": next((r["energy_source"] for r in rounds if r.get("energy_source")), None),
        "rss_scope": "phase" if rounds and all(r.get("rss_scope") == "phase" for r in rounds) else
                     ("process" if rounds else None),
        "device_memory": next((r["device_memory"] for r in rounds if r.get("device_memory")), None),
        "phases": {},
    }
    for phase in dict.fromkeys(p for r in rounds for p in r["phases"]):
        entries = [r["phases"].get(phase) or {} for r in rounds]
        merged = {field: _max(e.get(field) for e in entries) for field in (*PEAK_FIELDS, *WORKING_FIELDS)}
        merged |= {field: [e.get(field) for e in entries] for field in ENERGY_FIELDS}
        out["phases"][phase] = merged
    for field in PEAK_FIELDS:
        out[field] = _max(p[field] for p in out["phases"].values())
    return out


def _max(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
