"""Queries the pages need beyond `analysis`, and incremental ingestion of run directories.

Every function takes a DuckDB connection (the caller passes a cursor) and returns plain
frames or dicts, fully fetched: in DuckDB 2.0 a half-read result blocks `register` on the
same connection.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from analysis.load import where_clause
from analysis.resources import phase_resources, resource_select
# changed_run_dirs is also what the dashboard asks before taking the writer lock (ui.ingest_runs)
from runner.runfiles import RunSignature, changed_run_dirs
from vocabulary import PHASES, runs_path

OPTION_COLUMNS = ("regime", "backend", "dtype", "batch_size", "prompt_len")


def _flags(value) -> list[str]:
    """A cell's flags as a list: DuckDB gives a list, NULL comes back as None or pd.NA."""
    if value is None or value is pd.NA or isinstance(value, float):
        return []
    return [str(f) for f in value]


def flag_text(value) -> str:
    return ", ".join(_flags(value))


def summary(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Counts shown in the sidebar: runs, regimes, cells (ok / failed), samples."""
    runs, regimes, running = con.execute(
        "SELECT count(*), count(DISTINCT regime), count(*) FILTER (status = 'running') FROM runs").fetchall()[0]
    cells, ok, failed = con.execute(
        "SELECT count(*), count(*) FILTER (status = 'ok'), count(*) FILTER (status <> 'ok') FROM cells").fetchall()[0]
    samples = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
    return {"runs": runs, "regimes": regimes, "running": running, "cells": cells, "ok": ok,
            "failed": failed, "samples": samples}


def fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """Changes whenever an ingest or import changed what the analysis would see."""
    s = summary(con)
    statuses = con.execute("SELECT coalesce(string_agg(run_id || ':' || status, ',' ORDER BY run_id), '') FROM runs").fetchall()[0][0]
    return f"{s['runs']}/{s['cells']}/{s['samples']}/{hashlib.sha256(statuses.encode()).hexdigest()[:12]}"


def content_id(con: duckdb.DuckDBPyConnection) -> str:
    """A hash of every row the analysis reads: equal datasets share kept derived results.

    Order-free sums of DuckDB's (unseeded, so stable across processes) row hashes, with the
    row counts: about 20 ms on the bundled data, computed once per data version.
    """
    parts = con.execute("""
        SELECT (SELECT count(*) || ':' || coalesce(sum(hash(run_id, status, regime, environment::VARCHAR, calibration::VARCHAR)::HUGEINT), 0) FROM runs),
               (SELECT count(*) || ':' || coalesce(sum(hash(cell_id, run_id, cell_key, status, flags::VARCHAR, profile::VARCHAR)::HUGEINT), 0) FROM cells),
               (SELECT count(*) || ':' || coalesce(sum(hash(cell_id, phase, rep, step, latency_ms)::HUGEINT), 0) FROM samples)
    """).fetchall()[0]
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24]


def options(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    """The values each global filter can take in this dataset."""
    out: dict[str, list] = {}
    out["regime"] = [r[0] for r in con.execute("SELECT DISTINCT regime FROM runs ORDER BY 1").fetchall()]
    for column in OPTION_COLUMNS[1:]:
        out[column] = [r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM cells ORDER BY 1").fetchall()]
    present = {r[0] for r in con.execute("SELECT DISTINCT phase FROM samples").fetchall()}
    out["phase"] = [p for p in PHASES if p in present]
    return out


def cells_table(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every cell matching the filters, whatever its status, with regime, flags and error;
    a phase filter does not apply (a cell row holds all its phases)."""
    where, params = where_clause(filters, cells="any", phase=False)
    return con.execute(
        "SELECT c.cell_id, c.run_id, r.regime, c.model_name, c.n_layer, c.n_embd, c.n_head, c.params, "
        "c.backend, c.device, c.dtype, c.batch_size, c.prompt_len, c.gen_len, c.status, c.error, c.flags, "
        f"c.setup_s, c.cold_ms, c.warmup_iters, c.warmup_converged, r.status AS run_status, {resource_select(con)} "
        f"FROM cells c JOIN runs r USING (run_id) WHERE {where} ORDER BY r.regime, c.backend, c.params, c.cell_id",
        params,
    ).df()


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


def samples_for(con: duckdb.DuckDBPyConnection, cell_ids: list[str], phases: list[str] | None = None) -> pd.DataFrame:
    """Raw samples of chosen cells, labelled by model for the distribution chart."""
    if not cell_ids:
        return pd.DataFrame(columns=["cell_id", "phase", "rep", "step", "latency_ms", "label"])
    sql = ("SELECT s.cell_id, s.phase, s.rep, s.step, s.latency_ms, "
           "c.model_name || ' ' || c.backend || ' b' || c.batch_size AS label "
           "FROM samples s JOIN cells c USING (cell_id) "
           f"WHERE s.cell_id IN ({', '.join('?' for _ in cell_ids)})")
    params: list = list(cell_ids)
    if phases:
        sql += f" AND s.phase IN ({', '.join('?' for _ in phases)})"
        params += list(phases)
    return con.execute(sql + " ORDER BY s.cell_id, s.phase, s.rep, s.step", params).df()


def explore_table(cells: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, phase) with its statistics; failed cells kept with their error."""
    stat_cols = ["cell_id", "phase", "n", "median", "median_ci_low", "median_ci_high", "ci_kind", "cv", "p5", "p95",
                 "tokens_per_s"]
    merged = cells.merge(stats[stat_cols] if len(stats) else pd.DataFrame(columns=stat_cols), on="cell_id", how="left")
    # memory and energy of the same cell and phase (analysis.resources); NaN where not measured
    resources = phase_resources(cells)[["cell_id", "phase", "peak_memory_bytes", "energy_j_per_token", "power_w"]]
    merged = merged.merge(resources.astype({"phase": merged["phase"].dtype}), on=["cell_id", "phase"], how="left")
    merged["peak_memory_mib"] = merged["peak_memory_bytes"] / 2**20
    merged["mj_per_token"] = merged["energy_j_per_token"] * 1e3
    merged["flags"] = merged["flags"].apply(flag_text)
    merged["params_m"] = merged["params"] / 1e6
    cols = ["regime", "backend", "phase", "model_name", "n_layer", "n_embd", "params_m", "dtype", "batch_size",
            "prompt_len", "gen_len", "status", "n", "median", "median_ci_low", "median_ci_high", "ci_kind", "cv", "p5", "p95",
            "tokens_per_s", "peak_memory_mib", "mj_per_token", "power_w", "flags", "error", "cell_id", "run_id"]
    return merged[cols].reset_index(drop=True)


def finished_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Finished runs with plan, environment and wall time: the history a Run page estimate learns from."""
    return con.execute(
        "SELECT run_id, plan_name, plan::VARCHAR AS plan, environment::VARCHAR AS environment, device_kind, "
        "coalesce(protocol_version, 1) AS protocol_version, epoch(finished_at - started_at) AS wall_s "
        "FROM runs WHERE status = 'finished' AND finished_at IS NOT NULL ORDER BY started_at").df()


def pair_counts(stats: pd.DataFrame) -> pd.Series:
    """Pairs (smaller, larger by params) per group: what the inversion analysis compares."""
    def count(params: pd.Series) -> int:
        values = params.to_numpy()
        return int((values[:, None] < values[None, :]).sum())

    if stats.empty:
        return pd.Series(dtype=int)
    return stats.groupby("group_id")["params"].apply(count)


# --- ingestion -----------------------------------------------------------------------------

def ingest_changed(con: duckdb.DuckDBPyConnection, runs_dir: str | Path, seen: MutableMapping[str, RunSignature]) -> dict[str, int]:
    """Ingest only run directories that changed (cheap enough to call on every rerun).

    `seen` maps str(path) to the signature ingested last (runner.runfiles.changed_run_dirs).

    Returns counts: runs looked at, cells and samples added, and errors (a directory that
    could not be read is retried on the next call).
    """
    from store.ingest import ingest_run_dir

    totals = {"runs": 0, "cells_added": 0, "samples_added": 0, "errors": 0}
    for run, sig in changed_run_dirs(runs_dir, seen):
        try:
            report = ingest_run_dir(con, run.path)
        except Exception:  # noqa: BLE001 - a directory mid-write or malformed: try again later
            totals["errors"] += 1
            continue
        seen[str(run.path)] = sig
        totals["runs"] += 1
        totals["cells_added"] += report.cells_added
        totals["samples_added"] += report.samples_added
    return totals


def default_runs_dir() -> Path:
    """The runs folder the dashboard watches: the one the CLI writes to (vocabulary)."""
    return runs_path()
