"""Stores filled from a known latency law: the ground truth for tests and benchmarks.

A law maps cells (a frame with n_layer, n_embd, params, regime, backend, ...) to the true
median decode latency per token in ms; prefill and e2e are derived from it. Samples are
that value plus normal noise with a given coefficient of variation, so every statistic
has a known target. With `rounds > 1` a store is protocol 2 (samples carry their round)
and rounds and generations get offsets of their own.

`simulate_experiments` is the generator for coverage: many independent experiments at
once, with known run, run-by-cell, round, generation and sample components (autocorrelated
steps within a generation, as measured on GPU eager cells), as arrays, so that the
coverage of an interval over 1,000 experiments costs a second (`ci_coverage`), and
`experiment_frames` turns a few of them into a store, to check that the store's pipeline
computes the same intervals. No torch: the dashboard tests can use this too.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from analysis.bootstrap import median_draws, percentile_ci
from analysis.intervals import CI_ACROSS_ROUNDS, CI_ACROSS_RUNS, unit_t_draws

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
    # Protocol 2: rep r is measured in round r % rounds (interleaved); 1 keeps protocol 1 (round NULL).
    rounds: int = 1
    round_cv: float = 0.0  # per (run, cell, round) offset, log scale: the process state of a round
    generation_cv: float = 0.0  # per (run, cell, rep) offset, log scale: one generation against another


def generate(plan: SyntheticPlan) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Frames (runs, cells, samples) with the columns of store/schema.sql."""
    if plan.n_runs < 1:
        raise ValueError(f"n_runs must be at least 1, got {plan.n_runs}")
    if not 1 <= plan.rounds <= plan.reps:
        raise ValueError(f"rounds must be between 1 and reps ({plan.reps}), got {plan.rounds}")
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
    if plan.rounds > 1:
        runs["protocol_version"] = 2
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
                        "family": "gpt2",
                        "n_kv_head": max(1, width // 64),
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
    # Round and generation offsets from a generator of their own: stores without them are unchanged.
    level_rng = np.random.default_rng([plan.seed, 2])
    parts = []
    for phase in plan.phases:
        k = plan.reps * per_rep[phase]
        centre = np.repeat(truth[phase], k)
        latency = centre * (1 + plan.noise_cv * rng.standard_normal(len(centre)))
        step = np.tile(np.arange(k) % per_rep[phase], len(cells))
        rep = np.tile(np.arange(k) // per_rep[phase], len(cells))
        if plan.round_cv or plan.generation_cv:
            cell = np.repeat(np.arange(len(cells)), k)
            round_offset = level_rng.standard_normal((len(cells), plan.rounds))[cell, rep % plan.rounds]
            generation_offset = level_rng.standard_normal((len(cells), plan.reps))[cell, rep]
            latency = latency * np.exp(plan.round_cv * round_offset + plan.generation_cv * generation_offset)
        part = pd.DataFrame(
            {
                "cell_id": np.repeat(cells["cell_id"].to_numpy(), k),
                "phase": phase,
                "rep": rep.astype(np.int32),
                "step": step.astype(np.int32),
                "latency_ms": np.maximum(latency, 1e-6),  # the runner rejects <= 0
                "timer": "cuda_event",
            }
        )
        if plan.rounds > 1:
            part["round"] = (rep % plan.rounds).astype(np.int32)
        parts.append(part)
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


@dataclass(frozen=True)
class VarianceComponents:
    """Log-scale SDs (about relative SDs) of each level of a measurement, for `simulate_experiments`.

    Defaults are of the order seen on the bundled GPU eager cells: runs differ by 10-20%,
    rounds of one process by a few %, generations by a few %, steps by ~5% with lag-1
    autocorrelation 0.45 within a generation.
    """

    run: float = 0.10  # a run's offset, shared by all its cells (process, host, clocks)
    run_cell: float = 0.10  # a run's offset of one cell alone (allocator, code layout)
    round: float = 0.03  # one round of one cell (interleaved rounds share the process)
    generation: float = 0.03  # one generation against the others of its round
    sample: float = 0.05  # step to step
    autocorrelation: float = 0.45  # lag-1, between the steps of one generation


@dataclass(frozen=True)
class Experiments:
    """`log_samples[e, run, cell, round, generation, step]` and the truths each interval aims at.

    `truth[cell]` is the true log median latency (the value a new run is centred on);
    `run_truth[e, run, cell]` adds that run's offsets (the value one run's rounds are
    centred on: what an interval across rounds of one run covers).
    """

    log_samples: np.ndarray
    truth: np.ndarray
    run_truth: np.ndarray


def simulate_experiments(
    truth_ms: Sequence[float] = (4.0, 2.5),
    components: VarianceComponents = VarianceComponents(),
    *,
    n_experiments: int = 1000,
    n_runs: int = 3,
    n_rounds: int = 3,
    n_generations: int = 4,
    n_steps: int = 16,
    seed: int = 0,
) -> Experiments:
    """Independent repetitions of one measurement of some cells (vectorised: no loop per experiment).

    Every level is normal on the log scale, so the median of a run's samples is centred on
    its run truth and a run truth on the truth: each interval has an exact target.
    """
    rng = np.random.default_rng(seed)
    c = components
    e, r, k, g, t = n_experiments, n_runs, n_rounds, n_generations, n_steps
    cells = len(truth_ms)
    truth = np.log(np.asarray(truth_ms, dtype=np.float64))
    run_truth = (truth + c.run * rng.standard_normal((e, r, 1)) + c.run_cell * rng.standard_normal((e, r, cells)))
    level = (run_truth[:, :, :, None, None]
             + c.round * rng.standard_normal((e, r, cells, k, 1))
             + c.generation * rng.standard_normal((e, r, cells, k, g)))
    noise = np.empty((e, r, cells, k, g, t))
    noise[..., 0] = rng.standard_normal((e, r, cells, k, g))
    innovation = np.sqrt(1 - c.autocorrelation**2)
    for step in range(1, t):
        noise[..., step] = c.autocorrelation * noise[..., step - 1] + innovation * rng.standard_normal((e, r, cells, k, g))
    return Experiments(log_samples=level[..., None] + c.sample * noise, truth=truth, run_truth=run_truth)


def unit_log_medians(experiments: Experiments) -> tuple[str, np.ndarray]:
    """The units an interval rests on, as the store's pipeline computes them: (kind, values[e, cell, unit]).

    One run: the log median of each round (`analysis.stats`); several runs: the log median
    of each run's samples (`analysis.reproducibility.pooled_stats`). Medians of latencies,
    not of logs, so an even count averages the same two values as DuckDB's median.
    """
    samples = np.exp(experiments.log_samples)
    e, r, cells, k, g, t = samples.shape
    if r == 1:
        return CI_ACROSS_ROUNDS, np.log(np.median(samples[:, 0].reshape(e, cells, k, g * t), axis=-1))
    return CI_ACROSS_RUNS, np.log(np.median(samples.reshape(e, r, cells, k * g * t), axis=-1)).transpose(0, 2, 1)


def ci_coverage(
    experiments: Experiments,
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
    compare: bool = False,
) -> dict[str, float | str]:
    """How often the intervals of the first cell's median and of cell 0 / cell 1 cover their truth.

    The intervals are the analysis's own (`analysis.intervals.unit_t_draws`, percentile of
    the replicates, paired by unit for the ratio). The target: with one run, that run's
    value (an interval across rounds says nothing about other runs); with several, the
    value a new run is centred on. With `compare`, also: a percentile bootstrap of the same
    units (`median_boot`, `ratio_boot`: what a two-stage bootstrap reduces to at the top
    level), and with one run the i.i.d. bootstrap of the samples (`median_iid`), the
    interval this project reported before, and how often the across-rounds interval covers
    the population value (`median_population`): what reading it as a CI across runs would claim.
    """
    kind, units = unit_log_medians(experiments)
    truth = experiments.run_truth[:, 0] if kind == CI_ACROSS_ROUNDS else np.broadcast_to(experiments.truth, units.shape[:2])
    true_ratio = truth[:, 0] - truth[:, 1]
    rng = np.random.default_rng(seed)
    draws = unit_t_draws(units[:, :2], n_resamples, rng)  # experiments x 2 cells x resamples
    low, high = percentile_ci(np.stack([draws[:, 0], draws[:, 0] - draws[:, 1]], axis=1), confidence)

    def covered(lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean((lo <= target) & (target <= hi)))

    out: dict[str, float | str] = {"kind": kind, "median": covered(low[:, 0], high[:, 0], truth[:, 0]),
                                   "ratio": covered(low[:, 1], high[:, 1], true_ratio)}
    if compare:
        n_exp, _, k = units.shape
        pick = rng.integers(0, k, size=(n_exp, 1, n_resamples, k))
        boot = np.take_along_axis(units[:, :2, None, :], pick, axis=3).mean(axis=3)  # paired: same units for both cells
        b_low, b_high = percentile_ci(np.stack([boot[:, 0], boot[:, 0] - boot[:, 1]], axis=1), confidence)
        out["median_boot"] = covered(b_low[:, 0], b_high[:, 0], truth[:, 0])
        out["ratio_boot"] = covered(b_low[:, 1], b_high[:, 1], true_ratio)
        if kind == CI_ACROSS_ROUNDS:
            values = np.sort(np.exp(experiments.log_samples[:, 0, 0]).reshape(n_exp, -1), axis=1)
            iid = np.log(median_draws(values.ravel(), np.full(n_exp, values.shape[1]), n_resamples, seed))
            i_low, i_high = percentile_ci(iid, confidence)
            out["median_iid"] = covered(i_low, i_high, truth[:, 0])
            out["median_population"] = covered(low[:, 0], high[:, 0], np.full(n_exp, experiments.truth[0]))
    return out


def experiment_frames(experiments: Experiments, n_experiments: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Store frames (runs, cells, samples) of the first experiments: one regime per experiment,
    one cell per shape (cell i is 1 x 64 * (i + 1)... wider is larger), protocol 2 rounds."""
    log_samples = experiments.log_samples[:n_experiments]
    e, r, n_cells, k, g, t = log_samples.shape
    runs, cells, parts = [], [], []
    for i in range(e):
        for run in range(r):
            run_id = f"exp-{i:04d}-run-{run}"
            runs.append({"run_id": run_id, "series_id": f"exp-{i:04d}", "status": "finished", "plan_name": "coverage",
                         "regime": f"exp-{i:04d}", "device_kind": "cuda", "shuffle_seed": run, "n_cells_planned": n_cells,
                         "protocol_version": 2})
            for c in range(n_cells):
                width = 64 * (c + 1)
                key = f"hf-eager/1x{width}/float32/b1/p32/g{t}"
                cell_id = f"{run_id}/{key}"
                cells.append({"cell_id": cell_id, "run_id": run_id, "cell_key": key, "model_name": f"1x{width}",
                              "model_source": "grid", "n_layer": 1, "n_embd": width, "n_head": 1, "n_kv_head": 1, "family": "gpt2", "n_inner": 4 * width,
                              "vocab_size": GPT2_VOCAB, "n_positions": GPT2_CONTEXT, "params": int(gpt2_params(1, width)),
                              "backend": "hf-eager", "device": "cuda", "dtype": "float32", "batch_size": 1,
                              "prompt_len": 32, "gen_len": t, "status": "ok"})
                rounds = np.repeat(np.arange(k), g * t)
                parts.append(pd.DataFrame({
                    "cell_id": cell_id, "phase": "decode",
                    "rep": (rounds * g + np.tile(np.repeat(np.arange(g), t), k)).astype(np.int32),
                    "step": np.tile(np.arange(t), k * g).astype(np.int32),
                    "latency_ms": np.exp(log_samples[i, run, c]).ravel(), "timer": "cuda_event",
                    "round": rounds.astype(np.int32),
                }))
    return pd.DataFrame(runs), pd.DataFrame(cells), pd.concat(parts, ignore_index=True)
