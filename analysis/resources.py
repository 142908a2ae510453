"""Memory and energy per cell and phase, beside latency: what a token costs, and how that
scales with the shape.

The store keeps what the runner's trackers measured (runner.trackers; cells' weight_bytes
... resources): per phase and round, the allocator's and the process's peaks and the energy
of a window of `calls` repetitions of the phase's operation. Here they become, per (cell,
phase), in the units of a latency sample:

- energy_j: joules per sample: per prefill, per decode step, per whole generation. A decode
  repetition starts with a prefill (it fills the cache the steps read), so a decode step's
  energy is (decode repetition - prefill) / gen_len, prefill taken from the same round;
- energy_j_per_token (and its CI), over `tokens_per_sample` (the tokens a sample produces or reads);
- power_w: mean power over the decode/prefill/e2e window (the device's, or the CPU
  package's for RAPL: other processes on it count too);
- energy_ci_low/high: a Student-t interval on the rounds' log values (the units are the
  rounds of one run, so it covers that run's value and leaves out run-to-run variance; one
  round gives no interval, NaN);
- peak_memory_bytes: the phase's peak as the backend's user pays it: the device allocator's
  on cuda, the process's resident set on the CPU. A round holds all its cells at once, so
  this is the round's peak, flat across shapes in one run;
- working_memory_bytes: that peak less what was resident when the window began (what the
  phase adds), and own_memory_bytes = weight + KV-cache bytes + working memory: the cell's
  own footprint (NaN for runs recorded before the working fields).

A value nobody measured stays NaN (stored NULL), never 0. `resource_fits` fits the seed
study's form, log value ~ log params + log n_layer, to peak memory and to energy per token
per group with analysis.regression's functions, beside the same fit of latency.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import statsmodels.api as sm

from analysis.intervals import CI_ACROSS_ROUNDS, CI_ACROSS_RUNS, CI_NONE, MIN_UNITS, NO_CI, ci_text, kind_for, t_interval
from analysis.load import add_group_id, cells_with_resources
from vocabulary import PHASES
from analysis.regression import CONFIDENCE, MODELS, SEED_FORM, design_frame, design_matrix, seed_form_record, shape_shortfall
from runner.runfiles import PEAK_FIELDS, WORKING_FIELDS

MIB = float(1 << 20)
# What each fit explains, per group: the column and how the text names it.
FIT_METRICS = {"peak_memory_bytes": "peak memory", "own_memory_bytes": "own memory",
               "energy_j_per_token": "energy per token"}
RESOURCE_RECORD_COLUMNS = (
    "cell_id", "phase", "group_id", "model_name", "n_layer", "n_embd", "params", "weight_bytes", "kv_cache_bytes",
    "peak_memory_bytes", "peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_bytes", "working_memory_bytes",
    "own_memory_bytes", "energy_source",
    "energy_j", "energy_ci_low", "energy_ci_high", "energy_j_per_token", "energy_j_per_token_ci_low",
    "energy_j_per_token_ci_high", "energy_rounds", "energy_spread", "power_w",
)


def tokens_per_sample(phase: pd.Series, batch_size: pd.Series, prompt_len: pd.Series, gen_len: pd.Series) -> np.ndarray:
    """Tokens one sample of a phase handles: a prefill reads batch x prompt_len prompt tokens,
    a decode step yields batch tokens, a whole generation batch x gen_len. Throughput
    (tokens/s) and energy per token divide by the same count."""
    return np.select(
        [phase == "prefill", phase == "decode", phase == "e2e"],
        [batch_size * prompt_len, batch_size, batch_size * gen_len],
        np.nan,
    ).astype(np.float64)


def resource_frame(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per ok cell and tracked phase with its memory and energy (columns above and
    RESOURCE_RECORD_COLUMNS); empty when no cell carries a resources record."""
    cells = cells_with_resources(con, filters)
    asked = (filters or {}).get("phase")
    frame = phase_resources(cells, PHASES if asked is None else ([asked] if isinstance(asked, str) else asked))
    return add_group_id(frame) if len(frame) else frame


