"""Overview: the headline inversions, which shape variable drives latency, coverage, integrity."""
import pandas as pd
import streamlit as st

from analysis.inversions import headline_text, headlines
from dashboard import data, ui
from dashboard.text import md


def body(ctx: ui.Context) -> None:
    if not ui.page_header(
        ctx, "Does shape drive latency?",
        "Depth x width of small GPT-2s against measured inference latency. "
        "An *inversion* is a smaller model that runs slower than a larger one; "
        "it counts as significant at FDR 5% (Benjamini-Hochberg over each group's pairs; its 95% CI then lies above 1)."):
        _integrity(ctx)
        return

    st.subheader("Strongest inversions")
    inv = ui.inversions(ctx)
    heads = headlines(inv) if len(inv) else inv
    if heads.empty:
        st.info("No significant inversion in this selection: every smaller model is as fast or faster "
                "(or the CIs overlap 1).")
    else:
        top = heads.sort_values("ratio_ci_low", ascending=False).head(5)
        cols = st.columns(min(3, len(top)))
        for i, (_, row) in enumerate(top.head(3).iterrows()):
            cols[i].metric(f"{md(row['model_name_a'])} vs {md(row['model_name_b'])}", f"{row['ratio']:.2f}x slower",
                           f"CI [{row['ratio_ci_low']:.2f}, {row['ratio_ci_high']:.2f}] {row['ci_kind']}", delta_color="off",
                           help=md(f"{row['backend']} {row['phase']} {row['dtype']} batch {row['batch_size']}"))
        for _, row in top.iterrows():
            st.markdown(f"- **{md(row['backend'])} · {md(row['phase'])} · {md(row['dtype'])} · batch {md(row['batch_size'])} · "
                        f"prompt {md(row['prompt_len'])}**: {md(headline_text(row), 2000)}")
        st.caption(f"{int(inv['significant'].sum())} significant at FDR 5% of {len(inv)} inverted pairs "
                   f"in {heads['group_id'].nunique()} groups; the Inversions page ranks them all.")

    st.subheader("Which shape variable explains latency")
    fits = ui.fits(ctx)
    rows = [{"regime": f.group.get("regime"), "backend": f.group.get("backend"), "phase": f.group.get("phase"),
             "dtype": f.group.get("dtype"), "batch": f.group.get("batch_size"), "prompt": f.group.get("prompt_len"),
             "shapes": f.n_shapes, "driver": f.verdict.get("winner", "too few shapes") if f.status == "ok" else "too few shapes"}
            for f in fits]
    verdicts = pd.DataFrame(rows)
    if verdicts.empty:
        st.info("No groups to fit.")
    else:
        for regime, sub in verdicts.groupby("regime", sort=True):
            counts = sub["driver"].value_counts()
            fitted = int(len(sub) - counts.get("too few shapes", 0))
            text = (f"depth wins in **{counts.get('depth', 0)}**, parameter count in **{counts.get('params', 0)}**, "
                    f"inconclusive in **{counts.get('inconclusive', 0)}** of {fitted} fitted groups")
            st.markdown(f"**{md(regime)}**: {text}" + (f" ({counts.get('too few shapes', 0)} groups have too few shapes)"
                                                   if counts.get("too few shapes", 0) else ""))
        st.dataframe(verdicts, hide_index=True,
                     column_config={"driver": st.column_config.TextColumn("driver", help="verdict of the depth vs width fits")})

    st.subheader("Data coverage")
    cov = data.coverage(ui.cells(ctx))
    if len(ctx.options.get("regime", [])) == 1:
        st.caption("One hardware regime in this dataset: the Regimes page compares backends; "
                   "measure the same plan on another GPU to compare hardware.")
    st.dataframe(cov, hide_index=True)
    _integrity(ctx)


def _integrity(ctx: ui.Context) -> None:
    st.subheader("Integrity warnings")
    bad = data.integrity(ui.cells(ctx))
    if bad.empty:
        st.success("No cell carries an integrity flag and none failed.")
        return
    failed = int((bad["status"] != "ok").sum())
    if failed:
        st.warning(f"{failed} cell(s) failed or are unsupported: their errors are listed below and they are left "
                   "out of every statistic.")
    flagged = len(bad) - failed
    if flagged:
        counts = bad.loc[bad["status"] == "ok", "flags"].str.split(", ").explode().value_counts()
        st.warning(f"{flagged} of {int((ui.cells(ctx)['status'] == 'ok').sum())} measured cell(s) carry integrity flags ("
                   + ", ".join(f"{flag} {n}" for flag, n in counts.items()) + "): read their numbers with care.")
    st.dataframe(bad, hide_index=True)


ui.guard(body)
