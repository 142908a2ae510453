"""Does profiling one cell slow down the cells timed after it in the same process?

Times gpt2-5m hf-eager float32 decode (launch-bound: ~280 launches per step), then
measures one cell with `profile = true` (the profiler runs after its timed phases), then
times the first cell again; prints after / before. Run once per CUPTI setting, each in a
fresh process: `keep` (TEARDOWN_CUPTI=0, kineto's old default) and `teardown` (what the
runner sets). Also profiles a cuda-graph cell twice and replays it, since CUPTI teardown
used to crash CUDA graphs before CUDA 12.6.

    python -m benchmarks.profiler_aftereffect            # both settings, one child each
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys

MODES = {"keep": "0", "teardown": "1"}


def _child(mode: str) -> None:
    from runner.plan import Cell, MeasureSettings
    from runner.models import get_registered
    from runner.protocol import measure_cell

    def cell(backend: str) -> Cell:
        return Cell(model=get_registered("gpt2-5m"), backend=backend, device="cuda", dtype="float32",
                    batch_size=1, prompt_len=128, gen_len=64)

    plain = MeasureSettings(prefill_reps=5, decode_reps=3, e2e_reps=1, check_correctness=False)
    profiled = plain.model_copy(update={"profile": True})

    def decode_ms(result) -> float:
        assert result.status == "ok", result.error
        return statistics.median(v for rep in result.decode for v in rep)

    eager = cell("hf-eager")
    first = decode_ms(measure_cell(eager, plain, 0))
    again = decode_ms(measure_cell(eager, plain, 0))  # control: no profiler in between
    graph = measure_cell(cell("cuda-graph"), profiled, 0)  # profiler runs (with a CUDA graph)
    graph_again = measure_cell(cell("cuda-graph"), profiled, 0)  # CUPTI re-initialised
    after = decode_ms(measure_cell(eager, plain, 0))
    print(f"{mode:9s} TEARDOWN_CUPTI={os.environ.get('TEARDOWN_CUPTI')}: hf-eager decode ms/token "
          f"before {first:.3f}, again {again:.3f}, after profiling {after:.3f}; "
          f"after/before {after / first:.3f} (control again/before {again / first:.3f}); "
          f"cuda-graph cells after re-init: {graph.status}/{graph_again.status}, "
          f"{decode_ms(graph):.3f} / {decode_ms(graph_again):.3f} ms/token")


def main() -> None:
    if len(sys.argv) > 1:
        os.environ["TEARDOWN_CUPTI"] = MODES[sys.argv[1]]
        _child(sys.argv[1])
        return
    for mode in MODES:
        subprocess.run([sys.executable, "-m", "benchmarks.profiler_aftereffect", mode], check=True)


if __name__ == "__main__":
    main()
