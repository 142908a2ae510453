"""Stores filled from a known latency law: the ground truth for tests and benchmarks.

A law maps cells (a frame with n_layer, n_embd, params, regime, backend, ...) to the true
median decode latency per token in ms; prefill and e2e are derived from it. Samples are
that value plus normal noise with a given coefficient of variation, so every statistic
has a known target. No torch: the dashboard tests can use this too.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

Law = Callable[[pd.DataFrame], np.ndarray]

GPT2_VOCAB = 50257  # as in runner.models; duplicated so analysis never imports the runner
GPT2_CONTEXT = 1024
DEFAULT_DEPTHS = (1, 2, 4, 6, 8, 12, 16, 24)
DEFAULT_WIDTHS = (64, 128, 256, 512, 768)
PREFILL_FACTOR = 3.0  # prefill of a short prompt costs a few decode steps in these laws


def gpt2_params(n_layer: np.ndarray | int, n_embd: np.ndarray | int) -> np.ndarray:
    """GPT-2 parameter count (tied embeddings once, n_inner = 4 x n_embd)."""
    d = np.asarray(n_embd, dtype=np.int64)
    per_layer = 12 * d * d + 13 * d
    return GPT2_VOCAB * d + GPT2_CONTEXT * d + np.asarray(n_layer, dtype=np.int64) * per_layer + 2 * d


def depth_width_law(a: float = 1.0, b: float = 0.5, c: float = 0.002) -> Law:
    """latency = a + b * depth + c * width (ms): kernel launches per layer dominate."""
    return lambda cells: a + b * cells["n_layer"].to_numpy() + c * cells["n_embd"].to_numpy()


def params_law(a: float = 1.0, k: float = 0.05) -> Law:
    """latency = a + k * params in millions (ms): memory bandwidth dominates."""
    return lambda cells: a + k * cells["params"].to_numpy() / 1e6


@dataclass
class SyntheticPlan:
    """What to generate. Defaults make a small, well-identified store for tests."""

    law: Law = field(default_factory=depth_width_law)
    regimes: Sequence[str] = ("synthetic-gpu-a",)
    backends: Sequence[str] = ("hf-eager",)
    shapes: Sequence[tuple[int, int]] = tuple((d, w) for d in DEFAULT_DEPTHS for w in DEFAULT_WIDTHS)
    phases: Sequence[str] = ("prefill", "decode", "e2e")
    dtype: str = "float32"
    batch_size: int = 1
    prompt_len: int = 32
    gen_len: int = 16  # decode steps per rep, and e2e generation length
    reps: int = 5
    noise_cv: float = 0.05  # sample-to-sample noise, relative to the true value
    cell_cv: float = 0.0  # cell-to-cell noise (drift between cells), relative
    seed: int = 0
    failed_shapes: Sequence[tuple[int, int]] = ()  # stored as status 'failed' with samples
    # Repeats (reproducibility): n_runs runs per regime sharing a series id and cell keys.
    # The law sees a `repeat` column (0-based) next to run_id, so it can plant a run-only effect.
    n_runs: int = 1  # 1 keeps every earlier store byte for byte
    run_offsets: Sequence[float] = ()  # per repeat, multiplies every cell of that run; () = all 1
    run_cell_cv: float = 0.0  # per (run, cell) drift, relative: a between-run SD of ~this on log scale
    environments: Sequence[dict] = ()  # per repeat, stored as runs.environment; () = NULL


def generate(plan: SyntheticPlan) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Frames (runs, cells, samples) with the columns of store/schema.sql."""
    if plan.n_runs < 1:
        raise ValueError(f"n_runs must be at least 1, got {plan.n_runs}")
    for name in ("run_offsets", "environments"):
        if len(getattr(plan, name)) not in (0, plan.n_runs):
            raise ValueError(f"{name} needs one entry per run (n_runs = {plan.n_runs}), got {len(getattr(plan, name))}")
    rng = np.random.default_rng(plan.seed)
    # Run i is repeat i % n_runs of regime i // n_runs; with n_runs = 1, run-i is regime i as before.
    run_regimes = [r for r in plan.regimes for _ in range(plan.n_runs)]
    repeats = [k for _ in plan.regimes for k in range(plan.n_runs)]
    runs = pd.DataFrame(
        {
            "run_id": [f"run-{i}" for i in range(len(run_regimes))],
            "series_id": "synthetic",
            "status": "finished",
            "plan_name": "synthetic",
            "regime": run_regimes,
            "device_kind": "cuda",
            "shuffle_seed": [plan.seed + k for k in repeats],
            "n_cells_planned": len(plan.shapes) * len(plan.backends),
        }
    )
    if plan.environments:
        runs["environment"] = [json.dumps(plan.environments[k], sort_keys=True) for k in repeats]
    rows = []
    for run_id, regime, repeat in zip(runs["run_id"], runs["regime"], repeats):
        for backend in plan.backends:
            for depth, width in plan.shapes:
                key = f"{backend}/{depth}x{width}/{plan.dtype}/b{plan.batch_size}/p{plan.prompt_len}/g{plan.gen_len}"
                rows.append(
                    {
                        "cell_id": f"{run_id}/{key}",
                        "run_id": run_id,
                        "cell_key": key,
                        "model_name": f"{depth}x{width}",
                        "model_source": "grid",
                        "n_layer": depth,
                        "n_embd": width,
                        "n_head": max(1, width // 64),
                        "n_inner": 4 * width,
                        "vocab_size": GPT2_VOCAB,
                        "n_positions": GPT2_CONTEXT,
                        "params": int(gpt2_params(depth, width)),
                        "backend": backend,
                        "device": "cuda",
                        "dtype": plan.dtype,
                        "batch_size": plan.batch_size,
                        "prompt_len": plan.prompt_len,
                        "gen_len": plan.gen_len,
                        "status": "failed" if (depth, width) in set(plan.failed_shapes) else "ok",
                        "regime": regime,
                        "repeat": repeat,
                    }
                )
    cells = pd.DataFrame(rows)
    decode = np.asarray(plan.law(cells), dtype=np.float64)
    # cell_cv is a property of the configuration: drawn once per (regime, cell key), shared by
    # its repeats (so with n_runs = 1 the draws are exactly the earlier ones).
    first = (cells["repeat"] == 0).to_numpy()
    cell_noise = pd.Series(rng.standard_normal(int(first.sum())), index=pd.MultiIndex.from_frame(cells.loc[first, ["regime", "cell_key"]]))
    decode = decode * (1 + plan.cell_cv * cell_noise.reindex(pd.MultiIndex.from_frame(cells[["regime", "cell_key"]])).to_numpy())
    if plan.run_offsets:
        decode = decode * np.asarray(plan.run_offsets, dtype=np.float64)[cells["repeat"].to_numpy()]
    if plan.run_cell_cv:
        # A generator of its own, so the sample noise below is the same with or without drift.
        drift = np.random.default_rng([plan.seed, 1]).standard_normal(len(cells))
        decode = decode * np.exp(plan.run_cell_cv * drift)
    truth = {
        "decode": decode,
        "prefill": PREFILL_FACTOR * decode,
        "e2e": PREFILL_FACTOR * decode + plan.gen_len * decode,
    }
    per_rep = {"decode": plan.gen_len, "prefill": 1, "e2e": 1}
    parts = []
    for phase in plan.phases:
        k = plan.reps * per_rep[phase]
        centre = np.repeat(truth[phase], k)
        latency = centre * (1 + plan.noise_cv * rng.standard_normal(len(centre)))
        step = np.tile(np.arange(k) % per_rep[phase], len(cells))
        parts.append(
            pd.DataFrame(
                {
                    "cell_id": np.repeat(cells["cell_id"].to_numpy(), k),
                    "phase": phase,
                    "rep": np.tile(np.arange(k) // per_rep[phase], len(cells)).astype(np.int32),
                    "step": step.astype(np.int32),
                    "latency_ms": np.maximum(latency, 1e-6),  # the runner rejects <= 0
                    "timer": "cuda_event",
                }
            )
        )
    samples = pd.concat(parts, ignore_index=True)
    return runs, cells.drop(columns=["regime", "repeat"]), samples


def insert(con: duckdb.DuckDBPyConnection, runs: pd.DataFrame, cells: pd.DataFrame, samples: pd.DataFrame) -> None:
    """Bulk-insert generated frames into a store that already has the schema."""
    for table, frame in (("runs", runs), ("cells", cells), ("samples", samples)):
        con.register("_synthetic_frame", frame)
        try:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _synthetic_frame")
        finally:
            con.unregister("_synthetic_frame")


def build_store(plan: SyntheticPlan | None = None, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A store (in memory unless `con` is given) filled from `plan`."""
    if con is None:
        from store.db import connect_memory

        con = connect_memory()
    insert(con, *generate(plan or SyntheticPlan()))
    return con
