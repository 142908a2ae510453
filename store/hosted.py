"""Hosted read-only mode: a public dashboard over a snapshot, with no way out of DuckDB.

A hosted page may show visitors a SQL box or load their uploads, so its connection must not
read server files, reach the network, load extensions or write to disk, and a visitor must
not be able to switch any of that back on. DuckDB (verified on 2.0.1) gives this with two
settings applied after the snapshot tables are loaded into memory:
`enable_external_access=false` (file systems, URLs, COPY, ATTACH, INSTALL/LOAD, Python
replacement scans) then `lock_configuration=true` (every later SET/RESET/PRAGMA of any
option fails). Both are per database instance, so each in-memory snapshot is locked on its
own and the local store is unaffected.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb

from store.snapshot import open_snapshot, open_snapshot_bytes
from store.snapshot_read import LOCAL_LIMITS, UPLOAD_LIMITS

HOSTED_ENV = "SHAPEBENCH_HOSTED"
_TRUE = {"1", "true", "yes", "on"}
# Order matters: temp_directory can no longer be changed once external access is off, and
# nothing can be changed once the configuration is locked.
LOCKDOWN = (
    ("temp_directory", "''"),                  # never spill a visitor's query to disk
    ("autoinstall_known_extensions", "false"),  # no extension download behind a query
    ("autoload_known_extensions", "false"),
    ("allow_community_extensions", "false"),
    ("python_enable_replacements", "false"),   # SQL must not see the server's Python objects
    ("enable_external_access", "false"),
    ("lock_configuration", "true"),
)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def hosted_mode_enabled(environ: Mapping[str, str], secrets: Mapping[str, Any] | None = None) -> bool:
    """Whether this process serves the public read-only dashboard.

    Set by the environment (SHAPEBENCH_HOSTED=1) or by a secret (top-level
    SHAPEBENCH_HOSTED, or `hosted` under a [shapebench] section), so that a hosting
    service where only secrets can be set still turns it on. Callers pass os.environ and
    st.secrets explicitly, which keeps this testable and free of streamlit.
    """
    if _truthy(environ.get(HOSTED_ENV, "")):
        return True
    if not secrets:
        return False
    try:
        if _truthy(secrets.get(HOSTED_ENV, "")):
            return True
        section = secrets.get("shapebench")
        return isinstance(section, Mapping) and _truthy(section.get("hosted", ""))
    except Exception:  # st.secrets raises when no secrets file exists: treat as unset
        return False


def hosted_secrets(secrets: Any, files: Iterable[str | Path]) -> Mapping[str, Any] | None:
    """The secrets to decide hosted mode on, from every file Streamlit reads.

    `secrets` is st.secrets and `files` Streamlit's `secrets.files` option (its defaults,
    or what `--secrets.files` gave), so a secrets file in any of those places counts, not
    only two hard-coded ones. None when there is no secrets file. A file that is there but
    cannot be read might be the one asking for hosted mode: unclear, so stay read-only.
    """
    existing = [Path(f) for f in files if Path(f).is_file()]
    try:
        if secrets.load_if_toml_exists():
            return secrets.to_dict()
    except Exception:  # noqa: BLE001 - a malformed file: decided below, fail closed
        pass
    return {HOSTED_ENV: "1"} if existing else None


def lock_down(con: duckdb.DuckDBPyConnection, *, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """Cut a connection off from files, network and extensions, for good; return it.

    Load everything the connection needs first: afterwards not even Parquet can be read.
    `memory_limit` (e.g. "1GB") bounds what a visitor's queries may use.
    """
    settings = LOCKDOWN
    if memory_limit is not None:
        if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", memory_limit):
            raise ValueError(f"memory_limit must look like '1GB' or '512MiB', got {memory_limit!r}")
        settings = (("memory_limit", f"'{memory_limit}'"),) + LOCKDOWN
    for name, value in settings:
        con.execute(f"SET {name} = {value}")
    locked = con.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
    ).fetchall()[0]
    if locked != (False, True):  # a DuckDB that ignored a setting must not serve the public
        con.close()
        raise RuntimeError(f"DuckDB did not lock the connection (got {locked})")
    return con


def open_hosted(path: str | Path, *, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """The hosted dashboard's connection: the shipped snapshot in memory, locked down."""
    return lock_down(open_snapshot(path, limits=LOCAL_LIMITS), memory_limit=memory_limit)


def open_upload(
    data: bytes, *, max_bytes: int = UPLOAD_LIMITS.max_bytes, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A visitor's uploaded snapshot, in their own locked in-memory session.

    The zip is read from bytes in memory and never written to disk; size, zip-bomb,
    manifest, checksum and schema checks apply (SnapshotError on refusal).
    """
    return lock_down(open_snapshot_bytes(data, max_bytes), memory_limit=memory_limit)
