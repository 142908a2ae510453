"""A static, self-contained HTML report of a dataset: headline, verdicts, interactive charts.

For sharing results without any server: the overview (the headline of `analysis.headline`,
the Overview's and the README's; depth vs params verdicts), a latency table (decode ms per
token and prefill ms per configuration, with CIs), the depth-vs-width charts of the
best-identified group, that group's inversion heatmap, the regime and backend comparisons,
memory and energy. Pure function of a connection and filters; the CLI and the Snapshots
page both call `build_report`.

Size: plotly.js alone is about 4.6 MB, five times everything else. `plotly_js="inline"`
embeds it once (one file that opens anywhere: the Snapshots page's download);
`plotly_js="file"` refers to `PLOTLY_FILE` beside the report instead (what the CLI writes by
default, once per folder), which keeps the report itself under a megabyte. Long tables are
capped at `TABLE_ROWS` rows with a note saying how many were left out and where they are.
"""
from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import duckdb
import pandas as pd

from analysis import figures
from analysis.headline import build_headline, headline_sections
from analysis.intervals import ci_text
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
th { background: #f9fafb; } .warn { color: #92400e; } .note { color: #6b7280; font-size: 0.85rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""
PLOTLY_FILE = "plotly.min.js"  # beside the report when plotly_js="file"
PlotlyJs = Literal["inline", "file"]
TABLE_ROWS = 100  # rows of a long table (memory and energy) before it is cut, with a note
LATENCY_ROWS = 2000  # configurations in the latency table: every one on the bundled data, bounded for huge stores
LATENCY_KEYS = ["regime", "backend", "backend_options", "dtype", "batch_size", "prompt_len", "gen_len"]


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


def _capped(frame: pd.DataFrame, limit: int, where: str) -> str:
    """`_table` of the first `limit` rows, then a note saying how many were left out and where they are."""
    if len(frame) <= limit:
        return _table(frame)
    return (_table(frame.head(limit)) + f"<p class='note'>First {limit} of {len(frame):,} rows; "
            f"{html.escape(where)} has all of them.</p>")


def _ms(median: float, low: float, high: float, kind: str) -> str:
    if pd.isna(median):
        return ""
    interval = ci_text(low, high, kind)
    return f"{median:.4g} {interval}"


def latency_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (regime, backend, dtype, batch, prompt, generation length and shape):
    decode ms per token and prefill ms, each `median [95% CI]` (the CI across rounds or
    runs, as the cell statistics say: `ci kind`), and how many runs measured it.

    `frame` is cell statistics (`compute_cell_stats`, or pooled over runs); rows sorted by
    configuration, then parameter count.
    """
    keys = [k for k in LATENCY_KEYS if k in frame] + ["model_name", "n_layer", "n_embd", "params"]
    sides = []
    for phase, label in (("decode", "decode ms/token [95% CI]"), ("prefill", "prefill ms [95% CI]")):
        rows = frame[frame["phase"] == phase].copy()
        rows["backend_options"] = rows["backend_options"].astype(str) if "backend_options" in rows else ""
        rows[label] = [_ms(m, lo, hi, k) for m, lo, hi, k in
                       zip(rows["median"], rows["median_ci_low"], rows["median_ci_high"], rows["ci_kind"])]
        rows[f"{phase} CI kind"] = rows["ci_kind"]
        rows[f"{phase} runs"] = rows["n_runs"] if "n_runs" in rows else 1
        sides.append(rows[[*keys, label, f"{phase} CI kind", f"{phase} runs"]])
    table = sides[0].merge(sides[1], on=keys, how="outer").sort_values(keys[:-1] + ["params"], kind="stable")
    table["runs"] = table["decode runs"].fillna(table["prefill runs"]).astype("Int64")
    table["shape"] = table["n_layer"].astype(str) + " x " + table["n_embd"].astype(str)
    table["params (M)"] = (table["params"] / 1e6).map("{:.1f}".format)
    table["backend"] = table["backend"] + table["backend_options"].map(lambda o: "" if o in ("", "{}") else f" {o}")
    return table[["regime", "backend", "dtype", "batch_size", "prompt_len", "gen_len", "model_name", "shape",
                  "params (M)", "decode ms/token [95% CI]", "prefill ms [95% CI]", "decode CI kind", "runs"]].rename(
        columns={"batch_size": "batch", "prompt_len": "prompt", "gen_len": "gen", "model_name": "model",
                 "decode CI kind": "CI kind"}).astype(object).fillna("").reset_index(drop=True)


def _latency_parts(frame: pd.DataFrame, runs: list[str]) -> list[str]:
    """The latency table, one sub-table per regime (its long name said once, as a heading)."""
    table = latency_table(frame)
    parts = ["<h2>Latency per configuration</h2>",
             f"<p>Decode milliseconds per token and prefill milliseconds, median and 95% CI, pooled over the "
             f"{len(runs)} runs this report covers: {html.escape(', '.join(runs))}.</p>"]
    shown = table.head(LATENCY_ROWS)
    shown = shown.loc[:, [c for c in shown.columns if not shown[c].astype(str).eq("").all()]]  # a phase filtered out
    for regime, rows in shown.groupby("regime", sort=True):
        parts.append(f"<h3>{html.escape(str(regime))}</h3>" + _table(rows.drop(columns="regime")))
    if len(table) > LATENCY_ROWS:
        parts.append(f"<p class='note'>First {LATENCY_ROWS} of {len(table):,} configurations; "
                     "`python -m runner analyze --format csv` has every cell.</p>")
    return parts


def build_report(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None, title: str = "shapebench report",
                 plotly_js: PlotlyJs = "inline") -> str:
    """The report as one HTML string; offline either way (module docstring: "inline" embeds
    plotly.js, about 4.6 MB; "file" loads `PLOTLY_FILE` from beside the report)."""
    if plotly_js not in ("inline", "file"):
        raise ValueError(f"plotly_js must be 'inline' or 'file', not {plotly_js!r}")
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
         "verdict": fit.verdict.get("winner", fit.status) if fit.verdict else fit.status}
        for fit in fits
    ])
    parts.append("<h2>Depth or parameter count?</h2>")
    parts.append("<p>The verdict of the depth-vs-parameters fits per group; the reasoning of each (coefficients, "
                 "R<sup>2</sup>, leverage) is in <code>python -m runner analyze --full</code>.</p>")
    parts.append(_table(verdicts))
    parts += _latency_parts(frame, sorted(per_run.frame["run_id"].astype(str).unique()))

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
        include = (True if plotly_js == "inline" else PLOTLY_FILE) if index == 0 else False
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include, default_height="480px"))
    parts += _resource_parts(resource_summary(con, filters, latency=frame))
    return _page(title, parts)


def _resource_parts(res: dict[str, Any]) -> list[str]:
    """Memory and energy per cell and phase, and the seed form fitted to them beside latency."""
    parts = ["<h2>Memory and energy</h2>",
             "<p>Peak memory (device allocator on GPU, process RSS on CPU), weight and KV-cache bytes from the "
             "shape; energy per token and per sample with a 95% t interval across rounds (run-to-run variance "
             f"left out), mean power. {html.escape(res['message'])}.</p>"]
    if res["cells"]:
        parts.append(_capped(display_table(res["cells"]), TABLE_ROWS,
                             "python -m runner analyze --full (or --json, under resources.cells)"))
    fits = [{"group": f["group_id"], "fit": f["text"]} for f in res["fits"]]
    if fits:
        parts.append("<h3>Memory and energy vs shape</h3>" + _table(pd.DataFrame(fits)))
    return parts


def _page(title: str, parts: list[str]) -> str:
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")
