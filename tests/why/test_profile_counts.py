"""The profile phase on the CPU: operator counts grow linearly with depth, timings untouched."""
from __future__ import annotations

import numpy as np

from runner.models import ModelSpec
from runner.plan import Cell, MeasureSettings
from runner.protocol import measure_cell

SETTINGS = MeasureSettings(prefill_reps=2, decode_reps=1, e2e_reps=1, warmup_min_iters=1, warmup_min_s=0,
                           warmup_window=2, warmup_max_iters=4, check_correctness=False, profile=True)


def _decode_operators(depth: int, backend: str = "hf-eager") -> int:
    spec = ModelSpec(name=f"{depth}x32", n_layer=depth, n_embd=32, n_head=2, vocab_size=512, n_positions=64)
    cell = Cell(model=spec, backend=backend, device="cpu", dtype="float32", batch_size=1, prompt_len=8, gen_len=4)
    result = measure_cell(cell, SETTINGS, seed=0)
    assert result.status == "ok", result.error
    assert len(result.decode[0]) == 4  # the profile ran after the timed phases, which are complete
    return result.profile["decode"]["operators"]


def test_operator_counts_grow_linearly_with_depth():
    depths = np.array([1, 2, 4, 8])
    counts = np.array([_decode_operators(int(d)) for d in depths])
    slope, intercept = np.polyfit(depths, counts, 1)
    assert slope > 5  # every block dispatches its own operators
    assert np.allclose(counts, slope * depths + intercept, rtol=0.02)  # and the same number each


def test_sdpa_dispatches_fewer_operators_per_layer_than_eager_attention():
    eager = _decode_operators(4, "hf-eager") - _decode_operators(2, "hf-eager")
    sdpa = _decode_operators(4, "hf-sdpa") - _decode_operators(2, "hf-sdpa")
    assert 0 < sdpa < eager
