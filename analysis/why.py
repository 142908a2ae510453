"""Why a shape is slow: a launch-floor model of each decode step against the device's ceilings.

    predicted = launches x launch cost + bytes moved / bandwidth + FLOPs / matrix throughput

Launches and kernels come from the cell's profile (runner.profiling), the ceilings from the
run's calibration (runner.calibrate), bytes and FLOPs from the shape: a decode step reads
every weight once (gpt-fast's bandwidth figure) plus the KV cache, and does about
2 x params multiply-adds per token. The largest term is the verdict (launch-, bandwidth- or
compute-bound); measured / predicted says how much the model leaves unexplained. The
per-launch overhead actually paid is fitted per regime and backend with statsmodels, with
its CI, because the calibration's tiny-op loop is a floor, not what a real layer costs.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from analysis.load import profiled_cells

BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2}
COMPONENTS = ("launch", "memory", "compute")
HANDOFF_FLOORS = ("graph_kernel_us", "graph_kernel_pdl_us", "counter_handoff_us")


def load_profiles(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Ok cells that carry a profile, with their run's calibration and decode median."""
    frame = profiled_cells(con, filters)
    if frame.empty:
        return frame
    profiles = frame.pop("profile").map(json.loads)
    usable = profiles.map(lambda p: "error" not in p)  # a failed profile explains nothing
    frame, profiles = frame[usable].reset_index(drop=True), profiles[usable].reset_index(drop=True)
    # a run without calibration (e.g. one run through Ray) reads back as None or NaN
    calibrations = frame.pop("calibration").map(lambda v: json.loads(v) if isinstance(v, str) and v else None)
    decode = [p.get("decode") or {} for p in profiles]
    gpu = (frame["device"] == "cuda").tolist()
    # The GPU counts device kernels and host launches (a CUDA graph is one launch of many
    # kernels); the CPU's equivalent of both is the number of operators dispatched.
    frame["kernels"] = [d.get("kernels") if on_gpu else d.get("operators") for d, on_gpu in zip(decode, gpu)]
    frame["launches"] = [
        (d.get("kernel_launches") or 0) + (d.get("graph_launches") or 0) if on_gpu else d.get("operators")
        for d, on_gpu in zip(decode, gpu)
    ]
    frame["graph_launches"] = [d.get("graph_launches") for d in decode]
    frame["kernel_time_ms"] = [d.get("kernel_time_ms") for d in decode]
    frame["busy_fraction"] = [d.get("busy_fraction") for d in decode]
    frame["bandwidth_gb_s"] = calibrations.map(lambda c: (c or {}).get("bandwidth_gb_s"))
    frame["launch_us"] = calibrations.map(lambda c: (c or {}).get("launch_us"))
    # the floors of one dependent hand-off (runner.sync_cost), in runs calibrated since they exist
    for floor in HANDOFF_FLOORS:
        frame[floor] = calibrations.map(lambda c, floor=floor: (c or {}).get(floor))
    frame["matmul_tflops"] = [
        (c or {}).get(f"matmul_tflops_{dtype}", (c or {}).get("matmul_tflops_float32"))
        for c, dtype in zip(calibrations, frame["dtype"])
    ]
    return frame


def decode_step_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """Bytes and FLOPs of one decode step, from the shape (a mid-generation KV cache)."""
    out = frame.copy()
    element = out["dtype"].map(BYTES_PER_ELEMENT).astype(float)
    context = out["prompt_len"] + out["gen_len"] / 2
    # keys and values of n_kv_head heads (grouped-query attention), all n_head for GPT-2
    # (a frame without head counts describes full multi-head attention: keys and values as wide as the model)
    grouped = "n_kv_head" in out and "n_head" in out
    kv_width = out["n_embd"] * out["n_kv_head"] / out["n_head"] if grouped else out["n_embd"]
    kv_bytes = 2 * out["n_layer"] * out["batch_size"] * context * kv_width * element
    out["bytes_per_step"] = out["params"] * element + kv_bytes
    attention_flops = 4 * out["n_layer"] * out["batch_size"] * context * out["n_embd"]
    out["flops_per_step"] = 2 * out["params"] * out["batch_size"] + attention_flops
    return out


