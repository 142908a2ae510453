"""The thin Streamlit layer: connections, cached queries, the sidebar, the page guard.

Data sources (st.cache_resource, one per dataset per server process): a store file is
opened only for the length of a query (read-only) or of an ingest or import (read-write),
so the CLI can read or write it while the dashboard is open (dashboard.storefile);
snapshots are in-memory DuckDBs, queried through a cursor each; in hosted mode every
connection is locked down. Every query runs inside `with ctx.reading() as con:`.
Query results are st.cache_data entries keyed on (dataset, data version, filters); the
data version is a fingerprint of the store's row counts and run statuses, recomputed only
when the file changed on disk, so an ingest or import (from here or from the CLI)
invalidates them without any explicit clearing.
"""
from __future__ import annotations

import hashlib
import html
import inspect
import logging
import os
import re
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import duckdb
import pandas as pd
import streamlit as st

from dashboard import data, filters as flt, results
from dashboard.storefile import Held, Source, StoreFile
from dashboard.text import md
from store.dataset import BUNDLED_SNAPSHOT
from vocabulary import snapshot_setting, store_path

log = logging.getLogger("shapebench.dashboard")

STORE, BUNDLED, SNAPSHOT, UPLOAD = "store file", "bundled snapshot", "snapshot path", "uploaded snapshot"
NOT_OPEN_KEY = "empty:error"  # the dataset key while the chosen dataset could not be opened
UPLOAD_KEY = "_shapebench_upload"  # (sha256, connection, file name) of this session's upload
STATIC = "static"  # data version of a snapshot: it never changes while open


# --- hosted mode -----------------------------------------------------------------------

def _secrets() -> dict | None:
    """st.secrets from every secrets file Streamlit reads (--secrets.files too); see hosted_secrets."""
    from streamlit import config

    from store.hosted import hosted_secrets

    return hosted_secrets(st.secrets, config.get_option("secrets.files"))


def is_hosted() -> bool:
    from store.hosted import hosted_mode_enabled

    return hosted_mode_enabled(os.environ, _secrets())


# --- connections -----------------------------------------------------------------------

@st.cache_resource(show_spinner=False)
def store_file(path: str) -> StoreFile:
    """One StoreFile per path in this server process: its readers and its writer take turns."""
    return StoreFile(path)


@st.cache_resource(show_spinner=False)
def snapshot_connection(path: str, hosted: bool) -> duckdb.DuckDBPyConnection:
    from store.hosted import open_hosted
    from store.snapshot import open_snapshot

    return open_hosted(path) if hosted else open_snapshot(path)


@st.cache_resource(show_spinner=False)
def empty_connection() -> duckdb.DuckDBPyConnection:
    """Stands in for a store file that does not exist yet (nothing is created until an ingest)."""
    from store.db import connect_memory

    return connect_memory()


@st.cache_resource(show_spinner=False)
def ingest_state(store: str, runs_dir: str) -> dict[str, Any]:
    """Per (store, runs dir): signatures of ingested run directories and a writer lock."""
    return {"seen": {}, "lock": threading.Lock()}




def ingest_runs(store: Path, runs_dir: Path) -> dict[str, int]:
    """Ingest changed run directories into the store file; create it on the first ingest."""
    state = ingest_state(str(store), str(runs_dir))
    pending = data.changed_run_dirs(runs_dir, state["seen"])
    if not pending:
        return {"runs": 0, "cells_added": 0, "samples_added": 0, "errors": 0}
    with state["lock"], store_file(str(store)).writing() as con:
        return data.ingest_changed(con, runs_dir, state["seen"])


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

    A result defined in dashboard.results (and wrapped here) depends on that code only, so a
    change to the page layout here does not make the results kept in a snapshot stale; one a
    page defines itself depends on that page's file too.
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
            value = cached(ctx, name, ctx.ds_key, ctx.version, ctx.fkey, args)
            return value.copy(deep=False) if isinstance(value, pd.DataFrame) else value

        call.__name__, call.__doc__ = name, compute.__doc__
        _RESULT_CACHES.append(cached)
        _QUERIES[name] = call
        return call
    return decorate


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


_summary, _options, _content_id = per_version(data.summary), per_version(data.options), per_version(data.content_id)


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
# Every cell of the selection, whatever its status (dashboard.data.cells_table).
cells = cached_query()(results.cells)
# Explore's table (dashboard.data.explore_table): per-phase memory and energy are a pass over every cell's
# resources (about a second on a store ten times the bundle), so once per version.
explore_rows = cached_query("Joining cells and statistics...", on_disk=True)(results.explore_rows)
# Depth-vs-width fits per group on medians pooled over runs, as README and `analyze` fit them. Fitting every
# run's cells at once would count a shape measured in five runs five times and leave the run-to-run spread out
# of the CIs; pooled cells carry it (analysis.regression).
fits = cached_query("Fitting depth vs width...", on_disk=True)(results.fits)
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
# The selection's headline (analysis.headline), the one README and HTML report show.
headline = cached_query("Pooling the headline over runs...", on_disk=True)(results.headline)
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


