"""One measuring run per machine: two runs at once each corrupt the other's timings.

`python -m runner run` holds an exclusive flock on one file while it measures, however it
was started (a terminal, the dashboard, a script). The kernel drops the lock when the
process ends, kill -9 included, so a lock is never stale. The file also says who holds it,
for the refusal message. Its place follows the dashboard's lock (SHAPEBENCH_RUN_LOCK), so a
test or a second checkout that moves one moves both.

Both files live in a directory only this user can enter (`private_dir`: the user's runtime
directory, else ~/.cache/shapebench), never in the shared /tmp where anyone can plant a
file or a symbolic link under the expected name; and they are opened without following a
link and only if they are regular files this user owns (`open_lock_file`).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

LOCK_ENV = "SHAPEBENCH_RUN_LOCK"


class RunLocked(RuntimeError):
    """Another run holds this machine; the message is one line naming it."""


def private_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The user's own directory for the run locks, created 0700 and checked (not a link, ours)."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    path = Path(runtime) / "shapebench" if runtime else Path.home() / ".cache" / "shapebench"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise RunLocked(f"{path} is not a directory of this user; refusing to keep the run lock there")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def record_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The dashboard's record of the run it started (SHAPEBENCH_RUN_LOCK, else in private_dir)."""
    override = environ.get(LOCK_ENV)
    return Path(override) if override else private_dir(environ) / "run.lock"


def lock_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The measuring lock: beside the dashboard's lock file, under the same setting."""
    base = record_path(environ)
    return base.with_name(base.name + ".measure")


def open_lock_file(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """A descriptor of `path`, never through a symbolic link, and only for a regular file this
    user owns (mode 0600 when created); RunLocked with one line otherwise."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunLocked(f"the run lock {path} is a symbolic link; refused (remove it)") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise RunLocked(f"the run lock {path} is not a regular file of this user; refused (remove it)")
    return fd


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info['pid']} ({str(info.get('what', 'a run'))[:120]}, since {since})"


def holder(path: Path | None = None) -> str | None:
    """Who measures on this machine now ("pid N (plan X, since HH:MM:SS)"), or None when nobody does.

    For a page or a script that wants to say so before starting anything. A free lock is
    recognised without touching it: a run empties the file when it ends, so only a file that
    names a process is probed, with a shared flock held for the instant of the call (a run
    holds an exclusive one). That probe is thus never in the way of a run starting on an
    idle machine; a file left naming a killed process is probed and found free.
    """
    path = path or lock_path()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no run has ever held it here
    try:
        if not os.pread(fd, 1, 0):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def machine_lock(what: str, path: Path | None = None) -> Iterator[Path]:
    """Hold the machine for one run; raise RunLocked at once if another run holds it."""
    path = path or lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"another run is measuring on this machine: {_holder(fd)}; two runs at once corrupt "
                "each other's timings, so wait for it to end (or stop it) and start again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
