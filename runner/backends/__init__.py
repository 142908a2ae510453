"""Backends by name. Each says what it supports and refuses the rest with a reason."""
from __future__ import annotations

from runner.backends.base import Backend, Session, Unsupported


def get_backend(name: str) -> Backend:
    """The backend object for a name; imports torch-heavy modules only when asked."""
    if name in ("hf-eager", "hf-sdpa"):
        from runner.backends.hf import HFEager, HFSdpa

        return HFEager() if name == "hf-eager" else HFSdpa()
    if name == "torch-compile":
        from runner.backends.compiled import TorchCompile

        return TorchCompile()
    if name == "cuda-graph":
        from runner.backends.cuda_graph import CudaGraph

        return CudaGraph()
    if name == "fused":
        from runner.backends.fused import Fused

        return Fused()
    if name == "onnxruntime":
        from runner.backends.ort import OnnxRuntime

        return OnnxRuntime()
    if name == "vllm":
        from runner.backends.vllm_backend import VLLM

        return VLLM()
    raise ValueError(f"unknown backend '{name}'")


__all__ = ["Backend", "Session", "Unsupported", "get_backend"]
