"""The project's one vocabulary: allowed values, default paths and the environment settings.

Every room imports these instead of restating them (STYLE 15), and this module imports
neither torch nor duckdb, so the GPU runner, the store and the hosted dashboard share it.
"""
from __future__ import annotations

import os
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")
PHASES = ("prefill", "decode", "e2e")
DEVICES = ("cuda", "cpu")
CELL_STATUSES = ("ok", "failed", "unsupported")
RUN_STATUSES = ("running", "finished", "interrupted", "failed")
# Integrity flag of a cell measured while the machine was busy (runner.machine_load says
# when a machine counts as busy, and what to do about it).
BUSY_MACHINE_FLAG = "busy_machine"
# Every integrity flag a cell can carry (runner.runfiles.integrity_flags); round_shift_<phase>
# is one flag per phase.
INTEGRITY_FLAGS = ("high_cv", "round_shift_prefill", "round_shift_decode", "round_shift_e2e", "setup_leak",
                   "too_few_samples", "clock_drop", "foreign_gpu_process", "output_mismatch", BUSY_MACHINE_FLAG)
# 1: one pass per cell, unpinned; 2: host control, interleaved rounds (DESIGN.md). The runner
# writes it into every run; headlines show runs of this protocol unless asked for all.
PROTOCOL_VERSION = 2

# Environment settings: the variable names, read only through the functions below.
DB_ENV = "SHAPEBENCH_DB"
RUNS_ENV = "SHAPEBENCH_RUNS"
SNAPSHOT_ENV = "SHAPEBENCH_SNAPSHOT"
GIT_REVISION_ENV = "SHAPEBENCH_GIT_REVISION"
DEFAULT_DB = Path("shapebench.duckdb")
DEFAULT_RUNS = Path("runs")


def store_path() -> Path:
    """The store file every command and the dashboard use unless told otherwise."""
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB)


def runs_path() -> Path:
    """The runs folder the CLI writes to and the dashboard watches."""
    return Path(os.environ.get(RUNS_ENV) or DEFAULT_RUNS)


def snapshot_setting() -> str | None:
    """A snapshot to open instead of the store (hosted mode, demos), if one is set."""
    return os.environ.get(SNAPSHOT_ENV) or None
