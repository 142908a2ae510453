"""Reading the store: the one room for the queries that read the measured data.

Every SELECT over runs, cells and samples that analysis and the dashboard make is a
function here, named for what it returns; the modules that compute from those frames
(analysis.stats, why, resources, reproducibility, run_compare, readme_results,
dashboard.data) hold no SQL. What writes the store (ingest, snapshot import, schema,
store.kept's derived results) lives in store/.

Only cells with status 'ok' are analysed: a failed or unsupported cell has no samples that
mean anything. Filters are a small dict of column -> value or list of values, validated
here (`where_clause`, the one filter builder) so that a typo fails with the allowed names
instead of silently matching nothing.

Every function takes a DuckDB connection (the dashboard passes a cursor) and returns plain
frames, arrays or dicts, fully fetched: in DuckDB 2.0 a half-read result blocks `register`
on the same connection.
"""
from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd

from runner.runfiles import RESOURCE_COLUMNS
from store.schema import KNOWN_BEFORE, table_columns
from vocabulary import BUSY_MACHINE_FLAG, PHASES

# Columns a filter may name, with the table alias that holds them.
FILTER_COLUMNS: dict[str, str] = {
    "run_id": "c",
    "series_id": "r",
    "regime": "r",
    "device_kind": "r",
    "cell_key": "c",
    "model_name": "c",
    "family": "c",
    "n_kv_head": "c",
    "n_layer": "c",
    "n_embd": "c",
    "backend": "c",
    "device": "c",
    "dtype": "c",
    "batch_size": "c",
    "prompt_len": "c",
    "gen_len": "c",
    "phase": "s",
}

# A group holds the cells whose latencies may be compared across shapes: everything but
# the shape is equal, the family (architecture) included unless families are pooled (then
# the family is a term of the fit: analysis.regression.fit_across_families). e2e latency
# also depends on the generation length, the others not.
GROUP_KEYS: tuple[str, ...] = ("regime", "backend", "phase", "dtype", "batch_size", "prompt_len", "family")
E2E_GROUP_KEYS: tuple[str, ...] = GROUP_KEYS + ("gen_len",)
# The family of a group that pools every family (`add_group_id(pool_families=True)`).
ALL_FAMILIES = "all families"

# The cells columns every analysis frame carries: what identifies a cell and what it measured
# with. A projection chosen here, not a copy of the table (schema.sql holds more: outcome,
# timings, JSON records), so a column added to the schema does not go into every frame;
# tests/analysis/test_load_columns.py checks these names against the schema.
CELL_COLUMNS = (
    "cell_id", "run_id", "cell_key", "model_name", "family", "n_layer", "n_embd", "n_head", "n_kv_head", "params",
    "backend", "backend_options", "device", "dtype", "batch_size", "prompt_len", "gen_len", "flags",
)


# A cell no measurement can produce (a model of 0 layers, a NaN or negative latency): the
# snapshot import refuses these, but a store may predate that check or be written by hand.
# One such cell would make a design matrix singular or a headline absurd, so analysis
# leaves it out and says so (`left_out`), rather than letting it take a page down.
SANE_CELL = (
    "(c.n_layer > 0 AND c.n_embd > 0 AND c.n_head > 0 AND c.batch_size > 0 AND c.prompt_len > 0 "
    "AND c.gen_len > 0 AND c.params > 0 AND NOT EXISTS (SELECT 1 FROM samples b WHERE b.cell_id = c.cell_id "
    "AND NOT (isfinite(b.latency_ms) AND b.latency_ms > 0)))"
)


# Which cells a query reads, by name (`where_clause(cells=...)`):
#   analysed  ok and sane: what every analysis reads
#   left_out  ok but impossible (not SANE_CELL): what `left_out` names
#   any       every status, failed and unsupported too: the dashboard's tables of cells
CellScope = Literal["analysed", "left_out", "any"]
CELL_SCOPES: dict[CellScope, tuple[str, ...]] = {
    "analysed": ("c.status = 'ok'", SANE_CELL),
    "left_out": ("c.status = 'ok'", f"NOT {SANE_CELL}"),
    "any": (),
}


