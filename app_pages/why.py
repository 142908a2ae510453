"""Why is it slow: each profiled decode step split into launch, memory and compute time (analysis.why)."""
import pandas as pd
import streamlit as st

from analysis.at_limit import layer_cost_text, layer_costs
from analysis.figures import kernels_vs_depth, why_components
from analysis.datasheet import datasheet_note
from analysis.why import paid_split
from analysis.why_layers import FORMULA, NOT_CALIBRATED, fit_table, limit_table, select, shape_table
from dashboard import cache, ui
from dashboard.text import md, table_text

GROUP = ["regime", "backend", "dtype"]
WORKLOAD = ["batch_size", "prompt_len", "gen_len"]
NO_PROFILE = ("No profiled and calibrated cells in this selection: run a plan with `profile = true` and "
              "`calibrate = true` in [measure] to count each decode step's kernels and measure the device's ceilings.")
VERDICT_COLUMNS = ["model_name", "n_layer", "n_embd", "params", "kernels", "launches", "decode_ms", "launch_paid_ms",
                   "memory_ms", "compute_ms", "rest_ms", "paid_verdict", "launch_basis", "predicted_ms", "launch_ms",
                   "verdict", "measured_over_predicted", "busy_fraction", "bandwidth_fraction", "compute_fraction",
                   "cell_id"]
VERDICT_NAMES = {"launch_paid_ms": "launch ms (fitted cost)", "rest_ms": "not explained ms", "paid_verdict": "verdict",
                 "launch_basis": "launch priced at", "predicted_ms": "floor model ms", "launch_ms": "floor launch ms",
                 "verdict": "floor model's largest term"}


def _fit_rows(fits: list[dict]) -> pd.DataFrame:
    rows = [{"backend": f["backend"], "dtype": f["dtype"], "cost per": f["per"], "cells": f["n_cells"],
             "µs": f.get("per_launch_us"), "CI low": (f.get("per_launch_us_ci") or [None])[0],
             "CI high": (f.get("per_launch_us_ci") or [None, None])[1], "R²": f.get("r2"),
             "regime": f["regime"], "note": f.get("message", "")} for f in fits]
    return pd.DataFrame(rows)


