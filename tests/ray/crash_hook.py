"""A Ray worker setup hook for the tests (STYLE 16: test hooks live in tests): a task whose
group holds the model CRASH_MODEL kills its worker before measuring, as a segfault or an
OOM kill would, so the driver meets a real WorkerCrashedError."""
from __future__ import annotations

import functools
import os

CRASH_MODEL = "crash-me"


def install() -> None:
    """Wrap the task body in this worker process (Ray resolves the task function by name)."""
    from runner import ray_exec

    measure_group = ray_exec.measure_group

    @functools.wraps(measure_group)
    def crashing(entries, *args, **kwargs):
        if entries and entries[0]["cell"]["model"]["name"] == CRASH_MODEL:
            os._exit(1)
        return measure_group(entries, *args, **kwargs)

    ray_exec.measure_group = crashing
