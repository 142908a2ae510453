"""Reading the store: ok cells joined with their run's regime, and raw samples.

Only cells with status 'ok' are analysed: a failed or unsupported cell has no samples that
mean anything. Filters are a small dict of column -> value or list of values, validated
here so that a typo fails with the allowed names instead of silently matching nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import pandas as pd

# Columns a filter may name, with the table alias that holds them.
FILTER_COLUMNS: dict[str, str] = {
    "run_id": "c",
    "series_id": "r",
    "regime": "r",
    "device_kind": "r",
    "cell_key": "c",
    "model_name": "c",
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
# the shape is equal. e2e latency also depends on the generation length, the others not.
GROUP_KEYS: tuple[str, ...] = ("regime", "backend", "phase", "dtype", "batch_size", "prompt_len")
E2E_GROUP_KEYS: tuple[str, ...] = GROUP_KEYS + ("gen_len",)

CELL_COLUMNS = (
    "cell_id", "run_id", "cell_key", "model_name", "n_layer", "n_embd", "n_head", "params",
    "backend", "device", "dtype", "batch_size", "prompt_len", "gen_len", "flags",
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


def where_clause(filters: Mapping[str, Any] | None, *, allow_phase: bool = True) -> tuple[str, list]:
    """SQL conditions (always including status = 'ok' and SANE_CELL) and their parameters.

    Raises ValueError naming the allowed keys for an unknown filter, so a misspelt filter
    never quietly returns an empty analysis.
    """
    conditions = ["c.status = 'ok'", SANE_CELL]
    params: list = []
    for key, value in (filters or {}).items():
        if value is None:
            continue
        if key not in FILTER_COLUMNS or (key == "phase" and not allow_phase):
            allowed = ", ".join(k for k in FILTER_COLUMNS if allow_phase or k != "phase")
            raise ValueError(f"unknown filter '{key}'; allowed: {allowed}")
        column = f"{FILTER_COLUMNS[key]}.{key}"
        values = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]
        if not values:
            raise ValueError(f"filter '{key}' has an empty list of values")
        conditions.append(f"{column} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    return " AND ".join(conditions), params


def load_cells(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Ok cells with their run's regime and series, one row per cell (no phase).

    A phase filter is ignored here: a cell is measured in all phases it supports.
    """
    cell_filters = {k: v for k, v in (filters or {}).items() if k != "phase"}
    where, params = where_clause(cell_filters, allow_phase=False)
    cols = ", ".join(f"c.{c}" for c in CELL_COLUMNS)
    sql = (
        f"SELECT {cols}, r.regime, r.series_id, r.device_kind "
        f"FROM cells c JOIN runs r USING (run_id) WHERE {where} ORDER BY c.cell_id"
    )
    return con.execute(sql, params).df()


def left_out(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> str | None:
    """A one-line warning naming the ok cells the analysis leaves out as impossible, or None."""
    cell_filters = {k: v for k, v in (filters or {}).items() if k != "phase"}
    where, params = where_clause(cell_filters, allow_phase=False)
    where = where.replace(SANE_CELL, f"NOT {SANE_CELL}", 1)
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
    where, params = where_clause(filters)
    sql = (
        "SELECT s.cell_id, s.phase, s.rep, s.step, s.latency_ms "
        "FROM samples s JOIN cells c USING (cell_id) JOIN runs r ON r.run_id = c.run_id "
        f"WHERE {where} ORDER BY s.cell_id, s.phase, s.rep, s.step"
    )
    return con.execute(sql, params).df()


def group_keys(phase: str) -> tuple[str, ...]:
    """The columns that define a comparable group for this phase."""
    return E2E_GROUP_KEYS if phase == "e2e" else GROUP_KEYS


def add_group_id(frame: pd.DataFrame) -> pd.DataFrame:
    """Add a readable `group_id` column (one string per comparable group) to a per-phase frame."""
    frame = frame.copy()
    if frame.empty:
        frame["group_id"] = pd.Series(dtype="string")
        return frame
    parts = (
        frame["regime"].astype(str) + " | " + frame["backend"].astype(str) + " | "
        + frame["phase"].astype(str) + " | " + frame["dtype"].astype(str)
        + " | batch " + frame["batch_size"].astype(str) + " | prompt " + frame["prompt_len"].astype(str)
    )
    gen = " | gen " + frame["gen_len"].astype(str)
    frame["group_id"] = parts.where(frame["phase"] != "e2e", parts + gen)
    return frame


def group_dict(frame: pd.DataFrame) -> dict[str, Any]:
    """The group key values of a frame holding one group, as plain Python values."""
    row = frame.iloc[0]
    return {k: _plain(row[k]) for k in group_keys(row["phase"])}


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars, so results serialise to JSON."""
    return value.item() if hasattr(value, "item") else value
