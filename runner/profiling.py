"""Why a cell is slow: what one prefill and one decode step launch, run after the timed phases.

On the GPU, torch.profiler (CUPTI) records the CUDA runtime calls the host made (kernel and
graph launches) and the kernels the device ran, with their execution time: a launch-bound
step shows many short kernels and a device that is idle most of the step. On the CPU the
equivalent is the count of top-level ATen operators dispatched. Profiling perturbs timing,
which is why it runs only after the timed phases and its wall times are not latencies.
"""
from __future__ import annotations

import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

# Kineto may leave CUPTI subscribed after a CUDA profile unless TEARDOWN_CUPTI=1 (pytorch
# issue 144455), and then every later kernel launch of the process pays a CUPTI callback:
# a profiled cell could slow the host-bound cells timed after it. Tearing down is safe with
# CUDA graphs from CUDA 12.6 on. Checked on an H200 with torch 2.11
# (benchmarks/profiler_aftereffect.py): hf-eager decode after / before a profile 0.97 with
# CUPTI kept and 1.02 torn down, both inside the 0.78-0.97 run-to-run noise of the same
# cell timed twice, and CUDA-graph cells ran after re-initialisation. So no after-effect was
# seen there; the teardown stays so that none can appear on other versions. Set before the
# first profile; an explicit user setting wins.
os.environ.setdefault("TEARDOWN_CUPTI", "1")

# CUDA runtime/driver calls that put work on the device.
KERNEL_LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
GRAPH_LAUNCH_CALLS = ("cudaGraphLaunch", "cuGraphLaunch")


def _summarise(prof, wall_ms: float, device: str) -> dict:
    events = prof.events()
    if device == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_time_ms = sum(e.device_time for e in kernels) / 1e3
        kernel_launches = sum(1 for e in events if e.name.startswith(KERNEL_LAUNCH_CALLS))
        graph_launches = sum(1 for e in events if e.name.startswith(GRAPH_LAUNCH_CALLS))
        return {
            "kernels": len(kernels),
            "kernel_launches": kernel_launches,
            "graph_launches": graph_launches,
            "kernel_time_ms": kernel_time_ms,
            "profiled_wall_ms": wall_ms,
            "busy_fraction": kernel_time_ms / wall_ms if wall_ms > 0 else None,
        }
    top_level = [e for e in events if e.cpu_parent is None and e.name.startswith("aten::")]
    return {
        "operators": len(top_level),
        "operator_time_ms": sum(e.cpu_time_total for e in top_level) / 1e3,
        "profiled_wall_ms": wall_ms,
    }


def _profiled(fn, device: str) -> dict:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    if device == "cuda":
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - started) * 1e3
    return _summarise(prof, wall_ms, device)


def profile_cell(session, input_ids: torch.Tensor, device: str) -> dict:
    """Counts for one prefill and one decode step of a prepared session."""
    holder = {}

    def prefill():
        holder["token"] = session.prefill(input_ids).argmax(-1, keepdim=True)

    prefill_counts = _profiled(prefill, device)
    session.prefill(input_ids)  # a fresh cache, then one profiled step after the prompt
    token = holder["token"]
    decode_counts = _profiled(lambda: session.decode(token).argmax(-1, keepdim=True), device)
    return {"device": device, "prefill": prefill_counts, "decode": decode_counts,
            "cupti_teardown": os.environ.get("TEARDOWN_CUPTI") == "1" if device == "cuda" else None}
