"""What one dependent hand-off costs on this GPU, the two floors of a decode step's phases.

A `fused` decode step is a chain of dependent phases (4 a layer + the head), each reading
few bytes. Its floor is the number of phases times the cost of handing off from one phase
to the next, plus the weight bytes over bandwidth. Two hand-offs are measured here:

- `graph_kernel_us`: one more empty kernel inside a CUDA graph (the phases as launches),
  with programmatic dependent launch where the GPU has it (sm90 and newer).
- `counter_handoff_us`: one completion-counter hand-off among one block per SM inside a
  persistent kernel (the phases as loops of one launch): every block adds one to a counter
  (release) and waits until all have (acquire), the protocol the persistent step uses.

Each is a slope: the time of a long chain minus a short one over the difference in length,
so the graph's or the kernel's own launch drops out.
"""
from __future__ import annotations

import statistics

import triton
import triton.language as tl

from runner.backends.fused_kernels import PDL, SPIN_LIMIT, gdc_launch_dependents, gdc_wait, signal_done, wait_counter

# chain lengths of the slopes: long enough that the difference is tens of microseconds
SHORT, LONG = 64, 512
REPS = 21  # medians of this many replays; each is well under a millisecond


@triton.jit
def empty_kernel(ptr, MODE: tl.constexpr):
    """Nothing but the hand-off: with PDL it waits for its predecessor and releases its successor."""
    if MODE == PDL:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def handoff_kernel(counters_ptr, error_ptr, phases, spin_limit):
    """`phases` all-to-all hand-offs among the grid's blocks through completion counters."""
    me = tl.program_id(0)
    grid = tl.num_programs(0)
    spins = spin_limit
    for phase in range(phases):
        signal_done(counters_ptr + phase, grid, me, grid)
        spins = wait_counter(counters_ptr + phase, grid, error_ptr, spins)


def _median_ms(run, reps: int = REPS) -> float:
    import torch

    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graph_kernel_us(pdl: bool = False) -> float:
    """Microseconds one more empty kernel adds to a CUDA graph replay (with PDL if asked)."""
    import torch

    dummy = torch.zeros(1, device="cuda")
    extra = {"launch_pdl": True} if pdl else {}

    def capture(count: int):
        for _ in range(2):  # compile and load outside the capture
            empty_kernel[(1,)](dummy, MODE=PDL if pdl else 0, **extra)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(count):
                empty_kernel[(1,)](dummy, MODE=PDL if pdl else 0, **extra)
        graph.replay()
        torch.cuda.synchronize()
        return graph

    short, long = capture(SHORT), capture(LONG)
    return (_median_ms(long.replay) - _median_ms(short.replay)) * 1e3 / (LONG - SHORT)


def counter_handoff_us(blocks: int | None = None) -> float:
    """Microseconds of one completion-counter hand-off among `blocks` blocks (default one per SM)."""
    import torch

    blocks = blocks or torch.cuda.get_device_properties(0).multi_processor_count
    counters = torch.zeros(LONG, dtype=torch.int32, device="cuda")
    error = torch.zeros(1, dtype=torch.int32, device="cuda")

    def timed(phases: int) -> float:
        counters.zero_()
        handoff_kernel[(blocks,)](counters, error, phases, SPIN_LIMIT, num_warps=4)  # compile, load, warm
        torch.cuda.synchronize()
        times = []
        for _ in range(REPS):
            counters.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            handoff_kernel[(blocks,)](counters, error, phases, SPIN_LIMIT, num_warps=4)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    slope = (timed(LONG) - timed(SHORT)) * 1e3 / (LONG - SHORT)
    if error.item():
        raise RuntimeError(f"the hand-off probe's {blocks} blocks could not all run at once")
    return slope


def sync_costs() -> dict:
    """The hand-off costs for a calibration record; a probe that cannot run here is left out."""
    import torch

    from runner.backends.fused_kernels import pdl_unsupported_reason

    result = {"graph_kernel_us": graph_kernel_us(pdl=False), "counter_handoff_us": counter_handoff_us()}
    if pdl_unsupported_reason(torch.cuda.get_device_capability()) is None:
        result["graph_kernel_pdl_us"] = graph_kernel_us(pdl=True)
    return result
