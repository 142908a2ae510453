"""The environment of a run, and the hardware regime key derived from it.

The regime is what latency depends on outside the code (device, count, driver, CUDA);
library versions are recorded alongside so they can be filtered on, but two runs on the
same hardware with different torch versions share a regime.
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path

from runner import TOOL_VERSION
from runner.host import host_fingerprint
from runner.telemetry import gpu_facts
from vocabulary import GIT_REVISION_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str | None:
    """HEAD of the checkout (with -dirty), or SHAPEBENCH_GIT_REVISION where there is no .git."""
    if os.environ.get(GIT_REVISION_ENV):
        return os.environ[GIT_REVISION_ENV]
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return rev or None
    except Exception:  # noqa: BLE001 - no git or not a checkout
        return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001
        return None


def collect(device: str) -> dict:
    """Everything recorded with a run; the regime is computed from it by `regime_key`."""
    import torch

    env = {
        "device_kind": device,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "vllm": _version("vllm"),
        "onnxruntime": _version("onnxruntime"),
        "tool_version": TOOL_VERSION,
        "git_revision": git_revision(),
        "host_fingerprint": host_fingerprint(),
    }
    if device == "cuda":
        env["cuda_runtime"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpu_name"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
        env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["gpu"] = gpu_facts(0)
    return env


def regime_key(env: dict) -> str:
    """Hardware key: 'NVIDIA H100 80GB HBM3 | driver 580.95 | CUDA 13.0' or the CPU's.

    Every cell runs on one GPU, so the host's GPU count is recorded but not part of the key:
    one H200 of a 2-GPU host is the same regime as a single H200. Launch-bound GPU latency
    is decided on the host, so a run that recorded a host fingerprint (protocol 2) adds its
    host class: two GPU hosts whose CPUs differ are two regimes. A CPU regime adds it too,
    because the model name alone does not tell CPUs apart ("AMD EPYC" is the name of both a
    Milan and a Genoa part, family 25 model 1 and model 17, which are far apart on one cell).
    """
    host = (env.get("host_fingerprint") or {}).get("host_class")
    if env["device_kind"] == "cuda":
        driver = (env.get("gpu") or {}).get("driver", "unknown")
        key = f"{env['gpu_name']} | driver {driver} | CUDA {env['cuda_runtime']}"
    else:
        key = f"CPU {env['cpu_model']} | {env['torch_threads']} threads"
    return f"{key} | host {host}" if host else key
