"""Overview: the headline (the seed pair, then the strongest inversions), which shape variable
drives latency, coverage, integrity."""
import pandas as pd
import streamlit as st

from analysis.figures import seed_pair_ratios
from analysis.headline import headline_sections, split_by_regime
from dashboard import cache, data, ui
from dashboard.text import md


def body(ctx: cache.Context) -> None:
    if not ui.page_header(
        ctx, "Does shape drive latency?",
        "Depth x width of small GPT-2s against measured inference latency. "
        "An *inversion* is a smaller model that runs slower than a larger one; "
        "it counts as significant at FDR 5% (Benjamini-Hochberg over each group's pairs; its 95% CI then lies above 1)."):
        _integrity(ctx)
        return

    all_protocols = st.toggle(
        "Include protocol-1 runs", value=False,
        help="Runs before host control and rounds (protocol 1): one unpinned pass per cell, so their cells move up to "
             "2x between runs. They stay in every other page; the headline leaves them out unless this is on.")
    headline = cache.headline(ctx, all_protocols)
    for index, (title, text, table) in enumerate(headline_sections(headline)):
        st.subheader(title)
        st.caption(text)
        if index == 0 and len(headline.seed_pairs):  # the seed pair, drawn before its table
            ui.chart(seed_pair_ratios(headline.seed_pairs), "overview_seed_pair",
                     "seed pair per regime, backend and dtype" + ("" if all_protocols else ", protocol 2"))
        if len(table):
            # a wide table per regime, under its full name: the ratio and its CI show without
            # scrolling, and no regime is cut before its "| host" part
            for regime, rows in split_by_regime(table):
                if regime is not None:
                    st.markdown(f"**{md(regime)}**")
                st.dataframe(rows, hide_index=True)
    st.caption("The Inversions page ranks every pair of a group.")

    st.subheader("Which shape variable explains latency")
    fits = cache.fits(ctx)
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
    cov = data.coverage(cache.cells(ctx))
    if len(ctx.options.get("regime", [])) == 1:
        st.caption("One hardware regime in this dataset: the Regimes page compares backends; "
                   "measure the same plan on another GPU to compare hardware.")
    st.dataframe(cov, hide_index=True)
    _integrity(ctx)


def _integrity(ctx: cache.Context) -> None:
    st.subheader("Integrity warnings")
    bad = data.integrity(cache.cells(ctx))
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
        st.warning(f"{flagged} of {int((cache.cells(ctx)['status'] == 'ok').sum())} measured cell(s) carry integrity flags ("
                   + ", ".join(f"{flag} {n}" for flag, n in counts.items()) + "): read their numbers with care.")
        for advice in data.flag_advice(counts.index):
            st.caption(advice)
    st.dataframe(bad, hide_index=True)


ui.guard(body)
