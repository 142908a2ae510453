"""Regimes: does the depth effect hold across hardware regimes and backends, and how strongly?"""
import pandas as pd
import streamlit as st

from analysis.figures import coefficient_plot, regime_comparison
from dashboard import cache, ui
from dashboard.text import md, table_text


def _label(comp: dict) -> str:
    c = comp["comparison"]
    return " | ".join(f"{v}" if k in ("regime", "backend", "phase", "dtype") else f"{k.replace('_size', '').replace('_len', '')} {v}"
                      for k, v in c.items())


@cache.cached_query(copies=True)
def _coefficients_figure(ctx: cache.Context, factor: str):
    """Each level's depth elasticity per comparison group (analysis.figures.coefficient_plot)."""
    return coefficient_plot([c for c in cache.compare(ctx, factor) if c["status"] == "ok"], "depth")


@cache.cached_query(copies=True)
def _side_by_side_figure(ctx: cache.Context, factor: str, choice: int):
    """The chosen comparison group's shapes, one colour per level (analysis.figures.regime_comparison):
    medians pooled over runs, one point per shape and level (per-run cells stacked a shape's CI bars)."""
    ok = [c for c in cache.compare(ctx, factor) if c["status"] == "ok"]
    comp = ok[choice]["comparison"]
    stats = cache.pooled_frame(ctx)
    mask = pd.Series(True, index=stats.index)
    for key, value in comp.items():
        mask &= stats[key] == value
    levels = {lv["level"] for c in ok for lv in c["levels"]}  # every level coloured as on the chart above
    return regime_comparison(stats[mask], factor, levels)


def _section(ctx: cache.Context, factor: str) -> None:
    comps = cache.compare(ctx, factor)
    if not comps:
        st.info("No cells to compare.")
        return
    ok = [c for c in comps if c["status"] == "ok"]
    levels = ctx.options.get(factor, [])
    if not ok:
        if all(c["status"] == "single_level" for c in comps):
            st.info(f"Only one {factor} in this selection ({md(', '.join(map(str, levels[:3])), 2000)}): measure the same shapes "
                    f"on another {factor} to compare the depth effect across {factor}s.")
        else:
            st.info(f"No comparison across {factor}s has at least two levels with enough shapes for their own slopes.")
        with st.expander("Why, per comparison group"):
            for c in comps:
                st.markdown(f"- **{md(_label(c))}**: {md(c['message'], 2000)}")
        return
    ui.chart(_coefficients_figure(ctx, factor), f"coef_{factor}",
             f"depth elasticity per {factor}, {len(ok)} comparison group{'s' if len(ok) != 1 else ''}")
    rows = [{"comparison": _label(c), "levels": len(c["levels"]), "Wald chi2 (depth equal)": c["wald_depth"]["statistic"],
             "df": c["wald_depth"]["df"], "p": c["wald_depth"]["p_value"],
             "depth effect differs": c["wald_depth"]["p_value"] < 0.05, "finding": c["message"]} for c in ok]
    st.dataframe(table_text(pd.DataFrame(rows), p_columns=("p",), digits=3), hide_index=True)
    skipped = [c for c in comps if c["status"] != "ok"]
    if skipped:
        st.caption(f"{len(skipped)} comparison group(s) left out (one level, or too few shapes).")

    choice = st.selectbox("Side by side", range(len(ok)), format_func=lambda i: _label(ok[i]), key=f"side_{factor}")
    ui.chart(_side_by_side_figure(ctx, factor, choice), f"side_fig_{factor}", _label(ok[choice]))


def body(ctx: cache.Context) -> None:
    if not ui.page_header(
        ctx, "Across regimes and backends",
        "One pooled model per comparison group, log latency ~ log depth x level + log width x level (HC3): "
        "each level's depth elasticity with its 95% CI, and a Wald test that they are all equal."):
        return
    tab_r, tab_b = st.tabs(["Hardware regimes", "Backends"])
    with tab_r:
        _section(ctx, "regime")
    with tab_b:
        _section(ctx, "backend")


ui.guard(body)
