"""Per (cell, phase) statistics from raw samples.

The plain statistics come from one DuckDB aggregate (analysis.load.phase_aggregates: a
million samples in tens of milliseconds). The CI of the median is built on the highest level measured inside a run
(`analysis.intervals`): a Student-t interval on the log medians of the cell's rounds when
it has two or more (protocol 2), else no CI at all (`ci_kind` "none", NaN bounds): samples
and generations of one round are autocorrelated, so an interval that resamples them would
claim a precision the measurement does not have. Across runs, `analysis.reproducibility.
pooled_stats` replaces these with intervals across runs.

`log_median_se` keeps a figure of within-run noise for every cell: the rounds' standard
error where there are rounds, else an i.i.d. order-statistic bootstrap of the samples
(`analysis.bootstrap`), a lower bound, used only to weight run medians against each other.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from analysis.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, median_draws, percentile_ci
from analysis.intervals import CI_ACROSS_ROUNDS, MIN_UNITS, block_rng, kind_for, to_latency, unit_t_draws
from analysis.load import add_group_id, phase_aggregates, round_medians, sorted_latencies
from analysis.resources import tokens_per_sample

STAT_COLUMNS = ("n", "median", "mean", "std", "cv", "p5", "p95", "median_ci_low", "median_ci_high", "ci_kind")
IID_RESAMPLES = 200  # only a standard error comes from the i.i.d. bootstrap: 200 replicates give it within ~10%


@dataclass(frozen=True)
class CellStats:
    """Statistics per (cell, phase) and replicates of each row's median.

    `draws[i]` belongs to `frame.iloc[i]` (all NaN where `ci_kind` is "none"); inversions
    reuse them so that a ratio's CI costs no second pass over the samples. Rows measured on
    the same units (the same rounds of one run, or the same runs when pooled) share their
    random draws, so a ratio of two of them is paired by unit (`analysis.intervals`).
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
    pool_families: bool = False,
) -> CellStats:
    """Statistics of every ok cell and phase matching `filters`, with replicates of the median.

    Groups (`group_id`) hold one family each unless `pool_families`: then a group holds
    every family, and inversions compare shapes across them.

    Frame columns: the cell's configuration (model, n_layer, n_embd, params, backend, dtype,
    batch_size, prompt_len, gen_len, regime, ...), `phase`, `group_id`, then n, median, mean,
    std (sample), cv (std / mean), p5, p95 (linear interpolation, as numpy's default),
    n_rounds, ci_kind ("across rounds" with two or more rounds, else "none"),
    median_ci_low/high (Student t on the rounds' log medians; NaN without a CI), unit_ids
    and unit_log_medians (the rounds, "run_id#round", and their log medians: what an
    interval over this cell rests on), log_median_se, tokens_per_s and its CI (decode, e2e).
    """
    frame = phase_aggregates(con, filters)
    rounds = round_medians(con, filters)
    values = sorted_latencies(con, filters)
    frame["cv"] = frame["std"] / frame["mean"]
    draws = _round_draws(frame, rounds, n_resamples, seed)
    if frame.empty:
        iid_se = np.array([])
    else:
        iid = median_draws(values, frame["n"].to_numpy(), IID_RESAMPLES, seed)
        iid_se = np.log(iid).std(axis=1, ddof=1)
    with np.errstate(invalid="ignore"):  # rows without a CI are all NaN
        low, high = percentile_ci(draws, confidence) if len(frame) else (np.array([]), np.array([]))
    frame["median_ci_low"] = low
    frame["median_ci_high"] = high
    round_se = frame["unit_log_medians"].map(lambda v: np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) >= MIN_UNITS else np.nan)
    frame["log_median_se"] = np.where(frame["ci_kind"] == CI_ACROSS_ROUNDS, round_se.to_numpy(np.float64), iid_se)
    frame["run_cell_id"] = frame["cell_id"]  # pooled rows keep their first run's cell here
    frame = add_throughput(frame)
    frame = add_group_id(frame, pool_families=pool_families)
    return CellStats(frame=frame, draws=draws, confidence=confidence, seed=seed)


def across_families(stats: CellStats) -> CellStats:
    """`stats` with groups that pool every family (`add_group_id(pool_families=True)`): the
    same rows and replicates, so inversions compare shapes of different families."""
    return CellStats(add_group_id(stats.frame, pool_families=True), stats.draws, stats.confidence, stats.seed)


def _round_draws(frame: pd.DataFrame, rounds: pd.DataFrame, n_resamples: int, seed: int) -> np.ndarray:
    """Fill n_rounds, ci_kind, unit_ids, unit_log_medians in `frame`; return the replicates.

    Cells of one run measured in the same rounds form a block with shared draws, so that a
    ratio of two of them is paired by round; each block draws from a stream of its own
    (`intervals.block_rng`), so a seed fixes it whatever else is in the data.
    """
    key = pd.MultiIndex.from_frame(frame[["cell_id", "phase"]])
    rounds = rounds.assign(log_median=np.log(rounds["median"].to_numpy(np.float64)))
    grouped = rounds.groupby(["cell_id", "phase"], sort=False)
    round_ids = grouped["round"].agg(list).reindex(key)
    log_medians = grouped["log_median"].agg(list).reindex(key)
    run_ids = frame["run_id"].astype(str).to_numpy()
    frame["n_rounds"] = [len(r) for r in round_ids]
    frame["ci_kind"] = [kind_for(len(r), CI_ACROSS_ROUNDS) for r in round_ids]
    frame["unit_ids"] = [[f"{run}#{r}" for r in ids] for run, ids in zip(run_ids, round_ids)]
    frame["unit_log_medians"] = [list(map(float, v)) for v in log_medians]
    draws = np.full((len(frame), n_resamples), np.nan)
    blocks: dict[tuple, list[int]] = {}
    for i, (units, n) in enumerate(zip(frame["unit_ids"], frame["n_rounds"])):
        if n >= MIN_UNITS:
            blocks.setdefault(tuple(units), []).append(i)
    for units, rows in blocks.items():
        rows = np.asarray(rows)
        draws[rows] = to_latency(unit_t_draws(np.array([log_medians.iat[i] for i in rows]), n_resamples,
                                              block_rng(seed, units)))
    return draws


def cell_stats(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None, **kwargs: Any) -> pd.DataFrame:
    """The frame of `compute_cell_stats`, for callers that need no replicates."""
    return compute_cell_stats(con, filters, **kwargs).frame


def add_throughput(frame: pd.DataFrame) -> pd.DataFrame:
    """Tokens per second next to the raw latency (gpt-fast habit), for every phase.

    A sample handles `analysis.resources.tokens_per_sample` tokens: a prefill reads batch x
    prompt_len prompt tokens (prompt tokens/s, what prefill throughput means), a decode step
    yields batch_size, a whole generation batch_size x gen_len; tokens/s = tokens x 1000 /
    median ms, its CI from the median's.
    """
    tokens = tokens_per_sample(frame["phase"], frame["batch_size"], frame["prompt_len"], frame["gen_len"])
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
