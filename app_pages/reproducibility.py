"""Reproducibility: do repeat runs of the same cells agree, and which verdicts survive across runs?"""
import pandas as pd
import streamlit as st

from analysis.figures import run_medians_figure
from analysis.intervals import CI_ACROSS_ROUNDS, CI_ACROSS_RUNS, CI_KIND_NOTES
from analysis.load import GroupKey, keys_by_group_id
from analysis.reproducibility import FDR, MIN_SPREAD, NO_REPEATS_MESSAGE
from dashboard import cache, ui

# The intervals here are of values pooled over runs: which one each row's CI kind names.
POOLED_CI_HELP = f"{CI_KIND_NOTES[CI_ACROSS_RUNS]} (a value measured in one run: {CI_KIND_NOTES[CI_ACROSS_ROUNDS]})"
INVERSION_COLUMNS = ["group", "model_name_a", "model_name_b", "ratio", "ratio_ci_low", "ratio_ci_high", "ci_kind",
                     "runs_significant", "n_runs", "verdict", "regime"]
CELL_COLUMNS = ["model_name", "group", "n_runs", "run medians (ms)", "spread_ratio", "q_value",
                "median", "median_ci_low", "median_ci_high", "ci_kind", "environment differs in", "regime", "repeat_id"]


def _split(frame: pd.DataFrame, keys: dict[str, GroupKey]) -> pd.DataFrame:
    """group_id as a short `group` (from the backend on) and its `regime`, which is long and repeats."""
    return frame.assign(group=[keys[g].short_label for g in frame["group_id"]],
                        regime=[keys[g].regime for g in frame["group_id"]])


@cache.cached_query(copies=True)
def _runs_figure(ctx: cache.Context, group_id: str):
    """Each repeated cell's run medians with their within-run CIs, for one group."""
    runs = cache.repeat_runs(ctx)
    return run_medians_figure(runs[runs["group_id"] == group_id])


def _env_text(diff) -> str:
    if not diff:
        return "nothing recorded differs"
    return "; ".join(f"{key}: {' vs '.join(str(v) for v in values.values())}" for key, values in diff.items())


def body(ctx: cache.Context) -> None:
    if not ui.page_header(
        ctx, "Reproducibility",
        "Cells measured in more than one run (same cell key, same regime): do the run medians agree within "
        f"their within-run CIs? A cell is irreproducible when Cochran's Q says no (BH q < {FDR:g}) and the run "
        f"medians differ by at least {MIN_SPREAD:g}x. Pooled CIs resample runs, so they include between-run variance."):
        return
    runs = cache.repeat_runs(ctx)
    if runs is None:
        st.info(NO_REPEATS_MESSAGE[0].upper() + NO_REPEATS_MESSAGE[1:] + ".")
        return
    table = cache.repeat_table(ctx)
    keys = keys_by_group_id(cache.cell_frame(ctx))  # every group of the selection
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Repeated cell-phases", f"{len(table):,}", help=f"measured in 2-{int(table['n_runs'].max())} runs")
    c2.metric("Irreproducible", f"{int(table['irreproducible'].sum()):,}")
    c3.metric("Largest run spread", f"{table['spread_ratio'].max():.2f}x", help="max / min of a cell's run medians")
    widening = table["ci_widening"].median()  # NaN where the runs have no within-run CI (one round each)
    c4.metric("Median CI widening", f"{widening:.1f}x" if widening == widening else "no within-run CI",
              help="pooled CI width (t across runs) / mean within-run CI width (across rounds)")

    st.subheader("Between-run variance per group")
    components = _split(cache.variance_table(ctx), keys)
    components = components[["group", *[c for c in components.columns if c not in ("group", "group_id", "regime")], "regime"]]
    ui.table(components, column_config={
        **{c: st.column_config.NumberColumn(format="%.3f") for c in (
            "between_run_sd", "between_run_sd_ci_low", "between_run_sd_ci_high", "within_run_se",
            "median_spread_ratio", "max_spread_ratio")},
    })
    st.caption("between_run_sd: SD of log run medians net of within-run noise (about a relative SD), 95% CI over cells.")

    groups = sorted(runs["group_id"].unique())
    flagged = table.groupby("group_id")["irreproducible"].sum()
    if st.session_state.get("repro_group") not in groups:
        st.session_state["repro_group"] = max(groups, key=lambda g: flagged.get(g, 0))
    group_id = st.selectbox("Group", groups, key="repro_group",
                            format_func=lambda g: f"{ui.group_label(keys[g], ctx)}  ({int(flagged.get(g, 0))} irreproducible)")
    fig = _runs_figure(ctx, group_id)
    fig.update_layout(height=520)
    ui.chart(fig, "repro_runs", group_id)

    st.subheader("Inversions across runs")
    inversions = cache.inversions_across_runs(ctx)
    verdicts = inversions["verdict"].value_counts() if len(inversions) else pd.Series(dtype=int)
    st.caption(f"{int(verdicts.get('reproducible', 0)):,} inversions hold on pooled CIs; "
               f"{int(verdicts.get('not reproducible', 0)):,} are significant within some run but not across runs (below).")
    not_repro = inversions[inversions["verdict"] == "not reproducible"] if len(inversions) else inversions
    if len(not_repro):
        ui.table(_split(not_repro, keys)[INVERSION_COLUMNS], column_config={
            "ratio": st.column_config.NumberColumn(format="%.3g"),
            "ratio_ci_low": st.column_config.NumberColumn("CI low", format="%.3g", help=POOLED_CI_HELP),
            "ratio_ci_high": st.column_config.NumberColumn("CI high", format="%.3g", help=POOLED_CI_HELP)})
    else:
        st.info("Every inversion significant within a run is also significant across runs.")

    st.subheader("Depth vs width across runs")
    regressions = cache.regressions_across_runs(ctx)
    fits = pd.DataFrame([{
        "group_id": r["group_id"], "runs per cell": r["n_runs"], "pooled verdict": (r.get("verdict") or {}).get("winner"),
        "across runs": r["reproducibility"],
        "per run": ", ".join(f"{p['run_id'][-6:]}: {p['winner'] or p['status']}" for p in r["per_run"]),
    } for r in regressions])
    if len(fits):
        fits = _split(fits, keys)
        ui.table(fits[["group", "runs per cell", "pooled verdict", "across runs", "per run", "regime"]])

    st.subheader("Irreproducible cells and what differed between their runs")
    bad = table[table["irreproducible"]].sort_values("spread_ratio", ascending=False)
    if bad.empty:
        st.info("No irreproducible cell: every repeated cell's run medians agree within their CIs.")
        return
    bad = _split(bad, keys).assign(**{
        "environment differs in": bad["environment_diff"].map(_env_text),
        "run medians (ms)": bad["run_medians"].map(lambda ms: " / ".join(f"{m:.3g}" for m in ms)),
    })
    ui.table(bad[CELL_COLUMNS], p_columns=("q_value",), column_config={
        "q_value": st.column_config.TextColumn("q (BH)", help="Cochran's Q p-value, Benjamini-Hochberg adjusted"),
        **{c: st.column_config.NumberColumn(format="%.3g") for c in ("spread_ratio", "median")},
        "median_ci_low": st.column_config.NumberColumn("CI low", format="%.3g", help=POOLED_CI_HELP),
        "median_ci_high": st.column_config.NumberColumn("CI high", format="%.3g", help=POOLED_CI_HELP)})


ui.guard(body)
