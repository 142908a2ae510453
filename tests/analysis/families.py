"""Stores of several model families made of synthetic runs that go through the store's real
ingest path (store.ingest.ingest_read on a run's meta and cell records, value checks
included), with latencies from a known law: what family-aware analysis is tested on."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from store.ingest import RunFiles, ingest_read
from tests.store.conftest import H100

ROUNDS = 3  # protocol 2: a cell in interleaved rounds has a CI across them
DECODE_REPS = 2  # decode generations a round
STEPS = 4  # decode steps a generation


@dataclass(frozen=True)
class Shape:
    """One model shape of a family, as a plan names it; params given, not counted (synthetic)."""

    family: str
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    params: float

    @property
    def name(self) -> str:
        return f"{self.family}-{self.n_layer}x{self.n_embd}-kv{self.n_kv_head}"


def power_law(shape: Shape) -> float:
    """ms per decode step: a power law in params and depth, equal for every family."""
    return 0.05 * (shape.params / 1e6) ** 0.3 * shape.n_layer ** 0.6


def run_files(run_id: str, shapes: Sequence[Shape], law: Callable[[Shape], float] = power_law, *, seed: int = 0,
              regime: str = H100, backend: str = "hf-eager", run_factor: float = 1.0, noise: float = 0.01) -> RunFiles:
    """A finished protocol-2 run on `regime` measuring each shape under `backend` (bfloat16,
    batch 1, prompt 128): its meta and cell records as the runner writes them."""
    rng = np.random.default_rng(seed)
    records = []
    for index, shape in enumerate(shapes):
        base = law(shape) * run_factor

        def sample() -> float:
            return float(base * rng.uniform(1 - noise, 1 + noise))

        rounds = [r for r in range(ROUNDS) for _ in range(DECODE_REPS)]
        records.append({
            "cell_key": f"{shape.name}-{backend}", "order_index": index, "status": "ok", "error": None,
            "cell": {"model": {"name": shape.name, "family": shape.family, "n_layer": shape.n_layer,
                               "n_embd": shape.n_embd, "n_head": shape.n_head, "n_kv_head": shape.n_kv_head,
                               "n_inner": None, "vocab_size": 32000, "n_positions": 2048, "tie_embeddings": True,
                               "source": "grid"},
                     "backend": backend, "backend_options": {}, "device": "cuda", "dtype": "bfloat16",
                     "batch_size": 1, "prompt_len": 128, "gen_len": STEPS},
            "params": int(shape.params), "timer": "cuda_event", "flags": [],
            "started_at": "2026-12-01T10:00:00+00:00", "finished_at": "2026-12-01T10:00:05+00:00",
            "prefill": [3 * sample() for _ in rounds], "prefill_round": rounds,
            "decode": [[sample() for _ in range(STEPS)] for _ in rounds], "decode_round": rounds,
            "e2e": [(3 + STEPS) * sample() for _ in rounds], "e2e_round": rounds,
            "worker": [1000 + r for r in range(ROUNDS)],
        })
    meta = {"run_id": run_id, "series_id": "families", "plan_name": "families", "plan": {"name": "families"},
            "started_at": "2026-12-01T10:00:00+00:00", "finished_at": "2026-12-01T10:10:00+00:00", "status": "finished",
            "environment": {"host": "bench-01"}, "regime": regime, "device_kind": "cuda", "tool_version": "0.1.0",
            "git_revision": "f551424", "shuffle_seed": seed, "n_cells_planned": len(shapes), "protocol_version": 2}
    return RunFiles(Path(run_id), meta, records)


def ingest(con, *runs: RunFiles) -> None:
    """Store each run through the real ingest path (store.ingest.ingest_read)."""
    for run in runs:
        report = ingest_read(con, run)
        assert report.cells_added == len(run.records)
