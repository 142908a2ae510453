"""Derived results kept per data version, so that a page is not a recomputation.

The pooled statistics of the bundled data (run-level bootstraps, random-effects fits, a
regression per group and per run) take a minute or more on a 2-core machine; a visitor
must not pay that on every cold page, and a new server process must not pay it again. So
each derived result is computed once per (dataset content, analysis code, filters) and kept
as a file under the cache directory; every later process loads it in milliseconds.

The key hashes the dataset's content id (a snapshot's manifest checksums, a store's
fingerprint), the source of the analysis package (a changed statistic never serves an old
result), the filters and the result's name. Files are pickles written atomically by this
process for itself: the cache directory is private to the user running the dashboard and
never holds anything that came from an upload (dashboard.cache keeps a visitor's results
in their session), so nothing untrusted is ever unpickled. The directory is bounded
(MAX_CACHE_BYTES): past it the least recently used files go. A cache that cannot be
written (read-only home, full disk) only costs speed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("shapebench.derived")

T = TypeVar("T")
ANALYSIS_DIR = Path(__file__).resolve().parent
# The bundle's results take about 150 MB per data version; a few versions of a store fit.
MAX_CACHE_BYTES = 2 << 30


def cache_dir(environ: os._Environ | dict = os.environ) -> Path:
    """SHAPEBENCH_CACHE, else the user's cache directory."""
    if environ.get("SHAPEBENCH_CACHE"):
        return Path(environ["SHAPEBENCH_CACHE"])
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shapebench" / "derived"


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the analysis package's source: results are only as valid as the code that made them."""
    digest = hashlib.sha256()
    for path in sorted(ANALYSIS_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def derived_key(content_id: str, name: str, *parts: Any) -> str:
    text = repr((content_id, code_version(), name, parts))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load_or_compute(content_id: str, name: str, parts: tuple, compute: Callable[[], T],
                    directory: Path | None = None) -> T:
    """The kept result for this key, else `compute()`, kept for next time."""
    root = directory or cache_dir()
    path = root / f"{name}-{derived_key(content_id, name, *parts)}.pkl"
    try:
        with open(path, "rb") as handle:
            value = pickle.load(handle)
        _touch(path)
        return value
    except FileNotFoundError:
        pass
    except Exception as error:  # noqa: BLE001 - a torn or foreign file: recompute and replace it
        log.warning("derived result %s unreadable (%s); recomputing", path.name, error)
    value = compute()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=f".{name}-", suffix=".tmp", delete=False) as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
        evict(root, MAX_CACHE_BYTES)
    except OSError as error:
        log.warning("could not keep derived result %s: %s", name, error)
        try:
            os.unlink(handle.name)
        except (OSError, UnboundLocalError):
            pass
    return value


def _touch(path: Path) -> None:
    """Mark a kept result as just used (its mtime orders eviction)."""
    try:
        os.utime(path)
    except OSError:
        pass


def evict(root: Path, limit: int) -> int:
    """Delete the least recently used results until `root` holds at most `limit` bytes; how many went."""
    kept = []
    for path in root.glob("*.pkl"):
        try:
            info = path.stat()
        except OSError:
            continue
        kept.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in kept)
    removed = 0
    for _, size, path in sorted(kept):
        if total <= limit:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed += 1
    return removed
