"""Two runs of the same cells side by side, and every run's environment.

Three questions, one module:
- What ran where? `run_table` gives each run its plan, status, protocol and environment
  (host CPU, host fingerprint and class, GPU, driver, library versions): what a user reads
  once two runs disagree.
- Did a cell move between two runs, beyond noise? `compare_runs_by_round` takes the ratio of
  the two runs' medians per (cell, phase) with a CI across each run's rounds (protocol 2
  measures a cell in several interleaved rounds; rounds, not raw samples, are the
  independent units: the decode steps of one generation are autocorrelated): Welch's t on
  the rounds' log medians. A run's cell with a single round (every protocol 1 run) has no
  unit to compare, so its comparison says "no CI" rather than inventing one. A cell moved
  when its p-value survives Benjamini-Hochberg at 5% over the compared cells.
- `compare_runs` / `within_runs_range` (the older check, used by benchmarks/ray_vs_direct.py):
  does a change of *how* a plan runs (Ray instead of one process) change *what* it measures,
  against each run's within-run CI from analysis.stats.

Round-level CIs cover the variance between rounds of one run, not the variance between
runs (analysis.reproducibility): two ordinary runs of one plan on one regime disagree
beyond them even when nothing changed, so a comparison is read next to such a baseline.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from statsmodels.stats.multitest import multipletests

from analysis.figures import drawable_ci, spaced_log_ticks
from analysis.intervals import CI_ACROSS_ROUNDS, CI_NONE, MIN_UNITS, NO_CI
from analysis.load import compared_cells, run_cell_rounds, runs_with_counts
from analysis.rerun import NO_HISTORY, rerun_text
from vocabulary import PHASES
from analysis.shapes import names_architecture
from analysis.stats import CellStats

KEY_COLUMNS = ("cell_key", "phase")
DESCRIBE_COLUMNS = ("regime", "model_name", "n_layer", "n_embd", "backend", "dtype", "batch_size", "prompt_len", "gen_len")
FDR = 0.05  # Benjamini-Hochberg level for "moved beyond noise" across the compared cells
MIN_ROUNDS = MIN_UNITS  # fewer rounds than this in either run: no CI, said as such
WEBGL_THRESHOLD = 1000  # points; past this an SVG scatter gets sluggish (as analysis.figures)
# labelled ticks of the ratio axis (log): every tick says what it is, no bare minor digits;
# the fine set where the ratios span less than COARSE_SPAN, else the coarse one (no crowding)
RATIO_TICKS_FINE = (0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0)
RATIO_TICKS_COARSE = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
COARSE_SPAN = 3.0

# The environment columns of `run_table`, each with the path in runs.environment it reads.
ENVIRONMENT_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("host_cpu", ("cpu_model",)),
    ("cpu_count", ("cpu_count",)),
    ("host_class", ("host_fingerprint", "host_class")),
    ("host_launch_us", ("host_launch_us",)),
    ("gpu", ("gpu", "name")),
    ("gpu_count", ("gpu", "device_count")),
    ("driver", ("gpu", "driver")),
    ("cuda", ("cuda_runtime",)),
    ("torch", ("torch",)),
    ("transformers", ("transformers",)),
    ("vllm", ("vllm",)),
    ("onnxruntime", ("onnxruntime",)),
    ("python", ("python",)),
    ("threads", ("torch_threads",)),
    ("cpu_affinity", ("cpu_affinity",)),
    ("executor", ("executor",)),
)
RUN_COLUMNS = ("run_id", "started_at", "status", "busy_machine", "machine_load", "plan_name", "protocol_version",
               "rounds", "regime", *(name for name, _ in ENVIRONMENT_FIELDS), "host_fingerprint", "git_revision",
               "tool_version", "cells_ok", "cells_failed", "busy_cells", "samples")


def _dig(value: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _json(value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


def _fingerprint_text(fp: Any) -> str | None:
    """The host fingerprint in one line: CPU model, family/model/stepping, flags hash, kernel."""
    if not isinstance(fp, dict) or not fp:
        return None
    parts = [str(fp.get("model_name") or "?")]
    if fp.get("cpu_family") is not None:
        parts.append(f"family {fp.get('cpu_family')} model {fp.get('model')} stepping {fp.get('stepping')}")
    if fp.get("flags_sha"):
        parts.append(f"flags {fp['flags_sha']}")
    if fp.get("mhz"):
        parts.append(f"{float(fp['mhz']):.0f} MHz")
    if fp.get("kernel"):
        parts.append(f"kernel {fp['kernel']}")
    if fp.get("hypervisor") and fp.get("hypervisor") != "unknown":
        parts.append(f"hypervisor {fp['hypervisor']}")
    return " · ".join(parts)


def busy_verdict(machine_load: Any, busy_cells: int) -> tuple[str | None, str | None]:
    """(busy_machine, machine_load) of a run for a table: "yes" / "no" and what its load
    samples said, from the verdict its meta.json recorded (runner.machine_load.load_summary,
    kept in runs.machine_load); (None, None) where the run was not sampled. A run stored
    without the verdict whose cells are flagged busy (`busy_cells`) was busy all the same."""
    summary = _json(machine_load)
    if not summary.get("samples"):
        return ("yes", f"{busy_cells} cells flagged busy") if busy_cells else (None, None)
    where = " on the Ray driver's machine" if (summary.get("worst") or {}).get("machine") == "driver" else ""
    text = f"{summary.get('busy_samples', 0)} of {summary['samples']} load samples busy{where}"
    reasons = (summary.get("worst") or {}).get("reasons") or []
    if summary.get("busy") and reasons:
        text += "; at worst " + "; ".join(map(str, reasons))
    return ("yes" if summary.get("busy") or busy_cells else "no"), text


def run_table(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every run, newest first, with what it ran and where (RUN_COLUMNS).

    protocol_version is NULL for runs recorded before protocol 2 (read as 1); rounds is the
    plan's rounds per cell under protocol 2 (1 under protocol 1). Environment entries a run
    did not record (no GPU on a CPU run, no host fingerprint before protocol 2) are empty.
    busy_machine and machine_load say whether the machine was busy while it measured
    (`busy_verdict`), empty for a run from before the sampler.
    """
    rows = runs_with_counts(con)
    out = []
    for row in rows.to_dict("records"):
        env, plan = _json(row.pop("environment")), _json(row.pop("plan"))
        row["busy_machine"], row["machine_load"] = busy_verdict(row["machine_load"], int(row["busy_cells"]))
        protocol = row["protocol_version"]
        protocol = 1 if protocol is None or pd.isna(protocol) else int(protocol)
        rounds = _dig(plan, ("measure", "rounds")) if protocol >= 2 else 1
        record = {**row, "protocol_version": protocol, "rounds": rounds}
        for name, path in ENVIRONMENT_FIELDS:
            value = _dig(env, path)
            record[name] = ", ".join(map(str, value)) if isinstance(value, list) else value
        record["host_fingerprint"] = _fingerprint_text(env.get("host_fingerprint"))
        record["git_revision"] = row["git_revision"] or env.get("git_revision")
        out.append(record)
    frame = pd.DataFrame(out, columns=list(RUN_COLUMNS))
    for column in ("cpu_count", "gpu_count", "threads", "rounds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def default_pair(runs: pd.DataFrame) -> tuple[str, str] | None:
    """(baseline, candidate) to open the comparison on: the newest run that has an earlier run
    of the same plan on the same regime, with that run (what "did anything change" asks and
    where the cells match); else the two newest runs of one regime; else the two newest runs.
    None with fewer than two runs with ok cells. `runs` is `run_table`'s frame (newest first).
    """
    usable = runs[runs["cells_ok"] > 0].reset_index(drop=True)
    if len(usable) < 2:
        return None
    for keys in (["plan_name", "regime"], ["regime"]):
        for i, row in usable.iterrows():
            earlier = usable.iloc[i + 1:]
            same = earlier[(earlier[keys] == row[keys]).all(axis=1)]
            if len(same):
                return str(same.iloc[0]["run_id"]), str(row["run_id"])
    return str(usable.iloc[1]["run_id"]), str(usable.iloc[0]["run_id"])


ENVIRONMENT_COMPARED = ("regime", "plan_name", "protocol_version", "rounds", *(name for name, _ in ENVIRONMENT_FIELDS),
                        "host_fingerprint", "git_revision", "tool_version", "busy_machine")


def environment_differences(runs: pd.DataFrame, run_a: str, run_b: str) -> pd.DataFrame:
    """The recorded facts (ENVIRONMENT_COMPARED) on which two runs differ: field, a, b.

    Empty when everything recorded is equal; a field one run did not record shows as None.
    """
    rows = runs.set_index("run_id")
    a, b = rows.loc[run_a], rows.loc[run_b]

    def plain(value: Any) -> Any:
        return None if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else value

    out = [{"field": field, "a": plain(a[field]), "b": plain(b[field])} for field in ENVIRONMENT_COMPARED
           if str(plain(a[field])) != str(plain(b[field]))]
    return pd.DataFrame(out, columns=["field", "a", "b"])


def welch_log_ratio(log_a: np.ndarray, log_b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, p) of exp(mean log b - mean log a) from the two runs' round log medians.

    Welch's t (unequal variances, Welch-Satterthwaite degrees of freedom): the rounds of two
    runs are independent samples of unequal spread and size. Student t rather than a
    bootstrap of the rounds because with 2 or 3 rounds a bootstrap distribution has 3 or 10
    distinct values and its percentile interval under-covers badly (analysis.intervals says
    the same for the cell CIs). Needs MIN_ROUNDS rounds on each side.
    """
    from scipy import stats as sps

    a, b = np.asarray(log_a, dtype=np.float64), np.asarray(log_b, dtype=np.float64)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = b.mean() - a.mean(), np.sqrt(va + vb)
    if se == 0:  # identical rounds on both sides (rounded timers): no spread to judge by
        return float(np.exp(diff)), float(np.exp(diff)), 0.0 if diff != 0 else 1.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = sps.t.ppf(0.5 + confidence / 2, df) * se
    p = 2 * sps.t.sf(abs(diff) / se, df)
    return float(np.exp(diff - half)), float(np.exp(diff + half)), float(p)


def compare_runs_by_round(
    con: duckdb.DuckDBPyConnection,
    run_a: str,
    run_b: str,
    filters: Mapping[str, Any] | None = None,
    *,
    confidence: float = 0.95,
    fdr: float = FDR,
    cells: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per (cell key, phase) measured ok in both runs: median_b / median_a with a CI across rounds.

    Columns: the cell's configuration (DESCRIBE_COLUMNS, params, cell_id_a/_b), median_a,
    median_b, n_a, n_b, rounds_a, rounds_b, ratio (of the medians), ratio_ci_low/high
    (`welch_log_ratio` on the rounds' log medians), ci_kind (CI_ACROSS_ROUNDS, or CI_NONE
    when either run has fewer than MIN_ROUNDS rounds of the cell), p_value, q_value (BH over
    the cells with a CI), moved (True: beyond the rounds' noise at FDR `fdr`; False: within
    it; NA: no CI), direction ("slower" / "faster" / "equal": b against a). Filters are analysis.load's
    (phase, backend, dtype, ...). With `cells`, the per-run statistics of the store
    (`analysis.stats.compute_cell_stats(...).frame`, both runs among them), each ratio also
    gets its re-run interval (`analysis.rerun.ratio_rerun_intervals`: where the ratio of a
    repeat of both runs is expected, from the store's repeated runs): rerun_ci_low/high and
    rerun_basis ("no history" where there are none). Raises ValueError when a run has no ok
    cell under the filters or the runs share no (cell, phase). A run compared with itself is
    allowed (a sanity check: every ratio 1, nothing moved).
    """
    sides = []
    for run_id in (run_a, run_b):
        side = run_cell_rounds(con, run_id, filters)
        if side.empty:
            raise ValueError(f"run '{run_id}' has no ok cell under these filters")
        sides.append(side)
    table = sides[0].merge(sides[1], on=list(KEY_COLUMNS), suffixes=("_a", "_b"), validate="one_to_one")
    if table.empty:
        raise ValueError(f"runs '{run_a}' and '{run_b}' have no (cell, phase) in common under these filters")
    table["ratio"] = table["median_b"] / table["median_a"]
    tested = ((table["rounds_a"] >= MIN_ROUNDS) & (table["rounds_b"] >= MIN_ROUNDS)).to_numpy()
    low, high, p = np.full(len(table), np.nan), np.full(len(table), np.nan), np.full(len(table), np.nan)
    for i in np.flatnonzero(tested):
        low[i], high[i], p[i] = welch_log_ratio(table["round_log_medians_a"].iat[i], table["round_log_medians_b"].iat[i],
                                                confidence)
    table["ratio_ci_low"], table["ratio_ci_high"], table["p_value"] = low, high, p
    table["ci_kind"] = np.where(tested, CI_ACROSS_ROUNDS, CI_NONE)
    table["q_value"] = np.nan
    if tested.any():
        table.loc[tested, "q_value"] = multipletests(p[tested], alpha=fdr, method="fdr_bh")[1]
    table["moved"] = pd.array([bool(q < fdr) if t else pd.NA for q, t in zip(table["q_value"], tested)], dtype="boolean")
    table["direction"] = np.select([table["ratio"] > 1, table["ratio"] < 1], ["slower", "faster"], "equal")
    table = table.drop(columns=["round_log_medians_a", "round_log_medians_b"])
    if cells is not None:
        table = _with_rerun(table, cells, run_a, run_b, confidence)
    described = compared_cells(con, run_a, run_b, sorted(table["cell_key"].unique()))
    table = described.merge(table, on="cell_key", how="right")
    order = {p: i for i, p in enumerate(PHASES)}
    table = table.assign(_phase=table["phase"].map(order)).sort_values(
        ["_phase", "backend", "dtype", "batch_size", "prompt_len", "params", "model_name"]).drop(columns="_phase")
    return table.reset_index(drop=True)


def _with_rerun(table: pd.DataFrame, cells: pd.DataFrame, run_a: str, run_b: str, confidence: float) -> pd.DataFrame:
    """`table` with each ratio's re-run interval: both runs' cells judged by the store's history."""
    from analysis.rerun import add_rerun_intervals, between_run_history, ratio_rerun_intervals

    history = between_run_history(cells)
    key = pd.MultiIndex.from_frame(table[list(KEY_COLUMNS)])
    sides = []
    for run_id in (run_a, run_b):
        judged = add_rerun_intervals(cells[cells["run_id"].astype(str) == run_id], history, confidence=confidence)
        side = judged.drop_duplicates(list(KEY_COLUMNS)).set_index(list(KEY_COLUMNS)).reindex(key)
        side["rerun_basis"] = side["rerun_basis"].fillna(NO_HISTORY)
        sides.append(side)
    judged = ratio_rerun_intervals(np.log(table["ratio"].to_numpy(np.float64)), sides[1], sides[0], confidence=confidence)
    return table.assign(**{c: judged[c].to_numpy() for c in ("rerun_ci_low", "rerun_ci_high", "rerun_basis")})


def regressions(table: pd.DataFrame, threshold: float) -> pd.Series:
    """Per row of `compare_runs_by_round`: b is slower beyond the rounds' noise (moved at FDR
    5%) and its median ratio b / a exceeds 1 + `threshold` (0.05: more than 5% slower).

    Both conditions, because with many rounds a 1% shift is significant yet not worth failing
    a build on, and a 30% shift within noise is not yet evidence. A cell without a CI is never
    a regression: it cannot be told apart from noise.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be 0 or more (a relative slowdown, 0.05 = 5%), not {threshold}")
    moved = table["moved"].fillna(False).astype(bool)
    return moved & table["direction"].eq("slower") & (table["ratio"] > 1 + threshold)


def comparison_summary(table: pd.DataFrame) -> dict[str, Any]:
    """What the page states above the table: counts compared / with a CI / moved each way, ratio spread."""
    with_ci = table["ci_kind"].eq(CI_ACROSS_ROUNDS)
    moved = table["moved"].fillna(False).astype(bool)
    ratio = table["ratio"].to_numpy(np.float64)
    return {
        "n": int(len(table)), "with_ci": int(with_ci.sum()), "no_ci": int((~with_ci).sum()),
        "moved": int(moved.sum()), "slower": int((moved & table["direction"].eq("slower")).sum()),
        "faster": int((moved & table["direction"].eq("faster")).sum()),
        "median_ratio": float(np.median(ratio)), "ratio_p5": float(np.quantile(ratio, 0.05)),
        "ratio_p95": float(np.quantile(ratio, 0.95)),
    }


def _model_label(frame: pd.DataFrame) -> pd.Series:
    """Each cell's model as the ratio chart names it: its name, and where a family other than
    GPT-2 is compared (analysis.shapes) its family and query / KV heads."""
    names = frame["model_name"].astype(str)
    if "family" not in frame or not names_architecture(frame["family"].unique()):
        return names
    return (names + " (" + frame["family"].astype(str) + ", " + frame["n_head"].astype(str) + "/"
            + frame["n_kv_head"].astype(str) + " heads)")


def ratio_figure(table: pd.DataFrame, run_a: str, run_b: str) -> go.Figure:
    """Each compared cell's ratio b / a on a log axis, with its round-level CI; one trace per state.

    Cells sorted by ratio, each named on the x axis (model, backend, phase, dtype, batch,
    prompt); the y axis spans the ratios and the CIs narrower than DRAWABLE_CI_FACTOR (a
    two-round CI from 1e-3 to 1e3 would flatten every ratio onto one line), ticked at values
    far enough apart to read (spaced_log_ticks); states: moved (beyond
    the rounds' noise), within noise, no CI (a single round in a run). customdata: cell_id_a,
    cell_id_b, then the hover's fields, so a selection maps back to both cells.
    """
    frame = table.sort_values("ratio").reset_index(drop=True)
    frame = frame.assign(
        state=np.where(frame["ci_kind"].ne(CI_ACROSS_ROUNDS), NO_CI,
                       np.where(frame["moved"].fillna(False).astype(bool), "moved beyond noise", "within noise")),
        label=(_model_label(frame) + " " + frame["backend"].astype(str) + " " + frame["phase"].astype(str)
               + " " + frame["dtype"].astype(str) + " b" + frame["batch_size"].astype(str)
               + " p" + frame["prompt_len"].astype(str)))
    repeat = frame.groupby("label").cumcount()  # two cells differing only in what the label leaves out
    frame["label"] = frame["label"].where(repeat == 0, frame["label"] + " #" + (repeat + 1).astype(str))
    scatter = go.Scattergl if len(frame) > WEBGL_THRESHOLD else go.Scatter
    # drawn in this order, so the few cells that moved sit on top of the many that did not
    styles = {NO_CI: ("#868e96", "circle-open", 6), "within noise": ("#748ffc", "circle", 6),
              "moved beyond noise": ("#d6336c", "diamond", 9)}
    fig = go.Figure()
    for state, (colour, symbol, size) in styles.items():
        sub = frame[frame["state"] == state]
        if sub.empty:
            continue
        has_ci = sub["ratio_ci_low"].notna().to_numpy()
        error = {"type": "data", "symmetric": False, "visible": bool(has_ci.any()), "thickness": 1, "width": 0,
                 "color": colour, "array": (sub["ratio_ci_high"] - sub["ratio"]).fillna(0).to_numpy(),
                 "arrayminus": (sub["ratio"] - sub["ratio_ci_low"]).fillna(0).to_numpy()}
        ci_text = np.where(has_ci, "[" + sub["ratio_ci_low"].map("{:.3f}".format) + ", "
                           + sub["ratio_ci_high"].map("{:.3f}".format) + "]", NO_CI)
        rerun = ([rerun_text(lo, hi) for lo, hi in zip(sub["rerun_ci_low"], sub["rerun_ci_high"])]
                 if "rerun_ci_low" in sub else [NO_HISTORY] * len(sub))
        fig.add_trace(scatter(
            x=sub["label"].to_numpy(), y=sub["ratio"].to_numpy(), mode="markers", name=state,
            marker={"color": colour, "symbol": symbol, "size": size}, error_y=error,
            customdata=np.column_stack([sub["cell_id_a"], sub["cell_id_b"], sub["label"], ci_text, rerun]),
            hovertemplate="%{customdata[2]}<br>b / a = %{y:.3f}x, 95% CI across these runs' rounds %{customdata[3]}"
                          "<br>95% re-run interval %{customdata[4]}<extra></extra>",
        ))
    fig.add_hline(y=1.0, line={"color": "#495057", "dash": "dot", "width": 1})
    drawable = drawable_ci(frame["ratio_ci_low"], frame["ratio_ci_high"])
    bounds = pd.concat([frame["ratio"], frame["ratio_ci_low"][drawable], frame["ratio_ci_high"][drawable],
                        pd.Series([1.0])]).dropna()
    bounds = bounds[bounds > 0]
    low, high = bounds.min() / 1.1, bounds.max() * 1.1
    choice = RATIO_TICKS_COARSE if high / low > COARSE_SPAN else RATIO_TICKS_FINE
    ticks = spaced_log_ticks(low, high, choice)
    fig.update_layout(
        title=f"Median ratio per cell: {run_b} / {run_a}", template="plotly_white", legend_title_text="",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
        xaxis={"title": "cells, ordered by ratio", "type": "category", "categoryorder": "array",
               "categoryarray": frame["label"].tolist(), "tickangle": -45, "automargin": True},
        yaxis={"title": "ratio b / a (log; > 1: b slower)", "type": "log", "tickvals": ticks,
               "ticktext": [f"{t:g}x" for t in ticks], "range": [float(np.log10(low)), float(np.log10(high))]},
        margin={"t": 80}, height=620)  # the slanted cell names take the bottom third
    return fig


def compare_runs(stats: CellStats, run_a: str, run_b: str) -> pd.DataFrame:
    """One row per (cell key, phase) measured in both runs.

    Columns: the cell's configuration, median/ci_low/ci_high with suffix _a and _b, ratio
    (median_b / median_a), b_in_a_ci, a_in_b_ci (each median inside the other run's CI),
    cis_overlap. Raises ValueError when a run has no ok cell or the runs share none, so a
    misspelt run id cannot pass as "all cells agree".
    """
    frame = stats.frame
    sides = []
    for run_id in (run_a, run_b):
        side = frame[frame["run_id"] == run_id]
        if side.empty:
            known = ", ".join(sorted(frame["run_id"].unique()))
            raise ValueError(f"run '{run_id}' has no ok cell in these statistics (runs: {known})")
        sides.append(side)
    cols = [*KEY_COLUMNS, "median", "median_ci_low", "median_ci_high"]
    table = sides[0][[*KEY_COLUMNS, *DESCRIBE_COLUMNS, "median", "median_ci_low", "median_ci_high"]].merge(
        sides[1][cols], on=list(KEY_COLUMNS), suffixes=("_a", "_b"), validate="one_to_one")
    if table.empty:
        raise ValueError(f"runs '{run_a}' and '{run_b}' have no (cell, phase) in common")
    table = table.rename(columns={"median_ci_low_a": "ci_low_a", "median_ci_high_a": "ci_high_a",
                                  "median_ci_low_b": "ci_low_b", "median_ci_high_b": "ci_high_b"})
    table["ratio"] = table["median_b"] / table["median_a"]
    table["b_in_a_ci"] = table["median_b"].between(table["ci_low_a"], table["ci_high_a"])
    table["a_in_b_ci"] = table["median_a"].between(table["ci_low_b"], table["ci_high_b"])
    table["cis_overlap"] = (table[["ci_low_a", "ci_low_b"]].max(axis=1) <= table[["ci_high_a", "ci_high_b"]].min(axis=1))
    return table.sort_values(["phase", "backend", "dtype", "model_name"]).reset_index(drop=True)


def summarize_comparison(table: pd.DataFrame, by: str | None = "phase") -> pd.DataFrame:
    """Shares of agreement, overall and per `by` value: what a closing note reports.

    Columns: group, n, b_in_a_ci, a_in_b_ci, cis_overlap (shares 0..1), median_ratio and
    ratio_p5/p95 (how far apart the medians are, b over a), max_abs_log2_ratio.
    """
    groups = [("all", table)] + ([(str(k), g) for k, g in table.groupby(by, sort=True)] if by else [])
    rows: list[dict[str, Any]] = []
    for name, part in groups:
        ratio = part["ratio"].to_numpy(np.float64)
        rows.append({
            "group": name, "n": len(part),
            "b_in_a_ci": float(part["b_in_a_ci"].mean()), "a_in_b_ci": float(part["a_in_b_ci"].mean()),
            "cis_overlap": float(part["cis_overlap"].mean()),
            "median_ratio": float(np.median(ratio)), "ratio_p5": float(np.quantile(ratio, 0.05)),
            "ratio_p95": float(np.quantile(ratio, 0.95)), "max_abs_log2_ratio": float(np.abs(np.log2(ratio)).max()),
        })
    return pd.DataFrame(rows)


def within_runs_range(stats: CellStats, candidate: str, others: list[str]) -> pd.DataFrame:
    """Is the candidate run's median inside the range of the other runs' medians, per cell-phase?

    The within-run CI ignores run-to-run variance; the spread of several ordinary runs does
    not. If the candidate is just one more run of the same kind (exchangeable with the k
    others), it lands inside their range with probability (k - 1) / (k + 1), returned as
    `expected_inside`; a candidate that changes what is measured lands outside more often.
    Columns: cell_key, phase, backend, candidate_median, others_min, others_max, inside,
    expected_inside. Only cell-phases measured in the candidate and in every other run.
    """
    if len(others) < 2:
        raise ValueError("need at least two other runs for a range")
    frame = stats.frame[stats.frame["run_id"].isin([candidate, *others])]
    wide = frame.pivot_table(index=[*KEY_COLUMNS, "backend"], columns="run_id", values="median")
    missing = [r for r in [candidate, *others] if r not in wide.columns]
    if missing:
        raise ValueError(f"no ok cell for run(s) {', '.join(missing)}")
    wide = wide.dropna()
    table = pd.DataFrame({
        "candidate_median": wide[candidate], "others_min": wide[others].min(axis=1),
        "others_max": wide[others].max(axis=1)}).reset_index()
    table["inside"] = table["candidate_median"].between(table["others_min"], table["others_max"])
    table["expected_inside"] = (len(others) - 1) / (len(others) + 1)
    return table
