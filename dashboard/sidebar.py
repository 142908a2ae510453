"""The sidebar and the Context it builds: which dataset is open, the global filters, and their
mirror in the URL.

One module for the session state a page shares with the others: Streamlit drops a widget's
state when a run does not draw it, so the dataset picker and the filters keep their values
under session keys of their own; a link's query parameters seed the filters on a
session's first run and follow them afterwards, so a view can be shared as a link. app.py
draws the sidebar; every page rebuilds the same Context from that state (`context`).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from analysis import load
from dashboard import data, filters as flt
from dashboard.cache import Context, per_version
from dashboard.source import (BUNDLED, COMBINED, NOT_OPEN_KEY, SNAPSHOT, STATIC, STORE, UPLOAD, UPLOAD_KEY, empty_connection,
                              ingest_runs, is_hosted, open_dataset)
from dashboard.storefile import Held
from vocabulary import snapshot_setting, store_path

# What build_context reads before a Context exists, once per (dataset, data version).
_summary, _options, _content_id = per_version(load.store_counts), per_version(load.filter_options), per_version(load.content_id)


def _default_kind(hosted: bool) -> str:
    """The bundled reference, unless a snapshot is configured: never the store by itself.

    Switching to the store file once it exists made the reference data vanish after a
    user's first run; the store is one click away (and "bundled + my store" shows both).
    """
    if snapshot_setting() and not hosted:
        return SNAPSHOT
    return BUNDLED


# The dataset in the URL (?data=store): a link to a view of the user's runs opens them again.
DATA_PARAM = "data"
DATA_IN_LINK = {"store": STORE, "both": COMBINED, "snapshot": SNAPSHOT}  # the bundled default has no parameter


def _init_from_link(hosted: bool) -> None:
    """First run of a session: the dataset and the filters from the URL's query parameters."""
    if "_filters_loaded" in st.session_state:
        return
    st.session_state["_filters_loaded"] = True
    linked = DATA_IN_LINK.get(st.query_params.get(DATA_PARAM, ""))
    if linked and not hosted and _kept("dataset_kind") not in st.session_state:
        st.session_state[_kept("dataset_kind")] = linked
    selection = flt.from_query(st.query_params.get_all)
    for f in flt.FILTERS:
        st.session_state[_kept(f"filter_{f.param}")] = selection[f.column]


def _kinds(hosted: bool) -> list[str]:
    kinds = [BUNDLED] if hosted else [BUNDLED, STORE, COMBINED, SNAPSHOT]
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
        source, ds_key, label, version = open_dataset(kind, hosted, store, snap_path)
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
    _sync_query_params(selection, kind)
    # a visitor's upload keeps nothing beyond their session (dashboard.cache.SessionResults)
    private = kind == UPLOAD
    content_id = _content_id(source, ds_key, version) if summary["cells"] and not private else None
    return Context(source, ds_key, version, kind, label, hosted, kind == STORE and not hosted, store,
                   data.default_runs_dir(), summary, options, selection, problem, content_id, private)


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
    if kind in (STORE, COMBINED):
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


def choose_dataset(kind: str) -> None:
    """Open `kind` (a dataset the sidebar offers) as if picked there, and draw the page again."""
    st.session_state[_kept("dataset_kind")] = kind
    st.rerun()


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


def _sync_query_params(selection: dict[str, list], kind: str) -> None:
    """Mirror the dataset and the filters into the URL so the view can be shared as a link."""
    linked = {value: name for name, value in DATA_IN_LINK.items()}.get(kind)
    if linked and st.query_params.get(DATA_PARAM) != linked:
        st.query_params[DATA_PARAM] = linked
    elif not linked and DATA_PARAM in st.query_params:
        del st.query_params[DATA_PARAM]
    wanted = flt.to_query(selection)
    for f in flt.FILTERS:
        if wanted.get(f.param):
            if st.query_params.get_all(f.param) != wanted[f.param]:
                st.query_params[f.param] = wanted[f.param]
        elif f.param in st.query_params:
            del st.query_params[f.param]

