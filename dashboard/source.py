"""Where the dashboard's data comes from: which datasets it can open, opening one, and ingesting
run directories into the store file.

One module so that every connection the server process holds is made in one place: a store
file is opened only for the length of a query (read-only) or of an ingest or import
(read-write), so the CLI can read or write it while the dashboard is open (dashboard.storefile);
snapshots are in-memory DuckDBs (st.cache_resource, one per dataset per server process),
queried through a cursor each; in hosted mode every connection is locked down.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import duckdb
import streamlit as st

from analysis.load import store_fingerprint
from dashboard import data
from dashboard.storefile import Held, Source, StoreFile
from runner.runfiles import changed_run_dirs
from store.dataset import BUNDLED_SNAPSHOT

# The datasets the sidebar can open (its radio's options). The bundled reference is the default
# and stays so after a run is ingested: the user picks their store, alone or beside the reference.
STORE, BUNDLED, SNAPSHOT, UPLOAD = "store file", "bundled snapshot", "snapshot path", "uploaded snapshot"
COMBINED = "bundled + my store"
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


@st.cache_resource(show_spinner=False, max_entries=2)
def combined_connection(store: str, version: str) -> duckdb.DuckDBPyConnection:
    """The bundled snapshot's rows and the store file's, in memory (store.combined), per store version.

    The store file is open only while its rows are copied, so an ingest can write it meanwhile;
    a new version of the file builds a new view (the old one leaves the cache).
    """
    from store.combined import combine

    reference = snapshot_connection(str(BUNDLED_SNAPSHOT), False).cursor()
    try:
        with store_file(store).reading() as con:
            return combine(reference, con)
    finally:
        reference.close()


def store_runs(store: Path) -> int:
    """How many runs the store file holds (0 when it does not exist or cannot be read now)."""
    if not store.exists():
        return 0
    try:
        with store_file(str(store)).reading() as con:
            return int(con.execute("SELECT count(*) FROM runs").fetchall()[0][0])
    except Exception:  # noqa: BLE001 - a busy or foreign file: the offer to show it just waits
        return 0


def store_regimes(store: Path) -> list[str]:
    """The hardware regimes of the store file's runs ([] when it does not exist or cannot be read now)."""
    if not store.exists():
        return []
    try:
        with store_file(str(store)).reading() as con:
            return [row[0] for row in con.execute("SELECT DISTINCT regime FROM runs ORDER BY 1").fetchall()]
    except Exception:  # noqa: BLE001 - a busy or foreign file: its shapes are simply not singled out
        return []


def open_dataset(kind: str, hosted: bool, store: Path, snap_path: str) -> tuple[Source, str, str, str]:
    """(data source, dataset key, label, data version) for the chosen dataset."""
    if kind == UPLOAD and UPLOAD_KEY in st.session_state:
        sha, con, name = st.session_state[UPLOAD_KEY]
        return Held(con), f"upload:{sha}", f"uploaded snapshot {name}", STATIC
    if kind == STORE and not hosted:
        if not store.exists():
            return Held(empty_connection()), f"empty:{store}", f"store file {store} (not created yet)", STATIC
        source = store_file(str(store))
        return source, f"store:{store.resolve()}", f"store file {store}", source.version(store_fingerprint)
    if kind == COMBINED and not hosted and store.exists():
        version = store_file(str(store)).version(store_fingerprint)
        return (Held(combined_connection(str(store), version)), f"combined:{store.resolve()}",
                f"bundled snapshot + store file {store}", version)
    if kind == SNAPSHOT and not hosted:
        path = Path(snap_path).expanduser()
        return Held(snapshot_connection(str(path), False)), f"snapshot:{path.resolve()}", f"snapshot {path}", STATIC
    return (Held(snapshot_connection(str(BUNDLED_SNAPSHOT), hosted)), f"bundled:{hosted}",
            "bundled snapshot (H100, H200 and CPU; real measurements)", STATIC)


# --- ingest ------------------------------------------------------------------------------

@st.cache_resource(show_spinner=False)
def ingest_state(store: str, runs_dir: str) -> dict[str, Any]:
    """Per (store, runs dir): signatures of ingested run directories and a writer lock."""
    return {"seen": {}, "lock": threading.Lock()}


def ingest_runs(store: Path, runs_dir: Path) -> dict[str, int]:
    """Ingest changed run directories into the store file; create it on the first ingest."""
    state = ingest_state(str(store), str(runs_dir))
    pending = changed_run_dirs(runs_dir, state["seen"])
    if not pending:
        return {"runs": 0, "cells_added": 0, "samples_added": 0, "errors": 0}
    read = data.read_changed(runs_dir, state["seen"])  # before the writer lock: see data.read_changed
    with state["lock"], store_file(str(store)).writing() as con:
        return data.ingest_read(con, read, state["seen"])
