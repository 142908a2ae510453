"""How a model shape is named wherever one is shown: tables, sentences, chart labels, hovers.

A GPT-2 shape is its name, depth x width and parameter count, as it always was. Wherever a
shape of another family is shown beside it (a pair, a table, a chart), every shape there is
named in full: family, depth x width, query / KV heads (grouped-query attention shares each
key/value head among several query heads) and parameter count. No statistics here, so the
charts and pages import it without loading the analysis.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd


def names_architecture(families: Iterable[Any]) -> bool:
    """Whether shapes shown together name their family and query / KV heads: wherever one of
    them is not GPT-2 (a missing family is GPT-2: a frame from before families)."""
    return any(str(family) not in ("gpt2", "nan", "None", "<NA>") for family in families)


def shape_label(name: str, n_layer: int, n_embd: int, params: float, family: str | None = None,
                n_head: int | None = None, n_kv_head: int | None = None) -> str:
    """A model as a headline names it: its name(s), depth x width and parameter count; given
    a family, in full: family, depth x width, query / KV heads and parameter count."""
    size = f"{params / 1e6:.1f}M" if params >= 1e5 else f"{params / 1e6:.2g}M"  # a user's tiny shape is not "0.0M"
    if family is None:
        return f"{name} ({n_layer} x {n_embd}, {size})"
    return f"{name} ({family}, {n_layer} x {n_embd}, {n_head}/{n_kv_head} heads, {size})"


def pair_labels(row: Any) -> tuple[str, str]:
    """Both shapes of a pair (a row of `inversions.pair_ratios`, as a namedtuple, a Series or a
    dict), each in full where the pair is not two GPT-2 shapes (`names_architecture`)."""
    if isinstance(row, (pd.Series, dict)):
        get = row.get
    else:
        def get(key: str, default: Any = None) -> Any:
            return getattr(row, key, default)
    full = names_architecture(get(f"family_{side}", "gpt2") for side in "ab")
    a, b = (shape_label(get(f"model_name_{side}"), get(f"n_layer_{side}"), get(f"n_embd_{side}"), get(f"params_{side}"),
                        *((get(f"family_{side}"), get(f"n_head_{side}"), get(f"n_kv_head_{side}")) if full else ()))
            for side in "ab")
    return a, b