def launch_floor(frame: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the three predicted components (ms), the verdict and measured / predicted."""
    out = decode_step_cost(frame)
    out["launch_ms"] = out["launches"] * out["launch_us"] / 1e3
    out["memory_ms"] = out["bytes_per_step"] / (out["bandwidth_gb_s"] * 1e9) * 1e3
    out["compute_ms"] = out["flops_per_step"] / (out["matmul_tflops"] * 1e12) * 1e3
    # a cell of an uncalibrated run (e.g. made through Ray) has counts but no ceilings:
    # no prediction and no verdict, rather than a sum of nothing
    out["predicted_ms"] = out[["launch_ms", "memory_ms", "compute_ms"]].sum(axis=1, min_count=3)
    out["unexplained_ms"] = (out["decode_ms"] - out["predicted_ms"]).clip(lower=0)
    out["measured_over_predicted"] = out["decode_ms"] / out["predicted_ms"]
    components = out[["launch_ms", "memory_ms", "compute_ms"]].to_numpy(dtype=float)
    known = ~np.isnan(components).all(axis=1)
    best = np.nanargmax(np.where(known[:, None], components, 0.0), axis=1)
    out["verdict"] = [f"{COMPONENTS[i]}-bound" if ok else None for i, ok in zip(best, known)]
    out["achieved_bandwidth_gb_s"] = out["bytes_per_step"] / (out["decode_ms"] / 1e3) / 1e9
    out["bandwidth_fraction"] = out["achieved_bandwidth_gb_s"] / out["bandwidth_gb_s"]
    out["achieved_tflops"] = out["flops_per_step"] / (out["decode_ms"] / 1e3) / 1e12
    out["compute_fraction"] = out["achieved_tflops"] / out["matmul_tflops"]
    return out


def fit_launch_overhead(frame: pd.DataFrame, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per (regime, backend, dtype): decode_ms ~ count + memory_ms, HC3 errors.

    The count is host launches for eager backends; for a backend that replays a CUDA graph
    (one launch per step) it is the kernels inside the graph, whose per-kernel device cost
    is what remains. Its coefficient is the cost actually paid per launch or kernel, with a
    CI; a group with fewer than 4 distinct counts gets a message instead of a fit.
    """
    results = []
    alpha = 1 - confidence
    for (regime, backend, dtype), group in frame.groupby(["regime", "backend", "dtype"], sort=True):
        group = group.dropna(subset=["memory_ms"])  # cells of uncalibrated runs cannot enter the fit
        if group.empty:
            continue
        graphed = bool((group["graph_launches"].fillna(0) > 0).all())
        count = "kernels" if graphed else "launches"
        base = {"regime": regime, "backend": backend, "dtype": dtype, "n_cells": len(group),
                "per": "kernel in a CUDA graph" if graphed else "launch"}
        distinct = group[count].nunique()
        if distinct < 4:
            results.append(base | {"status": "too_few_shapes",
                                   "message": f"{distinct} distinct {count} counts; at least 4 are needed"})
            continue
        fit = smf.ols(f"decode_ms ~ {count} + memory_ms", data=group).fit(cov_type="HC3")
        low, high = fit.conf_int(alpha).loc[count]
        results.append(base | {
            "status": "ok",
            "per_launch_us": float(fit.params[count] * 1e3),
            "per_launch_us_ci": [float(low * 1e3), float(high * 1e3)],
            "intercept_ms": float(fit.params["Intercept"]),
            "r2": float(fit.rsquared),
        })
    return results


def explain_pair(slow: pd.Series, fast: pd.Series) -> str:
    """One sentence for an inversion: why the smaller model is the slower one."""
    ratio = slow["launches"] / fast["launches"] if fast["launches"] else float("nan")
    both = slow["verdict"] if slow["verdict"] == fast["verdict"] else None
    text = (
        f"{slow['model_name']} ({slow['n_layer']} layers) launches {slow['launches']:.0f} kernels per token, "
        f"{ratio:.1f}x the {fast['launches']:.0f} of {fast['model_name']} ({fast['n_layer']} layers)"
    )
    if both == "launch-bound":
        return text + "; both are launch-bound, so latency follows the launch count, not the parameters."
    return text + f"; verdicts: {slow['verdict']} vs {fast['verdict']}."


# The split a chart and a verdict share once the per-launch cost actually paid is known.
PAID_COLUMNS = ("launch_paid_ms", "memory_ms", "compute_ms", "rest_ms")
MOSTLY_UNEXPLAINED = "mostly unexplained"


def paid_split(floor: pd.DataFrame, fits: list[dict[str, Any]]) -> pd.DataFrame:
    """`launch_floor` rows with each decode step split by what is paid, and a verdict from that split.

    The floor model prices a launch at the calibration's empty kernel (a few µs), which is
    what a launch costs at least, not what a real layer's launch costs: on the bundled H200
    the floor left 80-95% of a graph backend's decode step "unexplained" while calling it
    memory-bound, because its largest *modelled* term was memory. Here the launch term is
    the count the group's fit used (host launches, or kernels inside a CUDA graph) times the
    fitted cost per launch (`fit_launch_overhead`, where its fit is ok and positive; else the
    calibrated floor), capped so the parts never exceed the measured median; `rest_ms` is
    what is left. `paid_verdict` is the largest of launch, memory and compute, or
    MOSTLY_UNEXPLAINED when the rest is larger than each: the bars and the verdict then
    tell the same story. `launch_basis` says which launch cost each row used.
    """
    out = floor.copy()
    cost = {(f["regime"], f["backend"], f["dtype"]): f for f in fits
            if f.get("status") == "ok" and f.get("per_launch_us", 0) > 0}
    keys = list(zip(out["regime"], out["backend"], out["dtype"]))
    fitted = [cost.get(key) for key in keys]
    counts = [row_kernels if fit and fit["per"] != "launch" else row_launches
              for fit, row_kernels, row_launches in zip(fitted, out["kernels"], out["launches"])]
    per_launch_ms = [fit["per_launch_us"] / 1e3 if fit else floor_us / 1e3
                     for fit, floor_us in zip(fitted, out["launch_us"])]
    launch = pd.Series(np.asarray(counts, dtype=float) * np.asarray(per_launch_ms, dtype=float), index=out.index)
    room = (out["decode_ms"] - out["memory_ms"] - out["compute_ms"]).clip(lower=0)
    out["launch_paid_ms"] = np.minimum(launch, room.where(room > 0, launch))
    out["rest_ms"] = (out["decode_ms"] - out["memory_ms"] - out["compute_ms"] - out["launch_paid_ms"]).clip(lower=0)
    out["launch_basis"] = ["fitted cost per " + ("kernel" if fit["per"] != "launch" else "launch") if fit
                           else "calibrated floor" for fit in fitted]
    parts = out[["launch_paid_ms", "memory_ms", "compute_ms"]].to_numpy(dtype=float)
    known = ~np.isnan(parts).all(axis=1)
    best = np.nanargmax(np.where(known[:, None], np.nan_to_num(parts, nan=-1.0), 0.0), axis=1)
    largest = np.nanmax(np.where(known[:, None], np.nan_to_num(parts, nan=-1.0), 0.0), axis=1)
    out["paid_verdict"] = [None if not ok else MOSTLY_UNEXPLAINED if rest > top else f"{COMPONENTS[i]}-bound"
                           for i, ok, rest, top in zip(best, known, out["rest_ms"].fillna(0), largest)]
    return out
