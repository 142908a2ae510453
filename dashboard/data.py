"""What the pages make of the store's frames, without SQL, and incremental ingestion of run
directories.

The queries the pages need live in analysis.load (the one room for reads); this module
shapes their frames for the pages (coverage, integrity, Explore's table, pair counts) and
ingests the run directories that changed since the last look (`ingest_changed`).
"""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from analysis.load import with_family
from analysis.intervals import interval_texts, too_noisy
from analysis.resources import phase_resources
from runner.machine_load import BUSY_ADVICE
from runner.runfiles import RunSignature, changed_run_dirs
from vocabulary import BUSY_MACHINE_FLAG, runs_path


def _flags(value) -> list[str]:
    """A cell's flags as a list: DuckDB gives a list, NULL comes back as None or pd.NA."""
    if value is None or value is pd.NA or isinstance(value, float):
        return []
    return [str(f) for f in value]


def flag_text(value) -> str:
    return ", ".join(_flags(value))


# What to do about a flag, where the flag alone does not say (shown beside the flagged cells).
FLAG_ADVICE = {
    BUSY_MACHINE_FLAG: f"{BUSY_MACHINE_FLAG}: measured while the machine was busy; {BUSY_ADVICE}, then measure again",
}


def flag_advice(flags) -> list[str]:
    """One line of advice per flag among `flags` that has any (FLAG_ADVICE), in that order."""
    return [FLAG_ADVICE[f] for f in dict.fromkeys(flags) if f in FLAG_ADVICE]


