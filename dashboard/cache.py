"""The pages' results, each cached per (dataset, data version, filters, arguments), and the
Context they are computed from.

One module for the caching, so a page asks for a result by name and never thinks about when it
is computed: query results are st.cache_resource (or st.cache_data) entries keyed on the
dataset, its data version and the filters; the data version is a fingerprint of the store's
row counts and run statuses, recomputed only when the file changed on disk, so an ingest or
import (from the dashboard or from the CLI) invalidates them without any explicit clearing.
Every query runs inside `with ctx.reading() as con:`. The results themselves are plain
functions in dashboard.results; this module wraps each once.

A visitor's uploaded snapshot is theirs alone (`Context.private`): its results are computed
from its own rows and held in that session only (`SessionResults`, bounded in bytes), never
in the process-wide caches, never on disk, and never taken from the results the upload
claims to keep, so no visitor can decide what another sees and no upload can fill the disk.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import duckdb
import numpy as np
import pandas as pd
import streamlit as st

from analysis.load import samples_for
from dashboard import filters as flt, results
from dashboard.storefile import Source


# --- context -----------------------------------------------------------------------------

@dataclass
class Context:
    """What a page needs: the open dataset, its version and the global filters."""

    source: Source
    ds_key: str
    version: str
    kind: str
    label: str
    hosted: bool
    writable: bool
    store: Path
    runs_dir: Path
    summary: dict[str, int]
    options: dict[str, list]
    selection: dict[str, list] = field(default_factory=dict)
    problem: str | None = None  # why the chosen dataset could not be opened
    content_id: str | None = None  # hash of the rows the analysis reads (None: nothing kept on disk)
    private: bool = False  # a visitor's upload: results held in this session only (SessionResults)

    @property
    def filters(self) -> dict[str, list]:
        return flt.as_filters(self.selection)

    @property
    def fkey(self) -> tuple:
        return flt.cache_key(self.selection)

    def reading(self):
        """`with ctx.reading() as con:` a connection for one query; fetch everything inside."""
        return self.source.reading()

    def get(self, name: str, *args: Any) -> Any:
        """Another cached result by name (dashboard.results' functions read each other so)."""
        return _QUERIES[name](self, *args)


# --- cached queries ------------------------------------------------------------------------

def _code_version(module_file: str) -> str:
    """The code version a kept result of `module_file` is keyed on (dashboard.results.code_version).

    A result defined in dashboard.results (and wrapped here) or in this module depends on
    that code only, so a change to the caching here does not make the results kept in a
    snapshot stale; one a page defines itself depends on that page's file too.
    """
    from dashboard.results import code_version

    return code_version() if Path(module_file).resolve() == Path(__file__).resolve() else code_version(module_file)


def kept_result(ctx: "Context", key: str) -> tuple[bool, Any]:
    """(True, value) when the open store or snapshot keeps the result of `key` (store.kept):
    computed by `runner snapshot export` or after `runner ingest`, read instead of recomputed."""
    from store.kept import load

    with ctx.reading() as con:
        return load(con, key, results.kept_types())


def cached_query(spinner: str | bool = False, *, on_disk: bool = False, copies: bool = False) -> Callable:
    """Cache `compute(ctx, *args)` per (dataset, data version, filters, args).

    One entry per key in this server process; with `on_disk=True` the result is first looked
    up among those the open store or snapshot keeps (store.kept: computed at export or after
    an ingest, so even a first visit to a fresh clone reads them), else kept on disk per
    dataset content (analysis.derived), so a new server process or a cold page loads it
    instead of recomputing the pooled statistics (a minute on 2 cores).

    The entries are st.cache_resource, not st.cache_data: cache_data unpickles a fresh copy on
    every hit, and with results of 10-30 MB (cell statistics, pooled cells, fits) on a store ten
    times the bundle those copies were most of a warm page's time (1-2.6 s). Every caller
    shares one object, so results are read-only: pages filter, assign and copy, never set in
    place; a DataFrame is handed out as a shallow copy (pandas copy-on-write: free, and setting
    a column on it leaves the kept one alone). With `copies=True` (a page's plotly figure,
    which the page then titles and lays out) every caller gets its own copy (st.cache_data):
    a pickled figure of 48 traces loads in about 0.07 s where building it through plotly's
    validators takes 0.3-0.7 s on this machine.
    """
    def decorate(compute: Callable[..., Any]) -> Callable[..., Any]:
        name = compute.__name__
        module_file = inspect.getsourcefile(compute) or __file__

        @(st.cache_data if copies else st.cache_resource)(show_spinner=spinner, max_entries=512)
        def cached(_ctx: Context, name: str, ds_key: str, version: str, fkey: tuple, args: tuple):
            if on_disk and _ctx.content_id:
                from analysis.derived import load_or_compute
                from dashboard.results import result_key

                code = _code_version(module_file)
                found, value = kept_result(_ctx, result_key(_ctx.content_id, name, fkey, args, code))
                if found:
                    return value
                return load_or_compute(_ctx.content_id, name, (fkey, args, code), lambda: compute(_ctx, *args))
            return compute(_ctx, *args)

        def call(ctx: Context, *args):
            if ctx.private:
                value = SessionResults.of_session(ctx.ds_key).get_or_compute((name, ctx.fkey, args), lambda: compute(ctx, *args))
                if copies:
                    return copy.deepcopy(value)
            else:
                value = cached(ctx, name, ctx.ds_key, ctx.version, ctx.fkey, args)
            return value.copy(deep=False) if isinstance(value, pd.DataFrame) else value

        call.__name__, call.__doc__ = name, compute.__doc__
        _RESULT_CACHES.append(cached)
        _QUERIES[name] = call
        return call
    return decorate


# --- a visitor's own results ---------------------------------------------------------------

# What one session may hold of its upload's results; past it the oldest are dropped (and
# recomputed if asked for again). An upload itself decodes to at most 512 MiB
# (store.snapshot_read.UPLOAD_LIMITS).
SESSION_RESULT_BYTES = 256 << 20
_SESSION_KEY = "_shapebench_private_results"


def result_bytes(value: Any) -> int:
    """About how much memory a result holds: frames and arrays by their buffers (object
    columns counted deeply), containers and dataclasses by their parts, anything else (a plotly
    figure) by its pickled size. Our own computed values only: nothing untrusted is pickled."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        used = value.memory_usage(deep=True)
        return int(used.sum() if isinstance(value, pd.DataFrame) else used)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)):
        return sys.getsizeof(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(result_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(result_bytes(v) for v in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(result_bytes(k) + result_bytes(v) for k, v in value.items())
    try:
        return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001 - unpicklable: count it as large rather than free
        return SESSION_RESULT_BYTES


class SessionResults:
    """One session's results of its private dataset, least recently used dropped first once
    they hold more than `limit` bytes; a result larger than the limit is handed out, not held."""

    def __init__(self, ds_key: str, limit: int = SESSION_RESULT_BYTES) -> None:
        self.ds_key, self.limit = ds_key, limit
        self.entries: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.held = 0

    @classmethod
    def of_session(cls, ds_key: str) -> "SessionResults":
        """This session's holder for `ds_key`; a different dataset (a new upload) starts empty."""
        holder = st.session_state.get(_SESSION_KEY)
        if not isinstance(holder, cls) or holder.ds_key != ds_key:
            holder = st.session_state[_SESSION_KEY] = cls(ds_key)
        return holder

    def get_or_compute(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key][0]
        value = compute()
        size = result_bytes(value)
        if size <= self.limit:
            self.entries[key] = (value, size)
            self.held += size
            while self.held > self.limit:
                _, (_, dropped) = self.entries.popitem(last=False)
                self.held -= dropped
        return value


_RESULT_CACHES: list = []
_QUERIES: dict[str, Callable[..., Any]] = {}  # name -> cached query: what Context.get looks up


def clear_results() -> None:
    """Forget every cached_query result held in memory (kept results on disk stay): a cold page."""
    for cached in _RESULT_CACHES:
        cached.clear()


def per_version(query: Callable[[duckdb.DuckDBPyConnection], Any]) -> Callable[[Source, str, str], Any]:
    """Cache `query(con)` per (dataset, data version): what build_context needs before a Context exists.

    The source is not hashed: the dataset key names it. The query's name is part of the key
    because every function this makes shares one st.cache_data (same code, same qualname).
    """
    name = query.__name__

    @st.cache_data(show_spinner=False, max_entries=64)
    def cached(_source: Source, name: str, ds_key: str, version: str):
        with _source.reading() as con:
            return query(con)

    def call(source: Source, ds_key: str, version: str):
        return cached(source, name, ds_key, version)

    call.__name__, call.__doc__ = name, query.__doc__
    return call


# The results of dashboard.results, each cached per data version and filters (cached_query): one
# definition there, one line here, what the pages call.
# Per cell and phase: n, median and its bootstrap CI (analysis.stats), with the draws.
cell_stats = cached_query("Computing cell statistics...", on_disk=True)(results.cell_stats)
# cell_stats' frame without its bootstrap draws: what pages read. The draws (cells x resamples) are most of
# CellStats' size (53 MB on the bundle, ten times that on a store ten times its size), so a page that only needs
# medians and CIs must not load them, and they are never kept with the data.
cell_frame = cached_query("Computing cell statistics...", on_disk=True)(results.cell_frame)
# CellStats pooled over repeat runs, with replicates across runs (analysis.reproducibility).
pooled = cached_query("Pooling repeat runs...", on_disk=True)(results.pooled)
# pooled's frame without its draws (see cell_frame).
pooled_frame = cached_query("Pooling repeat runs...", on_disk=True)(results.pooled_frame)
# Every cell of the selection, whatever its status (analysis.load.cells_table).
cells = cached_query()(results.cells)
# Explore's table (dashboard.data.explore_table): per-phase memory and energy are a pass over every cell's
# resources (about a second on a store ten times the bundle), so once per version.
explore_rows = cached_query("Joining cells and statistics...", on_disk=True)(results.explore_rows)
# Depth-vs-width fits per group on medians pooled over runs, as README and `analyze` fit them. Fitting every
# run's cells at once would count a shape measured in five runs five times and leave the run-to-run spread out
# of the CIs; pooled cells carry it (analysis.regression).
fits = cached_query("Fitting depth vs width...", on_disk=True)(results.fits)
# The seed form with family as a term, per group pooled over families (the Depth vs width page's option).
family_fits = cached_query("Fitting across families...", on_disk=True)(results.family_fits)
# Pairs where the smaller model is slower (point estimate), with CIs, every group. On medians pooled over repeat
# runs, as `analyze` does: a single-round cell of one run has no CI (analysis.intervals), so only the run level
# can make a protocol-1 pair significant.
inversions = cached_query("Bootstrapping ratios...", on_disk=True)(results.inversions)
# Every pair of one group (the heatmap), without bootstrapping the other groups.
group_pairs = cached_query("Bootstrapping ratios...", on_disk=True)(results.group_pairs)
# Per comparison group, the depth and width effect per level of `factor` (analysis.regimes).
compare = cached_query("Comparing...", on_disk=True)(results.compare)
# Profiled cells with their launch / memory / compute prediction and verdict (analysis.why).
why_floor = cached_query("Modelling profiled cells...", on_disk=True)(results.why_floor)
# The fitted cost per launch (or per kernel in a graph) per (regime, backend, dtype), with CIs.
launch_overhead = cached_query("Fitting launch overheads...", on_disk=True)(results.launch_overhead)
# The pooled cells with their re-run intervals (analysis.rerun), for the ratios built on them.
pooled_rerun = cached_query("Estimating re-run intervals...", on_disk=True)(results.pooled_rerun)
# Per shape and group: a layer's hand-offs and weight reads and the LM head, fitted and calibrated (analysis.why_layers).
layer_cost = cached_query("Fitting per-layer costs...", on_disk=True)(results.layer_cost)
# The selection's headline (analysis.headline), the one README and HTML report show.
headline = cached_query("Pooling the headline over runs...", on_disk=True)(results.headline)
# "Does shape drive latency?" in a sentence per hardware class, with the decode cells behind it (analysis.shape_answer).
shape_answer = cached_query("Answering from the measured shapes...")(results.shape_answer)
# Per repeated cell and phase: run medians, Cochran's Q and verdicts (analysis.reproducibility).
repeat_table = cached_query("Comparing repeat runs...", on_disk=True)(results.repeat_table)
# Per-run rows of every cell measured in more than one run (analysis.reproducibility.run_medians, with
# repeat_table's verdicts); None when no cell was.
repeat_runs = cached_query("Comparing repeat runs...", on_disk=True)(results.repeat_runs)
# Between-run SD per group with its bootstrap CI (analysis.reproducibility.variance_components): a scipy
# bootstrap per group, so once per data version, not on every rerun of the page.
variance_table = cached_query("Estimating between-run variance...", on_disk=True)(results.variance_table)
# Which inversions hold in every run that measured both cells (analysis.reproducibility).
inversions_across_runs = cached_query("Judging inversions across runs...", on_disk=True)(results.inversions_across_runs)
# Only groups measured in more than one run: a single-run group's fit is on Depth vs width.
regressions_across_runs = cached_query("Fitting depth vs width per run...", on_disk=True)(results.regressions_across_runs)
# Why the slower cell of a pair is slower (analysis.why.explain_pair), or None unless both are profiled.
explain_cells = cached_query()(results.explain_cells)


@cached_query()
def run_list(ctx: Context) -> pd.DataFrame:
    """Every run of the dataset with its environment (analysis.run_compare.run_table); filters do not apply."""
    from analysis.run_compare import run_table

    with ctx.reading() as con:
        return run_table(con)


@cached_query("Comparing the two runs...")
def run_comparison(ctx: Context, run_a: str, run_b: str) -> pd.DataFrame:
    """Per cell and phase of both runs (under the filters): ratio of medians b / a with a CI across
    rounds, and its re-run interval from the dataset's repeated runs (the kept per-run statistics)."""
    from analysis.run_compare import compare_runs_by_round

    cells = cell_frame(ctx)
    with ctx.reading() as con:
        return compare_runs_by_round(con, run_a, run_b, ctx.filters, cells=cells)


@cached_query()
def samples(ctx: Context, cell_ids: list[str], phases: list[str]) -> pd.DataFrame:
    """Raw samples of chosen cells (analysis.load.samples_for), in cell, phase, rep, step order."""
    with ctx.reading() as con:
        return samples_for(con, list(cell_ids), list(phases))
