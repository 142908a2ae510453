"""Inversions: where a smaller model runs slower, as a heatmap per group and a ranked table."""
import pandas as pd
import streamlit as st

from analysis.figures import inversion_heatmap
from analysis.intervals import CI_ACROSS_ROUNDS, CI_ACROSS_RUNS, CI_KIND_NOTES, RERUN_NOTE
from analysis.load import keys_by_group_id
from dashboard import cache, data, ui
from dashboard.text import md
from vocabulary import csv_safe

# each side's shape in full: family, depth x width, query / KV heads, params
SIDE = ["model_name", "family", "n_layer", "n_embd", "n_head", "n_kv_head", "params", "median"]
TABLE_COLUMNS = ["rank", "regime", "backend", "phase", "dtype", "batch_size", "prompt_len",
                 *(f"{c}_a" for c in SIDE), *(f"{c}_b" for c in SIDE),
                 "ratio", "ratio_ci_low", "ratio_ci_high", "ci_kind", "rerun_ci_low", "rerun_ci_high", "rerun_basis",
                 "significant"]
CI_HELP = f"{CI_KIND_NOTES[CI_ACROSS_RUNS]}; or {CI_KIND_NOTES[CI_ACROSS_ROUNDS]} (the row's CI kind says which)"


def body(ctx: cache.Context) -> None:
    if not ui.page_header(
        ctx, "Latency inversions",
        "For cells A, B of one group with params(A) < params(B): ratio = median(A) / median(B), with a "
        "95% CI across runs (or across rounds of one run: this run only; none for one round of one run, which is "
        "never significant). Above 1 the smaller model is slower; significant at FDR 5% (Benjamini-Hochberg over the "
        "group's pairs). Beside it, the ratio's 95% re-run interval: where a new run's ratio is expected, from the "
        "dataset's repeated runs."):
        return
    n_pairs = data.pair_counts(cache.pooled_frame(ctx))
    keys = keys_by_group_id(cache.pooled_frame(ctx))
    if n_pairs.sum() == 0:
        st.info("Every group in this selection has a single model: no pairs to compare.")
        return
    inv = cache.inversions(ctx)
    c1, c2, c3 = st.columns(3)
    c1.metric("Pairs compared", f"{int(n_pairs.sum()):,}")
    c2.metric("Inverted (point estimate)", f"{len(inv):,}")
    c3.metric("Significant at FDR 5%", f"{int(inv['significant'].sum()):,}")

    groups = sorted(n_pairs[n_pairs > 0].index)
    counts = inv.groupby("group_id")["significant"].sum() if len(inv) else pd.Series(dtype=int)
    if st.session_state.get("inv_group") not in groups:
        st.session_state["inv_group"] = max(groups, key=lambda g: counts.get(g, 0))
    group_id = st.selectbox("Group", groups, key="inv_group",
                            format_func=lambda g: f"{ui.group_label(keys[g], ctx)}  ({int(counts.get(g, 0))} significant at FDR 5%)")
    sub = cache.group_pairs(ctx, group_id)
    fig = inversion_heatmap(sub)
    n = sub["model_name_a"].nunique() + 1
    fig.update_layout(height=max(420, min(1100, 22 * n + 200)))
    ui.chart(fig, "inv_heatmap", group_id)
    strongest = inv[(inv["group_id"] == group_id) & inv["significant"]].nlargest(1, "ratio_ci_low") if len(inv) else inv
    if len(strongest) and strongest["phase"].iat[0] != "prefill":  # the profile counts a decode step
        why = cache.explain_cells(ctx, strongest["run_cell_id_a"].iat[0], strongest["run_cell_id_b"].iat[0])
        if why:
            st.markdown(f"**Strongest inversion here, from its decode profile:** {md(why, 2000)}")
    st.page_link("app_pages/why.py", label="Why is it slow?", icon=":material/troubleshoot:")

    st.subheader("Ranked inversions")
    only_sig = st.toggle("Significant only", value=True, key="inv_sig")
    this_group = st.toggle("This group only", value=False, key="inv_this")
    if inv.empty:
        st.info("No inversion in this selection: every smaller model is as fast or faster.")
        return
    table = inv[inv["significant"]] if only_sig else inv
    if this_group:
        table = table[table["group_id"] == group_id]
    table = table.sort_values("ratio_ci_low", ascending=False)[TABLE_COLUMNS]
    if table.empty:
        st.info("No inversion matches: the smaller models are as fast or faster here.")
        return
    ui.table(table, column_config={
        "params_a": st.column_config.NumberColumn("params A", format="%.3g"),
        "params_b": st.column_config.NumberColumn("params B", format="%.3g"),
        **{f"n_kv_head_{s}": st.column_config.NumberColumn(f"KV heads {s.upper()}") for s in "ab"},
        **{c: st.column_config.NumberColumn(format="%.4g") for c in ("median_a", "median_b", "ratio")},
        "ratio_ci_low": st.column_config.NumberColumn("CI low", format="%.4g", help=CI_HELP),
        "ratio_ci_high": st.column_config.NumberColumn("CI high", format="%.4g", help=CI_HELP),
        "ci_kind": st.column_config.TextColumn("CI kind", help="across runs, or across rounds: this run only"),
        "rerun_ci_low": st.column_config.NumberColumn("re-run low", format="%.4g", help=RERUN_NOTE),
        "rerun_ci_high": st.column_config.NumberColumn("re-run high", format="%.4g", help=RERUN_NOTE),
        "rerun_basis": st.column_config.TextColumn("re-run from", help="the repeated runs the between-run variance rests on"),
    })
    st.download_button("Download CSV", lambda: csv_safe(table).to_csv(index=False), "shapebench-inversions.csv", "text/csv",
                       on_click="ignore")


ui.guard(body)
