"""The project's one vocabulary: allowed values, default paths and the environment settings.

Every room imports these instead of restating them (STYLE 15), and this module imports
neither torch nor duckdb, so the GPU runner, the store and the hosted dashboard share it.
"""
from __future__ import annotations

import os
import tomllib
from importlib import metadata
import re
from pathlib import Path
from typing import Any

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
# Integrity flag of a cell measured while the machine was busy (runner.machine_load says
# when a machine counts as busy, and what to do about it).
BUSY_MACHINE_FLAG = "busy_machine"
# Every integrity flag a cell can carry (runner.runfiles.integrity_flags); round_shift_<phase>
# is one flag per phase.
INTEGRITY_FLAGS = ("high_cv", "round_shift_prefill", "round_shift_decode", "round_shift_e2e", "setup_leak",
                   "too_few_samples", "clock_drop", "foreign_gpu_process", "output_mismatch", BUSY_MACHINE_FLAG)
# Why an adaptive cell (`[measure] precision`, runner.rounds) stopped taking rounds: its decode
# median reached the precision asked, it used max_rounds, or the run's budget_s ran out (the run
# then ends interrupted with stop_reason "budget", and a resume gives such a cell more rounds).
STOP_PRECISION, STOP_MAX_ROUNDS, STOP_BUDGET = "precision", "max_rounds", "budget"
STOP_REASONS = (STOP_PRECISION, STOP_MAX_ROUNDS, STOP_BUDGET)
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


# Text from data that acts on a terminal or hides itself instead of showing: C0 and C1 controls
# (escape sequences: clear screen, OSC-8 links, hidden text; carriage return overwrites a line),
# DEL, and Unicode direction marks, overrides and isolates (text shown in another order).
# Names and ids with any of these are refused where they enter (a plan, an ingest, an import).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same class without tab, line feed and carriage return: what free text (an error message,
# a traceback) may not hold.
CONTROL_CHARACTERS_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same two classes as RE2 patterns, for DuckDB's regexp functions.
CONTROL_CHARACTERS_SQL = "[\\x00-\\x1f\\x7f-\\x{9f}\\x{200e}\\x{200f}\\x{202a}-\\x{202e}\\x{2066}-\\x{2069}]"
CONTROL_CHARACTERS_IN_TEXT_SQL = ("[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x{9f}\\x{200e}\\x{200f}"
                                  "\\x{202a}-\\x{202e}\\x{2066}-\\x{2069}]")


def printable(text: object) -> str:
    """`text` safe to print on a terminal: every control character but tab and line feed shown
    as its escape (ESC as \\x1b), so data can neither drive the terminal nor hide itself."""
    return re.sub("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]",
                  lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) opens a
# link, =WEBSERVICE(...) sends data away); tab and carriage return start one in some of them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: Any) -> Any:
    """A copy of a DataFrame whose text cells cannot run as spreadsheet formulas: one that
    starts with = + - @ (or tab, CR) gets a leading apostrophe, which spreadsheets show as
    text. Numbers (a negative latency delta) are left alone: only text columns change."""
    def neutral(value: Any) -> Any:
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    text = [c for c in frame.columns if frame[c].dtype == object or str(frame[c].dtype) in ("string", "str")]
    return frame.assign(**{c: frame[c].map(neutral) for c in text}) if text else frame
