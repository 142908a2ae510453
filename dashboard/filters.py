"""Global filters: one definition, read from and written to the URL's query parameters.

A selection maps a store column to the values kept; an empty or missing list means "all".
Query parameters use short names (`?backend=hf-sdpa&batch=1&batch=8`) so a view can be
shared as a link.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FilterDef:
    param: str   # query parameter name
    column: str  # analysis filter / store column
    label: str
    is_int: bool = False


FILTERS: tuple[FilterDef, ...] = (
    FilterDef("regime", "regime", "Regime"),
    FilterDef("family", "family", "Family"),
    FilterDef("kv_heads", "n_kv_head", "KV heads", is_int=True),
    FilterDef("backend", "backend", "Backend"),
    FilterDef("phase", "phase", "Phase"),
    FilterDef("dtype", "dtype", "dtype"),
    FilterDef("batch", "batch_size", "Batch size", is_int=True),
    FilterDef("prompt", "prompt_len", "Prompt length", is_int=True),
)
BY_COLUMN = {f.column: f for f in FILTERS}

Selection = dict[str, list]


def _coerce(f: FilterDef, values: Iterable) -> list:
    out = []
    for v in values:
        if f.is_int:
            try:
                out.append(int(v))
            except (TypeError, ValueError):
                continue  # a hand-edited URL with junk: ignore that value, keep the rest
        else:
            out.append(str(v))
    return out


def from_query(get_all) -> Selection:
    """Selection from query parameters; `get_all(name) -> list[str]` (st.query_params.get_all)."""
    return {f.column: _coerce(f, get_all(f.param)) for f in FILTERS}


def to_query(selection: Mapping[str, list]) -> dict[str, list[str]]:
    """Query parameters for a selection; unfiltered columns are left out."""
    return {f.param: [str(v) for v in selection.get(f.column) or []] for f in FILTERS if selection.get(f.column)}


def sanitize(selection: Mapping[str, list], options: Mapping[str, list]) -> Selection:
    """Keep only values the dataset has (a link from another dataset must not break widgets)."""
    return {f.column: [v for v in selection.get(f.column) or [] if v in set(options.get(f.column, []))] for f in FILTERS}


def as_filters(selection: Mapping[str, list]) -> dict[str, list]:
    """The dict analysis.load understands; empty selections mean no filter."""
    return {c: list(v) for c, v in selection.items() if v}


def cache_key(selection: Mapping[str, list]) -> tuple:
    """Hashable, order-independent form of a selection, for st.cache_data keys."""
    return tuple((c, tuple(sorted(v))) for c, v in sorted(selection.items()) if v)


def from_key(key: tuple) -> dict[str, list]:
    return {c: list(v) for c, v in key}


def describe(selection: Mapping[str, list]) -> str:
    parts = [f"{BY_COLUMN[c].label.lower()} {', '.join(map(str, v))}" for c, v in selection.items() if v and c in BY_COLUMN]
    return "; ".join(parts) if parts else "no filters"