def explain_cells(ctx: Context, slow_cell: str, fast_cell: str) -> str | None:
    """analysis.why.explain_pair for two cells, or None unless both configurations are profiled.

    A cell measured in a run without a profile borrows the profile of the same cell key on the
    same regime (kernel counts belong to the configuration, not to the run). For a CUDA graph
    the count that explains latency is the kernels it replays, not its few host launches.
    """
    from analysis.why import explain_pair

    floor = why_floor(ctx)
    if floor.empty:
        return None
    floor = floor[floor["bandwidth_gb_s"].notna()]
    floor = floor.assign(launches=floor["kernels"].where(floor["graph_launches"].fillna(0) > 0, floor["launches"]))
    keys = cell_frame(ctx).drop_duplicates("cell_id").set_index("cell_id")[["regime", "cell_key"]]
    profiled = floor.join(keys[["cell_key"]], on="cell_id").drop_duplicates(["regime", "cell_key"]).set_index(["regime", "cell_key"])
    rows = []
    for cell in (slow_cell, fast_cell):
        if cell not in keys.index or tuple(keys.loc[cell]) not in profiled.index:
            return None
        rows.append(profiled.loc[tuple(keys.loc[cell])])
    return explain_pair(*rows)


@cached_query()
def run_list(ctx: Context) -> pd.DataFrame:
    """Every run of the dataset with its environment (analysis.run_compare.run_table); filters do not apply."""
    from analysis.run_compare import run_table

    with ctx.reading() as con:
        return run_table(con)


@cached_query("Comparing the two runs...")
def run_comparison(ctx: Context, run_a: str, run_b: str) -> pd.DataFrame:
    """Per cell and phase of both runs (under the filters): ratio of medians b / a with a CI across rounds."""
    from analysis.run_compare import compare_runs_by_round

    with ctx.reading() as con:
        return compare_runs_by_round(con, run_a, run_b, ctx.filters)


@cached_query()
def samples(ctx: Context, cell_ids: list[str], phases: list[str]) -> pd.DataFrame:
    """Raw samples of chosen cells (dashboard.data.samples_for), in cell, phase, rep, step order."""
    with ctx.reading() as con:
        return data.samples_for(con, list(cell_ids), list(phases))


# --- sidebar -------------------------------------------------------------------------------

def _default_kind(hosted: bool) -> str:
    if hosted:
        return BUNDLED
    if snapshot_setting():
        return SNAPSHOT
    return STORE if store_path().exists() else BUNDLED


def _open(kind: str, hosted: bool, store: Path, snap_path: str) -> tuple[Source, str, str, str]:
    """(data source, dataset key, label, data version) for the chosen dataset."""
    if kind == UPLOAD and UPLOAD_KEY in st.session_state:
        sha, con, name = st.session_state[UPLOAD_KEY]
        return Held(con), f"upload:{sha}", f"uploaded snapshot {name}", STATIC
    if kind == STORE and not hosted:
        if not store.exists():
            return Held(empty_connection()), f"empty:{store}", f"store file {store} (not created yet)", STATIC
        source = store_file(str(store))
        return source, f"store:{store.resolve()}", f"store file {store}", source.version(data.fingerprint)
    if kind == SNAPSHOT and not hosted:
        path = Path(snap_path).expanduser()
        return Held(snapshot_connection(str(path), False)), f"snapshot:{path.resolve()}", f"snapshot {path}", STATIC
    return (Held(snapshot_connection(str(BUNDLED_SNAPSHOT), hosted)), f"bundled:{hosted}",
            "bundled snapshot (H100, H200 and CPU; real measurements)", STATIC)


def _init_from_link(hosted: bool) -> None:
    """First run of a session: the filters from the URL's query parameters."""
    if "_filters_loaded" in st.session_state:
        return
    st.session_state["_filters_loaded"] = True
    selection = flt.from_query(st.query_params.get_all)
    for f in flt.FILTERS:
        st.session_state[_kept(f"filter_{f.param}")] = selection[f.column]


def _kinds(hosted: bool) -> list[str]:
    kinds = [BUNDLED] if hosted else [STORE, BUNDLED, SNAPSHOT]
    return kinds + [UPLOAD] if UPLOAD_KEY in st.session_state else kinds