def phase_resources(cells: pd.DataFrame, phases: Iterable[str] = PHASES) -> pd.DataFrame:
    """Per (cell, phase) memory and energy from a frame of cells with their shape, device and
    `resources` JSON column (as the store holds it); the cells' other columns are kept."""
    wanted = set(phases)
    rows = []
    for cell in cells.to_dict("records"):
        text = cell.pop("resources", None)
        recorded = (json.loads(text) or {}).get("phases") or {} if isinstance(text, str) else {}
        for phase in PHASES:
            if phase in recorded and phase in wanted:  # the phase's own peaks replace the cell's largest
                rows.append({**cell, "phase": phase, **_phase_figures(cell, phase, recorded)})
    if not rows:
        return pd.DataFrame(columns=list(RESOURCE_RECORD_COLUMNS))
    frame = pd.DataFrame(rows)
    tokens = tokens_per_sample(frame["phase"], frame["batch_size"], frame["prompt_len"], frame["gen_len"])
    per_sample = {"energy_j_per_token": "energy_j", "energy_j_per_token_ci_low": "energy_ci_low",
                  "energy_j_per_token_ci_high": "energy_ci_high"}
    for per_token, column in per_sample.items():
        frame[per_token] = frame[column] / tokens
    frame["peak_memory_bytes"] = np.where(frame["device"] == "cuda", frame["peak_allocated_bytes"], frame["peak_rss_bytes"])
    frame["working_memory_bytes"] = np.where(frame["device"] == "cuda", frame["working_allocated_bytes"],
                                             frame["working_rss_bytes"])
    for column in ("peak_memory_bytes", "working_memory_bytes", *PEAK_FIELDS, *WORKING_FIELDS, "weight_bytes",
                   "kv_cache_bytes"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    # the cell's own footprint: what it keeps resident (from the shape) plus what the phase adds;
    # unknown (NaN) for runs before the working fields
    frame["own_memory_bytes"] = frame["weight_bytes"] + frame["kv_cache_bytes"] + frame["working_memory_bytes"]
    return frame


def _per_round(entry: Mapping[str, Any]) -> np.ndarray:
    """Joules per call of each round's window (NaN where the round measured none)."""
    energy = entry.get("energy_j") or []
    calls = entry.get("calls") or []
    return np.array([e / c if e is not None and c else np.nan for e, c in zip(energy, calls)], dtype=float)


def _phase_figures(cell: Mapping[str, Any], phase: str, phases: Mapping[str, Any]) -> dict[str, Any]:
    entry = phases[phase]
    out: dict[str, Any] = {field: entry.get(field) for field in (*PEAK_FIELDS, *WORKING_FIELDS)}
    per_call = _per_round(entry)
    if phase == "decode":
        prefill = _per_round(phases.get("prefill") or {})
        if len(prefill) != len(per_call):  # rounds must pair up; otherwise the step's share is unknown
            prefill = np.full(per_call.shape, np.nan)
        per_call = (per_call - prefill) / cell["gen_len"]
    per_call = np.where(per_call > 0, per_call, np.nan)  # a negative difference is noise, not energy
    seconds = np.array([s if s is not None else np.nan for s in (entry.get("energy_s") or [])], dtype=float)
    joules = np.array([e if e is not None else np.nan for e in (entry.get("energy_j") or [])], dtype=float)
    known = per_call[np.isfinite(per_call)]
    out["energy_j_rounds"] = per_call.tolist()  # per round, NaN where unknown: the units pair_energy pairs up
    out["energy_rounds"] = int(len(known))
    out["energy_j"], out["energy_ci_low"], out["energy_ci_high"] = _t_interval(known)
    out["energy_spread"] = float(np.std(known, ddof=1) / np.mean(known)) if len(known) >= 2 else math.nan
    out["power_w"] = float(np.nansum(joules) / np.nansum(seconds)) if np.isfinite(joules).any() else math.nan
    return out


def _t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Geometric mean of the rounds' values and a Student-t interval on their logs (NaN bounds below 2)."""
    if not len(values):
        return math.nan, math.nan, math.nan
    logs = np.log(values)
    centre = float(np.exp(logs.mean()))
    if len(values) < MIN_UNITS:
        return centre, math.nan, math.nan
    low, high = t_interval(logs, confidence)
    return centre, float(np.exp(low)), float(np.exp(high))


def resource_fits(frame: pd.DataFrame, latency: pd.DataFrame | None = None,
                  confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Per group and metric (FIT_METRICS), the seed form log value ~ log params + log n_layer
    (HC3, as for latency): both elasticities with CIs and the verdict, or why there is no
    fit. `latency`, a cell-stats frame, adds the latency seed form of the same group, so that
    one row says whether depth and width trade off the same way for time and for memory/energy."""
    out = []
    if frame.empty:
        return out
    for group_id, group in frame.groupby("group_id", sort=True):
        for metric, label in FIT_METRICS.items():
            cells = group[np.isfinite(group[metric]) & (group[metric] > 0)]
            if cells.empty:  # not measured in this group (energy on a CPU without RAPL): nothing to fit
                continue
            row = {"group_id": group_id, "metric": metric, "n_cells": int(len(cells))}
            row |= _seed_fit(cells.assign(median=cells[metric]), confidence)
            if latency is not None and row["status"] == "ok":
                same = latency[latency["cell_id"].isin(cells["cell_id"]) & (latency["phase"] == group["phase"].iloc[0])]
                fit = _seed_fit(same, confidence)
                if fit["status"] == "ok":
                    row |= {f"latency_{k}": fit[k] for k in ("coef_log_params", "coef_log_n_layer", "winner")}
            row["text"] = _fit_text(label, row)
            out.append(row)
    return out


def _seed_fit(cells: pd.DataFrame, confidence: float) -> dict[str, Any]:
    shortfall = shape_shortfall(cells)
    if shortfall:
        return {"status": "too_few_shapes", "message": shortfall}
    data = design_frame(cells)
    formula = MODELS[SEED_FORM[0]][SEED_FORM[1]]
    exog = design_matrix(formula, data)
    res = sm.OLS(data[formula.split("~", 1)[0].strip()].to_numpy(), exog.to_numpy()).fit(cov_type="HC3")
    res.model.data.xnames = list(exog.columns)
    seed = seed_form_record(data, res, 1 - confidence)
    keys = ("coef_log_params", "coef_log_params_lo", "coef_log_params_hi", "coef_log_n_layer", "coef_log_n_layer_lo",
            "coef_log_n_layer_hi", "r2", "winner", "n_shapes", "max_leverage")
    return {"status": "ok", "message": "", **{k: seed[k] for k in keys}}


def _fit_text(label: str, row: Mapping[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{label}: {row['message']}"
    text = (f"log {label} ~ log params + log n_layer: params elasticity {row['coef_log_params']:.3g} "
            f"[{row['coef_log_params_lo']:.3g}, {row['coef_log_params_hi']:.3g}], depth elasticity "
            f"{row['coef_log_n_layer']:.3g} [{row['coef_log_n_layer_lo']:.3g}, {row['coef_log_n_layer_hi']:.3g}] "
            f"(R^2 {row['r2']:.3f}, {row['winner']})")
    if "latency_winner" in row:
        text += (f"; latency: params {row['latency_coef_log_params']:.3g}, depth {row['latency_coef_log_n_layer']:.3g} "
                 f"({row['latency_winner']})")
    return text


def resource_summary(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None,
                     latency: pd.DataFrame | None = None) -> dict[str, Any]:
    """What `analyze` reports: per (cell, phase) records, the fits, and a one-line message."""
    frame = resource_frame(con, filters)
    if frame.empty:
        return {"message": "no cell of this selection carries memory or energy figures (runs before schema 3)",
                "n_cells": 0, "n_with_energy": 0, "cells": [], "fits": []}
    n_energy = int(frame.loc[frame["energy_rounds"] > 0, "cell_id"].nunique())
    sources = sorted({s for s in frame["energy_source"].dropna()})
    message = (f"{frame['cell_id'].nunique()} cells with memory figures, {n_energy} with energy"
               + (f" ({', '.join(sources)})" if sources else " (no readable energy counter: unknown)"))
    return {"message": message, "n_cells": int(frame["cell_id"].nunique()), "n_with_energy": n_energy,
            "cells": frame[list(RESOURCE_RECORD_COLUMNS)].to_dict("records"),
            "fits": resource_fits(frame, latency),
            "seed_pair_energy": pair_energy(frame).to_dict("records")}


PAIR_KEYS = ("regime", "backend", "dtype", "batch_size", "prompt_len")


def pair_energy(frame: pd.DataFrame, small: str = "gpt2-5m", large: str = "gpt2-25m",
                confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Energy per decode token of two models side by side and their ratio, per regime, backend,
    dtype and workload: does the smaller model cost more energy per token, as it costs more time?

    The ratio's interval is a Student-t interval on log ratios at the level that replicates:
    across runs where both models were measured in at least two runs (one log ratio of the
    round means per run), else across the rounds of one run, paired by round (a round measures
    both cells minutes apart), else none. `frame` is resource_frame's decode rows."""
    rows = []
    decode = frame[(frame["phase"] == "decode") & frame["model_name"].isin([small, large])]
    for key, group in decode.groupby(list(PAIR_KEYS), sort=True):
        run_of = group["cell_id"].str.split("/").str[0]
        per_run = {}
        for run, cells in group.groupby(run_of):
            by_name = {row["model_name"]: np.log(np.asarray(row["energy_j_rounds"], dtype=float))
                       for _, row in cells.iterrows()}
            if small in by_name and large in by_name and np.isfinite(by_name[small]).any() and np.isfinite(by_name[large]).any():
                per_run[run] = (by_name[small], by_name[large])
        if not per_run:
            continue
        small_log = np.mean([np.nanmean(a) for a, _ in per_run.values()])
        large_log = np.mean([np.nanmean(b) for _, b in per_run.values()])
        if len(per_run) >= MIN_UNITS:
            units, level = np.array([np.nanmean(a) - np.nanmean(b) for a, b in per_run.values()]), CI_ACROSS_RUNS
        else:
            (a, b), = per_run.values()
            units, level = ((a - b)[np.isfinite(a - b)] if len(a) == len(b) else np.array([])), CI_ACROSS_ROUNDS
        kind = kind_for(len(units), level)
        if kind == CI_NONE:
            centre, low, high = math.exp(small_log - large_log), math.nan, math.nan
        else:
            centre, low, high = _t_interval(np.exp(units), confidence)
        rows.append(dict(zip(PAIR_KEYS, key)) | {
            "small": small, "large": large, "runs": len(per_run),
            "small_mj_per_token": math.exp(small_log) * 1e3 / group["batch_size"].iloc[0],
            "large_mj_per_token": math.exp(large_log) * 1e3 / group["batch_size"].iloc[0],
            "ratio": centre, "ratio_ci_low": low, "ratio_ci_high": high, "ci_kind": kind})
    return pd.DataFrame(rows)


def display_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The records in display units (MiB, mJ per token), for text, Markdown and HTML tables."""
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    out = frame[["group_id", "model_name", "n_layer", "n_embd", "phase"]].copy()
    for column in ("weight_bytes", "kv_cache_bytes", "peak_memory_bytes", "own_memory_bytes"):
        out[column.replace("_bytes", "_mib")] = frame[column] / MIB
    for column in ("energy_j_per_token", "energy_j_per_token_ci_low", "energy_j_per_token_ci_high"):
        out[column.replace("energy_j_per_token", "mj_per_token")] = frame[column] * 1e3
    out["j_per_sample"] = frame["energy_j"]
    out["rounds"], out["spread"], out["power_w"] = frame["energy_rounds"], frame["energy_spread"], frame["power_w"]
    return out


def resources_markdown(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The README's memory and energy lines (decode, per regime), or none where no cell has them."""
    frame = resource_frame(con, {"phase": "decode"})
    if frame.empty:
        return []
    out = ["### Memory and energy per decode token", "",
           "Peak memory of a decode repetition (device allocator on GPU, process RSS on CPU), energy per decode "
           "token with a 95% t interval across rounds (run-to-run variance left out), mean power:", ""]
    for regime, cells in frame.sort_values(["regime", "backend", "dtype", "params"]).groupby("regime", sort=True):
        out += [f"{regime}:", "", "| model | backend | dtype | batch | peak MiB | weights MiB | KV cache MiB | "
                "mJ per token [95% CI] | W |", "|---|---|---|---|---|---|---|---|---|"]
        for row in cells.itertuples():
            energy = ("unknown" if not np.isfinite(row.energy_j_per_token) else
                      f"{row.energy_j_per_token * 1e3:.3g} [{row.energy_j_per_token_ci_low * 1e3:.3g}, "
                      f"{row.energy_j_per_token_ci_high * 1e3:.3g}]")
            power = f"{row.power_w:.0f}" if np.isfinite(row.power_w) else "unknown"
            out.append(f"| {row.model_name} | {row.backend} | {row.dtype} | {row.batch_size} | "
                       f"{_mib(row.peak_memory_bytes, 1)} | {_mib(row.weight_bytes, 1)} | {_mib(row.kv_cache_bytes, 2)} | "
                       f"{energy} | {power} |")
        out.append("")
    pairs = pair_energy(frame)
    pairs = pairs[pairs["batch_size"] == 1] if len(pairs) else pairs
    if len(pairs):
        out += ["Energy per decode token of the seed pair, gpt2-5m (12 x 80) over gpt2-25m (3 x 384), batch 1, "
                "with a 95% t interval at the level that replicates (runs, else the paired rounds of one run):", ""]
        for regime, rows in pairs.groupby("regime", sort=True):
            out += [f"{regime}:", "", "| backend | dtype | gpt2-5m mJ | gpt2-25m mJ | ratio [95% CI] | CI across |",
                    "|---|---|---|---|---|---|"]
            out += [f"| {row.backend} | {row.dtype} | {row.small_mj_per_token:.3g} | {row.large_mj_per_token:.3g} | "
                    f"{pair_ratio_text(row.ratio, row.ratio_ci_low, row.ratio_ci_high, row.ci_kind)} | "
                    f"{_units_text(row.ci_kind, row.runs)} |"
                    for row in rows.itertuples()]
            out.append("")
    return out


def pair_ratio_text(ratio: float, low: float, high: float, kind: str) -> str:
    """A ratio with its interval (analysis.intervals.ci_text), the missing one in parentheses."""
    interval = ci_text(low, high, kind)
    return f"{ratio:.2f}x " + (f"({interval})" if interval == NO_CI else interval)


def _units_text(kind: str, runs: int) -> str:
    """What a pair's interval is across, as the README's energy table names it."""
    return {CI_ACROSS_RUNS: f"{runs} runs", CI_ACROSS_ROUNDS: "rounds of 1 run"}.get(kind, NO_CI)


def _mib(value: float, digits: int) -> str:
    return f"{value / MIB:.{digits}f}" if np.isfinite(value) else "unknown"
