"""Depth vs width: the three fits per group, their charts, and a predictor for a new shape."""
import pandas as pd
import streamlit as st

from analysis.figures import latency_vs_depth, latency_vs_params
from analysis.load import add_group_id, keys_by_group_id
from analysis.predict import predict_latency
from analysis.regression import newest_current_group
from dashboard import cache, ui
from dashboard.text import md, table_text

VERDICT_BOX = {"depth": st.success, "params": st.success, "both": st.success, "inconclusive": st.warning}
VERDICT_HEAD = {  # the seed form's answer (analysis.regression): which elasticity's CI excludes 0
    "depth": "Depth explains latency better than parameter count",
    "params": "Parameter count explains latency better than depth",
    "both": "Both depth and parameter count drive latency",
    "inconclusive": "Inconclusive",
}


def _coefficients(fit) -> pd.DataFrame:
    rows = []
    for m in fit.models:
        for c in m["coefficients"]:
            rows.append({"scale": m["scale"], "model": m["model"], "term": c["term"], "estimate": c["estimate"],
                         "ci_low": c["ci_low"], "ci_high": c["ci_high"], "p_value": c["p_value"],
                         "adj_r2": m["adj_r2"], "aic": m["aic"], "n": m["n"], "CI kind": fit.ci_kind,
                         "covariance": m["cov_type"]})
    return pd.DataFrame(rows)


def _legend_below(fig):
    """Half-width charts: the legend under the plot, so it does not cover the width colour bar."""
    fig.update_layout(height=560, legend={"orientation": "h", "yanchor": "top", "y": -0.28, "x": 0},
                      margin={"t": 50, "r": 10})
    fig.for_each_trace(lambda t: t.update(showlegend=False) if (t.name or "").endswith(" CI") else None)
    return fig


def body(ctx: cache.Context) -> None:
    if not ui.page_header(
        ctx, "Depth vs width",
        "Per group (cells equal in everything but shape): OLS of cell medians on depth only, on "
        "parameter count only, and on depth + width, on linear and log-log scales, with HC3 errors. "
        "On the log scale a band is a 95% CI of the median latency."):
        return
    fits = cache.fits(ctx)
    if not fits:
        st.info("No groups in this selection.")
        return
    stats = cache.cell_frame(ctx)
    families = sorted(stats["family"].unique())
    if len(families) > 1 and st.toggle(
            "Pool families", key="dw_pool",
            help="One fit per group across families, with family as a term of the seed form: "
                 "log latency ~ log params + log depth + family. By default a group holds one family."):
        _across_families(ctx, stats)
        return
    labels = {f.group_id: f"{ui.group_label(f.key, ctx)}  ({f.n_shapes} shapes)" for f in fits}
    ok_ids = [f.group_id for f in fits if f.status == "ok"]
    ids = [f.group_id for f in fits]
    if st.session_state.get("dw_group") not in ids:
        # default: the newest group measured under the current protocol, else the best-identified fit
        runs = cache.run_list(ctx)
        newest = newest_current_group(fits, cache.pooled_frame(ctx), dict(zip(runs["run_id"], runs["started_at"])))
        st.session_state["dw_group"] = newest or max(fits, key=lambda f: (f.status == "ok", f.n_shapes)).group_id
    group_id = st.selectbox("Group", ids, format_func=labels.get, key="dw_group")
    fit = next(f for f in fits if f.group_id == group_id)
    if len(ok_ids) < len(ids):
        st.caption(f"{len(ids) - len(ok_ids)} of {len(ids)} groups have too few distinct shapes for a fit.")

    if fit.status != "ok":
        st.info(md(fit.message, 2000))
    else:
        winner = fit.verdict.get("winner", "inconclusive")
        head = VERDICT_HEAD.get(winner, str(winner))
        lead = fit.verdict["lead"]  # the details follow, per scale
        VERDICT_BOX.get(winner, st.info)(f"**{head}.** {md(lead, 2000)}")
        with st.expander("Fits: coefficients with 95% CIs, adjusted R², AIC", expanded=False):
            for scale, v in fit.verdicts.items():
                st.markdown(f"- **{md(scale)}**: {md(v['text'], 2000)}")
            st.dataframe(table_text(_coefficients(fit), p_columns=("p_value",)), hide_index=True)

    group_stats = stats[stats["group_id"] == group_id]
    scale = st.radio("Scale", ["log", "linear"], horizontal=True, key="dw_scale")
    bands = fit.bands if fit.status == "ok" else None
    left, right = st.columns(2)
    with left:
        ui.chart(_legend_below(latency_vs_depth(group_stats, bands, scale)), "dw_depth", group_id)
    with right:
        ui.chart(_legend_below(latency_vs_params(group_stats, bands, scale)), "dw_params", group_id)

    st.subheader("What would a new shape cost here?")
    c1, c2, c3 = st.columns([1, 1, 3])
    depth = c1.number_input("Depth (layers)", min_value=1, max_value=512, value=10, step=1, key="dw_pred_depth")
    width = c2.number_input("Width (n_embd)", min_value=2, max_value=16384, value=256, step=32, key="dw_pred_width")
    g = fit.group
    result = predict_latency(stats, n_layer=int(depth), n_embd=int(width), regime=g["regime"], backend=g["backend"],
                             phase=g["phase"], dtype=g["dtype"], batch_size=g["batch_size"],
                             prompt_len=g["prompt_len"], gen_len=g.get("gen_len"), family=g["family"])
    with c3:
        if result["status"] != "ok":
            st.info(md(result["message"], 2000))
        else:
            st.metric(f"Predicted median latency of {depth} x {width}", f"{result['median_ms']:.3g} ms")
            st.markdown(result["ci_text"])  # numbers and words of ours: no data text to escape
            p_low, p_high = result["prediction_interval"]
            st.caption(f"A new cell's median should fall in [{p_low:.3g}, {p_high:.3g}] ms (not robust; for reference). "
                       f"Fitted on {result['n_cells']} cells, log latency ~ log depth + log width.")
            for warning in result["warnings"]:
                st.warning(md(warning, 2000))


