"""The derived results pages read, as plain functions: one definition for the dashboard, the
export and the ingest.

dashboard.cache wraps each in a cached query; `runner snapshot export` and `runner ingest`
compute the ones a first visit needs for the unfiltered view (`FIRST_VISIT`) and keep them
with the data (store.kept), so that visitor does not wait for a minute of bootstraps on 2
cores. Every function takes a `Reader`: a connection for one query, the filters, and the
other results through the caller's own cache (`reader.get(name, *args)`), so a result that
needs `cell_stats` computes it once per reader, not once per result. Nothing here imports
streamlit: the CLI runs these without a server.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pandas as pd

from analysis import load
from analysis.derived import derived_key
from dashboard import data
from store.kept import KeptError, KeptResult, encode

log = logging.getLogger("shapebench.results")
ROOT = Path(__file__).resolve().parent.parent
# The code a kept result depends on: a change to any of it makes every kept result stale.
CODE_FILES = ("analysis/*.py", "dashboard/results.py", "dashboard/data.py", "dashboard/filters.py", "store/kept.py")


@lru_cache(maxsize=1)
def kept_types() -> dict[str, type]:
    """The only classes a kept result may rebuild (store.kept never builds any other); imported
    on first use, so that opening the dashboard does not load statsmodels."""
    from analysis.headline import Headline
    from analysis.regression import GroupFit

    return {"GroupFit": GroupFit, "Headline": Headline}


class Reader(Protocol):
    """What a result is computed from (dashboard.cache.Context is one)."""

    @property
    def filters(self) -> dict[str, list]: ...

    def reading(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...

    def get(self, name: str, *args: Any) -> Any: ...


@lru_cache(maxsize=None)
def code_version(*extra: str) -> str:
    """A hash of CODE_FILES and of `extra` files (a page that defines its own kept result)."""
    paths = sorted({p for pattern in CODE_FILES for p in ROOT.glob(pattern)} | {Path(e).resolve() for e in extra})
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def result_key(content_id: str, name: str, fkey: tuple, args: tuple, code: str) -> str:
    """The key a result is kept under, on disk (analysis.derived) and with the data (store.kept)."""
    return derived_key(content_id, name, fkey, args, code)


# --- the results -------------------------------------------------------------------------------

def cell_stats(r: Reader):
    """Per cell and phase: n, median and its bootstrap CI (analysis.stats), with the draws."""
    from analysis.stats import compute_cell_stats

    with r.reading() as con:
        return compute_cell_stats(con, r.filters)


def cell_frame(r: Reader) -> pd.DataFrame:
    """Per-run statistics of every cell and phase, each with its re-run interval (analysis.rerun)."""
    from analysis.rerun import add_rerun_intervals

    stats = r.get("cell_stats")
    return add_rerun_intervals(stats.frame, confidence=stats.confidence)


def pooled(r: Reader):
    """CellStats pooled over repeat runs, with replicates across runs (analysis.reproducibility)."""
    from analysis.reproducibility import pooled_stats

    return pooled_stats(r.get("cell_stats"))


def pooled_frame(r: Reader) -> pd.DataFrame:
    return r.get("pooled").frame


def pooled_rerun(r: Reader) -> pd.DataFrame:
    """The pooled cells with their re-run intervals (analysis.rerun), judged by the per-run history."""
    from analysis.rerun import add_rerun_intervals, between_run_history

    stats = r.get("pooled")
    return add_rerun_intervals(stats.frame, between_run_history(r.get("cell_frame")), confidence=stats.confidence)


def cells(r: Reader) -> pd.DataFrame:
    with r.reading() as con:
        return load.cells_table(con, r.filters)


def explore_rows(r: Reader) -> pd.DataFrame:
    return data.explore_table(r.get("cells"), r.get("cell_frame"))


def fits(r: Reader) -> list:
    from analysis.regression import fit_all

    frame = r.get("pooled_frame")
    return fit_all(frame) if len(frame) else []


def family_fits(r: Reader) -> list[dict]:
    """The seed form with family as a term per group pooled over families (analysis.regression.
    fit_across_families), on medians pooled over runs as `fits`."""
    from analysis.regression import fit_across_families

    frame = r.get("pooled_frame")
    return fit_across_families(frame) if len(frame) else []


def inversions(r: Reader) -> pd.DataFrame:
    """Every inverted pair of the pooled cells, with its ratio's re-run interval."""
    from analysis.inversions import find_inversions
    from analysis.rerun import add_pair_rerun_intervals

    stats = r.get("pooled")
    return add_pair_rerun_intervals(find_inversions(stats), r.get("pooled_rerun"), confidence=stats.confidence)