def where_clause(filters: Mapping[str, Any] | None, *, cells: CellScope = "analysed", phase: bool = True,
                 present: Collection[str] | None = None) -> tuple[str, list]:
    """The one filter builder: SQL conditions over `cells c JOIN runs r` (and `samples s`
    where a phase filter applies) and their parameters.

    `cells` is one of CELL_SCOPES. With `phase=False` a phase filter is accepted and
    ignored, for a query of cells rather than samples: a cell is measured in every phase it
    supports. A filter value is one value or a list of them; None means no filter.
    `present`, the cells table's columns, lets a filter on a column added later (family,
    n_kv_head) read a store opened read-only before it as what its cells are known to be
    (`cell_select`); the functions here pass it (`_where`).
    Raises ValueError naming the allowed keys for an unknown filter, and for an empty list,
    so a misspelt filter never quietly returns an empty analysis.
    """
    if cells not in CELL_SCOPES:
        raise ValueError(f"unknown cell scope '{cells}'; allowed: {', '.join(CELL_SCOPES)}")
    conditions = list(CELL_SCOPES[cells])
    params: list = []
    for key, value in (filters or {}).items():
        if key not in FILTER_COLUMNS:
            raise ValueError(f"unknown filter '{key}'; allowed: {', '.join(FILTER_COLUMNS)}")
        if value is None or (key == "phase" and not phase):
            continue
        values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
        if not values:
            raise ValueError(f"filter '{key}' has an empty list of values")
        conditions.append(f"{_filter_column(key, present)} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    return " AND ".join(conditions) or "TRUE", params


def _filter_column(key: str, present: Collection[str] | None) -> str:
    """The SQL a filter on `key` compares: the column, or for a cells column added later the
    value `cell_select` reads (coalesced, or what is known where the column is absent)."""
    known = KNOWN_BEFORE.get(("cells", key)) if FILTER_COLUMNS[key] == "c" else None
    if known is None:
        return f"{FILTER_COLUMNS[key]}.{key}"
    known = known if known.startswith("'") else f"c.{known}"
    return known if present is not None and key not in present else f"coalesce(c.{key}, {known})"


def _where(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None, **options: Any) -> tuple[str, list]:
    """`where_clause` for this store's cells table (older stores read as `cell_select` reads them)."""
    return where_clause(filters, present=table_columns(con, "cells"), **options)


def load_cells(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Ok cells with their run's regime and series, one row per cell (no phase).

    A phase filter is ignored here: a cell is measured in all phases it supports.
    """
    where, params = _where(con, filters, phase=False)
    cols = cell_select(con)
    sql = (
        f"SELECT {cols}, r.regime, r.series_id, r.device_kind, coalesce(r.protocol_version, 1) AS protocol_version "
        f"FROM cells c JOIN runs r USING (run_id) WHERE {where} ORDER BY c.cell_id"
    )
    return con.execute(sql, params).df()


def left_out(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> str | None:
    """A one-line warning naming the ok cells the analysis leaves out as impossible, or None."""
    where, params = _where(con, filters, cells="left_out", phase=False)
    rows = con.execute(
        f"SELECT c.cell_id FROM cells c JOIN runs r USING (run_id) WHERE {where} ORDER BY c.cell_id", params
    ).fetchall()
    if not rows:
        return None
    shown = ", ".join(repr(r[0][:80]) for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
    return (f"{len(rows)} cell{'s' if len(rows) > 1 else ''} left out of the analysis: impossible values "
            f"(a shape or parameter count <= 0, or a latency that is not a positive number): {shown}")


def load_samples(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Raw samples of ok cells: cell_id, phase, rep, step, latency_ms (for distributions)."""
    where, params = _where(con, filters)
    sql = (
        "SELECT s.cell_id, s.phase, s.rep, s.step, s.latency_ms "
        "FROM samples s JOIN cells c USING (cell_id) JOIN runs r ON r.run_id = c.run_id "
        f"WHERE {where} ORDER BY s.cell_id, s.phase, s.rep, s.step"
    )
    return con.execute(sql, params).df()


# --- the statistics' reads (analysis.stats): the analysed samples, three ways ----------------

def _analysed_samples(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None) -> tuple[str, list]:
    """FROM and WHERE of the analysed cells' samples under `filters`, and its parameters."""
    where, params = _where(con, filters)
    source = (
        "FROM samples s JOIN cells c ON c.cell_id = s.cell_id JOIN runs r ON r.run_id = c.run_id "
        f"WHERE {where}"
    )
    return source, params


def phase_aggregates(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per analysed (cell, phase), by cell and phase: cell_id, phase, n, median, mean,
    std (sample), p5, p95 (linear interpolation) of its samples, then the other CELL_COLUMNS,
    regime, series_id, device_kind and protocol_version (1 where a run did not say)."""
    source, params = _analysed_samples(con, filters)
    cell_cols = cell_select(con, [c for c in CELL_COLUMNS if c != "cell_id"])
    return con.execute(
        f"""
        WITH agg AS (
            SELECT s.cell_id, s.phase, count(*) AS n, median(s.latency_ms) AS median,
                   avg(s.latency_ms) AS mean, stddev_samp(s.latency_ms) AS std,
                   quantile_cont(s.latency_ms, 0.05) AS p5, quantile_cont(s.latency_ms, 0.95) AS p95
            {source}
            GROUP BY s.cell_id, s.phase
        )
        SELECT agg.*, {cell_cols}, r.regime, r.series_id, r.device_kind,
               coalesce(r.protocol_version, 1) AS protocol_version
        FROM agg JOIN cells c ON c.cell_id = agg.cell_id JOIN runs r ON r.run_id = c.run_id
        ORDER BY agg.cell_id, agg.phase
        """,
        params,
    ).df()


def round_medians(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """cell_id, phase, round, median: the median sample of each round of each analysed (cell,
    phase), by cell, phase and round. A protocol-1 sample has no round: its cell is round 0."""
    source, params = _analysed_samples(con, filters)
    return con.execute(
        f"SELECT s.cell_id, s.phase, coalesce(s.round, 0) AS round, median(s.latency_ms) AS median "
        f"{source} GROUP BY ALL ORDER BY s.cell_id, s.phase, round",
        params,
    ).df()


def sorted_latencies(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> np.ndarray:
    """Every analysed sample's latency_ms (float64), by cell and phase, ascending within each:
    the runs `phase_aggregates` counts (n), in its row order."""
    source, params = _analysed_samples(con, filters)
    values = con.execute(
        f"SELECT s.latency_ms {source} ORDER BY s.cell_id, s.phase, s.latency_ms", params
    ).fetchnumpy()["latency_ms"]
    return np.asarray(values, dtype=np.float64)


# --- cells with their records (analysis.why, analysis.resources, the dashboard's tables) -----

def profiled_cells(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Analysed cells that carry a profile, by cell: their shape (with MLP width and vocabulary)
    and configuration (backend options as JSON text, '{}' where none), regime, profile and the
    run's calibration as JSON text (calibration NULL where the run has none), and decode_ms,
    the median of their decode samples (cells without any are left out)."""
    where, params = _where(con, filters, phase=False)
    sql = f"""
        SELECT c.cell_id, c.model_name, {cell_select(con, ["family"])}, c.n_layer, c.n_embd, c.n_head,
               {cell_select(con, ["n_kv_head"])}, c.n_inner, c.vocab_size, c.params, c.backend,
               coalesce(CAST(c.backend_options AS VARCHAR), '{{}}') AS backend_options, c.device, c.dtype,
               c.batch_size, c.prompt_len, c.gen_len, r.regime,
               CAST(c.profile AS VARCHAR) AS profile, CAST(r.calibration AS VARCHAR) AS calibration,
               median(s.latency_ms) AS decode_ms
        FROM cells c JOIN runs r USING (run_id) JOIN samples s ON s.cell_id = c.cell_id AND s.phase = 'decode'
        WHERE {where} AND c.profile IS NOT NULL
        GROUP BY ALL ORDER BY c.cell_id
    """
    return con.execute(sql, params).df()


def cell_select(con: duckdb.DuckDBPyConnection, columns: Sequence[str] = CELL_COLUMNS, alias: str = "c") -> str:
    """Cells columns for a SELECT list. A store opened read-only before schema 4 has no
    family or n_kv_head: what is known of its cells stands in (store.schema.KNOWN_BEFORE:
    gpt2, n_kv_head = n_head)."""
    present = table_columns(con, "cells")
    out = []
    for column in columns:
        known = KNOWN_BEFORE.get(("cells", column))
        if known is None:
            out.append(f"{alias}.{column}")
            continue
        known = known if known.startswith("'") else f"{alias}.{known}"
        # a row written without the column (by hand, or before an upgrade) is known too
        out.append(f"coalesce({alias}.{column}, {known}) AS {column}" if column in present else f"{known} AS {column}")
    return ", ".join(out)


def resource_select(con: duckdb.DuckDBPyConnection, alias: str = "c") -> str:
    """The cells' resource columns for a SELECT list: NULL for a store opened read-only
    before schema 3 (no such columns), so it reads as nothing measured rather than failing."""
    present = table_columns(con, "cells")
    return ", ".join(f"{alias}.{c}" if c in present else f"NULL AS {c}" for c in (*RESOURCE_COLUMNS, "resources"))


def cells_with_resources(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Analysed cells, by cell: CELL_COLUMNS, the resource columns (`resource_select`, the
    `resources` JSON last), regime, series_id, device_kind. A phase filter does not apply."""
    where, params = _where(con, filters, phase=False)
    cols = cell_select(con)
    return con.execute(
        f"SELECT {cols}, {resource_select(con)}, r.regime, r.series_id, r.device_kind FROM cells c "
        f"JOIN runs r USING (run_id) WHERE {where} ORDER BY c.cell_id", params,
    ).df()


def cells_table(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every cell matching the filters, whatever its status, with regime, flags and error;
    a phase filter does not apply (a cell row holds all its phases)."""
    where, params = _where(con, filters, cells="any", phase=False)
    return con.execute(
        f"SELECT c.cell_id, c.run_id, r.regime, c.model_name, {cell_select(con, ['family'])}, c.n_layer, c.n_embd, "
        f"c.n_head, {cell_select(con, ['n_kv_head'])}, c.params, "
        "c.backend, c.device, c.dtype, c.batch_size, c.prompt_len, c.gen_len, c.status, c.error, c.flags, "
        f"c.setup_s, c.cold_ms, c.warmup_iters, c.warmup_converged, r.status AS run_status, {resource_select(con)} "
        f"FROM cells c JOIN runs r USING (run_id) WHERE {where} ORDER BY r.regime, c.backend, c.params, c.cell_id",
        params,
    ).df()


def samples_for(con: duckdb.DuckDBPyConnection, cell_ids: list[str], phases: list[str] | None = None) -> pd.DataFrame:
    """Raw samples of chosen cells (any status), labelled by model for the distribution chart:
    cell_id, phase, rep, step, latency_ms, label; `phases` None or empty: every phase."""
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


# --- runs (analysis.reproducibility, analysis.run_compare, the README, the Run page) ----------

def run_environments(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[tuple[str, Any, str | None, str | None]]:
    """(run_id, environment JSON, git_revision, tool_version) of these runs, by run id; none
    for no ids."""
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    return con.execute(
        f"SELECT run_id, environment, git_revision, tool_version FROM runs WHERE run_id IN ({marks}) ORDER BY run_id",
        list(run_ids),
    ).fetchall()


def runs_with_counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every run, newest first: run_id, started_at, status, plan_name, protocol_version (as
    stored, NULL before protocol 2), regime, plan, environment and machine_load as JSON text
    (machine_load NULL where not sampled, and in a store opened read-only before schema 5),
    git_revision, tool_version, and its counts: cells_ok, cells_failed (any other status),
    busy_cells (flagged BUSY_MACHINE_FLAG), samples."""
    machine_load = "r.machine_load::VARCHAR" if "machine_load" in table_columns(con, "runs") else "NULL::VARCHAR"
    return con.execute(f"""
        SELECT r.run_id, r.started_at, r.status, r.plan_name, r.protocol_version, r.regime, r.plan::VARCHAR AS plan,
               r.environment::VARCHAR AS environment, {machine_load} AS machine_load, r.git_revision, r.tool_version,
               (SELECT count(*) FROM cells c WHERE c.run_id = r.run_id AND c.status = 'ok') AS cells_ok,
               (SELECT count(*) FROM cells c WHERE c.run_id = r.run_id AND c.status <> 'ok') AS cells_failed,
               (SELECT count(*) FROM cells c WHERE c.run_id = r.run_id AND list_contains(c.flags, ?)) AS busy_cells,
               (SELECT count(*) FROM samples s JOIN cells c USING (cell_id) WHERE c.run_id = r.run_id) AS samples
        FROM runs r ORDER BY r.started_at DESC NULLS LAST, r.run_id DESC
    """, [BUSY_MACHINE_FLAG]).df()


def run_cell_rounds(con: duckdb.DuckDBPyConnection, run_id: str, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per analysed (cell key, phase) of one run, by key and phase: the median, n, the number
    of rounds and round_log_medians (the log median of each round, in round order).

    A protocol-1 sample has no round: its cell is one round.
    """
    where, params = _where(con, {**(filters or {}), "run_id": [run_id]})
    return con.execute(
        f"""WITH rounds AS (
                SELECT c.cell_key, s.phase, coalesce(s.round, 0) AS round, ln(median(s.latency_ms)) AS log_median
                FROM samples s JOIN cells c ON c.cell_id = s.cell_id JOIN runs r ON r.run_id = c.run_id
                WHERE {where} GROUP BY ALL),
            cells AS (
                SELECT c.cell_key, s.phase, median(s.latency_ms) AS median, count(*) AS n
                FROM samples s JOIN cells c ON c.cell_id = s.cell_id JOIN runs r ON r.run_id = c.run_id
                WHERE {where} GROUP BY ALL)
            SELECT cells.cell_key, cells.phase, cells.median, cells.n, count(*) AS rounds,
                   list(rounds.log_median ORDER BY rounds.round) AS round_log_medians
            FROM cells JOIN rounds USING (cell_key, phase)
            GROUP BY ALL ORDER BY cells.cell_key, cells.phase""", params + params).df()


def compared_cells(con: duckdb.DuckDBPyConnection, run_a: str, run_b: str, cell_keys: list[str]) -> pd.DataFrame:
    """The configuration of each cell key both runs measured (from run a, with its regime) and
    both runs' cell ids (cell_id_a, cell_id_b); unordered."""
    return con.execute(
        f"""SELECT a.cell_key, r.regime, a.model_name, {cell_select(con, ["family"], "a")}, a.n_layer, a.n_embd, a.n_head,
                  {cell_select(con, ["n_kv_head"], "a")}, a.params, a.backend, a.dtype,
                  a.batch_size, a.prompt_len, a.gen_len, a.cell_id AS cell_id_a, b.cell_id AS cell_id_b
           FROM cells a JOIN runs r ON r.run_id = a.run_id
           JOIN cells b ON b.cell_key = a.cell_key AND b.run_id = ?
           WHERE a.run_id = ? AND a.cell_key IN (SELECT unnest(?::VARCHAR[]))""",
        [run_b, run_a, cell_keys]).df()


def runs_per_regime(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per regime, by regime: runs (how many), plans (their names, comma-separated),
    first_day (the earliest start, YYYY-MM-DD) and protocols ("1 and 2")."""
    return con.execute(
        "SELECT regime, count(*) AS runs, string_agg(DISTINCT plan_name, ', ' ORDER BY plan_name) AS plans, "
        "strftime(min(started_at), '%Y-%m-%d') AS first_day, "
        "string_agg(DISTINCT coalesce(protocol_version, 1)::VARCHAR, ' and ' ORDER BY coalesce(protocol_version, 1)::VARCHAR) AS protocols "
        "FROM runs GROUP BY regime ORDER BY regime"
    ).df()


def finished_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Finished runs with plan, environment and wall time: the history a Run page estimate learns from."""
    return con.execute(
        "SELECT run_id, plan_name, plan::VARCHAR AS plan, environment::VARCHAR AS environment, device_kind, "
        "coalesce(protocol_version, 1) AS protocol_version, epoch(finished_at - started_at) AS wall_s "
        "FROM runs WHERE status = 'finished' AND finished_at IS NOT NULL ORDER BY started_at").df()


# --- the whole store: counts, versions, filter values (the dashboard's frame) ----------------

# The global filters whose values `filter_options` lists (phase too, from the samples).
OPTION_COLUMNS = ("regime", "family", "n_kv_head", "backend", "dtype", "batch_size", "prompt_len")


def store_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Counts shown in the sidebar: runs, regimes, running (runs), cells (ok / failed: any
    other status), samples."""
    runs, regimes, running = con.execute(
        "SELECT count(*), count(DISTINCT regime), count(*) FILTER (status = 'running') FROM runs").fetchall()[0]
    cells, ok, failed = con.execute(
        "SELECT count(*), count(*) FILTER (status = 'ok'), count(*) FILTER (status <> 'ok') FROM cells").fetchall()[0]
    samples = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
    return {"runs": runs, "regimes": regimes, "running": running, "cells": cells, "ok": ok,
            "failed": failed, "samples": samples}


def store_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """Changes whenever an ingest or import changed what the analysis would see: the row
    counts and a hash of every run's status (the dashboard's data version)."""
    s = store_counts(con)
    statuses = con.execute("SELECT coalesce(string_agg(run_id || ':' || status, ',' ORDER BY run_id), '') FROM runs").fetchall()[0][0]
    return f"{s['runs']}/{s['cells']}/{s['samples']}/{hashlib.sha256(statuses.encode()).hexdigest()[:12]}"


def content_id(con: duckdb.DuckDBPyConnection) -> str:
    """A hash of every row of runs, cells and samples, every column: equal datasets share kept
    derived results, and two that differ anywhere (a model name, params, a backend) do not.

    Order-free sums of DuckDB's (unseeded, so stable across processes) hash of each whole row,
    with the row counts: about 0.1 s on the bundled data, computed once per data version.
    """
    parts = con.execute("""
        SELECT (SELECT count(*) || ':' || coalesce(sum(hash(r)::HUGEINT), 0) FROM runs r),
               (SELECT count(*) || ':' || coalesce(sum(hash(c)::HUGEINT), 0) FROM cells c),
               (SELECT count(*) || ':' || coalesce(sum(hash(s)::HUGEINT), 0) FROM samples s)
    """).fetchall()[0]
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24]


def filter_options(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    """The values each global filter (OPTION_COLUMNS, then phase) can take in this dataset,
    sorted; phases in PHASES order, those with samples only."""
    out: dict[str, list] = {}
    out["regime"] = [r[0] for r in con.execute("SELECT DISTINCT regime FROM runs ORDER BY 1").fetchall()]
    for column in OPTION_COLUMNS[1:]:
        out[column] = [r[0] for r in con.execute(f"SELECT DISTINCT {cell_select(con, [column])} FROM cells c ORDER BY 1").fetchall()]
    present = {r[0] for r in con.execute("SELECT DISTINCT phase FROM samples").fetchall()}
    out["phase"] = [p for p in PHASES if p in present]
    return out


def group_keys(phase: str) -> tuple[str, ...]:
    """The columns that define a comparable group for this phase."""
    return E2E_GROUP_KEYS if phase == "e2e" else GROUP_KEYS


@dataclass(frozen=True, order=True)
class GroupKey:
    """One comparable group: everything but the shape. `gen_len` is None unless phase is e2e.

    A frame's `group_id` column holds `label` (a string, for grouping, JSON and display);
    code that needs the parts takes a GroupKey (`GroupKey.of`, `keys_by_group_id`), never
    splits the label.
    """

    regime: str
    backend: str
    phase: str
    dtype: str
    batch_size: int
    prompt_len: int
    gen_len: int | None = None
    family: str = "gpt2"  # or ALL_FAMILIES when families are pooled

    @classmethod
    def of(cls, row: Mapping[str, Any], *, pool_families: bool = False) -> GroupKey:
        """The key of a row (a dict or a frame row) holding the group columns; a row without
        a family (a frame from before families) is gpt2."""
        e2e = row["phase"] == "e2e"
        family = ALL_FAMILIES if pool_families else str(row.get("family", "gpt2"))
        return cls(str(row["regime"]), str(row["backend"]), str(row["phase"]), str(row["dtype"]),
                   int(row["batch_size"]), int(row["prompt_len"]), int(row["gen_len"]) if e2e else None, family)

    @property
    def short_label(self) -> str:
        """The label from the backend on: what tells groups apart when one regime is shown.
        A gpt2 group's label names no family (the labels of every group measured before
        families stay as they were); any other family's leads with it."""
        parts = [self.backend, self.phase, self.dtype, f"batch {self.batch_size}", f"prompt {self.prompt_len}"]
        family = [] if self.family == "gpt2" else [self.family]
        return " | ".join(family + parts + ([f"gen {self.gen_len}"] if self.gen_len is not None else []))

    @property
    def label(self) -> str:
        """regime | backend | phase | dtype | batch B | prompt P [| gen G]: the `group_id`."""
        return f"{self.regime} | {self.short_label}"

    def as_dict(self) -> dict[str, Any]:
        """The group columns of this phase (`group_keys`), as plain values."""
        return {k: getattr(self, k) for k in group_keys(self.phase)}


def keys_by_group_id(frame: pd.DataFrame) -> dict[str, GroupKey]:
    """group_id -> GroupKey for every group of a frame that holds the group columns."""
    if frame.empty:
        return {}
    frame = with_family(frame)
    rows = frame.drop_duplicates("group_id") if "group_id" in frame else frame.drop_duplicates(list(E2E_GROUP_KEYS))
    keys = (GroupKey.of(row, pool_families=_pooled(row)) for row in rows.to_dict("records"))
    return {key.label: key for key in keys}


def _pooled(row: Mapping[str, Any]) -> bool:
    """Whether a row's group_id is that of a group pooling every family."""
    return f"| {ALL_FAMILIES} |" in str(row.get("group_id", ""))


def with_family(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with family and n_kv_head columns: a frame from before families is GPT-2."""
    if "family" in frame and ("n_kv_head" in frame or "n_head" not in frame):
        return frame
    frame = frame.copy()
    if "family" not in frame:
        frame["family"] = "gpt2"
    if "n_kv_head" not in frame and "n_head" in frame:
        frame["n_kv_head"] = frame["n_head"]
    return frame


def add_group_id(frame: pd.DataFrame, *, pool_families: bool = False) -> pd.DataFrame:
    """Add the `group_id` column (`GroupKey.label` of each row) to a per-phase frame: within
    a family, or with `pool_families` across them (family becomes a term of the fits)."""
    frame = with_family(frame).copy()
    if frame.empty:
        frame["group_id"] = pd.Series(dtype="string")
        return frame
    columns = list(E2E_GROUP_KEYS)
    unique = frame[columns].drop_duplicates()
    labels = [GroupKey.of(row, pool_families=pool_families).label for row in unique.to_dict("records")]
    lookup = pd.MultiIndex.from_frame(unique)
    frame["group_id"] = pd.Index(labels)[lookup.get_indexer(pd.MultiIndex.from_frame(frame[columns]))]
    return frame


def group_dict(frame: pd.DataFrame) -> dict[str, Any]:
    """The group key values of a frame holding one group, as plain Python values."""
    row = with_family(frame.iloc[:1]).iloc[0]
    return GroupKey.of(row, pool_families=_pooled(row)).as_dict()