def _across_families(ctx: cache.Context, stats: pd.DataFrame) -> None:
    """The fits that pool every family of a group, with family as a term, and their cells."""
    fits = {fit["group_id"]: fit for fit in cache.family_fits(ctx)}
    keys = keys_by_group_id(add_group_id(stats, pool_families=True))
    ids = sorted(fits, key=lambda g: (fits[g]["status"] != "ok", g))
    group_id = st.selectbox("Group (every family)", ids, key="dw_pool_group",
                            format_func=lambda g: f"{ui.group_label(keys[g], ctx)}  ({', '.join(fits[g]['families'])})")
    fit = fits[group_id]
    if fit["status"] != "ok":
        st.info(md(fit["message"], 2000))
    else:
        st.success(f"**Family as a term of the seed form.** {md(fit['message'], 2000)}")
        terms = pd.DataFrame([{"term": term, **values, "CI kind": fit["ci_kind"], "covariance": fit["cov_type"]}
                              for term, values in fit["terms"].items()])
        st.dataframe(table_text(terms, p_columns=("p_value",)), hide_index=True)
        st.caption(f"{md(fit['formula'], 500)}; adjusted R² {fit['adj_r2']:.3f}, {fit['n_shapes']} shapes. A family's "
                   f"term is its log latency ratio against {md(fit['reference'])} at equal parameters and depth.")
    cells = add_group_id(stats, pool_families=True)
    cells = cells[cells["group_id"] == group_id]
    scale = st.radio("Scale", ["log", "linear"], horizontal=True, key="dw_scale")
    left, right = st.columns(2)
    with left:
        ui.chart(_legend_below(latency_vs_depth(cells, None, scale)), "dw_pool_depth", group_id)
    with right:
        ui.chart(_legend_below(latency_vs_params(cells, None, scale)), "dw_pool_params", group_id)
    st.caption("Each point's hover names its family and query / KV heads. The predictor works within one family: "
               "turn pooling off to use it.")


ui.guard(body)
