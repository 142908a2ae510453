"""Helpers for runner tests: tiny real GPT-2 shapes, fast measure settings, plan files and
the CLI run as a real subprocess (`python -m runner`), the way the dashboard starts it."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import runfiles
from runner.models import ModelSpec
from runner.plan import Cell, MeasureSettings, Plan, parse_plan
from tomli_w import dumps

REPO_ROOT = Path(__file__).resolve().parents[2]
# A small vocabulary and context keep the embedding (most of a tiny model) cheap on 2 cores.
TINY_SHAPE = dict(vocab_size=1024, n_positions=128)
# Enough samples to exercise every phase, few enough that a cell takes a fraction of a second.
FAST_MEASURE = dict(prefill_reps=3, decode_reps=2, e2e_reps=2, warmup_min_s=0.0,
                    warmup_min_iters=1, warmup_window=2, warmup_max_iters=10)


def tiny_spec(n_layer: int = 2, n_embd: int = 64, n_head: int = 2, **extra) -> ModelSpec:
    return ModelSpec(name=f"{n_layer}x{n_embd}", n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                     **(TINY_SHAPE | extra))


def tiny_cell(backend: str = "hf-eager", dtype: str = "float32", *, spec: ModelSpec | None = None,
              prompt_len: int = 8, gen_len: int = 4, batch_size: int = 1, **options) -> Cell:
    return Cell(model=spec or tiny_spec(), backend=backend, backend_options=options, device="cpu",
                dtype=dtype, batch_size=batch_size, prompt_len=prompt_len, gen_len=gen_len)


def fast_settings(**overrides) -> MeasureSettings:
    return MeasureSettings(**(FAST_MEASURE | overrides))


def plan_dict(**overrides) -> dict:
    """A valid CPU plan over two tiny custom shapes x two backends (4 cells)."""
    plan = {
        "name": "runner-test",
        "device": "cpu",
        "seed": 7,
        "backends": ["hf-eager", "hf-sdpa"],
        "dtypes": ["float32"],
        "batch_sizes": [1],
        "prompt_lens": [8],
        "gen_lens": [4],
        "models": {"custom": [
            {"name": "1x32", "n_layer": 1, "n_embd": 32, "n_head": 2, **TINY_SHAPE},
            {"name": "2x64", "n_layer": 2, "n_embd": 64, "n_head": 2, **TINY_SHAPE},
        ]},
        "measure": dict(FAST_MEASURE),
    }
    plan.update(overrides)
    return plan


def write_plan(path: Path, **overrides) -> Path:
    path.write_text(dumps(plan_dict(**overrides)))
    return path


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env["COLUMNS"] = env.get("COLUMNS", "200")  # rich tables unwrapped, as in a wide terminal
    return env


def run_cli(*args, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m runner ARGS` from the repository root, as the dashboard runs it."""
    return subprocess.run([sys.executable, "-m", "runner", *map(str, args)], cwd=REPO_ROOT,
                          env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *map(str, args)], cwd=REPO_ROOT,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_held_cli(held: Path, *args) -> subprocess.Popen:
    """`python -m runner ARGS` that holds after its first finished cell (touching `held`) until
    a signal: a signal test then interrupts a run that is certainly still running."""
    env = cli_env() | {"SHAPEBENCH_TEST_HELD": str(held)}
    hook = Path(__file__).with_name("hold_after_first_cell.py")
    return subprocess.Popen([sys.executable, str(hook), *map(str, args)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, interval: float = 0.02):
    """Poll until predicate() is truthy; fail early (with its stderr) if proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"runner exited {proc.returncode} before the condition held:\n{proc.stderr.read()}")
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")


def only_run_dir(runs_dir: Path) -> Path:
    dirs = [p for p in runs_dir.iterdir() if (p / "meta.json").exists()] if runs_dir.exists() else []
    return dirs[0] if len(dirs) == 1 else None


def fill_disk_after(monkeypatch, cells_ok: int) -> None:
    """json.dump into a cell's temp file raises ENOSPC after `cells_ok` cells, having written a
    few bytes first (as a real full disk does): only the write is patched, files are real."""
    real_dump = json.dump
    written = []

    def dump(data, handle, **kw):
        if "/cells/" in handle.name:
            if len(written) >= cells_ok:
                handle.write('{"cell_key": "par')
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(handle.name)
        return real_dump(data, handle, **kw)

    monkeypatch.setattr(runfiles.json, "dump", dump)


def small_plan() -> Plan:
    models = {"custom": plan_dict()["models"]["custom"][:1]}
    return parse_plan(plan_dict(models=models, gen_lens=[2]))  # 2 cells: hf-eager, hf-sdpa


def store_rows(con) -> dict[str, list[tuple]]:
    """Every row of every shapebench table, in a stable order: a store compared before and after."""
    from store.schema import TABLES

    return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


def one_cell_run(root: Path):
    """A finished real run of one custom shape under hf-eager with 2 new tokens: the smallest run
    a store can take."""
    from runner.executor import execute
    from runner.plan import parse_plan

    models = {"custom": plan_dict()["models"]["custom"][:1]}
    [run] = execute(parse_plan(plan_dict(backends=["hf-eager"], models=models, gen_lens=[2])), root)
    return run
