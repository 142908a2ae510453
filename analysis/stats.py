"""Per (cell, phase) statistics from raw samples.

The plain statistics come from one DuckDB aggregate (a million samples in tens of
milliseconds); the CI of the median from `bootstrap.median_draws`, which needs each
cell's values sorted, so a second query streams them out in (cell, phase, latency) order.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from analysis.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, median_draws, percentile_ci
from analysis.load import CELL_COLUMNS, add_group_id, where_clause

STAT_COLUMNS = ("n", "median", "mean", "std", "cv", "p5", "p95", "median_ci_low", "median_ci_high")


@dataclass(frozen=True)
class CellStats:
    """Statistics per (cell, phase) and the bootstrap replicates of each row's median.

    `draws[i]` belongs to `frame.iloc[i]`; inversions reuse them so that a ratio's CI costs
    no second pass over the samples.
    """

    frame: pd.DataFrame
    draws: np.ndarray
    confidence: float
    seed: int


def compute_cell_stats(
    con: duckdb.DuckDBPyConnection,
    filters: Mapping[str, Any] | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> CellStats:
    """Statistics of every ok cell and phase matching `filters`, with bootstrap replicates.

    Frame columns: the cell's configuration (model, n_layer, n_embd, params, backend, dtype,
    batch_size, prompt_len, gen_len, regime, ...), `phase`, `group_id`, then n, median, mean,
    std (sample), cv (std / mean), p5, p95 (linear interpolation, as numpy's default),
    median_ci_low/high (percentile bootstrap), tokens_per_s and its CI (decode and e2e).
    """
    where, params = where_clause(filters)
    cell_cols = ", ".join(f"c.{c}" for c in CELL_COLUMNS if c != "cell_id")
    source = (
        "FROM samples s JOIN cells c ON c.cell_id = s.cell_id JOIN runs r ON r.run_id = c.run_id "
        f"WHERE {where}"
    )
    frame = con.execute(
        f"""
        WITH agg AS (
            SELECT s.cell_id, s.phase, count(*) AS n, median(s.latency_ms) AS median,
                   avg(s.latency_ms) AS mean, stddev_samp(s.latency_ms) AS std,
                   quantile_cont(s.latency_ms, 0.05) AS p5, quantile_cont(s.latency_ms, 0.95) AS p95
            {source}
            GROUP BY s.cell_id, s.phase
        )
        SELECT agg.*, {cell_cols}, r.regime, r.series_id, r.device_kind
        FROM agg JOIN cells c ON c.cell_id = agg.cell_id JOIN runs r ON r.run_id = c.run_id
        ORDER BY agg.cell_id, agg.phase
        """,
        params,
    ).df()
    values = con.execute(
        f"SELECT s.latency_ms {source} ORDER BY s.cell_id, s.phase, s.latency_ms", params
    ).fetchnumpy()["latency_ms"]
    values = np.asarray(values, dtype=np.float64)
    if frame.empty:
        draws = np.empty((0, n_resamples))
    else:
        draws = median_draws(values, frame["n"].to_numpy(), n_resamples, seed)
    low, high = percentile_ci(draws, confidence) if len(frame) else (np.array([]), np.array([]))
    frame["cv"] = frame["std"] / frame["mean"]
    frame["median_ci_low"] = low
    frame["median_ci_high"] = high
    frame = _add_throughput(frame)
    frame = add_group_id(frame)
    return CellStats(frame=frame, draws=draws, confidence=confidence, seed=seed)


def cell_stats(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None, **kwargs: Any) -> pd.DataFrame:
    """The frame of `compute_cell_stats`, for callers that need no bootstrap replicates."""
    return compute_cell_stats(con, filters, **kwargs).frame


def _add_throughput(frame: pd.DataFrame) -> pd.DataFrame:
    """Tokens per second next to the raw latency (gpt-fast habit): decode and e2e only.

    decode: one sample is one step producing batch_size tokens, so batch * 1000 / median ms.
    e2e: one sample generates batch_size * gen_len tokens. Prefill produces one token per
    sequence after reading the prompt; its throughput is not comparable, so it is left empty.
    """
    tokens = np.where(
        frame["phase"] == "decode",
        frame["batch_size"],
        np.where(frame["phase"] == "e2e", frame["batch_size"] * frame["gen_len"], np.nan),
    ).astype(np.float64)
    frame["tokens_per_s"] = tokens * 1000.0 / frame["median"]
    frame["tokens_per_s_ci_low"] = tokens * 1000.0 / frame["median_ci_high"]
    frame["tokens_per_s_ci_high"] = tokens * 1000.0 / frame["median_ci_low"]
    return frame


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """A short JSON-ready overview of a stats frame: counts and the noisiest cells."""
    if frame.empty:
        return {"n_cells": 0, "n_rows": 0, "n_samples": 0, "phases": {}, "high_cv": []}
    high = frame.sort_values("cv", ascending=False).head(5)
    return {
        "n_cells": int(frame["cell_id"].nunique()),
        "n_rows": int(len(frame)),
        "n_samples": int(frame["n"].sum()),
        "phases": {str(k): int(v) for k, v in frame["phase"].value_counts().sort_index().items()},
        "median_cv": float(frame["cv"].median()),
        "high_cv": [
            {"cell_id": r.cell_id, "phase": r.phase, "model_name": r.model_name, "cv": float(r.cv)}
            for r in high.itertuples()
        ],
    }