def body(ctx: cache.Context) -> None:
    if not ui.page_header(
        ctx, "Why is it slow",
        "Launch-floor model of one decode step: launches x launch cost + bytes moved / bandwidth + FLOPs / "
        "matmul throughput, with bandwidth and throughput calibrated on the run's device, the launches counted "
        "by the profiler and each launch priced at the cost the group's cells actually paid (fitted below; the "
        "calibrated empty-kernel floor where no fit holds). The largest part is the verdict; what is left is "
        "\"not explained\", and the verdict says so when that part is the largest."):
        return
    floor = cache.why_floor(ctx)
    floor = floor[floor["bandwidth_gb_s"].notna()] if len(floor) else floor
    if floor.empty:
        st.info(NO_PROFILE)
        return

    sizes = floor.groupby(GROUP).size()
    groups = list(sizes.index)
    if st.session_state.get("why_group") not in groups:
        st.session_state["why_group"] = max(groups, key=lambda g: sizes[g])
    regime, backend, dtype = st.selectbox(
        "Group", groups, key="why_group",
        format_func=lambda g: f"{g[0]} | {g[1]} | {g[2]}  ({sizes[g]} profiled cells)")
    group = paid_split(floor[(floor["regime"] == regime) & (floor["backend"] == backend) & (floor["dtype"] == dtype)],
                       cache.launch_overhead(ctx))
    workloads = sorted(group[WORKLOAD].drop_duplicates().itertuples(index=False, name=None))
    if len(workloads) > 1:
        batch, prompt, gen = st.selectbox("Workload", workloads, key="why_workload",
                                          format_func=lambda w: f"batch {w[0]} | prompt {w[1]} | gen {w[2]}")
        group = group[(group["batch_size"] == batch) & (group["prompt_len"] == prompt) & (group["gen_len"] == gen)]

    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Bandwidth (calibrated)", f"{group['bandwidth_gb_s'].median():,.0f} GB/s")
    c2.metric(f"Matmul {dtype} (calibrated)", f"{group['matmul_tflops'].median():,.1f} TFLOP/s")
    c3.metric("Launch (calibrated floor)", f"{group['launch_us'].median():.1f} µs")
    fit = next((f for f in cache.launch_overhead(ctx) if (f["regime"], f["backend"], f["dtype"]) == (regime, backend, dtype)), None)
    if fit and fit["status"] == "ok":
        low, high = fit["per_launch_us_ci"]
        c4.metric("Fitted cost per graph kernel" if fit["per"] != "launch" else "Fitted cost per launch", f"{fit['per_launch_us']:.1f} µs",
                  help=f"95% CI [{low:.1f}, {high:.1f}] µs; decode_ms ~ count + memory_ms, HC3 errors")
        st.caption(f"Fitted cost per {fit['per']}: **{fit['per_launch_us']:.1f} µs** (95% CI {low:.1f} to {high:.1f}) "
                   f"over {fit['n_cells']} cells, against a calibrated floor of {group['launch_us'].median():.1f} µs "
                   "per launch of an empty kernel.")
    else:
        c4.metric("Fitted cost per launch", "n/a", help=md((fit or {}).get("message", "no fit for this group"), 2000))
    n_runs = group["cell_id"].str.split("/").str[0].nunique()
    verdicts = group["paid_verdict"].value_counts()
    st.caption(f"Ceilings: median over {n_runs} calibrated run(s). Verdicts: "
               + ", ".join(f"{n} {v}" for v, n in verdicts.items())
               + f"; measured / floor-model prediction, median {group['measured_over_predicted'].median():.2f}x.")

    ui.chart(why_components(group), "why_components", f"{regime} | {backend} | {dtype}")
    color = st.radio("Colour by", ["backend", "width"], horizontal=True, key="why_color")
    same = floor[(floor["regime"] == regime) & (floor["dtype"] == dtype)]
    ui.chart(kernels_vs_depth(same, "backend" if color == "backend" else "n_embd"), "why_kernels", f"{regime} | {dtype}")

    st.subheader("Fitted overhead per launch")
    st.caption("Per (regime, backend, dtype): decode_ms ~ count + memory_ms (OLS, HC3). The count is host launches "
               "for eager backends and kernels inside the graph for a CUDA-graph backend; 95% CIs.")
    st.dataframe(table_text(_fit_rows(cache.launch_overhead(ctx)), digits=3), hide_index=True)

    costs = layer_costs(cache.fits(ctx), floor)
    costs = costs[costs["regime"] == regime]  # the selected group's regime, like the charts above
    if len(costs):
        st.subheader("At the limit: what a layer costs")
        st.caption("In this regime the `fused` backend (4 Triton kernels a layer, one CUDA graph) was measured beside another "
                   "graph backend: the depth coefficient of decode latency ~ depth + width (ms per layer, with its "
                   "CI) over the kernels a layer runs inside the graph. Equal figures per kernel mean a layer costs "
                   "its kernel count times a fixed per-kernel cost, whatever the kernels do.")
        for line in layer_cost_text(costs):
            st.markdown(f"- {md(line, 500)}")
        st.dataframe(table_text(costs, digits=3), hide_index=True)

    workload = tuple(int(v) for v in group[WORKLOAD].iloc[0])
    costs = cache.layer_cost(ctx)
    fits, shapes = (select(costs[k], regime, dtype, workload, backend) for k in ("fits", "shapes"))
    if len(fits):
        st.subheader("Per layer: hand-offs and weight reads")
        st.caption(f"`{FORMULA}` over the group's shapes (least squares weighted by 1 / decode², HC3, 95% CIs "
                   "on Student t; a shape measured in several runs enters once, at the geometric mean of its runs): a layer costs its phases x the "
                   "hand-off + its weight MB x µs per MB, and the LM head is a term of its own. Calibrated: the "
                   "hand-off of this kind and the copy bandwidth the run measured; "
                   f"\"{NOT_CALIBRATED}\" where the run did not measure them. 1000 / (µs per MB) is GB/s.")
        st.dataframe(table_text(fit_table(fits), digits=3), hide_index=True)
        st.dataframe(table_text(shape_table(shapes), digits=3), hide_index=True)

    limits = select(costs["shapes"], regime, dtype, workload)
    if len(limits):
        st.subheader("Decode time against the weight-read limit")
        st.caption(f"Per backend: each shape's decode median over the bytes one step reads (every layer and the LM "
                   f"head) / bandwidth, at the copy bandwidth the run measured (\"{NOT_CALIBRATED}\" where it did "
                   f"not) and at the datasheet figure: {md(datasheet_note(regime), 300)}.")
        st.dataframe(table_text(limit_table(limits), digits=3), hide_index=True)

    st.subheader("Verdict per cell")
    table = group.sort_values(["n_layer", "n_embd"])[VERDICT_COLUMNS].rename(columns=VERDICT_NAMES)
    st.dataframe(table_text(table, digits=3), hide_index=True)


ui.guard(body)
