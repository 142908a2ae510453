"""One run's results, read straight from its run directory: what a user looks at first.

`python -m runner run` ends with this table and the dashboard's Run page ends a finished
run with it, so the numbers a run measured are on screen where it was started, with or
without a store (`--no-ingest` runs write only the run directory). The definitions are the
analysis's (`analysis.load`, `analysis.stats`): the median is over every decode step of the
cell, and the 95% CI is Student's t on the log medians of the cell's rounds
(`analysis.intervals`), so the numbers here agree with the Explore and Runs pages once the
run is ingested. With fewer than two rounds there is no independent unit, and no CI is
given rather than one from resampled decode steps (they are autocorrelated).

Reads through runner.runfiles (the run-file format's one room); imports neither torch nor
streamlit nor duckdb.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.intervals import CI_ACROSS_ROUNDS, CI_NONE, kind_for, t_interval
from runner.runfiles import RunDir, decode_round_medians

NOT_MEASURED = "not measured"  # a planned cell without a record: the run was stopped or is still going
RESULT_COLUMNS = ("model", "n_layer", "width", "backend", "dtype", "batch", "prompt", "gen", "status",
                  "decode_ms_per_token", "decode_ci_low", "decode_ci_high", "ci_kind", "decode_rounds",
                  "prefill_ms", "error", "cell_key")
CONFIDENCE = 0.95
DIGITS = 3  # significant digits shown: CPU and GPU timings rarely repeat better than 1 part in 1000


def _configuration(key: str, cell: dict) -> dict:
    model = cell.get("model") or {}
    return {"model": model.get("name"), "n_layer": model.get("n_layer"), "width": model.get("n_embd"),
            "backend": cell.get("backend"), "dtype": cell.get("dtype"), "batch": cell.get("batch_size"),
            "prompt": cell.get("prompt_len"), "gen": cell.get("gen_len"), "cell_key": key}


def _measured(record: dict) -> dict:
    decode = [v for rep in record.get("decode") or [] for v in rep]
    prefill = record.get("prefill") or []
    row = {"status": record.get("status"), "error": record.get("error"),
           "decode_ms_per_token": statistics.median(decode) if decode else math.nan,
           "prefill_ms": statistics.median(prefill) if prefill else math.nan,
           "decode_ci_low": math.nan, "decode_ci_high": math.nan}
    by_round = decode_round_medians(record)
    row["decode_rounds"] = len(by_round)
    row["ci_kind"] = kind_for(len(by_round), CI_ACROSS_ROUNDS) if decode else CI_NONE
    if row["ci_kind"] == CI_ACROSS_ROUNDS:
        low, high = t_interval(np.log([by_round]), CONFIDENCE)
        row["decode_ci_low"], row["decode_ci_high"] = float(np.exp(low[0])), float(np.exp(high[0]))
    return row


def run_results(run_dir: Path) -> pd.DataFrame:
    """One row per planned cell of the run in `run_dir` (columns RESULT_COLUMNS).

    decode_ms_per_token is the median of every decode step of the cell; decode_ci_low/high
    the 95% t interval across its rounds where it has two or more (ci_kind "across rounds"),
    else NaN with ci_kind "none"; prefill_ms the median prefill. Failed and unsupported
    cells carry their error; cells the run planned but has not measured have status
    NOT_MEASURED. Raises FileNotFoundError where `run_dir` holds no run.
    """
    run = RunDir(run_dir)
    meta = run.readable_meta()
    if meta is None:
        raise FileNotFoundError(f"{run_dir} is not a run directory (no readable meta.json)")
    records = {r.get("cell_key"): r for r in run.readable_cell_records()}
    rows = []
    planned = [(p.get("key"), p.get("cell") or {}) for p in meta.get("cells") or []]
    planned += [(key, r.get("cell") or {}) for key, r in records.items() if key not in {k for k, _ in planned}]
    for key, cell in planned:
        record = records.get(key)
        measured = _measured(record) if record is not None else {
            "status": NOT_MEASURED, "error": None, "decode_ms_per_token": math.nan, "prefill_ms": math.nan,
            "decode_ci_low": math.nan, "decode_ci_high": math.nan, "decode_rounds": 0, "ci_kind": CI_NONE}
        rows.append(_configuration(key, cell) | measured)
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    order = ["model", "backend", "dtype", "batch", "prompt", "gen"]
    return frame.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


def significant(value: float, digits: int = DIGITS) -> str:
    """A latency with `digits` significant digits, never in exponent notation ("0.431", "24.9", "1,234")."""
    if value is None or not math.isfinite(value):
        return ""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def interval_text(row: pd.Series) -> str:
    """A row's CI as shown: "[low, high]", or why it has none ("no CI (1 round)")."""
    if row["ci_kind"] == CI_NONE or not (math.isfinite(row["decode_ci_low"]) and math.isfinite(row["decode_ci_high"])):
        if row["status"] != "ok":
            return ""
        rounds = int(row["decode_rounds"])
        return f"no CI ({rounds} round{'s' if rounds != 1 else ''})"
    return f"[{significant(row['decode_ci_low'])}, {significant(row['decode_ci_high'])}]"


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The results as a reader wants them: one column per fact, numbers as text with
    DIGITS significant digits, the CI (or why there is none) in words, errors on one line."""
    shown = pd.DataFrame({
        "model": frame["model"],
        "layers x width": [f"{n} x {w}" for n, w in zip(frame["n_layer"], frame["width"])],
        "backend": frame["backend"], "dtype": frame["dtype"],
        "batch": frame["batch"], "prompt": frame["prompt"], "gen": frame["gen"], "status": frame["status"],
        "decode ms/token": frame["decode_ms_per_token"].map(significant),
        "95% CI": [interval_text(row) for _, row in frame.iterrows()],
        "rounds": frame["decode_rounds"],
        "prefill ms": frame["prefill_ms"].map(significant),
        "error": frame["error"].fillna("").map(lambda e: " ".join(str(e).split())[:120]),
    })
    if not shown["error"].any():
        shown = shown.drop(columns="error")
    return shown


def format_run_results(frame: pd.DataFrame) -> str:
    """`run_results` as a compact plain-text table for a terminal."""
    if frame.empty:
        return "no cells planned in this run"
    return display_frame(frame).to_string(index=False)
