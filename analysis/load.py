"""Reading the store: ok cells joined with their run's regime, and raw samples.

Only cells with status 'ok' are analysed: a failed or unsupported cell has no samples that
mean anything. Filters are a small dict of column -> value or list of values, validated
here so that a typo fails with the allowed names instead of silently matching nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

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

# The cells columns every analysis frame carries: what identifies a cell and what it measured
# with. A projection chosen here, not a copy of the table (schema.sql holds more: outcome,
# timings, JSON records), so a column added to the schema does not go into every frame;
# tests/analysis/test_load_columns.py checks these names against the schema.
CELL_COLUMNS = (
    "cell_id", "run_id", "cell_key", "model_name", "n_layer", "n_embd", "n_head", "params",
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


def where_clause(filters: Mapping[str, Any] | None, *, cells: CellScope = "analysed", phase: bool = True) -> tuple[str, list]:
    """The one filter builder: SQL conditions over `cells c JOIN runs r` (and `samples s`
    where a phase filter applies) and their parameters.

    `cells` is one of CELL_SCOPES. With `phase=False` a phase filter is accepted and
    ignored, for a query of cells rather than samples: a cell is measured in every phase it
    supports. A filter value is one value or a list of them; None means no filter.
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
        conditions.append(f"{FILTER_COLUMNS[key]}.{key} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    return " AND ".join(conditions) or "TRUE", params


def load_cells(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Ok cells with their run's regime and series, one row per cell (no phase).

    A phase filter is ignored here: a cell is measured in all phases it supports.
    """
    where, params = where_clause(filters, phase=False)
    cols = ", ".join(f"c.{c}" for c in CELL_COLUMNS)
    sql = (
        f"SELECT {cols}, r.regime, r.series_id, r.device_kind, coalesce(r.protocol_version, 1) AS protocol_version "
        f"FROM cells c JOIN runs r USING (run_id) WHERE {where} ORDER BY c.cell_id"
    )
    return con.execute(sql, params).df()


def left_out(con: duckdb.DuckDBPyConnection, filters: Mapping[str, Any] | None = None) -> str | None:
    """A one-line warning naming the ok cells the analysis leaves out as impossible, or None."""
    where, params = where_clause(filters, cells="left_out", phase=False)
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

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> GroupKey:
        """The key of a row (a dict or a frame row) holding the group columns."""
        e2e = row["phase"] == "e2e"
        return cls(str(row["regime"]), str(row["backend"]), str(row["phase"]), str(row["dtype"]),
                   int(row["batch_size"]), int(row["prompt_len"]), int(row["gen_len"]) if e2e else None)

    @property
    def short_label(self) -> str:
        """The label from the backend on: what tells groups apart when one regime is shown."""
        parts = [self.backend, self.phase, self.dtype, f"batch {self.batch_size}", f"prompt {self.prompt_len}"]
        return " | ".join(parts + ([f"gen {self.gen_len}"] if self.gen_len is not None else []))

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
    rows = frame.drop_duplicates("group_id") if "group_id" in frame else frame.drop_duplicates(list(E2E_GROUP_KEYS))
    keys = (GroupKey.of(row) for row in rows.to_dict("records"))
    return {key.label: key for key in keys}


def add_group_id(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the `group_id` column (`GroupKey.label` of each row) to a per-phase frame."""
    frame = frame.copy()
    if frame.empty:
        frame["group_id"] = pd.Series(dtype="string")
        return frame
    columns = list(E2E_GROUP_KEYS)
    unique = frame[columns].drop_duplicates()
    labels = [GroupKey.of(row).label for row in unique.to_dict("records")]
    lookup = pd.MultiIndex.from_frame(unique)
    frame["group_id"] = pd.Index(labels)[lookup.get_indexer(pd.MultiIndex.from_frame(frame[columns]))]
    return frame


def group_dict(frame: pd.DataFrame) -> dict[str, Any]:
    """The group key values of a frame holding one group, as plain Python values."""
    return GroupKey.of(frame.iloc[0]).as_dict()
