"""Overview: the answer to "does shape drive latency?" per hardware class, then the measured
shapes (a user's own store) or the headline (the seed pair, the strongest inversions), which
shape variable drives latency, coverage, integrity."""
import pandas as pd
import streamlit as st

from analysis.budget import budget_comparisons, budget_sentences, budget_table, flips
from analysis.figures import budget_ratios, seed_pair_ratios, shape_latencies
from analysis.headline import earlier_protocol_note, headline_sections, split_by_regime
from analysis.intervals import RERUN_HEADER, interval_of
from analysis.rerun import NO_HISTORY
from dashboard import cache, data, sidebar, source, ui
from dashboard.text import interval, md, table_text


def store_offer(ctx: cache.Context) -> None:
    """On the reference data, a switch to the user's own runs when their store holds any."""
    if ctx.hosted or ctx.kind not in (source.BUNDLED,):
        return
    runs = source.store_runs(ctx.store)
    if not runs:
        return
    with st.container(border=True):
        st.markdown(f"Your store has **{runs}** run{'s' if runs != 1 else ''} ({md(ctx.store)}): show "
                    f"{'them' if runs != 1 else 'it'} beside the reference data, or alone.")
        beside, alone, _ = st.columns([2, 2, 3])
        if beside.button("Show beside the reference", key="overview_show_both", type="primary", use_container_width=True):
            sidebar.choose_dataset(source.COMBINED)
        if alone.button("Show my store only", key="overview_show_store", use_container_width=True):
            sidebar.choose_dataset(source.STORE)


def answer(ctx: cache.Context, all_protocols: bool):
    """The sentences, then (where the seed pair is not measured) the user's own shapes."""
    shapes = cache.shape_answer(ctx, all_protocols)
    for where, sentence in shapes.sentences:
        st.markdown(f"**{where}.** {md(sentence, limit=1000)}")
    return shapes


def own_shapes(shapes) -> None:
    """The measured shapes when no regime holds the seed pair (or the store's, beside the
    reference): latency per shape with its CI, fastest and slowest per group and the verdict
    or what is missing for one."""
    if shapes.cells.empty:
        return
    st.subheader("Your shapes")
    st.caption("Decode ms per token of each measured shape (median pooled over runs, 95% CI across runs, or across "
               "the rounds of one run: this run only) and its 95% re-run interval (where a new run's median is "
               "expected); per group the fastest and slowest shape and whether depth or parameter count explains "
               "latency, or what to measure before that can be told.")
    ui.chart(shape_latencies(shapes.cells), "overview_shapes", "decode ms per token per shape")
    st.dataframe(table_text(shapes.groups), hide_index=True)
    cells = shapes.cells.assign(**{
        "95% CI": [interval(lo, hi) for lo, hi in zip(shapes.cells["ci_low"], shapes.cells["ci_high"])],
        "CI across": shapes.cells["ci_kind"].map(interval_of),
        RERUN_HEADER: [interval(lo, hi) if lo == lo else NO_HISTORY
                       for lo, hi in zip(shapes.cells["rerun_ci_low"], shapes.cells["rerun_ci_high"])]})
    st.dataframe(table_text(cells[["regime", "group", "shape", "ms_per_token", "95% CI", "CI across", RERUN_HEADER,
                                   "n_runs"]].rename(columns={"ms_per_token": "ms/token", "n_runs": "runs"})),
                 hide_index=True)


def equal_parameters(headline, all_protocols: bool) -> None:
    """MobileLLM's question where the data holds shapes of equal parameter count: deep-and-thin
    against shallow-and-wide, and more against fewer KV heads, per device and backend."""
    comparisons = budget_comparisons(headline.pairs, all_protocols=all_protocols)
    if comparisons.empty:
        return
    st.subheader("At equal parameters: deep-and-thin or shallow-and-wide?")
    st.caption("Shapes of one family whose parameter counts lie within 20% of each other: the deepest against the "
               "shallowest (same KV heads), and more against fewer KV heads (same depth); decode time per token, "
               "ratio with its 95% CI (paired across rounds or runs).")
    for sentence in budget_sentences(comparisons):
        st.markdown(md(sentence, limit=2000))
    for flip in flips(comparisons):
        st.markdown(f"**The answer flips.** {md(flip, limit=2000)}")
    ui.chart(budget_ratios(comparisons), "overview_budget", "equal-parameter ratios per device and backend")
    st.dataframe(table_text(budget_table(comparisons)), hide_index=True)


