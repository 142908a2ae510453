"""GPU telemetry through nvidia-ml-py: clocks, temperature, power, utilisation, processes.

Read before and after each cell, so a clock drop or a foreign process during the
measurement becomes a flag next to the numbers instead of an unexplained outlier.
"""
from __future__ import annotations

import os

# PIDs on the GPU that belong to this process. Inside a container NVML reports host PIDs,
# so os.getpid() does not match: the runner calls mark_baseline() before it touches CUDA
# and mark_own() after, and whatever appeared in between is ours.
_baseline_pids: set[int] | None = None
_own_pids: set[int] = set()
# A round worker (`[measure] processes = true`) counts its parent's GPU processes as its own.
RELATED_GPU_PIDS_ENV = "SHAPEBENCH_RELATED_GPU_PIDS"


def _gpu_pids(index: int = 0) -> set[int]:
    nvml = _nvml()
    if nvml is None:
        return set()
    pids: set[int] = set()
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # noqa: BLE001
        return pids
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            pids |= {p.pid for p in getattr(nvml, getter)(handle)}
        except Exception:  # noqa: BLE001 - not every driver exposes both lists
            pass
    return pids


def mark_baseline(index: int = 0) -> None:
    global _baseline_pids
    _baseline_pids = _gpu_pids(index)


def mark_own(index: int = 0) -> None:
    global _own_pids
    related = {int(p) for p in os.environ.get(RELATED_GPU_PIDS_ENV, "").split(",") if p.strip().isdigit()}
    _own_pids = (_gpu_pids(index) - (_baseline_pids or set())) | related


def own_gpu_pids() -> set[int]:
    """The GPU processes (NVML's PIDs) that are this run's own, for its round workers."""
    return set(_own_pids)


_NVML = None
_NVML_TRIED = False


def _nvml():
    """pynvml, initialised once per process (nvmlInit is slow), or None without a driver."""
    global _NVML, _NVML_TRIED
    if not _NVML_TRIED:
        _NVML_TRIED = True
        try:
            import pynvml

            pynvml.nvmlInit()
            _NVML = pynvml
        except Exception:  # noqa: BLE001 - no driver or no library: telemetry is simply absent
            _NVML = None
    return _NVML


def read_gpu(index: int = 0) -> dict | None:
    """One reading of the GPU the runner uses, or None where there is no NVIDIA GPU."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        reading = {
            "sm_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "sm_clock_max_mhz": nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM),
            "mem_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
            "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "utilization_pct": nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "memory_used_mib": nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
        }
        reading["foreign_pids"] = sorted(_gpu_pids(index) - _own_pids - {os.getpid()})
        try:
            reading["throttle_reasons"] = int(nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
        except Exception:  # noqa: BLE001
            pass
        return reading
    except Exception as error:  # noqa: BLE001
        return {"error": str(error)}


def gpu_energy_mj(index: int = 0) -> int | None:
    """The GPU's cumulative energy counter in millijoules (nvmlDeviceGetTotalEnergyConsumption,
    Volta and newer), or None where there is no NVIDIA GPU or it keeps no such counter."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        return int(nvml.nvmlDeviceGetTotalEnergyConsumption(nvml.nvmlDeviceGetHandleByIndex(index)))
    except Exception:  # noqa: BLE001 - NVML_ERROR_NOT_SUPPORTED on older parts: energy is unknown
        return None


def gpu_facts(index: int = 0) -> dict | None:
    """Static facts for the environment record (name, driver, memory, max clocks)."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        driver = nvml.nvmlSystemGetDriverVersion()
        return {
            "name": name.decode() if isinstance(name, bytes) else name,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "memory_total_mib": nvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20,
            "sm_clock_max_mhz": nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM),
            "mem_clock_max_mhz": nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM),
            "power_limit_w": nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0,
            "device_count": nvml.nvmlDeviceGetCount(),
        }
    except Exception as error:  # noqa: BLE001
        return {"error": str(error)}
