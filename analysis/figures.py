"""Plotly figures: pure functions of frames from `stats`, `regression`, `inversions`, `regimes`,
`reproducibility`, `why`.

Every point trace carries `customdata` whose first column is the cell_id, so a selection on
the dashboard maps back to rows. Point traces switch to WebGL (Scattergl) past
`WEBGL_THRESHOLD` points, where SVG gets slow in the browser.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from analysis.intervals import CI_NONE, interval_of
from analysis.shapes import names_architecture, pair_labels

WEBGL_THRESHOLD = 1000  # points; beyond this SVG scatter makes the page sluggish
WIDTH_COLORSCALE = "Viridis"
BAND_FILL = "rgba(99, 110, 250, 0.15)"


def _scatter(n_points: int) -> type:
    return go.Scattergl if n_points > WEBGL_THRESHOLD else go.Scatter


def _error_y(frame: pd.DataFrame) -> dict[str, Any]:
    """CI bars of the medians; an interval too wide to mean anything (`drawable_ci`) gets none,
    so a two-round cell's 1e-7..1e6 ms does not flatten every other point."""
    drawable = drawable_ci(frame["median_ci_low"], frame["median_ci_high"])
    return {
        "type": "data", "symmetric": False,
        "array": (frame["median_ci_high"] - frame["median"]).where(drawable, 0.0).to_numpy(),
        "arrayminus": (frame["median"] - frame["median_ci_low"]).where(drawable, 0.0).to_numpy(),
    }


def _points(frame: pd.DataFrame, x: str, name: str = "cells", color_by_width: bool = True) -> go.Scatter:
    marker: dict[str, Any] = {"size": 8}
    if color_by_width:
        marker.update(color=frame["n_embd"].to_numpy(), colorscale=WIDTH_COLORSCALE, showscale=True,
                      colorbar={"title": "width"})
    return _scatter(len(frame))(
        x=frame[x].to_numpy(), y=frame["median"].to_numpy(), mode="markers", name=name, marker=marker,
        error_y=_error_y(frame),
        customdata=_with_kind(_with_columns(frame, [*HOVER_CONTEXT, *HOVER_SHAPE]),
                              ["cell_id", "model_name", "n_layer", "n_embd", *HOVER_CONTEXT, *HOVER_SHAPE]),
        # a point names what it is a measurement of: a chart may mix regimes, backends, dtypes and families
        hovertemplate=("%{customdata[1]} (%{customdata[8]} %{customdata[2]} x %{customdata[3]}, "
                       "%{customdata[9]}/%{customdata[10]} heads)<br>%{customdata[4]} %{customdata[5]} "
                       "%{customdata[6]}<br>%{customdata[7]}<br>%{y:.3g} ms, CI %{customdata[11]}<extra></extra>"),
    )


HOVER_CONTEXT = ["backend", "dtype", "phase", "regime"]
# the architecture and heads of a point's shape: query heads / key-value heads
HOVER_SHAPE = ["family", "n_head", "n_kv_head"]


