"""What a layer costs at the limit: the launch-floor model extended from launches to kernels.

The depth question of the project is asked twice on one GPU: with `cuda-graph` (HF's model
replayed in a CUDA graph, ~17 kernels a layer) and with `fused` (4 Triton kernels a layer in
one graph, the fastest decode step we can build). If latency followed weight bytes once launch
overhead is gone, the per-layer cost would shrink to a layer's weight-read time and the
inversion would vanish; if each kernel inside a graph still costs a fixed few microseconds,
a layer costs kernels-per-layer x that cost and depth keeps mattering.

Per (regime, dtype, batch, prompt) where `fused` was fitted, each graph backend gets:
- ms_per_layer: the depth coefficient of decode latency ~ depth + width (analysis.regression,
  with its CI of the kind the group's cells allow: across runs, across rounds, or none);
- kernels_per_layer: the slope of kernels per step on depth and width (the profile's count;
  exact for a captured graph, so a plain least-squares slope);
- us_per_layer_kernel: ms_per_layer / kernels_per_layer, with the CI scaled alike: what a
  layer costs per kernel it runs. If two backends whose kernels do very different amounts of
  work give the same figure, a layer's cost is its kernel count times a fixed per-kernel cost.

Where the run's calibration measured it (runner.sync_cost), each row also carries the floor
of a hand-off, `graph_kernel_us`: what one more empty kernel costs inside a CUDA graph on
that GPU, and `floor_ms_per_layer` = kernels_per_layer x that floor, the part of a layer's
cost no kernel can avoid while the layer runs as that many dependent launches. A fitted
us_per_layer_kernel far above the floor says the kernels' own dependent reads, not the
launches, are what a layer pays for.

The per-kernel fit of analysis.why (decode_ms ~ kernels + memory_ms) is not used here: a
graph's kernel count is a linear function of depth, so that fit only restates the depth
coefficient divided by the kernels per layer, with memory instead of width beside it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.regression import DEPTH_TERM, GroupFit, coefficient
from analysis.why_layers import per_layer_slope

LIMIT_BACKEND = "fused"
COLUMNS = ("regime", "dtype", "batch_size", "prompt_len", "backend", "n_shapes", "ms_per_layer", "ms_per_layer_ci_low",
           "ms_per_layer_ci_high", "ci_kind", "kernels_per_layer", "us_per_layer_kernel", "us_per_layer_kernel_ci_low",
           "us_per_layer_kernel_ci_high", "graph_kernel_us", "floor_ms_per_layer")


def _depth_coefficient(fit: GroupFit) -> tuple[float, float, float] | None:
    """ms per layer in the linear depth + width model, or None where the group was not fitted."""
    depth = coefficient(fit.models, "linear", "depth+width", DEPTH_TERM["linear"])
    return None if depth is None else (depth["estimate"], depth["ci_low"], depth["ci_high"])


def _handoff_floor(cells: pd.DataFrame, kernels_per_layer: float) -> dict:
    """The calibrated empty-kernel cost of the group's runs (their median) and a layer's floor."""
    measured = pd.to_numeric(cells["graph_kernel_us"], errors="coerce").dropna() if "graph_kernel_us" in cells else []
    if len(measured) == 0:
        return {"graph_kernel_us": float("nan"), "floor_ms_per_layer": float("nan")}
    floor = float(np.median(measured))
    return {"graph_kernel_us": floor, "floor_ms_per_layer": kernels_per_layer * floor / 1e3}


def layer_costs(fits: Sequence[GroupFit], floor: pd.DataFrame) -> pd.DataFrame:
    """One row per graph-replayed backend of every decode group that has a `fused` sibling.

    `fits` are the depth-vs-width fits (analysis.regression.fit_all), `floor` the profiled
    cells (analysis.why.load_profiles or launch_floor): a backend enters where its cells
    replay a CUDA graph, so that kernels per step are a property of the shape alone."""
    decode = {fit.key: fit for fit in fits if fit.status == "ok" and fit.group.get("phase") == "decode"}
    limit_groups = {(k.regime, k.dtype, k.batch_size, k.prompt_len) for k in decode if k.backend == LIMIT_BACKEND}
    rows = []
    for key, fit in sorted(decode.items(), key=lambda item: item[0].label):
        if (key.regime, key.dtype, key.batch_size, key.prompt_len) not in limit_groups:
            continue
        cells = floor[(floor["regime"] == key.regime) & (floor["backend"] == key.backend) & (floor["dtype"] == key.dtype)
                      & (floor["batch_size"] == key.batch_size) & (floor["prompt_len"] == key.prompt_len)]
        graphed = len(cells) and bool((cells["graph_launches"].fillna(0) > 0).all())
        depth = _depth_coefficient(fit)
        kernels = per_layer_slope(cells, "kernels") if graphed else float("nan")
        if depth is None or not np.isfinite(kernels) or kernels <= 0:
            continue
        rows.append({
            "regime": key.regime, "dtype": key.dtype, "batch_size": key.batch_size, "prompt_len": key.prompt_len,
            "backend": key.backend, "n_shapes": fit.n_shapes,
            "ms_per_layer": depth[0], "ms_per_layer_ci_low": depth[1], "ms_per_layer_ci_high": depth[2],
            "ci_kind": fit.ci_kind, "kernels_per_layer": kernels,
            **{f"us_per_layer_kernel{suffix}": value * 1e3 / kernels
               for suffix, value in zip(("", "_ci_low", "_ci_high"), depth)},
            **_handoff_floor(cells, kernels),
        })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def layer_cost_text(costs: pd.DataFrame) -> list[str]:
    """One sentence per backend: what a layer costs, per kernel it runs, and the hand-off floor."""
    lines = []
    for row in costs.itertuples():
        text = (f"{row.backend} ({row.dtype}, {row.n_shapes} shapes): a layer adds {row.ms_per_layer * 1e3:.1f} us per "
                f"token [{row.ms_per_layer_ci_low * 1e3:.1f}, {row.ms_per_layer_ci_high * 1e3:.1f}, CI {row.ci_kind}] "
                f"and runs {row.kernels_per_layer:.0f} kernels: {row.us_per_layer_kernel:.1f} us per kernel "
                f"[{row.us_per_layer_kernel_ci_low:.1f}, {row.us_per_layer_kernel_ci_high:.1f}].")
        if np.isfinite(row.graph_kernel_us):
            text += (f" An empty kernel in a graph costs {row.graph_kernel_us:.1f} us on this GPU (calibration): "
                     f"a floor of {row.floor_ms_per_layer * 1e3:.1f} us a layer.")
        lines.append(text)
    return lines
