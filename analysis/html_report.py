"""A static, self-contained HTML report of a dataset: headline, verdicts, interactive charts.

For sharing results without any server: one file with plotly.js inlined once, the
overview (the headline of `analysis.headline`, the Overview's and the README's; depth vs
params verdicts), the depth-vs-width charts of the best-identified group, that group's
inversion heatmap, and the regime and backend comparisons. Pure function of a connection
and filters; the CLI and the Snapshots page both call `build_report`.
"""
from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import duckdb
import pandas as pd

from analysis import figures
from analysis.headline import build_headline, headline_sections
from analysis.inversions import pair_ratios
from analysis.load import left_out
from analysis.regimes import compare
from analysis.regression import fit_all
from analysis.resources import display_table, resource_summary
from analysis.reproducibility import has_repeats, pooled_stats
from analysis.stats import compute_cell_stats

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1f2937; }
h1 { margin-bottom: 0.2rem; } .meta { color: #6b7280; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f9fafb; } .warn { color: #92400e; }
"""


def _table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_report(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None, title: str = "shapebench report") -> str:
    """The report as one HTML string (a few MB: plotly.js is embedded so it works offline)."""
    filters = dict(filters or {})
    per_run = compute_cell_stats(con, filters)
    # as analyze(): one row per configuration, CIs across runs
    stats = pooled_stats(per_run) if has_repeats(per_run) else per_run
    frame = stats.frame
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; filters: "
             f"{html.escape(str(filters) if filters else 'none')}; {frame['cell_id'].nunique() if len(frame) else 0} cells.</p>"]
    warning = left_out(con, filters)
    if warning:
        parts.append(f"<p class='warn'>{html.escape(warning)}</p>")
    if frame.empty:
        parts.append("<p>No measured cells match this selection.</p>")
        return _page(title, parts)

    parts.append("<h2>Headline</h2>")  # the Overview's and the README's (analysis.headline)
    for heading, text, table in headline_sections(build_headline(per_run)):
        parts.append(f"<h3>{html.escape(heading)}</h3><p>{html.escape(text)}</p>" + (_table(table) if len(table) else ""))

    fits = fit_all(frame)
    verdicts = pd.DataFrame([
        {**fit.group, "shapes": fit.n_shapes, "CI kind": fit.ci_kind,
         "verdict": fit.verdict.get("winner", fit.status) if fit.verdict else fit.status,
         "why": fit.verdict.get("text", fit.message) if fit.verdict else fit.message}
        for fit in fits
    ])
    parts.append("<h2>Depth or parameter count?</h2>")
    parts.append(_table(verdicts))

    figs = []
    fitted = [f for f in fits if f.status == "ok"]
    if fitted:
        best = max(fitted, key=lambda f: f.n_shapes)
        group_stats = frame[frame["group_id"] == best.group_id]
        parts.append(f"<h2>Latency vs shape: {html.escape(best.group_id)}</h2>")
        figs += [figures.latency_vs_depth(group_stats, best.bands), figures.latency_vs_params(group_stats, best.bands)]
        pairs = pair_ratios(stats, inversions_only=False)
        group_pairs = pairs[pairs["group_id"] == best.group_id]
        if len(group_pairs):
            figs.append(figures.inversion_heatmap(group_pairs))
    for factor in ("regime", "backend"):
        comparisons = compare(frame, factor)
        if any(c.get("status") == "ok" for c in comparisons):
            figs.append(figures.coefficient_plot(comparisons).update_layout(title=f"Depth effect by {factor}"))
    for index, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if index == 0 else False,
                                 default_height="480px"))
    parts += _resource_parts(resource_summary(con, filters, latency=frame))
    return _page(title, parts)


def _resource_parts(res: dict[str, Any]) -> list[str]:
    """Memory and energy per cell and phase, and the seed form fitted to them beside latency."""
    parts = ["<h2>Memory and energy</h2>",
             "<p>Peak memory (device allocator on GPU, process RSS on CPU), weight and KV-cache bytes from the "
             "shape; energy per token and per sample with a 95% t interval across rounds (run-to-run variance "
             f"left out), mean power. {html.escape(res['message'])}.</p>"]
    if res["cells"]:
        parts.append(_table(display_table(res["cells"])))
    fits = [{"group": f["group_id"], "fit": f["text"]} for f in res["fits"]]
    if fits:
        parts.append("<h3>Memory and energy vs shape</h3>" + _table(pd.DataFrame(fits)))
    return parts


def _page(title: str, parts: list[str]) -> str:
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
