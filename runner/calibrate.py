"""The device's measured ceilings, once per run: memory bandwidth, matrix throughput, and
the cost of launching one tiny kernel (or dispatching one tiny operator on the CPU); on a
GPU with Triton also the floors of a dependent hand-off (runner.sync_cost): one more empty
kernel inside a CUDA graph (`graph_kernel_us`, and `graph_kernel_pdl_us` with programmatic
dependent launch on sm90 and newer) and one completion-counter hand-off among one block per
SM (`counter_handoff_us`).

A launch-floor model of a cell (analysis.why) divides its bytes, FLOPs and kernel count by
these, so every regime is judged against its own hardware rather than a datasheet.
"""
from __future__ import annotations

import statistics

import torch

from runner.host import launch_probe_us
from runner.timing import time_callable


def _bandwidth_gb_s(device: str, n_bytes: int) -> float:
    """A large copy: bytes read plus bytes written, over the median copy time."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms = statistics.median(time_callable(lambda: dst.copy_(src), 10 if device == "cuda" else 5, device))
    return 2 * n_bytes / (ms / 1e3) / 1e9


def _matmul_tflops(device: str, size: int, dtype: torch.dtype) -> float:
    a = torch.randn(size, size, device=device, dtype=torch.float32).to(dtype)
    b = torch.randn(size, size, device=device, dtype=torch.float32).to(dtype)
    a @ b
    ms = statistics.median(time_callable(lambda: a @ b, 10 if device == "cuda" else 3, device))
    return 2 * size**3 / (ms / 1e3) / 1e12


def _sync_costs() -> dict:
    try:
        from runner.sync_cost import sync_costs
    except ImportError:  # no triton: the launch and bandwidth ceilings still stand
        return {}
    try:
        return sync_costs()
    except Exception as error:  # noqa: BLE001 - a probe that cannot run here must not cost the other ceilings
        return {"sync_cost_error": f"{type(error).__name__}: {error}"[:300]}


def calibrate(device: str) -> dict:
    """Ceilings for this device. Sizes fill an H100 yet finish in seconds on a 2-core CPU."""
    with torch.inference_mode():
        if device == "cuda":
            result = {
                "bandwidth_gb_s": _bandwidth_gb_s(device, 1 << 30),
                "matmul_tflops_float32": _matmul_tflops(device, 4096, torch.float32),
                "matmul_tflops_bfloat16": _matmul_tflops(device, 8192, torch.bfloat16),
                "launch_us": launch_probe_us(device),
            }
            result.update(_sync_costs())
        else:
            result = {
                "bandwidth_gb_s": _bandwidth_gb_s(device, 1 << 28),
                "matmul_tflops_float32": _matmul_tflops(device, 1024, torch.float32),
                "matmul_tflops_bfloat16": _matmul_tflops(device, 1024, torch.bfloat16),
                "launch_us": launch_probe_us(device),
            }
    result["device"] = device
    return result