def coverage(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells per regime and backend, split by status, with distinct shapes: what was measured."""
    if cells.empty:
        return pd.DataFrame(columns=["regime", "backend", "shapes", "ok", "failed", "unsupported"])
    cells = cells.assign(shape=cells["n_layer"].astype(str) + "x" + cells["n_embd"].astype(str))
    counts = pd.crosstab([cells["regime"], cells["backend"]], cells["status"])
    for status in ("ok", "failed", "unsupported"):
        if status not in counts:
            counts[status] = 0
    shapes = cells.groupby(["regime", "backend"])["shape"].nunique().rename("shapes")
    out = counts.join(shapes).reset_index()
    return out[["regime", "backend", "shapes", "ok", "failed", "unsupported"]]


def integrity(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with integrity flags or that did not finish ok: what to distrust or re-run."""
    if cells.empty:
        return cells
    flagged = cells["flags"].apply(lambda f: bool(_flags(f))) | (cells["status"] != "ok")
    out = cells[flagged].copy()
    out["flags"] = out["flags"].apply(flag_text)
    return out[["regime", "backend", "model_name", "n_layer", "n_embd", "dtype", "batch_size", "prompt_len",
                "status", "flags", "error", "cell_id"]]


def explore_table(cells: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, phase) with its statistics (the CI of this run's median and, where
    `stats` carries it, its re-run interval); failed cells kept with their error."""
    from analysis.rerun import NO_HISTORY, RERUN_COLUMNS  # statsmodels, on first use only

    stat_cols = ["cell_id", "phase", "n", "median", "median_ci_low", "median_ci_high", "ci_kind", *RERUN_COLUMNS, "cv",
                 "p5", "p95", "tokens_per_s"]
    if len(stats) and "rerun_basis" not in stats:  # statistics without the re-run interval: it has no history
        stats = stats.assign(rerun_ci_low=np.nan, rerun_ci_high=np.nan, rerun_basis=NO_HISTORY)
    if len(stats):
        # an interval too wide to mean anything is shown as "too noisy (N rounds would be needed)"
        # and its bounds are left empty (analysis.intervals.interval_text)
        shown = stats.assign(median_ci=interval_texts(stats))
        noisy = [too_noisy(low, high) for low, high in zip(shown["median_ci_low"], shown["median_ci_high"])]
        shown.loc[noisy, ["median_ci_low", "median_ci_high"]] = np.nan
        shown = shown[stat_cols + ["median_ci"]]
    else:
        shown = pd.DataFrame(columns=stat_cols + ["median_ci"])
    merged = cells.merge(shown, on="cell_id", how="left")
    # memory and energy of the same cell and phase (analysis.resources); NaN where not measured
    resources = phase_resources(cells)[["cell_id", "phase", "peak_memory_bytes", "energy_j_per_token", "power_w"]]
    merged = merged.merge(resources.astype({"phase": merged["phase"].dtype}), on=["cell_id", "phase"], how="left")
    merged["peak_memory_mib"] = merged["peak_memory_bytes"] / 2**20
    merged["mj_per_token"] = merged["energy_j_per_token"] * 1e3
    merged["flags"] = merged["flags"].apply(flag_text)
    merged["params_m"] = merged["params"] / 1e6
    merged = with_family(merged)
    cols = ["regime", "backend", "phase", "model_name", "family", "n_layer", "n_embd", "n_head", "n_kv_head", "params_m",
            "dtype", "batch_size",
            "prompt_len", "gen_len", "status", "n", "median", "median_ci", "median_ci_low", "median_ci_high", "ci_kind",
            *RERUN_COLUMNS, "cv", "p5", "p95", "tokens_per_s", "peak_memory_mib", "mj_per_token", "power_w", "flags", "error", "cell_id", "run_id"]
    return merged[cols].reset_index(drop=True)


def pair_counts(stats: pd.DataFrame) -> pd.Series:
    """Pairs (smaller, larger by params) per group: what the inversion analysis compares."""
    def count(params: pd.Series) -> int:
        values = params.to_numpy()
        return int((values[:, None] < values[None, :]).sum())

    if stats.empty:
        return pd.Series(dtype=int)
    return stats.groupby("group_id")["params"].apply(count)


# --- ingestion -----------------------------------------------------------------------------

def read_changed(runs_dir: str | Path, seen: Mapping[str, RunSignature]) -> list[tuple[RunSignature, Any]]:
    """The run directories that changed since `seen`, each read (store.ingest.read_run) or the
    IngestError that says why not: done before the store is opened for writing, so a run file
    that is slow or hostile to read never holds the writer lock."""
    from store.ingest import IngestError, read_run

    out = []
    for run, sig in changed_run_dirs(runs_dir, seen):
        try:
            out.append((sig, read_run(run.path)))
        except IngestError as error:
            out.append((sig, error))
    return out


def ingest_read(con: duckdb.DuckDBPyConnection, read: list[tuple[RunSignature, Any]],
                seen: MutableMapping[str, RunSignature]) -> dict[str, int]:
    """Store what `read_changed` read; `seen` maps str(path) to the signature ingested last.

    Returns counts: runs looked at, cells and samples added, and errors (a directory that
    could not be read or stored is retried on the next call)."""
    from store.ingest import IngestError, ingest_read as store_read

    totals = {"runs": 0, "cells_added": 0, "samples_added": 0, "errors": 0}
    for sig, files in read:
        if isinstance(files, IngestError):
            totals["errors"] += 1
            continue
        try:
            report = store_read(con, files)
        except Exception:  # noqa: BLE001 - a directory mid-write or malformed: try again later
            totals["errors"] += 1
            continue
        seen[str(files.path)] = sig
        totals["runs"] += 1
        totals["cells_added"] += report.cells_added
        totals["samples_added"] += report.samples_added
    return totals


def ingest_changed(con: duckdb.DuckDBPyConnection, runs_dir: str | Path, seen: MutableMapping[str, RunSignature]) -> dict[str, int]:
    """Ingest only run directories that changed (cheap enough to call on every rerun): read, then
    stored (`read_changed`, `ingest_read`)."""
    return ingest_read(con, read_changed(runs_dir, seen), seen)


def default_runs_dir() -> Path:
    """The runs folder the dashboard watches: the one the CLI writes to (vocabulary)."""
    return runs_path()
