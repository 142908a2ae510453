"""Which data a reader opens: a store file, a snapshot, or the bundled default snapshot.

The CLI's `analyze` and the dashboard resolve their dataset the same way, so "what am I
looking at" has one answer: an explicit snapshot, else the local store file if it
exists, else the snapshot shipped in data/ (real measurements, never an empty page).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from vocabulary import snapshot_setting, store_path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_SNAPSHOT = REPO_ROOT / "data" / "snapshot"


@dataclass(frozen=True)
class Dataset:
    kind: str  # store | snapshot | bundled
    path: Path
    writable: bool

    @property
    def label(self) -> str:
        names = {"store": "store file", "snapshot": "snapshot", "bundled": "bundled snapshot"}
        return f"{names[self.kind]} {self.path}"


def resolve(db: str | Path | None = None, snapshot: str | Path | None = None) -> Dataset:
    """Pick the dataset: an explicit snapshot, else the store file, else the bundled one."""
    snapshot = snapshot or snapshot_setting()
    if snapshot:
        return Dataset("snapshot", Path(snapshot), writable=False)
    db_path = Path(db) if db else store_path()
    if db is not None or db_path.exists():
        return Dataset("store", db_path, writable=True)
    return Dataset("bundled", BUNDLED_SNAPSHOT, writable=False)


def open_read_only(dataset: Dataset) -> duckdb.DuckDBPyConnection:
    """A connection for reading: snapshots in memory, a store file read-only."""
    if dataset.kind == "store":
        from store.db import connect

        if not dataset.path.exists():
            raise FileNotFoundError(f"no store at {dataset.path}; run a plan first or open a snapshot")
        return connect(dataset.path, read_only=True)
    from store.snapshot import open_snapshot

    if not dataset.path.exists():
        raise FileNotFoundError(f"no snapshot at {dataset.path}")
    return open_snapshot(dataset.path)