def _chosen_kind(hosted: bool) -> str:
    kinds = _kinds(hosted)
    if st.session_state.get(_kept("dataset_kind")) not in kinds:
        st.session_state[_kept("dataset_kind")] = _default_kind(hosted)
    return st.session_state[_kept("dataset_kind")]


def build_context() -> Context:
    """The open dataset, its version and the global filters, from session state (draws nothing).

    app.py's sidebar draws the widgets that set this state; pages call `context()`, which
    rebuilds it cheaply (connections and queries are cached) rather than reading an object
    left in session state by an earlier run.
    """
    hosted = is_hosted()
    _init_from_link(hosted)
    kind = _chosen_kind(hosted)
    store = Path(st.session_state.get(_kept("store_path")) or store_path())
    snap_path = st.session_state.get(_kept("snapshot_path")) or (snapshot_setting() or "")
    problem = st.session_state.get("_ingest_problem")
    try:
        if kind == SNAPSHOT and not snap_path:
            raise FileNotFoundError("enter a snapshot directory or .zip path")
        source, ds_key, label, version = _open(kind, hosted, store, snap_path)
    except Exception as error:  # noqa: BLE001 - a bad path or a locked file: say so, show nothing
        problem = f"could not open the {kind}: {str(error).splitlines()[0][:300]}"
        source, ds_key, label, version = Held(empty_connection()), NOT_OPEN_KEY, f"{kind} (not open)", STATIC
    summary = _summary(source, ds_key, version)
    options = _options(source, ds_key, version)
    selection = {}
    for f in flt.FILTERS:
        key = _kept(f"filter_{f.param}")
        allowed = options.get(f.column, [])
        st.session_state[key] = [v for v in st.session_state.get(key) or [] if v in allowed]
        selection[f.column] = list(st.session_state[key])
    _sync_query_params(selection)
    content_id = _content_id(source, ds_key, version) if summary["cells"] else None
    return Context(source, ds_key, version, kind, label, hosted, kind == STORE and not hosted, store,
                   data.default_runs_dir(), summary, options, selection, problem, content_id)


def context() -> Context:
    """This run's context (see build_context)."""
    return build_context()


def sidebar() -> Context:
    """Ingest new run files, then draw the dataset picker, its summary and the global filters."""
    hosted = is_hosted()
    st.session_state.pop("_ingest_problem", None)
    if not hosted:
        store = Path(st.session_state.get(_kept("store_path")) or store_path())
        runs_dir = data.default_runs_dir()
        try:
            report = ingest_runs(store, runs_dir)
            if report["errors"]:
                st.session_state["_ingest_problem"] = f"{report['errors']} run director(ies) could not be ingested yet; retrying"
        except Exception as error:  # noqa: BLE001 - e.g. another process holds the store file
            st.session_state["_ingest_problem"] = f"could not ingest runs from {runs_dir}: {str(error).splitlines()[0][:200]}"

    sb = st.sidebar
    sb.subheader("Dataset")
    _init_from_link(hosted)
    _chosen_kind(hosted)
    kind = _persistent(sb.radio, "dataset_kind", "Open", _kinds(hosted), label_visibility="collapsed")
    if kind == STORE:
        st.session_state.setdefault(_kept("store_path"), str(store_path()))
        _persistent(sb.text_input, "store_path", "Store file", help="DuckDB file; created on the first ingest of a run")
    elif kind == SNAPSHOT:
        st.session_state.setdefault(_kept("snapshot_path"), (snapshot_setting() or ""))
        _persistent(sb.text_input, "snapshot_path", "Snapshot path", placeholder="snapshot directory or .zip")
    ctx = build_context()
    summary = ctx.summary
    sb.caption(ctx.label)
    c1, c2 = sb.columns(2)
    c1.metric("Runs", f"{summary['runs']:,}")
    c2.metric("Regimes", summary["regimes"])
    c1.metric("Cells", f"{summary['cells']:,}", help=f"{summary['ok']} ok, {summary['failed']} failed or unsupported")
    samples = summary["samples"]
    # the sidebar's half column fits about six characters: 242,346 would be cut to "242,…"
    c2.metric("Samples", f"{samples / 1e6:.2f}M" if samples >= 1e6 else f"{samples / 1e3:.0f}k" if samples >= 1e5
              else f"{samples:,}", help=f"{samples:,} raw timing samples")
    if hosted:
        sb.caption("Hosted read-only mode: no runs, no imports.")
    sb.subheader("Filters")
    for f in flt.FILTERS:
        _persistent(sb.multiselect, f"filter_{f.param}", f.label, ctx.options.get(f.column, []), placeholder="all")
    return ctx


def _kept(key: str) -> str:
    return f"_kept_{key}"