def group_pairs(r: Reader, group_id: str) -> pd.DataFrame:
    """Every pair of one group (the heatmap), without bootstrapping the other groups."""
    from analysis.inversions import pair_ratios
    from analysis.stats import CellStats

    from analysis.rerun import add_pair_rerun_intervals

    stats = r.get("pooled")
    rows = (stats.frame["group_id"] == group_id).to_numpy()
    sub = CellStats(stats.frame[rows].reset_index(drop=True), stats.draws[rows], stats.confidence, stats.seed)
    return add_pair_rerun_intervals(pair_ratios(sub, inversions_only=False), r.get("pooled_rerun"),
                                    confidence=stats.confidence)


def pair_groups(r: Reader) -> list[str]:
    """Groups with at least one pair, in the Inversions page's order."""
    counts = data.pair_counts(r.get("pooled_frame"))
    return sorted(counts[counts > 0].index)


def compare(r: Reader, factor: str) -> list[dict]:
    from analysis.regimes import compare as compare_factor

    return compare_factor(r.get("cell_frame"), factor)


def why_floor(r: Reader) -> pd.DataFrame:
    from analysis.why import launch_floor, load_profiles

    with r.reading() as con:
        profiles = load_profiles(con, r.filters)
    return launch_floor(profiles) if len(profiles) else profiles


def launch_overhead(r: Reader) -> list[dict]:
    from analysis.why import fit_launch_overhead

    floor = r.get("why_floor")
    calibrated = floor[floor["bandwidth_gb_s"].notna()] if len(floor) else floor
    return fit_launch_overhead(calibrated) if len(calibrated) else []


def layer_cost(r: Reader) -> dict[str, pd.DataFrame]:
    """Per shape and group: hand-offs and weight reads, fitted and calibrated (analysis.why_layers)."""
    from analysis.why_layers import layer_cost as fit

    return fit(r.get("why_floor"))


def explain_cells(r: Reader, slow_cell: str, fast_cell: str) -> str | None:
    """analysis.why.explain_pair for two cells, or None unless both configurations are profiled.

    A cell measured in a run without a profile borrows the profile of the same cell key on the
    same regime (kernel counts belong to the configuration, not to the run). For a CUDA graph
    the count that explains latency is the kernels it replays, not its few host launches.
    """
    from analysis.why import explain_pair

    floor = r.get("why_floor")
    if floor.empty:
        return None
    floor = floor[floor["bandwidth_gb_s"].notna()]
    floor = floor.assign(launches=floor["kernels"].where(floor["graph_launches"].fillna(0) > 0, floor["launches"]))
    keys = r.get("cell_frame").drop_duplicates("cell_id").set_index("cell_id")[["regime", "cell_key"]]
    profiled = floor.join(keys[["cell_key"]], on="cell_id").drop_duplicates(["regime", "cell_key"]).set_index(["regime", "cell_key"])
    rows = []
    for cell in (slow_cell, fast_cell):
        if cell not in keys.index or tuple(keys.loc[cell]) not in profiled.index:
            return None
        rows.append(profiled.loc[tuple(keys.loc[cell])])
    return explain_pair(*rows)


def headline(r: Reader, all_protocols: bool):
    from analysis.headline import build_headline

    return build_headline(r.get("cell_stats"), all_protocols=all_protocols)


def shape_answer(r: Reader, all_protocols: bool):
    """The sentence per hardware class and the decode tables behind it (analysis.shape_answer),
    from the kept headline, pooled cells and fits: cheap, so never kept on disk itself."""
    from analysis.shape_answer import shape_answer as answer_of

    return answer_of(r.get("pooled_rerun"), r.get("fits"), r.get("headline", all_protocols))


def repeat_table(r: Reader) -> pd.DataFrame:
    from analysis.reproducibility import repeat_table as table_of

    stats, pooled_stats = r.get("cell_stats"), r.get("pooled")
    with r.reading() as con:
        return table_of(stats, con, pooled=pooled_stats)


