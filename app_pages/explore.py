"""Explore: every cell with its statistics and flags; sample distributions of chosen cells."""
import io

import streamlit as st

from analysis.figures import latency_vs_params, sample_distributions
from analysis.intervals import CI_ACROSS_ROUNDS, CI_KIND_NOTES, RERUN_NOTE
from vocabulary import PHASES, csv_safe
from dashboard import cache, data, ui

MAX_DISTRIBUTIONS = 24  # boxes per chart before it stops being readable


def _selected_from_chart(event) -> set[str]:
    points = (getattr(event, "selection", None) or {}).get("points", []) if event else []
    return {str(p["customdata"][0]) for p in points if p.get("customdata")}


def body(ctx: cache.Context) -> None:
    if not ui.page_header(ctx, "Explore cells"):
        return
    stats = cache.cell_frame(ctx)
    table = cache.explore_rows(ctx)
    phases = ctx.selection.get("phase") or []
    if phases:
        table = table[table["phase"].isin(phases) | table["phase"].isna()]

    st.caption("Median latency of every measured cell and phase in each run (bars: 95% CI of that run's median, "
               "across its rounds). The table adds each median's re-run interval: where another run's is expected. "
               "Click a point or drag a box / lasso to select cells; the table and distributions follow.")
    avail = [p for p in PHASES if p in set(stats["phase"])]
    chart_phase = avail[0] if len(avail) == 1 else st.radio(
        "Phase on the chart", avail, index=avail.index("decode") if "decode" in avail else 0,
        horizontal=True, key="explore_phase")
    fig = latency_vs_params(stats[stats["phase"] == chart_phase])
    fig.update_layout(height=420, margin={"t": 50, "b": 40})
    event = ui.chart(fig, "explore_chart", f"{chart_phase}, {_scope(ctx)}", on_select="rerun",
                     selection_mode=("points", "box", "lasso"))
    chosen = _selected_from_chart(event)

    shown = table[table["cell_id"].isin(chosen)] if chosen else table
    failed = int((table["status"] != "ok").sum())
    st.subheader(f"{shown['cell_id'].nunique()} cells" + (" selected on the chart" if chosen else ""))
    if failed:
        st.warning(f"{failed} row(s) are cells that failed or are unsupported: no statistics, see the error column.")
    for advice in data.flag_advice(f for flags in shown["flags"].dropna() for f in flags.split(", ") if f):
        st.warning(advice)
    picked = ui.table(
        shown, key="explore_table", on_select="rerun", selection_mode="multi-row",
        column_config={
            "params_m": st.column_config.NumberColumn("params (M)", format="%.2f"),
            "n": st.column_config.NumberColumn("samples", format="%d"),
            "median": st.column_config.NumberColumn("median ms", format="%.4g"),
            "median_ci": st.column_config.TextColumn(
                "95% CI, this run", help=f"{CI_KIND_NOTES[CI_ACROSS_ROUNDS]}; 'too noisy' where the bounds are over "
                "10x apart, with the rounds a +-10% interval would need at the spread seen"),
            "median_ci_low": st.column_config.NumberColumn("CI low, this run", format="%.4g"),
            "median_ci_high": st.column_config.NumberColumn("CI high, this run", format="%.4g"),
            "ci_kind": st.column_config.TextColumn("CI kind", help="across rounds of this run, or none (one round)"),
            "rerun_ci_low": st.column_config.NumberColumn("re-run low", format="%.4g", help=RERUN_NOTE),
            "rerun_ci_high": st.column_config.NumberColumn("re-run high", format="%.4g", help=RERUN_NOTE),
            "rerun_basis": st.column_config.TextColumn("re-run from", help="the repeated runs the between-run "
                                                       "variance rests on ('no history': none)"),
            "cv": st.column_config.NumberColumn("CV", format="%.3f"),
            "p5": st.column_config.NumberColumn(format="%.4g"), "p95": st.column_config.NumberColumn(format="%.4g"),
            "tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.0f"),
            "peak_memory_mib": st.column_config.NumberColumn("peak MiB", format="%.1f",
                                                             help="device allocator's peak on GPU, process RSS on CPU"),
            "mj_per_token": st.column_config.NumberColumn("mJ/token", format="%.3g", help="empty: not measured"),
            "power_w": st.column_config.NumberColumn("W", format="%.0f", help="mean power over the phase's energy window"),
        },
    )
    rows = picked.selection.rows if picked and hasattr(picked, "selection") else []
    chosen |= set(shown.iloc[rows]["cell_id"]) if rows else set()

    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button("Download CSV", lambda: csv_safe(shown).to_csv(index=False), "shapebench-cells.csv", "text/csv",
                       on_click="ignore")
    c2.download_button("Download Parquet", lambda: _parquet(shown), "shapebench-cells.parquet",
                       "application/vnd.apache.parquet", on_click="ignore")

    st.subheader("Sample distributions")
    ok = table[(table["status"] == "ok")]
    ids = [c for c in ok["cell_id"].unique() if c in chosen]
    if not ids:
        st.info("Select cells on the chart or rows in the table to see their raw sample distributions.")
        return
    if len(ids) > MAX_DISTRIBUTIONS:
        st.caption(f"{len(ids)} cells selected: showing the first {MAX_DISTRIBUTIONS}.")
        ids = ids[:MAX_DISTRIBUTIONS]
    samples = cache.samples(ctx, ids, phases)
    kind = st.radio("Chart", ["box", "violin"], horizontal=True, key="dist_kind")
    ui.chart(sample_distributions(samples, kind), "explore_dist", f"raw samples of {len(ids)} cells, {_scope(ctx)}")


def _scope(ctx: cache.Context) -> str:
    """What the sidebar selected, for a chart that mixes regimes and backends: its export says so."""
    regimes, backends = ctx.selection.get("regime"), ctx.selection.get("backend")
    return (f"regimes {', '.join(regimes)}" if regimes else "every regime") + "; " + (
        f"backends {', '.join(backends)}" if backends else "every backend")


def _parquet(frame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


ui.guard(body)
