"""cuda-graph decode ms/token through the runner / one bare replay of a captured step.

Target (issue 3): at most 1.2. The runner's figure is a whole greedy step as the protocol
times it (token copy, position update, replay, argmax); the bare figure is the replay of a
captured single-token forward of the same model, timed with events and nothing else.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from runner.backends.static_gpt2 import StaticGPT2
from runner.models import build_model, get_registered
from runner.plan import Cell, MeasureSettings
from runner.protocol import measure_cell


def bare_replay_ms(model_name: str, prompt_len: int, gen_len: int, n: int) -> list[float]:
    model = build_model(get_registered(model_name), device="cuda")
    static = StaticGPT2(model, 1, prompt_len + gen_len + 1)
    tokens = torch.randint(0, 50257, (1, 1), device="cuda")
    pos = torch.tensor([prompt_len], device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            static(tokens, pos)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static(tokens, pos)
    for _ in range(50):
        graph.replay()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        starts[i].record()
        graph.replay()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gpt2-25m")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    cell = Cell(model=get_registered(args.model), backend="cuda-graph", device="cuda", dtype=args.dtype,
                batch_size=1, prompt_len=128, gen_len=64)
    settings = MeasureSettings(check_correctness=False)
    with torch.inference_mode():
        result = measure_cell(cell, settings, seed=0)
        assert result.status == "ok", result.error
        runner_ms = statistics.median([v for rep in result.decode for v in rep])
        bare_ms = statistics.median(bare_replay_ms(args.model, 128, 64, 500))
    print(f"cuda_graph_decode model={args.model} dtype={args.dtype}")
    print(f"  runner decode {runner_ms:.4f} ms/token, bare replay {bare_ms:.4f} ms")
    print(f"  ratio runner/bare = {runner_ms / bare_ms:.4f} (target <= 1.2)")


if __name__ == "__main__":
    main()
