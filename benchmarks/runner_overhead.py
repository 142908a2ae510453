"""Runner overhead: the runner's median for a callable / a bare event-timed loop of it.

Target (issue 3): at most 1.03. The two loops alternate several times so that clock drift
hits both equally; the ratio of the medians of all their samples is printed.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from runner.models import build_model, get_registered
from runner.timing import time_callable


def bare_loop(fn, n: int, device: str) -> list[float]:
    if device == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    import time

    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="gpt2-25m")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = build_model(get_registered(args.model), device=args.device)
    ids = torch.randint(0, 50257, (1, 1), device=args.device)

    def step():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)

    runner_samples, bare_samples = [], []
    with torch.inference_mode():
        bare_loop(step, 50, args.device)  # warm-up
        for _ in range(args.rounds):
            runner_samples += time_callable(step, args.n, args.device)
            bare_samples += bare_loop(step, args.n, args.device)
    runner_median = statistics.median(runner_samples)
    bare_median = statistics.median(bare_samples)
    print(f"runner_overhead device={args.device} model={args.model} n={len(runner_samples)}")
    print(f"  runner median {runner_median:.4f} ms, bare loop median {bare_median:.4f} ms")
    print(f"  ratio runner/bare = {runner_median / bare_median:.4f} (target <= 1.03)")


if __name__ == "__main__":
    main()
