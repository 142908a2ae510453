"""Runs: every run with what it ran on, and two runs compared cell by cell."""
import numpy as np
import pandas as pd
import streamlit as st

from analysis.intervals import CI_ACROSS_ROUNDS, CI_KIND_NOTES, RERUN_NOTE
from analysis.run_results import display_frame, run_results
from analysis.run_compare import FDR, NO_CI, comparison_summary, default_pair, environment_differences, ratio_figure
from dashboard import cache, filters as flt, runs as run_control, sidebar, source, ui
from dashboard.text import md
from runner.machine_load import BUSY_ADVICE
from runner.runfiles import list_run_dirs
from vocabulary import BUSY_MACHINE_FLAG

# What tells runs apart first (device, driver, host, libraries), the long regime key last.
RUN_COLUMNS = ["run_id", "started_at", "status", "busy_machine", "plan_name", "protocol_version", "rounds", "gpu",
               "gpu_count", "driver", "cuda", "host_cpu", "cpu_count", "host_class", "host_launch_us", "threads",
               "cpu_affinity", "torch", "transformers", "vllm", "onnxruntime", "python", "executor", "git_revision",
               "tool_version", "cells_ok", "cells_failed", "busy_cells", "samples", "machine_load", "host_fingerprint",
               "regime"]
ROW_PX, MAX_TABLE_PX = 35, 600  # st.dataframe's row height; past this many pixels the table scrolls
COMPARE_COLUMNS = ["phase", "model_name", "n_layer", "n_embd", "backend", "dtype", "batch_size", "prompt_len", "gen_len",
                   "median_a", "median_b", "ratio", "ratio_ci_low", "ratio_ci_high", "rerun_ci_low", "rerun_ci_high",
                   "rerun_basis", "rounds_a", "rounds_b", "q_value", "verdict", "regime", "cell_key"]


# Which interval each column is: the two runs' rounds (these runs) or a re-run of both.
COMPARE_CONFIG = {
    "ratio_ci_low": st.column_config.NumberColumn("CI low, these runs", format="%.4g", help=CI_KIND_NOTES[CI_ACROSS_ROUNDS]),
    "ratio_ci_high": st.column_config.NumberColumn("CI high, these runs", format="%.4g", help=CI_KIND_NOTES[CI_ACROSS_ROUNDS]),
    "rerun_ci_low": st.column_config.NumberColumn("re-run low", format="%.4g", help=RERUN_NOTE),
    "rerun_ci_high": st.column_config.NumberColumn("re-run high", format="%.4g", help=RERUN_NOTE),
    "rerun_basis": st.column_config.TextColumn("re-run from", help="the repeated runs the between-run variance rests on"),
}


def _run_label(runs: pd.DataFrame):
    rows = runs.set_index("run_id")

    def label(run_id: str) -> str:
        row = rows.loc[run_id]
        return f"{run_id} · {row['plan_name']} · {row['regime']} · {row['status']}"
    return label