def _with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` with any of `columns` it lacks added as blanks (a hover then shows nothing there)."""
    missing = {c: "" for c in columns if c not in frame.columns}
    return frame.assign(**missing) if missing else frame


def _with_kind(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """`columns` then each row's CI kind (analysis.intervals), so a tooltip says what its error bar is across."""
    kind = frame["ci_kind"] if "ci_kind" in frame else pd.Series(CI_NONE, index=frame.index)
    return np.column_stack([frame[columns].to_numpy(dtype=object), kind.map(interval_of).to_numpy(dtype=object)])


def _band(band: pd.DataFrame, x: str, name: str, color: str | None = None) -> list[go.Scatter]:
    """A fitted line and its CI as a filled band (upper, then lower filled to it); `color`
    gives the line the colour of the points it fits."""
    xs = band[x].to_numpy()
    line = {"color": color} if color else {}
    return [
        go.Scatter(x=xs, y=band["mean_ci_upper"].to_numpy(), mode="lines", line={"width": 0},
                   name=f"{name} CI", showlegend=False, hoverinfo="skip"),
        go.Scatter(x=xs, y=band["mean_ci_lower"].to_numpy(), mode="lines", line={"width": 0},
                   fill="tonexty", fillcolor=BAND_FILL, name=f"{name} CI", hoverinfo="skip"),
        go.Scatter(x=xs, y=band["mean"].to_numpy(), mode="lines", name=name, line=line),
    ]


def width_color(width: float, widths) -> str:
    """The colour of `width` on the points' width scale (WIDTH_COLORSCALE over `widths`' range),
    so a fitted line per width matches its points."""
    low, high = float(np.min(widths)), float(np.max(widths))
    return sample_colorscale(WIDTH_COLORSCALE, [0.5 if high == low else (float(width) - low) / (high - low)])[0]


def latency_axis_title(phases) -> str:
    """What a latency axis holds: a decode sample is one step, so its unit is ms per token."""
    found = sorted({str(p) for p in phases})
    if found == ["decode"]:
        return "median decode latency (ms per token)"
    if len(found) == 1:
        return f"median {found[0]} latency (ms)"
    return "median latency (ms; decode: ms per token)"


def log_ticks(values) -> list[float] | None:
    """Tick values for a log axis over `values`: 1-2-5 per decade where that gives at most 10
    labels, else the decades; None without positive values (or `values` None: plotly then picks)."""
    values = np.asarray(pd.Series(values if values is not None else [], dtype="float64").dropna())
    values = values[values > 0]
    if not len(values):
        return None
    lo, hi = np.floor(np.log10(values.min())), np.ceil(np.log10(values.max()))
    decades = [10.0 ** e for e in np.arange(lo, hi + 1)]
    fine = [m * d for d in decades for m in (1, 2, 5) if values.min() / 1.5 <= m * d <= values.max() * 1.5]
    return fine if 2 <= len(fine) <= 10 else decades


def spaced_log_ticks(low: float, high: float, candidates, max_ticks: int = 8) -> list[float]:
    """Of `candidates`, those within [low, high], thinned so that neighbours stay at least
    1/max_ticks of the axis apart on a log scale (their labels then never overlap); 1 is
    always kept when in range, as the line the eye reads a ratio against."""
    inside = sorted(t for t in candidates if low <= t <= high)
    if not inside:
        return [1.0]
    gap = max(np.log10(high / low), 1e-9) / max_ticks
    kept: list[float] = []
    for tick in sorted(inside, key=lambda t: (t != 1.0, abs(np.log10(t)))):  # 1 first, then outward
        if all(abs(np.log10(tick / other)) >= gap for other in kept):
            kept.append(tick)
    return sorted(kept)


def log_axis(title: str, tickvals=None) -> dict[str, Any]:
    """A log axis labelled at `tickvals` (the measured depths, or `log_ticks` of the data), each
    label a full value with its grid line: plotly's default labels the 2s and 5s of each decade
    as small bare digits, which read as values of their own."""
    axis: dict[str, Any] = {"title": title, "type": "log"}
    if tickvals is not None:
        axis.update(tickvals=list(tickvals), ticktext=[f"{v:g}" for v in tickvals])
    else:
        axis["dtick"] = 1
    return axis


def _layout(fig: go.Figure, title: str, x_title: str, log: bool, phases=(), x_values=None, y_values=None,
            x_ticks=None) -> go.Figure:
    if log:
        xaxis = log_axis(x_title, x_ticks if x_ticks is not None else log_ticks(x_values))
        yaxis = log_axis(latency_axis_title(phases), log_ticks(y_values))
    else:
        xaxis, yaxis = {"title": x_title, "type": "linear"}, {"title": latency_axis_title(phases), "type": "linear"}
    fig.update_layout(title=title, xaxis=xaxis, yaxis=yaxis, template="plotly_white")
    return fig


def latency_vs_params(stats: pd.DataFrame, bands: pd.DataFrame | None = None, scale: str = "log") -> go.Figure:
    """Median latency per cell against parameter count, coloured by width, with CI bars.

    `stats` holds one group's cell statistics; `bands` (from `GroupFit.bands`) adds the
    params-only fit of `scale` with its CI (on the log scale a CI of the median).
    """
    frame = stats.assign(params_m=stats["params"] / 1e6)
    fig = go.Figure([_points(frame, "params_m")])
    if bands is not None and not bands.empty:
        fig.add_traces(_band(bands[(bands["model"] == "params") & (bands["scale"] == scale)], "params_m", f"params-only fit ({scale})"))
    return _layout(fig, "Latency vs parameters", "parameters (millions)", scale == "log", stats.get("phase", ()),
                   x_values=frame["params_m"], y_values=_latency_extent(stats))


def latency_vs_depth(stats: pd.DataFrame, bands: pd.DataFrame | None = None, scale: str = "log") -> go.Figure:
    """Median latency per cell against depth, coloured by width, with the depth + width fit per width."""
    fig = go.Figure([_points(stats, "n_layer")])
    if bands is not None and not bands.empty:
        sel = bands[(bands["model"] == "depth+width") & (bands["scale"] == scale)]
        for width, band in sel.groupby("width", sort=True):
            fig.add_traces(_band(band, "depth", f"depth + width fit, width {width:g}", width_color(width, stats["n_embd"])))
    depths = sorted({int(d) for d in stats["n_layer"].dropna()})  # the points' x: always there
    return _layout(fig, "Latency vs depth", "depth (layers)", scale == "log", stats.get("phase", ()),
                   y_values=_latency_extent(stats), x_ticks=depths or None)


def _latency_extent(stats: pd.DataFrame) -> pd.Series:
    """Every value the latency axis must hold: medians and their drawable CI bounds."""
    if not {"median_ci_low", "median_ci_high"} <= set(stats.columns):
        return stats["median"]
    drawable = drawable_ci(stats["median_ci_low"], stats["median_ci_high"])
    return pd.concat([stats["median"], stats["median_ci_low"][drawable], stats["median_ci_high"][drawable]])


def comparison_label(comparison: dict[str, Any]) -> str:
    """A comparison group named by what it holds fixed, short: "hf-eager decode float32 b1 p128"."""
    short = {"batch_size": "b", "prompt_len": "p", "gen_len": "g"}
    return " ".join(f"{short[k]}{v}" if k in short else str(v) for k, v in comparison.items() if v is not None)


# A legend above the plot is one row of entries, each a symbol (about 40 px with its gap) and
# its name (about 7 px a character at plotly's 12 px font); a row up to LEGEND_ROW_WIDTH_PX
# fits a dashboard chart on a laptop's screen without wrapping into the title above it.
LEGEND_ENTRY_PX, LEGEND_CHAR_PX, LEGEND_ROW_WIDTH_PX = 40, 7, 700
LEGEND_ROW_PX = 28  # the height of that row, which the figure's top margin must hold
TITLE_MARGIN_PX = 60  # a one-line figure title above the plot


def legend_placement(names, title: str | None = None) -> dict[str, Any]:
    """Where a legend of `names` reads well on a chart: one horizontal row above the plot,
    from its left edge, when the names fit on a line (LEGEND_ROW_WIDTH_PX); else a column at
    the top right beside the plot's first rows. Never under the plot: under a tall chart it
    lands thousands of pixels away from the rows read first. `title` leads the entries."""
    names = [str(name) for name in names]
    width = LEGEND_ENTRY_PX * len(names) + LEGEND_CHAR_PX * (sum(map(len, names)) + len(title or ""))
    placement: dict[str, Any] = {"title": {"text": title}} if title else {}
    if width <= LEGEND_ROW_WIDTH_PX:
        return placement | {"orientation": "h", "x": 0, "xanchor": "left", "y": 1, "yanchor": "bottom"}
    return placement | {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"}


def legend_above(fig: go.Figure) -> bool:
    """Whether the figure's legend sits in the top margin (legend_placement's row): the margin
    then holds LEGEND_ROW_PX for it below the title."""
    legend = fig.layout.legend
    return bool(fig.layout.showlegend is not False and legend.orientation == "h" and legend.y is not None
                and legend.y >= 1 and legend.yanchor == "bottom")


def level_colors(levels) -> dict[str, str]:
    """One colour per level (regime or backend), by sorted name: every chart of one comparison
    colours a level alike, also where it shows only some of the levels."""
    palette = qualitative.Plotly
    return {level: palette[i % len(palette)] for i, level in enumerate(sorted({str(v) for v in levels}))}


def coefficient_plot(comparisons: list[dict[str, Any]], variable: str = "depth") -> go.Figure:
    """Depth (or width) elasticity per level with 95% CIs: one row per comparison group, one
    colour per level (regime or backend, `level_colors`), the levels of a row side by side.

    One trace per level, so the legend names each regime or backend once however many
    groups there are (a trace per group repeated the same names and stacked every group's
    points on the same few rows). The legend sits at the top (`legend_placement`): the chart
    grows with the groups, to thousands of pixels.
    """
    ok = [comp for comp in comparisons if comp.get("status") == "ok"]
    rows = []
    for comp in ok:
        label = comparison_label(comp["comparison"])
        for lv in comp["levels"]:
            rows.append({"group": label, "level": str(lv["level"]), "n_cells": lv["n_cells"],
                         "effect": lv[f"{variable}_effect"], "low": lv[f"{variable}_ci_low"],
                         "high": lv[f"{variable}_ci_high"]})
    frame = pd.DataFrame(rows, columns=["group", "level", "n_cells", "effect", "low", "high"])
    colors = level_colors(frame["level"])
    fig = go.Figure()
    for level, sub in frame.groupby("level", sort=True):
        fig.add_trace(go.Scatter(
            x=sub["effect"], y=sub["group"], mode="markers", name=level, orientation="h",
            offsetgroup=level, legendgroup=level, marker={"size": 8, "color": colors[level]},
            error_x={"type": "data", "symmetric": False, "array": (sub["high"] - sub["effect"]).to_numpy(),
                     "arrayminus": (sub["effect"] - sub["low"]).to_numpy()},
            customdata=np.column_stack([sub["level"], sub["n_cells"]]),
            hovertemplate="%{y}<br>%{customdata[0]}: %{x:.3g} (%{customdata[1]} cells)<extra></extra>",
        ))
    fig.add_vline(x=0, line_dash="dot")
    factor = ok[0]["factor"] if ok else "level"
    n_rows, n_levels = frame["group"].nunique(), max(1, frame["level"].nunique())
    legend = legend_placement(colors, factor)
    top = TITLE_MARGIN_PX + (LEGEND_ROW_PX if legend["orientation"] == "h" else 0)
    fig.update_layout(title=f"{variable.capitalize()} elasticity per {factor} (95% CI)",
                      xaxis_title=f"d log latency / d log {variable}", yaxis={"title": None, "autorange": "reversed"},
                      template="plotly_white", scattermode="group", scattergap=0.3,
                      height=top + 80 + n_rows * max(28, 12 * n_levels), margin={"t": top, "b": 80},
                      legend=legend)
    return fig


def _rerun_texts(rows: pd.DataFrame) -> list[str]:
    """Each row's re-run interval as a tooltip says it ("no history" where it has none)."""
    from analysis.rerun import rerun_text

    nan = pd.Series(np.nan, index=rows.index)
    return [rerun_text(lo, hi) for lo, hi in zip(rows.get("rerun_ci_low", nan), rows.get("rerun_ci_high", nan))]


# The seed-pair chart is laid out in pixels, so a regime's title always has its own strip
# above its panel whatever the number of regimes (a fraction of the figure for the gap, as
# make_subplots' vertical_spacing, shrinks as regimes are added until titles cover rows).
SEED_ROW_PX = 24  # one backend/dtype row: a marker with its CI bar and a tick label
SEED_PANEL_PAD_PX = 12  # above and below a panel's rows, so a marker never touches the title strip
SEED_TITLE_PX = 30  # the strip above each panel: a 13 px title (about 17 px tall) and air
SEED_TITLE_FONT_PX = 13
SEED_MARGIN = {"t": 70, "b": 70, "r": 30}  # title; the x axis' ticks and title


def seed_pair_ratios(seed_pairs: pd.DataFrame) -> go.Figure:
    """The seed pair's ratio (deep-narrow / shallow-wide decode time) per regime, backend and
    dtype with its 95% CI, on a log axis around 1: which side of 1 each lands on, and how sure,
    reads faster than the table. A ratio with no CI is a hollow marker without bars.

    `seed_pairs` is `analysis.headline.Headline.seed_pairs`; one panel per regime, the x axis
    shared. Each panel is titled with its regime's full name (so no regime is cut) in a strip
    of SEED_TITLE_PX above it, inside the plot area: the titles are the first annotations,
    at the top of their panel's domain.
    """
    regimes = sorted(seed_pairs["regime"].unique()) if len(seed_pairs) else []
    heights = [max(1, int((seed_pairs["regime"] == r).sum())) for r in regimes] or [1]
    panels = [SEED_ROW_PX * h + 2 * SEED_PANEL_PAD_PX for h in heights]
    plot_px = sum(panels) + SEED_TITLE_PX * len(panels)
    fig = make_subplots(rows=len(heights), cols=1, shared_xaxes=True)
    top = plot_px
    for row, panel in enumerate(panels, start=1):  # top to bottom, in pixels from the plot area's bottom
        top -= SEED_TITLE_PX
        fig.update_yaxes(domain=[(top - panel) / plot_px, top / plot_px], row=row, col=1)
        top -= panel
    for row, regime in enumerate(regimes, start=1):
        domain = fig.get_subplot(row, 1).yaxis.domain
        fig.add_annotation(text=html.escape(str(regime)), x=0.5, xref="paper", xanchor="center", y=domain[1], yref="paper",
                           yanchor="bottom", showarrow=False, font={"size": SEED_TITLE_FONT_PX})
    for row, regime in enumerate(regimes, start=1):
        rows = seed_pairs[seed_pairs["regime"] == regime].sort_values(["backend", "dtype"])
        has_ci = rows["ratio_ci_low"].notna() & rows["ratio_ci_high"].notna()
        low = rows["ratio_ci_low"].where(has_ci, rows["ratio"])
        high = rows["ratio_ci_high"].where(has_ci, rows["ratio"])
        fig.add_trace(go.Scatter(
            x=rows["ratio"], y=(rows["backend"] + " " + rows["dtype"]).tolist(), mode="markers", name=str(regime),
            marker={"symbol": np.where(has_ci, "circle", "circle-open"), "size": 9, "color": qualitative.Plotly[(row - 1) % len(qualitative.Plotly)]},
            error_x={"type": "data", "symmetric": False, "array": (high - rows["ratio"]).to_numpy(),
                     "arrayminus": (rows["ratio"] - low).to_numpy()},
            customdata=np.column_stack([rows["ci_kind"].map(interval_of), rows["n_runs_a"], rows["n_runs_b"],
                                        _rerun_texts(rows)]),
            hovertemplate=f"{regime}<br>%{{y}}: %{{x:.2f}}x<br>95% CI %{{customdata[0]}}, runs %{{customdata[1]}} / "
                          "%{customdata[2]}<br>95% re-run interval %{customdata[3]}<extra></extra>",
        ), row=row, col=1)
        fig.add_vline(x=1, line_dash="dot", row=row, col=1)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
    ticks = log_ticks([1.0, *seed_pairs["ratio"], *seed_pairs["ratio_ci_low"], *seed_pairs["ratio_ci_high"]])  # 1x always
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}x" for t in ticks])
    fig.update_xaxes(title_text="gpt2-5m / gpt2-25m decode ms per token (log; 1x = same speed)", row=len(heights), col=1)
    fig.update_layout(title="Seed pair: above 1x the deep, narrow model is slower (95% CI; hollow: no CI)",
                      template="plotly_white", showlegend=False,
                      height=SEED_MARGIN["t"] + plot_px + SEED_MARGIN["b"], margin=SEED_MARGIN)
    return fig


# A CI wider than this factor (high / low) says only "unknown": two rounds give a t interval
# from 1e-7 to 1e6 ms. It is shown as a hollow marker without bars, not drawn across the axis.
DRAWABLE_CI_FACTOR = 100.0


def drawable_ci(low: pd.Series, high: pd.Series) -> pd.Series:
    """Which intervals can be drawn: finite, positive, and at most DRAWABLE_CI_FACTOR wide."""
    low, high = pd.to_numeric(low, errors="coerce"), pd.to_numeric(high, errors="coerce")
    return (low > 0) & (high > 0) & np.isfinite(low) & np.isfinite(high) & (high / low <= DRAWABLE_CI_FACTOR)


def shape_latencies(cells: pd.DataFrame) -> go.Figure:
    """Decode ms per token of each measured shape with its 95% CI, one trace per group (backend,
    dtype, batch, prompt, generated tokens; its regime too when several are open), on a log axis:
    a user's own shapes, fastest at the top. `cells` is `analysis.shape_answer.decode_cells`.

    A CI too wide to mean anything (`drawable_ci`) is a hollow marker without bars.
    """
    fig = go.Figure()
    several_regimes = cells["regime"].nunique() > 1 if len(cells) else False
    order = cells.groupby("shape")["ms_per_token"].min().sort_values().index.tolist() if len(cells) else []
    for index, ((regime, group), rows) in enumerate(cells.groupby(["regime", "group"], sort=True)):
        ok = drawable_ci(rows["ci_low"], rows["ci_high"])
        low = rows["ci_low"].where(ok, rows["ms_per_token"])
        high = rows["ci_high"].where(ok, rows["ms_per_token"])
        ci_text = [f"{lo:.3g}-{hi:.3g} ms" if good else "too wide to draw" for lo, hi, good
                   in zip(rows["ci_low"], rows["ci_high"], ok)]
        fig.add_trace(go.Scatter(
            x=rows["ms_per_token"], y=rows["shape"], mode="markers",
            name=f"{group} · {regime}" if several_regimes else group,
            marker={"size": 10, "symbol": np.where(ok, "circle", "circle-open"),
                    "color": qualitative.Plotly[index % len(qualitative.Plotly)]},
            error_x={"type": "data", "symmetric": False, "array": (high - rows["ms_per_token"]).to_numpy(),
                     "arrayminus": (rows["ms_per_token"] - low).to_numpy()},
            customdata=np.column_stack([ci_text, rows["regime"]]),
            hovertemplate="%{y}<br>%{x:.3g} ms/token, 95% CI %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
        ))
    values = [*cells["ms_per_token"], *cells["ci_low"].where(drawable_ci(cells["ci_low"], cells["ci_high"])),
              *cells["ci_high"].where(drawable_ci(cells["ci_low"], cells["ci_high"]))] if len(cells) else []
    ticks = log_ticks(values)
    xaxis = log_axis("decode ms per token (log)", ticks)
    if ticks:  # the axis reaches the outer ticks, so a narrow spread still reads against two labels or more
        xaxis["range"] = [float(np.log10(min(min(ticks), np.nanmin(values)) / 1.1)),
                          float(np.log10(max(max(ticks), np.nanmax(values)) * 1.1))]
    fig.update_layout(
        title="Decode ms per token of each measured shape (95% CI; hollow: CI too wide to draw)",
        xaxis=xaxis,
        yaxis={"title": None, "categoryorder": "array", "categoryarray": order, "autorange": "reversed"},
        template="plotly_white", height=160 + 34 * max(1, len(order)), legend={"orientation": "h", "y": -0.25},
    )
    return fig


def inversion_heatmap(pairs: pd.DataFrame) -> go.Figure:
    """Ratio median(smaller) / median(larger) for every pair of one group.

    Rows: the smaller model (by params), columns: the larger, both ordered by params; a
    cell above 1 is an inversion, and significant ones (at FDR 5%, see analysis.inversions) carry a
    marker. `pairs` comes from `pair_ratios(..., inversions_only=False)` for one group.
    """
    rows = pairs.drop_duplicates("cell_id_a").sort_values("params_a")
    cols = pairs.drop_duplicates("cell_id_b").sort_values("params_b")
    matrix = pairs.pivot_table(index="model_name_a", columns="model_name_b", values="ratio", aggfunc="first")
    matrix = matrix.reindex(index=rows["model_name_a"].unique(), columns=cols["model_name_b"].unique())
    # Colour on log2(ratio) centred on 0 (ratio 1), so 2x slower and 2x faster sit equally far
    # from neutral and the scale never shows impossible negative ratios; the ratio itself is
    # the cell's text (hover), the colour bar is labelled in ratios.
    ratio = matrix.to_numpy(dtype=float)
    log_ratio = np.log2(ratio)
    finite = np.isfinite(log_ratio)
    span = float(np.ceil(np.abs(log_ratio[finite]).max())) if finite.any() else 1.0
    span = max(span, 1.0)
    ticks = np.arange(-span, span + 1)
    # the hover names both shapes in full (analysis.shapes.pair_labels), the axes by name
    labelled = pairs.assign(hover=["smaller " + " / larger ".join(pair_labels(row)) for row in pairs.itertuples()])
    hover = labelled.pivot_table(index="model_name_a", columns="model_name_b", values="hover", aggfunc="first")
    hover = hover.reindex(index=matrix.index, columns=matrix.columns).fillna("")
    fig = go.Figure(go.Heatmap(
        z=log_ratio, text=ratio, x=list(matrix.columns), y=list(matrix.index), name="ratio",
        zmin=-span, zmax=span, zmid=0.0, colorscale="RdBu_r",
        colorbar={"title": "ratio", "tickvals": ticks,
                  "ticktext": [f"{2.0 ** t:g}" if t >= 0 else f"1/{2.0 ** -t:g}" for t in ticks]},
        customdata=hover.to_numpy(dtype=object),
        hovertemplate="%{customdata}: %{text:.2f}x<extra></extra>",
    ))
    sig = pairs[pairs["significant"]]
    fig.add_trace(go.Scatter(
        x=sig["model_name_b"].to_numpy(), y=sig["model_name_a"].to_numpy(), mode="markers+text", text=["*"] * len(sig),
        marker={"symbol": "circle-open", "size": 10, "color": "black"}, name="significant inversion",
        customdata=np.column_stack([_with_kind(sig, ["cell_id_a", "cell_id_b", "ratio_ci_low", "ratio_ci_high"]),
                                    _rerun_texts(sig)]),
        hovertemplate="%{y} slower than %{x}: 95% CI [%{customdata[2]:.2f}, %{customdata[3]:.2f}] %{customdata[4]}"
                      "<br>95% re-run interval %{customdata[5]}<extra></extra>",
    ))
    fig.update_layout(title="Latency inversions: median(smaller) / median(larger)",
                      xaxis_title="larger model", yaxis_title="smaller model", template="plotly_white")
    return fig


def sample_distributions(samples: pd.DataFrame, kind: str = "box") -> go.Figure:
    """Raw sample distribution per cell (one box or violin per cell), customdata = cell_id.

    `samples` needs cell_id and latency_ms; a `label` column (e.g. model name) names the
    boxes, else the cell_id does. One trace per phase keeps the figure light.
    """
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}")
    trace = go.Box if kind == "box" else go.Violin
    label = samples["label"] if "label" in samples else samples["cell_id"]
    fig = go.Figure()
    phases = samples["phase"] if "phase" in samples else pd.Series("samples", index=samples.index)
    for phase in pd.unique(phases):
        sel = (phases == phase).to_numpy()
        extra = {"boxpoints": False} if kind == "box" else {"points": False}
        fig.add_trace(trace(x=label[sel].to_numpy(), y=samples["latency_ms"][sel].to_numpy(), name=str(phase),
                            customdata=samples["cell_id"][sel].to_numpy()[:, None], **extra))
    fig.update_layout(title="Sample distributions per cell", yaxis_title="latency (ms)", template="plotly_white",
                      boxmode="group", violinmode="group")
    return fig


def regime_comparison(stats: pd.DataFrame, factor: str = "regime", levels=None) -> go.Figure:
    """Median latency vs params, one trace per regime (or backend), log axes, CI bars.

    `levels`: every level of the comparison (default: those in `stats`), so each level has the
    colour `coefficient_plot` gives it (`level_colors`) even where this chart shows fewer.
    """
    fig = go.Figure()
    frame = stats.assign(params_m=stats["params"] / 1e6)
    colors = level_colors(levels if levels is not None else frame[factor].unique())
    for level, sub in frame.groupby(factor, sort=True):
        sub = sub.sort_values("params_m")
        trace = _points(sub, "params_m", name=str(level), color_by_width=False)
        trace.marker.color = colors.get(str(level))
        fig.add_trace(trace)
    legend = legend_placement([t.name for t in fig.data], factor)
    fig.update_layout(legend=legend, margin={"t": TITLE_MARGIN_PX + (LEGEND_ROW_PX if legend["orientation"] == "h" else 0)})
    # ticks from the data: medians within one decade would get no labelled tick at all
    return _layout(fig, f"Latency vs parameters per {factor}", "parameters (millions)", True, stats.get("phase", ()),
                   x_values=frame["params_m"], y_values=_latency_extent(stats))


def run_medians_figure(runs: pd.DataFrame, label: str = "model_name") -> go.Figure:
    """Each run's median with its within-run CI, side by side per cell; irreproducible cells marked.

    `runs` comes from `reproducibility.run_medians` (one phase and group is easiest to read):
    one trace per run (colour), cells on x ordered by params, points grouped side by side.
    Cells flagged `irreproducible` get a red cross above their highest CI and a "!" in their
    label. customdata: cell_id (run traces), repeat_id (the marker trace).
    """
    frame = runs.sort_values(["params", label, "run_id"]) if len(runs) else runs
    flagged = frame[frame["irreproducible"]] if len(frame) else frame
    bad = set(flagged[label])
    names = {v: (f"{v} !" if v in bad else str(v)) for v in pd.unique(frame[label])} if len(frame) else {}
    fig = go.Figure()
    for run_id, sub in frame.groupby("run_id", sort=True):
        fig.add_trace(go.Scatter(
            x=[names[v] for v in sub[label]], y=sub["median"].to_numpy(), mode="markers", name=str(run_id),
            offsetgroup=str(run_id), error_y=_error_y(sub),
            customdata=_with_columns(sub, HOVER_SHAPE)[["cell_id", "run_id", "phase", "n_layer", "n_embd",
                                                         *HOVER_SHAPE]].to_numpy(dtype=object),
            hovertemplate="%{x} (%{customdata[5]} %{customdata[3]} x %{customdata[4]}, %{customdata[6]}/"
                          "%{customdata[7]} heads)<br>%{customdata[1]}: %{y:.3g} ms<extra></extra>",
        ))
    if len(flagged):
        top = flagged.groupby([label, "phase"], sort=False).agg(y=("median_ci_high", "max"), repeat_id=("repeat_id", "first")).reset_index()
        fig.add_trace(go.Scatter(
            x=[names[v] for v in top[label]], y=top["y"].to_numpy() * 1.05, mode="markers", name="irreproducible",
            marker={"symbol": "x", "size": 10, "color": "red"}, customdata=top[["repeat_id"]].to_numpy(),
            hovertemplate="%{x}: run medians differ beyond their CIs<extra></extra>",
        ))
    fig.update_layout(title="Median per run with within-run 95% CI (! = irreproducible)", xaxis_title="cell",
                      yaxis=log_axis(latency_axis_title(runs.get("phase", ())), log_ticks(_latency_extent(runs))),
                      scattermode="group",
                      template="plotly_white", legend_title_text="run")
    return fig


WHY_COMPONENTS = (  # (floor column, legend name, colour): the launch-floor model's terms, then the rest
    ("launch_ms", "launch", "#EF553B"),
    ("memory_ms", "memory (weights + KV / bandwidth)", "#636EFA"),
    ("compute_ms", "compute (FLOPs / matmul peak)", "#00CC96"),
    ("unexplained_ms", "unexplained", "#C8C8C8"),
)
# The same split once launches are priced at their fitted cost (analysis.why.paid_split): the
# verdict then comes from these bars, so a launch-bound verdict stands on a tall launch bar.
PAID_COMPONENTS = (
    ("launch_paid_ms", "launch (count x fitted cost per launch)", "#EF553B"),
    ("memory_ms", "memory (weights + KV / bandwidth)", "#636EFA"),
    ("compute_ms", "compute (FLOPs / matmul peak)", "#00CC96"),
    ("rest_ms", "not explained", "#C8C8C8"),
)


def _shape_labels(frame: pd.DataFrame) -> list[str]:
    """`8x512` for a grid shape, `gpt2-50m (8x512)` for a named one; where a shape of another
    family than GPT-2 is shown, every label names its family and query / KV heads
    (`llama-kv1 (llama 8x512, 8/1 heads)`); repeats get a suffix.

    The suffix is the end of the run id (`[c7e33a]`): the same cell measured in two runs has
    the same cell key, so only the run tells the bars apart (equal labels would stack).
    """
    shape = frame["n_layer"].astype(str) + "x" + frame["n_embd"].astype(str)
    names = frame["model_name"].astype(str)
    if "family" in frame and names_architecture(frame["family"].unique()):
        heads = frame["n_head"].astype(str) + "/" + frame.get("n_kv_head", frame["n_head"]).astype(str) + " heads"
        full = frame["family"].astype(str) + " " + shape + ", " + heads
        labels = np.where(names == shape, full, names + " (" + full + ")")
    else:
        labels = np.where(names == shape, shape, names + " (" + shape + ")")
    dup = pd.Series(labels).duplicated(keep=False).to_numpy()
    suffix = frame["cell_id"].astype(str).str.split("/").str[0].str[-6:].to_numpy()
    return [f"{lab} [{s}]" if d else str(lab) for lab, d, s in zip(labels, dup, suffix)]


def why_components(floor: pd.DataFrame) -> go.Figure:
    """Stacked bars per shape of one group: launch, memory, compute and unexplained ms per decode step.

    `floor` comes from `why.launch_floor` for one (regime, backend, dtype, workload), or from
    `why.paid_split` (launches at their fitted cost, `PAID_COMPONENTS`, and its verdict);
    shapes run left to right by depth, then width. A black marker is the measured median, so
    a prediction above it (nothing unexplained) stays visible. customdata: cell_id, verdict,
    measured / predicted.
    """
    paid = "launch_paid_ms" in floor.columns
    frame = floor.sort_values(["n_layer", "n_embd", "model_name", "cell_id"]) if len(floor) else floor
    labels = _shape_labels(frame) if len(frame) else []
    verdict = "paid_verdict" if paid else "verdict"
    custom = frame[["cell_id", verdict, "measured_over_predicted"]].to_numpy() if len(frame) else None
    fig = go.Figure()
    for column, name, colour in PAID_COMPONENTS if paid else WHY_COMPONENTS:
        fig.add_trace(go.Bar(
            x=labels, y=frame[column].to_numpy() if len(frame) else [], name=name, marker_color=colour,
            customdata=custom,
            hovertemplate=f"%{{x}}<br>{name}: %{{y:.3g}} ms<br>%{{customdata[1]}}, measured / predicted "
                          "%{customdata[2]:.2f}<extra></extra>",
        ))
    fig.add_trace(go.Scatter(
        x=labels, y=frame["decode_ms"].to_numpy() if len(frame) else [], mode="markers", name="measured median",
        marker={"symbol": "line-ew-open", "size": 14, "color": "black", "line": {"width": 2}},
        customdata=custom, hovertemplate="%{x}<br>measured %{y:.3g} ms<extra></extra>",
    ))
    fig.update_layout(barmode="stack", title="Where a decode step's time goes" + (
                          " (launches at their fitted cost)" if paid else " (launch-floor model)"),
                      xaxis_title="shape (depth x width), by depth then width", yaxis_title="ms per decode step",
                      template="plotly_white", legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom",
                                                       "traceorder": "normal"})
    return fig


def kernels_vs_depth(floor: pd.DataFrame, color: str = "backend") -> go.Figure:
    """Device kernels per decode step (one token per sequence) against depth.

    `color="backend"`: one trace per backend; `color="n_embd"`: one trace, points coloured by
    width. customdata: cell_id, model_name, n_embd, host launches (a CUDA graph runs many
    kernels from one launch).
    """
    if color not in ("backend", "n_embd"):
        raise ValueError(f"color must be 'backend' or 'n_embd', got {color!r}")
    frame = _with_columns(floor.sort_values(["n_layer", "n_embd"]) if len(floor) else floor, HOVER_SHAPE)
    cols = ["cell_id", "model_name", "n_embd", "launches", *HOVER_SHAPE]
    hover = ("%{customdata[1]} (%{customdata[4]}): %{x} layers x %{customdata[2]}, %{customdata[5]}/%{customdata[6]} "
             "heads<br>%{y} kernels, %{customdata[3]} launches<extra></extra>")
    fig = go.Figure()
    if color == "backend":
        for backend, sub in frame.groupby("backend", sort=True):
            fig.add_trace(_scatter(len(sub))(
                x=sub["n_layer"].to_numpy(), y=sub["kernels"].to_numpy(), mode="markers", name=str(backend),
                marker={"size": 9}, customdata=sub[cols].to_numpy(dtype=object), hovertemplate=hover))
    else:
        fig.add_trace(_scatter(len(frame))(
            x=frame["n_layer"].to_numpy(), y=frame["kernels"].to_numpy(), mode="markers", name="cells",
            marker={"size": 9, "color": frame["n_embd"].to_numpy(), "colorscale": WIDTH_COLORSCALE, "showscale": True,
                    "colorbar": {"title": "width"}},
            customdata=frame[cols].to_numpy(dtype=object), hovertemplate=hover))
    fig.update_layout(title="Kernels per token (decode step) against depth", xaxis_title="depth (layers)",
                      yaxis_title="device kernels per decode step", template="plotly_white")
    return fig


def budget_ratios(comparisons: pd.DataFrame) -> go.Figure:
    """At equal parameters (`analysis.budget.budget_comparisons`): deep / shallow and more / fewer
    KV heads decode time per group, with the pair's 95% CI on a log axis around 1, one panel per
    comparison. Above 1x the deeper shape (or the one with more KV heads) is slower; the hover
    names both shapes in full. A CI too wide to draw (`drawable_ci`) is a hollow marker."""
    kinds = [kind for kind in ("depth", "KV heads") if (comparisons["comparison"] == kind).any()] or ["depth"]
    heights = [max(1, int((comparisons["comparison"] == kind).sum())) for kind in kinds]
    titles = {"depth": "deep / shallow at equal parameters", "KV heads": "more / fewer KV heads at equal depth"}
    fig = make_subplots(rows=len(kinds), cols=1, shared_xaxes=True, row_heights=heights,
                        vertical_spacing=0.25 / len(kinds), subplot_titles=[titles[k] for k in kinds])
    for row, kind in enumerate(kinds, start=1):
        rows = comparisons[comparisons["comparison"] == kind].sort_values(["regime", "backend", "dtype", "batch_size"])
        if rows.empty:
            continue
        ok = drawable_ci(rows["ci_low"], rows["ci_high"])
        low, high = rows["ci_low"].where(ok, rows["ratio"]), rows["ci_high"].where(ok, rows["ratio"])
        device = rows["regime"].str.split(" | ", regex=False).str[0]
        labels = (device + " · " + rows["backend"] + " " + rows["dtype"] + " b" + rows["batch_size"].astype(str)
                  + (" · kv " + rows["first_kv_heads"].astype(str) if kind == "depth"
                     else " · " + rows["first_layers"].astype(str) + " layers"))
        fig.add_trace(go.Scatter(
            x=rows["ratio"], y=labels.tolist(), mode="markers", name=kind,
            marker={"symbol": np.where(ok, "circle", "circle-open"), "size": 9,
                    "color": qualitative.Plotly[(row - 1) % len(qualitative.Plotly)]},
            error_x={"type": "data", "symmetric": False, "array": (high - rows["ratio"]).to_numpy(),
                     "arrayminus": (rows["ratio"] - low).to_numpy()},
            customdata=np.column_stack([rows["first"], rows["second"], rows["ci_low"].round(3),
                                        rows["ci_high"].round(3), rows["regime"]]),
            hovertemplate="%{customdata[4]}<br>%{customdata[0]}<br>against %{customdata[1]}<br>"
                          "%{x:.2f}x, 95% CI [%{customdata[2]}, %{customdata[3]}]<extra></extra>",
        ), row=row, col=1)
        fig.add_vline(x=1, line_dash="dot", row=row, col=1)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
    ticks = log_ticks([1.0, *comparisons["ratio"], *comparisons["ci_low"], *comparisons["ci_high"]])
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}x" for t in ticks] if ticks else None)
    fig.update_xaxes(title_text="decode ms per token, ratio (log; 1x = same speed)", row=len(kinds), col=1)
    fig.update_layout(title="At equal parameters: above 1x the deeper shape (or more KV heads) is slower (95% CI)",
                      template="plotly_white", showlegend=False,
                      height=160 + 26 * int(sum(heights)) + 50 * len(kinds), margin={"t": 90})
    return fig
