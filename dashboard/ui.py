"""The page helpers every page script calls: the guard that turns an error into a message, a
page's opening (title, running-run note, what to do when nothing matches) and its charts.

Thin on purpose: where the data comes from is dashboard.source, the cached results and the
Context are dashboard.cache, the sidebar and the filters in the URL are dashboard.sidebar; a
page reads widgets, asks those for results and draws them with these.
"""
from __future__ import annotations

import hashlib
import html
import logging
import re
import textwrap
import traceback
from typing import Callable

import streamlit as st

from analysis.figures import LEGEND_ROW_PX, legend_above
from dashboard import filters as flt
from dashboard.cache import Context, cell_frame
from dashboard.sidebar import context
from dashboard.source import NOT_OPEN_KEY, STORE
from dashboard.text import MISSING, md, table_frame

log = logging.getLogger("shapebench.dashboard")
# A chart's subtitle wraps at about what a half-width chart shows in one line, and a few lines at most.
SUBTITLE_CHARS, SUBTITLE_LINES = 90, 3
PLOTLY_MARGIN_T = 100  # plotly.js' top margin where a figure sets none


def guard(body: Callable[[Context], None]) -> None:
    """Run a page body; an unexpected error becomes a short st.error, never a traceback."""
    ctx = context()
    if ctx.problem:
        st.warning(md(ctx.problem))  # paths and error text come from the user and the data: text, not markdown
    try:
        body(ctx)
    except Exception as error:  # noqa: BLE001 - the page must stay usable
        log.error("page error: %s", traceback.format_exc())
        st.error(md(f"This view could not be drawn: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"))


def require_data(ctx: Context) -> bool:
    """Say what to do when nothing matches; True when there are ok cells to analyse."""
    if ctx.ds_key == NOT_OPEN_KEY:
        return False  # the warning above says why nothing can be shown: the data is not "empty"
    if ctx.summary["cells"] == 0:
        if ctx.kind == STORE:
            st.info("The store is empty. Start a plan on the **Run** page (or `python -m runner run PLAN`), "
                    "or open the bundled snapshot in the sidebar to explore real H100, H200 and CPU measurements.")
        else:
            st.info("This dataset holds no cells. Open the bundled snapshot in the sidebar.")
        return False
    if ctx.summary["ok"] == 0:
        st.warning("No cell finished ok yet: every cell failed or is unsupported. See Overview for their errors.")
        return False
    if cell_frame(ctx).empty:
        st.info(f"No measured cells match the filters ({flt.describe(ctx.selection)}). Clear a filter in the sidebar.")
        return False
    return True


def running_note(ctx: Context) -> None:
    if ctx.summary.get("running"):
        st.info(f"{ctx.summary['running']} run(s) in progress: results update as cells finish.")


def page_header(ctx: Context, title: str, caption: str | None = None) -> bool:
    """An analysis page's opening: title, what it computes, a running-run note, then
    `require_data`. True when the page has ok cells to show."""
    st.title(title)
    if caption:
        st.caption(caption)
    running_note(ctx)
    return require_data(ctx)


def chart(fig, key: str, shows: str, **kwargs):
    """st.plotly_chart whose exported PNG says what it shows.

    `shows` (regime, backend, phase, dtype...: what the page selected) becomes the figure's
    subtitle, or its title where it has none, and the name of the file the camera button saves,
    so an image taken out of the dashboard still names its hardware and backend. Plotly reads
    a few HTML tags in titles (links among them): the text from the data is HTML-escaped.
    """
    lines = textwrap.wrap(shows, SUBTITLE_CHARS, max_lines=SUBTITLE_LINES, placeholder=" …") or [""]
    text = "<br>".join(html.escape(line) for line in lines)  # wrapped, never cut at the chart's edge
    legend = LEGEND_ROW_PX if legend_above(fig) else 0  # a legend row between the titles and the plot
    if fig.layout.title.text:
        title_lines = 1 + str(fig.layout.title.text).count("<br>")
        fig.update_layout(title_subtitle_text=text)
        _top_margin(fig, 50 + 22 * (title_lines + len(lines)) + legend)
    else:
        fig.update_layout(title_text=text)
        _top_margin(fig, 40 + 22 * len(lines) + legend)
    filename = "shapebench-" + (re.sub(r"[^A-Za-z0-9.]+", "-", shows).strip("-")[:150] or "chart")
    config = {"toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}
    return st.plotly_chart(fig, key=key, config=config, **kwargs)


def table(frame, key: str | None = None, p_columns=(), **kwargs):
    """st.dataframe of a sortable page table: MISSING wherever a value is absent (never None,
    nan or <NA>), p- and q-values in `p_columns` as '<0.001'-style text (dashboard.text.table_frame),
    numbers kept as numbers for sorting and their column formats; no index."""
    return st.dataframe(table_frame(frame, p_columns), key=key, hide_index=True, placeholder=MISSING, **kwargs)


def _top_margin(fig, needed: int) -> None:
    """At least `needed` pixels above the plot. A figure of a set height grows by what its
    margin grows, so its plot area keeps the pixels it was laid out in (the seed-pair chart's
    title strips, a coefficient plot's rows) instead of being squeezed by the subtitle."""
    current = fig.layout.margin.t
    top = max(current or 0, needed)
    before = PLOTLY_MARGIN_T if current is None else current
    if fig.layout.height is not None and top > before:
        fig.update_layout(height=fig.layout.height + top - before)
    fig.update_layout(margin_t=top)


def upload_limit_mb(hosted: bool) -> int:
    """The largest snapshot upload accepted: hosted mode's upload limit, else the server's
    server.maxUploadSize (.streamlit/config.toml), so the uploader's text is the limit that applies."""
    from streamlit import config

    if hosted:
        from store.snapshot import UPLOAD_LIMITS

        return UPLOAD_LIMITS.max_bytes // 2**20
    return int(config.get_option("server.maxUploadSize"))


def sha256(data_bytes: bytes) -> str:
    return hashlib.sha256(data_bytes).hexdigest()


def group_label(key, ctx: Context) -> str:
    """A group's label (`key` an analysis.load.GroupKey), without the regime when only one
    regime is open (it is then noise)."""
    return key.short_label if len(ctx.options.get("regime", [])) <= 1 else key.label
