"""The hand-off probe of the calibration (runner.sync_cost) on the interpreter's tiny grids.

The interpreter runs one program after another: one block's hand-offs complete in program
order (each counter reaches the grid's size), two blocks deadlock (block 0 waits for block 1,
which has not started) and the spin limit ends the wait with the error word set. On a GPU
the probe's timing is what counts; `runner calibrate` records it.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the probe needs triton")
pytest.importorskip("numpy", reason="Triton's interpreter needs numpy")

import triton  # noqa: E402 - after the skips; conftest.py chose the interpreter before this import
import triton.language as tl  # noqa: E402

from runner.backends.fused_kernels import signal_done  # noqa: E402


@triton.jit
def count_items(counters_ptr, sizes_ptr, n_sizes):
    """Each block signals its share of phases of the given sizes, without waiting."""
    me = tl.program_id(0)
    grid = tl.num_programs(0)
    for index in range(n_sizes):
        signal_done(counters_ptr + index, tl.load(sizes_ptr + index), me, grid)


@pytest.fixture(scope="module")
def interpreter():
    if torch.cuda.is_available():
        pytest.skip("on a GPU the probe is timed by runner calibrate, not run on a tiny grid")


def test_one_block_hands_off_through_every_counter(interpreter):
    from runner.sync_cost import handoff_kernel

    counters = torch.zeros(8, dtype=torch.int32)
    error = torch.zeros(1, dtype=torch.int32)
    handoff_kernel[(1,)](counters, error, 5, 100)
    assert counters.tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert error.item() == 0


def test_blocks_that_cannot_run_together_end_with_the_error_word_set(interpreter):
    from runner.sync_cost import handoff_kernel

    counters = torch.zeros(4, dtype=torch.int32)
    error = torch.zeros(1, dtype=torch.int32)
    handoff_kernel[(2,)](counters, error, 3, 4)
    assert error.item() == 1
    # both blocks still signalled every phase before leaving
    assert counters.tolist() == [2, 2, 2, 0]


def test_empty_kernel_runs_without_a_wait_off_the_gpu(interpreter):
    from runner.sync_cost import empty_kernel

    empty_kernel[(1,)](torch.zeros(1), MODE=0)


def test_every_item_of_a_phase_is_counted_once_whatever_the_grid(interpreter):
    """The blocks' shares of a phase (items me, me + grid, ...) add up to the phase's items:
    a counter that fell short would leave its waiters spinning on a GPU."""
    sizes = torch.tensor([1, 2, 3, 7, 8, 9, 16, 33], dtype=torch.int32)
    for grid in (1, 2, 3, 8, 20):
        counters = torch.zeros(len(sizes), dtype=torch.int32)
        count_items[(grid,)](counters, sizes, len(sizes))
        assert counters.tolist() == sizes.tolist(), grid