def body(ctx: cache.Context) -> None:
    store_offer(ctx)
    if not ui.page_header(
        ctx, "Does shape drive latency?",
        "Depth x width (and KV heads) of small decoders (GPT-2, Llama, Qwen2) against measured inference latency. "
        "An *inversion* is a smaller model that runs slower than a larger one; "
        "it counts as significant at FDR 5% (Benjamini-Hochberg over each group's pairs; its 95% CI then lies above 1)."):
        _integrity(ctx)
        return

    all_protocols = st.toggle(
        "Include protocol-1 runs", value=False,
        help="Runs before host control and rounds (protocol 1): one unpinned pass per cell, so their cells move up to "
             "2x between runs. They stay in every other page; the headline leaves them out unless this is on.")
    headline = cache.headline(ctx, all_protocols)
    shapes = answer(ctx, all_protocols)
    sections = headline_sections(headline)
    if not len(headline.seed_pairs):  # a user's own shapes lead; the seed pair's "not measured" is no news
        own_shapes(shapes)
        sections = [section for section in sections[1:] if len(section[2])]
        note = earlier_protocol_note(headline)
        if note:  # why the reference pair may be missing: its regimes' runs are of protocol 1
            st.caption(md(note.strip(), limit=4000))
    elif ctx.kind == source.COMBINED:  # beside the reference: the store's own shapes first
        own_shapes(shapes.only(source.store_regimes(ctx.store)))
    for index, (title, text, table) in enumerate(sections):
        st.subheader(title)
        st.caption(md(text, limit=4000))  # the texts name regimes: data, shown as text
        if index == 0 and len(headline.seed_pairs):  # the seed pair, drawn before its table
            ui.chart(seed_pair_ratios(headline.seed_pairs), "overview_seed_pair",
                     "seed pair per regime, backend and dtype" + ("" if all_protocols else ", protocol 2"))
        if len(table):
            # a wide table per regime, under its full name: the ratio and its CI show without
            # scrolling, and no regime is cut before its "| host" part
            for regime, rows in split_by_regime(table):
                if regime is not None:
                    st.markdown(f"**{md(regime)}**")
                st.dataframe(rows, hide_index=True)  # already text: the rows README shows
    st.caption("The Inversions page ranks every pair of a group.")
    equal_parameters(headline, all_protocols)

    st.subheader("Which shape variable explains latency")
    fits = cache.fits(ctx)
    rows = [{"regime": f.group.get("regime"), "backend": f.group.get("backend"), "phase": f.group.get("phase"),
             "dtype": f.group.get("dtype"), "batch": f.group.get("batch_size"), "prompt": f.group.get("prompt_len"),
             "shapes": f.n_shapes, "driver": f.verdict.get("winner", "too few shapes") if f.status == "ok" else "too few shapes"}
            for f in fits]
    verdicts = pd.DataFrame(rows)
    if verdicts.empty:
        st.info("No groups to fit.")
    elif (verdicts["driver"] == "too few shapes").all():
        st.info(f"No group has enough shapes to fit: {md(shapes.groups['verdict'].iloc[0]) if len(shapes.groups) else ''}"
                " (the Depth vs width page says what each group lacks).")
    else:
        for regime, sub in verdicts.groupby("regime", sort=True):
            counts = sub["driver"].value_counts()
            fitted = int(len(sub) - counts.get("too few shapes", 0))
            text = ("no group has enough shapes to fit" if not fitted else
                    f"depth wins in **{counts.get('depth', 0)}**, parameter count in **{counts.get('params', 0)}**, "
                    f"inconclusive in **{counts.get('inconclusive', 0)}** of {fitted} fitted groups")
            st.markdown(f"**{md(regime)}**: {text}" + (f" ({counts.get('too few shapes', 0)} groups have too few shapes)"
                                                   if counts.get("too few shapes", 0) else ""))
        st.dataframe(table_text(verdicts), hide_index=True,
                     column_config={"driver": st.column_config.TextColumn("driver", help="verdict of the depth vs width fits")})

    st.subheader("Data coverage")
    cov = data.coverage(cache.cells(ctx))
    if len(ctx.options.get("regime", [])) == 1:
        st.caption("One hardware regime in this dataset: the Regimes page compares backends; "
                   "measure the same plan on another GPU to compare hardware.")
    st.dataframe(table_text(cov), hide_index=True)
    _integrity(ctx)


def _integrity(ctx: cache.Context) -> None:
    if ctx.ds_key == source.NOT_OPEN_KEY or not ctx.summary["cells"]:
        return  # no dataset open, or no cell in it: "no cell carries a flag" would say nothing true
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
    st.dataframe(table_text(bad), hide_index=True)


ui.guard(body)
