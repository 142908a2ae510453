"""Datasheet memory bandwidths of the GPUs the project measures, by the name nvml reports.

One table, kept here only: the Why page divides a decode step's weight bytes by these to
give a second weight-read limit beside the one at the run's own measured copy bandwidth
(runner.calibrate), which is always below the datasheet. A GPU not in the table has no
datasheet figure (None), never a guessed one; a CPU has none either.

Sources (peak HBM bandwidth, GB/s = 1e9 bytes/s):
- NVIDIA H100 SXM5 80GB HBM3 ("NVIDIA H100 80GB HBM3"): 3,350 GB/s, NVIDIA H100 Tensor Core
  GPU datasheet, https://www.nvidia.com/en-us/data-center/h100/ (the PCIe card, HBM2e, is
  2,000 GB/s and reports another name).
- NVIDIA H200 SXM 141GB HBM3e ("NVIDIA H200"): 4,800 GB/s, NVIDIA H200 Tensor Core GPU
  datasheet, https://www.nvidia.com/en-us/data-center/h200/.
"""
from __future__ import annotations

# device name as nvml reports it (the first part of a regime) -> (GB/s, what it is, source)
HBM_BANDWIDTH_GB_S: dict[str, tuple[float, str, str]] = {
    "NVIDIA H100 80GB HBM3": (3350.0, "H100 SXM5 80GB HBM3",
                              "https://www.nvidia.com/en-us/data-center/h100/"),
    "NVIDIA H200": (4800.0, "H200 SXM 141GB HBM3e", "https://www.nvidia.com/en-us/data-center/h200/"),
}
REGIME_SEPARATOR = " | "  # a regime is "<device name> | driver ... | CUDA ... [| host ...]"


def device_name(regime: str) -> str:
    """The device name a regime starts with."""
    return str(regime).split(REGIME_SEPARATOR)[0].strip()


def datasheet_bandwidth_gb_s(regime: str) -> float | None:
    """The datasheet HBM bandwidth of a regime's GPU in GB/s, or None where the table has none."""
    entry = HBM_BANDWIDTH_GB_S.get(device_name(regime))
    return entry[0] if entry else None


def datasheet_note(regime: str) -> str:
    """What the datasheet column of a regime rests on, in words (for a caption or tooltip)."""
    entry = HBM_BANDWIDTH_GB_S.get(device_name(regime))
    if entry is None:
        return f"no datasheet figure for {device_name(regime)}"
    value, what, source = entry
    return f"{what}: {value / 1e3:.2f} TB/s ({source})"