def repeat_runs(r: Reader) -> pd.DataFrame | None:
    from analysis.reproducibility import has_repeats, run_medians

    stats = r.get("cell_stats")
    return run_medians(stats, r.get("repeat_table")) if has_repeats(stats) else None


def variance_table(r: Reader) -> pd.DataFrame:
    from analysis.reproducibility import variance_components

    return variance_components(r.get("repeat_table"))


def inversions_across_runs(r: Reader) -> pd.DataFrame:
    from analysis.reproducibility import inversions_across_runs as judge

    return judge(r.get("cell_stats"), r.get("pooled"))


def regressions_across_runs(r: Reader) -> list[dict]:
    from analysis.reproducibility import pooled_stats, regressions_across_runs as fit_across, with_repeat_key
    from analysis.stats import CellStats

    stats = r.get("cell_stats")
    frame = stats.frame.reset_index(drop=True)
    runs_per_group = with_repeat_key(frame).groupby("group_id")["run_id"].transform("nunique")
    rows = (runs_per_group > 1).to_numpy()
    if not rows.any():
        return []
    sub = CellStats(frame[rows].reset_index(drop=True), stats.draws[rows], stats.confidence, stats.seed)
    return fit_across(sub, pooled_stats(sub))


RESULTS: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    cell_stats, cell_frame, pooled, pooled_frame, pooled_rerun, cells, explore_rows, fits, family_fits, inversions,
    group_pairs, compare, why_floor, launch_overhead, layer_cost, headline, shape_answer, repeat_table, repeat_runs,
    variance_table, inversions_across_runs, regressions_across_runs)}


def first_visit(r: Reader) -> Iterator[tuple[str, tuple]]:
    """(name, args) of what the pages' first visit reads, in an order that reuses earlier ones.

    Not cell_stats or pooled: their bootstrap draws are most of their size (50 MB on the
    bundle) and no page reads them once the results below are kept. Every group's heatmap,
    not only the page's default one: the pairs are small and a second group is then instant.
    """
    yield from (("cell_frame", ()), ("headline", (False,)), ("pooled_frame", ()), ("pooled_rerun", ()),
                ("fits", ()), ("explore_rows", ()), ("inversions", ()))
    yield from (("group_pairs", (g,)) for g in pair_groups(r))
    yield from (("compare", ("regime",)), ("compare", ("backend",)), ("why_floor", ()), ("launch_overhead", ()),
                ("layer_cost", ()), ("repeat_table", ()), ("repeat_runs", ()), ("variance_table", ()),
                ("inversions_across_runs", ()), ("regressions_across_runs", ()))


# --- computing them outside the dashboard --------------------------------------------------------

class Computing:
    """A Reader over one connection, unfiltered, that keeps every result it computed."""

    filters: dict[str, list] = {}

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.memo: dict[tuple, Any] = {}

    def reading(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self.con.cursor()

    def get(self, name: str, *args: Any) -> Any:
        if (name, args) not in self.memo:
            self.memo[name, args] = RESULTS[name](self, *args)
        return self.memo[name, args]


def derive(con: duckdb.DuckDBPyConnection, progress: Callable[[str, int, int], None] | None = None,
           content: str | None = None) -> list[KeptResult]:
    """The first visit's results for the unfiltered view of `con`'s rows, ready to keep.

    `content`: the content id to key them on (analysis.load.content_id of the store they are
    for, when `con` is a copy of it); by default that of `con`. `progress(name, done, total)` is
    told before each result. A result that cannot be kept without pickling is left out (the
    dashboard computes it) and logged.
    """
    reader = Computing(con)
    if content is None:
        with reader.reading() as cursor:
            content = load.content_id(cursor)
    code = code_version()
    # group_pairs' groups come from pooled_frame: list the work once that is known
    wanted = list(first_visit(reader))
    out = []
    for i, (name, args) in enumerate(wanted):
        if progress:
            progress(name if not args else f"{name} {args[0]}", i, len(wanted))
        value = reader.get(name, *args)
        try:
            document, frames = encode(value, kept_types())
        except KeptError as error:
            log.warning("%s not kept: %s", name, error)
            continue
        out.append(KeptResult(result_key(content, name, (), args, code), name, content, code,
                              json.dumps([]), json.dumps(list(args)), document, frames))
    if progress:
        progress("done", len(wanted), len(wanted))
    return out
