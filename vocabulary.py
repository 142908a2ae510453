"""The project's one vocabulary: allowed values, default paths and the environment settings.

Every room imports these instead of restating them (STYLE 15), and this module imports
neither torch nor duckdb, so the GPU runner, the store and the hosted dashboard share it.
"""
from __future__ import annotations

import os
import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "shapebench"  # the package name in pyproject.toml
PYPROJECT = Path(__file__).resolve().parent / "pyproject.toml"  # present in a checkout, absent in a wheel install

DTYPES = ("float32", "bfloat16", "float16")
# Model architectures (runner.models): gpt2 is the reference; llama and qwen2 have grouped-query
# attention. Every cell stored before families were recorded is gpt2.
FAMILIES = ("gpt2", "llama", "qwen2")
PHASES = ("prefill", "decode", "e2e")
DEVICES = ("cuda", "cpu")
CELL_STATUSES = ("ok", "failed", "unsupported")
RUN_STATUSES = ("running", "finished", "interrupted", "failed")
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


def tool_version() -> str:
    """shapebench's version, written once, in pyproject.toml.

    A checkout (editable install included) reads pyproject.toml beside this module, so a
    version bump shows before any reinstall (an editable install's metadata keeps the version
    it was installed with); a wheel install has no pyproject.toml and reads its package
    metadata; 'unknown' when neither is there.
    """
    try:
        with PYPROJECT.open("rb") as file:
            project = tomllib.load(file).get("project", {})
        if project.get("name") == DISTRIBUTION and project.get("version"):
            return str(project["version"])
    except (OSError, tomllib.TOMLDecodeError):
        pass
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"
