"""Short-lived connections to a store file, so the dashboard holds no DuckDB lock while idle.

DuckDB lets one process open a file read-write, and while it does no other process can open
it at all; read-only openers coexist with each other. A dashboard that kept the store open
read-write for its lifetime locked the CLI out (`analyze`, `report`, `snapshot export`
failed with a lock error while `streamlit run app.py` was up). So every query opens the file
read-only for as long as it runs, and an ingest or an import opens it read-write for as long
as it writes; between them the file is free for any other process.

Within the server process DuckDB refuses a read-write connection while a read-only one to
the same file is open ("different configuration"), so readers and the writer take turns
through a readers-writer lock. Between processes a writer holding the file makes our opens
fail; they retry for a moment (an ingest takes well under a second) and then say who holds it.

An in-memory dataset (a snapshot) has no file to free: `Held` hands out cursors on it.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import duckdb

from store.db import StoreBusyError, connect_when_free

BUSY_RETRY_S = 5.0  # how long a query waits for another process's write (ingest, import) to end


class Source(Protocol):
    """Where a page's queries run: `with source.reading() as con: ...` (results fully fetched inside)."""

    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]: ...


class Held:
    """An open (in-memory) database: each reading gets its own cursor, closed afterwards."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self.con.cursor()
        try:
            yield cursor
        finally:
            cursor.close()


class StoreFile:
    """A store file opened only for the length of one query (read-only) or one write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._turns = threading.Condition()
        self._readers = 0
        self._writing = False
        self._version: tuple[tuple, str] | None = None

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return connect_when_free(self.path, read_only=read_only, wait_s=BUSY_RETRY_S)
        except StoreBusyError as busy:
            raise StoreBusyError(busy.path, busy.holder,
                                 f"another process is writing {self.path} (an ingest or an import?); the page reads "
                                 f"it again when rerun once that ends ({busy.holder})") from None

    @contextmanager
    def _connected(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for the length of one turn, closed after it."""
        con = self._open(read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection for one query; nested readings in one thread are fine."""
        with self._turns:
            self._turns.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            with self._connected(read_only=True) as con:
                yield con
        finally:
            with self._turns:
                self._readers -= 1
                self._turns.notify_all()

    @contextmanager
    def writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection (the file and its schema created if missing), alone in this process."""
        with self._turns:
            self._turns.wait_for(lambda: not self._writing and self._readers == 0)
            self._writing = True
        try:
            with self._connected(read_only=False) as con:
                yield con
        finally:
            with self._turns:
                self._writing = False
                self._turns.notify_all()

    def _stat_key(self) -> tuple:
        """What changes on disk when any process writes the store (DuckDB checkpoints on close)."""
        key = []
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                st = path.stat()
                key.append((st.st_mtime_ns, st.st_size))
            except OSError:
                key.append(None)
        return tuple(key)

    def version(self, fingerprint: Callable[[duckdb.DuckDBPyConnection], str]) -> str:
        """`fingerprint(con)` of the data, recomputed only when the file changed on disk.

        An idle dashboard rerunning a page therefore does not open the file at all.
        """
        key = self._stat_key()
        if self._version is not None and self._version[0] == key:
            return self._version[1]
        with self.reading() as con:
            value = fingerprint(con)
        self._version = (key, value)
        return value