def _fact(value) -> str:
    """A recorded value as a reader wants it: measured floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _verdict(table: pd.DataFrame) -> list[str]:
    return [NO_CI if pd.isna(m) else (f"moved: b {d}" if m else "within noise")
            for m, d in zip(table["moved"], table["direction"])]


def _compare(ctx: cache.Context, runs: pd.DataFrame) -> None:
    st.subheader("Compare two runs")
    ids = runs.loc[runs["cells_ok"] > 0, "run_id"].tolist()
    pair = default_pair(runs)
    if pair is None:
        st.info("Comparing needs two runs with finished cells; this dataset has fewer.")
        return
    for key, default in zip(("runs_a", "runs_b"), pair):
        if st.session_state.get(key) not in ids:
            st.session_state[key] = default
    label = _run_label(runs)
    c1, c2 = st.columns(2)
    run_a = c1.selectbox("Run a (baseline)", ids, key="runs_a", format_func=label)
    run_b = c2.selectbox("Run b", ids, key="runs_b", format_func=label)
    if run_a == run_b:
        st.info("Pick two different runs.")
        return
    diff = environment_differences(runs, run_a, run_b)
    if diff.empty:
        st.caption("Everything recorded about the two runs' host, device and software is equal.")
    else:
        st.markdown("**Where the runs differ:** " + md("; ".join(f"{r.field}: {_fact(r.a)} vs {_fact(r.b)}"
                                                             for r in diff.itertuples()), 3000))
    try:
        table = cache.run_comparison(ctx, run_a, run_b)
    except ValueError as error:
        st.warning(f"{md(error, 400)}. Pick runs that measured the same cells, or clear a filter ({flt.describe(ctx.selection)}).")
        return
    s = comparison_summary(table)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Cells compared", f"{s['n']:,}", help="(cell, phase) measured ok in both runs, under the sidebar filters")
    m2.metric("With a CI", f"{s['with_ci']:,}", help="both runs measured the cell in two or more rounds (protocol 2)")
    m3.metric("Moved beyond noise", f"{s['moved']:,}", help=f"{s['slower']} slower and {s['faster']} faster in b; "
              f"Benjamini-Hochberg at FDR {FDR:.0%} over the cells with a CI")
    m4.metric("Median ratio b / a", f"{s['median_ratio']:.3f}x",
              help=f"5th-95th percentile over the cells: {s['ratio_p5']:.3f}x to {s['ratio_p95']:.3f}x")
    if s["no_ci"]:
        st.info(f"{s['no_ci']:,} of {s['n']:,} cells have **no CI**: a run measured them in a single round (every "
                "protocol 1 run does), so there is no independent unit to judge noise by. Their ratios are shown, "
                "but whether they moved cannot be told.")
    ui.chart(ratio_figure(table, run_a, run_b), "runs_ratio_chart", f"run {run_b} / run {run_a}")
    st.caption("CIs: Welch's t on the log medians of each run's rounds, these two runs only. They leave out "
               "run-to-run variance, so two ordinary runs of one plan differ beyond them even when nothing changed. "
               "The re-run interval adds it, from the dataset's repeated runs: where the ratio of a repeat of both "
               "runs is expected; a ratio inside it is within what re-running moves (Reproducibility shows the spread "
               "of repeat runs).")
    shown = table.assign(verdict=_verdict(table))
    moved = shown[shown["moved"].fillna(False).astype(bool)]
    if s["with_ci"]:
        st.markdown(f"**Cells that moved beyond noise ({len(moved)})**" if len(moved) else
                    "**No cell moved beyond the rounds' noise.**")
    if len(moved):
        largest_first = np.argsort(-np.abs(np.log(moved["ratio"].to_numpy(np.float64))), kind="stable")
        ui.table(moved.iloc[largest_first][COMPARE_COLUMNS], key="runs_moved", p_columns=("q_value",),
                 column_config=COMPARE_CONFIG)
    with st.expander(f"Every compared cell ({len(shown):,})"):
        ui.table(shown[COMPARE_COLUMNS], key="runs_all", p_columns=("q_value",), column_config=COMPARE_CONFIG)


def _linked_run(ctx: cache.Context, runs: pd.DataFrame) -> bool:
    """The run a link names (`?run=ID`, as the Run page and `runner run` give it): its results
    from its run directory, and it is run b of the comparison below. True when a link named one."""
    run_id = st.query_params.get(run_control.RUN_PARAM)
    if not run_id:
        return False
    st.subheader(f"Run {md(run_id, 80)}")
    in_dataset = runs["run_id"].tolist() if "run_id" in runs else []
    comparable = run_id in in_dataset and runs.loc[runs["run_id"] == run_id, "cells_ok"].gt(0).any()
    if comparable and st.session_state.get("_runs_linked") != run_id:
        st.session_state["_runs_linked"] = run_id  # once per link: the user may pick other runs afterwards
        st.session_state["runs_b"] = run_id
        pair = default_pair(runs)
        if pair is not None:
            st.session_state["runs_a"] = pair[0] if pair[0] != run_id else pair[1]
    # only a run directory that is there by name: a link's text never becomes a path of its own
    run_dir = next((d.path for d in list_run_dirs(ctx.runs_dir) if d.run_id == run_id), None)
    if run_id not in in_dataset:
        st.info(f"Run {md(run_id, 80)} is not in the open dataset ({md(ctx.label, 200)})"
                + (": open your store to compare it with other runs." if run_dir else f", nor under {md(ctx.runs_dir, 200)}."))
        if run_dir and not ctx.hosted:
            beside, alone, _ = st.columns([2, 2, 3])
            if beside.button("Show my store beside the reference", key="runs_show_both", type="primary"):
                sidebar.choose_dataset(source.COMBINED)
            if alone.button("Show my store only", key="runs_show_store"):
                sidebar.choose_dataset(source.STORE)
    if run_dir is None:
        return True
    try:
        results = run_results(run_dir)
    except FileNotFoundError as error:  # its meta.json cannot be read (being replaced, or damaged)
        st.warning(md(error, 400))
        return True
    st.caption("Median decode ms per token and its 95% CI across the run's rounds, from its run directory.")
    st.dataframe(display_frame(results), hide_index=True, key="runs_linked_results")
    return True


def body(ctx: cache.Context) -> None:
    st.title("Runs")
    st.caption("Every run of this dataset with the plan it ran and what it ran on (host, device, driver, library "
               "versions, protocol); below, two runs compared cell by cell.")
    ui.running_note(ctx)
    runs = cache.run_list(ctx)
    linked = _linked_run(ctx, runs)
    if runs.empty:
        ui.require_data(ctx)
        return
    if linked:
        st.subheader("Every run")
    busy = runs[runs["busy_machine"] == "yes"]
    if len(busy):
        st.warning(f"{len(busy)} run(s) measured on a busy machine ({md(', '.join(busy['run_id'].tolist()), 1000)}): "
                   f"their busy cells are flagged {BUSY_MACHINE_FLAG}; read their numbers with care. To measure again: "
                   f"{md(BUSY_ADVICE, 1000)}")
    launch_us = pd.to_numeric(runs["host_launch_us"], errors="coerce").round(1)
    ui.table(runs[RUN_COLUMNS].assign(host_launch_us=launch_us), key="runs_table",  # "—" where not recorded
             height=min(MAX_TABLE_PX, ROW_PX * (len(runs) + 1) + 3), column_config={
                 "started_at": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
                 "protocol_version": st.column_config.NumberColumn("protocol"),
                 "host_launch_us": "host launch (µs)",
                 "busy_machine": st.column_config.TextColumn(
                     "busy machine", help="whether other programs, load or CPU steal competed with the run "
                     "(its machine-load samples); empty: a run from before they were taken"),
                 "busy_cells": st.column_config.NumberColumn("cells busy", help=f"cells flagged {BUSY_MACHINE_FLAG}"),
                 "machine_load": st.column_config.TextColumn("machine load", help="busy samples of all, the worst reasons"),
                 "plan_name": "plan"})
    _compare(ctx, runs)


ui.guard(body)
