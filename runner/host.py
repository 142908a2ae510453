"""The host side of a measurement: what we control (core, threads) and what tells hosts apart.

A launch-bound latency (every eager GPU decode of a small model) is decided on the host: the
core the launching Python thread runs on, and how many intra-op threads compete with it.
Probed on an H200 host, unpinned processes with 16 threads moved 2x from round to round,
while processes pinned to one core with one thread agreed within 10% on any core. So the
measuring process is pinned and single-threaded on GPU runs by default (pyperf and asv do
the same), and the run records what was applied, read back from the process.

Two lent GPU hosts can report the same CPU name, so the regime's host class hashes what
/proc/cpuinfo and the kernel say (model, family/model/stepping, flags, hypervisor), and each
run measures the host's speed: the cost of one tiny operator launch on the pinned core.
"""
from __future__ import annotations

import hashlib
import os
import platform
import time
from pathlib import Path

FINGERPRINT_FIELDS = ("model_name", "cpu_family", "model", "stepping", "flags_sha", "hypervisor", "kernel")
# Fields that name the host class; MHz and core count are recorded but vary with load/VM size.
CLASS_FIELDS = ("model_name", "cpu_family", "model", "stepping", "flags_sha", "hypervisor")
LAUNCH_PROBE_OPS = 2000  # tiny ops per host-speed probe: ~10-40 ms, far above timer resolution


def cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty off Linux)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if entries:
                break
            continue
        key, _, value = line.partition(":")
        entries.setdefault(key.strip(), value.strip())
    return entries


def host_fingerprint(cpuinfo_text: str | None = None, kernel: str | None = None) -> dict[str, str | float | None]:
    """What tells two hosts apart, with `host_class`: a short hash of the class fields."""
    info = cpuinfo(cpuinfo_text)
    flags = info.get("flags", "")
    hypervisor = "hypervisor" in flags.split()
    fingerprint: dict[str, str | float | None] = {
        "model_name": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": info.get("cpu family"),
        "model": info.get("model"),
        "stepping": info.get("stepping"),
        "flags_sha": hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12] if flags else None,
        "hypervisor": _hypervisor() if hypervisor else "none",
        "kernel": kernel or platform.release(),
        "mhz": float(info["cpu MHz"]) if info.get("cpu MHz") else None,
    }
    fingerprint["host_class"] = host_class(fingerprint)
    return fingerprint


def host_class(fingerprint: dict) -> str:
    text = "|".join(str(fingerprint.get(f)) for f in CLASS_FIELDS)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _hypervisor() -> str:
    for path in ("/sys/hypervisor/type", "/sys/class/dmi/id/sys_vendor"):
        try:
            value = Path(path).read_text().strip()
            if value:
                return value
        except OSError:
            continue
    return "unknown"


def resolve_affinity(setting: str | list[int], device: str, allowed: set[int] | None = None) -> list[int] | None:
    """The cores to pin to, or None to leave the process as it is.

    "auto" pins GPU runs to one core: the highest-numbered allowed core, since core 0 takes
    most interrupts and housekeeping on Linux. CPU runs keep every core (their threads are
    the regime). A list must be a subset of the cores this process may use.
    """
    allowed = allowed if allowed is not None else set(os.sched_getaffinity(0))
    if setting == "none":
        return None
    if setting == "auto":
        return [max(allowed)] if device == "cuda" else None
    missing = sorted(set(setting) - allowed)
    if missing:
        raise ValueError(f"cpu_affinity: core(s) {missing} are not available here (allowed: {sorted(allowed)})")
    return sorted(setting)


def apply_host_control(cpu_affinity: str | list[int], threads: int | None, device: str) -> dict:
    """Pin and set threads as the plan asks; return what the process now has, read back."""
    import torch

    cores = resolve_affinity(cpu_affinity, device)
    if cores is not None:
        os.sched_setaffinity(0, cores)
    wanted = threads if threads is not None else (1 if device == "cuda" else None)
    if wanted is not None:
        torch.set_num_threads(wanted)
    return {
        "cpu_affinity_setting": cpu_affinity,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
    }


def launch_probe_us(device: str, ops: int = LAUNCH_PROBE_OPS) -> float:
    """One probe: microseconds per tiny op launched back to back, after 100 unmeasured ones.

    On the GPU each op is one kernel launch (1-element add, queued without a sync); on the
    CPU it is the dispatcher cost of the same op. Calibration's launch floor is one probe.
    """
    import torch

    x = torch.zeros(1, device=device)
    for _ in range(100):
        x.add_(1.0)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(ops):
        x.add_(1.0)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / ops * 1e6


def host_launch_us(device: str, ops: int = LAUNCH_PROBE_OPS) -> float:
    """The host's speed from this process (its core): the best of three launch probes, so a
    one-off stall does not make a slow host."""
    return min(launch_probe_us(device, ops) for _ in range(3))