def _keep(key: str) -> None:
    st.session_state[_kept(key)] = st.session_state[key]


def _persistent(widget, key: str, *args, **kwargs):
    """A sidebar widget whose value survives page switches.

    Streamlit drops a widget's state when a run does not draw it, so the value lives under a
    plain session key and seeds the widget.
    """
    st.session_state[key] = st.session_state.get(_kept(key))
    return widget(*args, key=key, on_change=_keep, args=(key,), **kwargs)


def _sync_query_params(selection: dict[str, list]) -> None:
    """Mirror the filters into the URL so the view can be shared as a link."""
    wanted = flt.to_query(selection)
    for f in flt.FILTERS:
        if wanted.get(f.param):
            if st.query_params.get_all(f.param) != wanted[f.param]:
                st.query_params[f.param] = wanted[f.param]
        elif f.param in st.query_params:
            del st.query_params[f.param]


# --- page helpers --------------------------------------------------------------------------

def guard(body: Callable[[Context], None]) -> None:
    """Run a page body; an unexpected error becomes a short st.error, never a traceback."""
    ctx = context()
    if ctx.problem:
        st.warning(md(ctx.problem))  # paths and error text come from the user and the data: text, not markdown
    try:
        body(ctx)
    except Exception as error:  # noqa: BLE001 - the page must stay usable
        log.error("page error: %s", traceback.format_exc())
        st.error(md(f"This view could not be drawn: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"))


def require_data(ctx: Context) -> bool:
    """Say what to do when nothing matches; True when there are ok cells to analyse."""
    if ctx.ds_key == NOT_OPEN_KEY:
        return False  # the warning above says why nothing can be shown: the data is not "empty"
    if ctx.summary["cells"] == 0:
        if ctx.kind == STORE:
            st.info("The store is empty. Start a plan on the **Run** page (or `python -m runner run PLAN`), "
                    "or open the bundled snapshot in the sidebar to explore real H100, H200 and CPU measurements.")
        else:
            st.info("This dataset holds no cells. Open the bundled snapshot in the sidebar.")
        return False
    if ctx.summary["ok"] == 0:
        st.warning("No cell finished ok yet: every cell failed or is unsupported. See Overview for their errors.")
        return False
    if cell_frame(ctx).empty:
        st.info(f"No measured cells match the filters ({flt.describe(ctx.selection)}). Clear a filter in the sidebar.")
        return False
    return True


def running_note(ctx: Context) -> None:
    if ctx.summary.get("running"):
        st.info(f"{ctx.summary['running']} run(s) in progress: results update as cells finish.")


def page_header(ctx: Context, title: str, caption: str | None = None) -> bool:
    """An analysis page's opening: title, what it computes, a running-run note, then
    `require_data`. True when the page has ok cells to show."""
    st.title(title)
    if caption:
        st.caption(caption)
    running_note(ctx)
    return require_data(ctx)


def chart(fig, key: str, shows: str, **kwargs):
    """st.plotly_chart whose exported PNG says what it shows.

    `shows` (regime, backend, phase, dtype...: what the page selected) becomes the figure's
    subtitle, or its title where it has none, and the name of the file the camera button saves,
    so an image taken out of the dashboard still names its hardware and backend. Plotly reads
    a few HTML tags in titles (links among them): the text from the data is HTML-escaped.
    """
    text = html.escape(shows if len(shows) <= 200 else shows[:199] + "…")  # a subtitle, not a paragraph
    if fig.layout.title.text:
        fig.update_layout(title_subtitle_text=text, margin_t=max(fig.layout.margin.t or 0, 90))
    else:
        fig.update_layout(title_text=text)
    filename = "shapebench-" + (re.sub(r"[^A-Za-z0-9.]+", "-", shows).strip("-")[:150] or "chart")
    config = {"toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}
    return st.plotly_chart(fig, key=key, config=config, **kwargs)


def upload_limit_mb(hosted: bool) -> int:
    """The largest snapshot upload accepted: hosted mode's upload limit, else the server's
    server.maxUploadSize (.streamlit/config.toml), so the uploader's text is the limit that applies."""
    from streamlit import config

    if hosted:
        from store.snapshot import UPLOAD_LIMITS

        return UPLOAD_LIMITS.max_bytes // 2**20
    return int(config.get_option("server.maxUploadSize"))


def sha256(data_bytes: bytes) -> str:
    return hashlib.sha256(data_bytes).hexdigest()


def group_label(key, ctx: Context) -> str:
    """A group's label (`key` an analysis.load.GroupKey), without the regime when only one
    regime is open (it is then noise)."""
    return key.short_label if len(ctx.options.get("regime", [])) <= 1 else key.label
