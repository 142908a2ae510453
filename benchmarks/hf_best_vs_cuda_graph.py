"""cuda-graph decode of a catalogue shape beside HF's own best path, as a ratio measured in one run.

HF's best path for small-batch decode is a static KV cache with the forward compiled by
torch.compile in "reduce-overhead" mode (Inductor kernels replayed from CUDA graphs), the
recipe of transformers' LLM-optimisation guide. The project's `cuda-graph` backend replays
one captured decode step of its own static model (runner/backends/static_llama.py). Both run
the same weights (one HF model, random init, fixed seed), the same prompt and 64 greedy steps;
each generation is timed with CUDA events around the whole loop (token feed, step, argmax),
the two paths interleaved generation by generation so drift hits them alike. The first
tokens of both are checked against each other.

    python benchmarks/hf_best_vs_cuda_graph.py --json OUT.json [--model SmolLM2-135M] [--dtype bfloat16]

Prints and writes: per path the median ms/token with a 95% bootstrap interval across
generations, and the ratio cuda-graph / HF best with its interval (bootstrap over paired
generations). On the CPU (no CUDA) it runs a tiny shape in default compile mode as a check
of the code, not as a measurement.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from runner.backends.cuda_graph import CudaGraph  # noqa: E402
from runner.environment import collect  # noqa: E402
from runner.models import ModelSpec, build_model, get_registered  # noqa: E402
from runner.plan import Cell  # noqa: E402

PROMPT = 128
GEN = 64


class HFStaticCompiled:
    """transformers' static cache + torch.compile(reduce-overhead) decode, one token a step."""

    def __init__(self, model, batch_size: int, mode: str) -> None:
        from transformers import StaticCache

        self.model = model
        self.cache = StaticCache(config=model.config, max_cache_len=PROMPT + GEN + 1)
        self.step = torch.compile(model.forward, mode=mode, fullgraph=True)
        self.batch_size = batch_size
        self.pos = 0

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.cache.reset()
        n = input_ids.shape[1]
        positions = torch.arange(n, device=input_ids.device)
        out = self.model(input_ids=input_ids, position_ids=positions[None], cache_position=positions,
                         past_key_values=self.cache, use_cache=True)
        self.pos = n
        return out.logits[:, -1]

    def decode(self, token: torch.Tensor) -> torch.Tensor:
        position = torch.tensor([self.pos], device=token.device)
        out = self.step(input_ids=token, position_ids=position[None], cache_position=position,
                        past_key_values=self.cache, use_cache=True)
        self.pos += 1
        return out.logits[:, -1].clone()


def generation(session, input_ids: torch.Tensor, cuda: bool) -> tuple[float, list[int]]:
    """ms/token of one greedy generation of GEN steps, and the tokens it produced (first row)."""
    token = session.prefill(input_ids).argmax(-1, keepdim=True)
    tokens = []
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for _ in range(GEN):
        token = session.decode(token).argmax(-1, keepdim=True)
        tokens.append(token)
    if cuda:
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / GEN
    else:
        ms = (time.perf_counter() - t0) * 1e3 / GEN
    return ms, [int(t[0, 0]) for t in tokens]


def bootstrap_ci(values: np.ndarray, statistic, reps: int = 5000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (reps, len(values)))
    stats = np.array([statistic(values[i]) for i in idx])
    return float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    spec = get_registered(args.model) if cuda else ModelSpec(
        name="llama-2x64-kv2", family="llama", n_layer=2, n_embd=64, n_head=4, n_kv_head=2, vocab_size=1024)
    model_name = spec.name
    dtype = getattr(torch, args.dtype)
    model = build_model(spec, attn_implementation="sdpa", dtype=dtype, device=device, seed=0)
    cell = Cell(model=spec, backend="cuda-graph", device=device, dtype=args.dtype,
                batch_size=args.batch, prompt_len=PROMPT, gen_len=GEN)
    ids = torch.randint(0, spec.vocab, (args.batch, PROMPT), generator=torch.Generator().manual_seed(0)).to(device)
    env = collect(device)
    result = {
        "benchmark": "hf_best_vs_cuda_graph", "model": model_name, "dtype": args.dtype, "batch": args.batch,
        "prompt": PROMPT, "gen": GEN, "gpu": env.get("gpu_name"),
        "host_class": (env.get("host_fingerprint") or {}).get("host_class"),
        "torch": torch.__version__, "generations": args.generations,
    }
    with torch.inference_mode():
        t0 = time.perf_counter()
        paths = {"hf-static-compile": HFStaticCompiled(model, args.batch, "reduce-overhead" if cuda else "default")}
        for _ in range(3):  # compile and record the graphs outside the timed generations
            generation(paths["hf-static-compile"], ids, cuda)
        result["hf_setup_s"] = time.perf_counter() - t0
        if cuda:
            t0 = time.perf_counter()
            paths["cuda-graph"] = CudaGraph().prepare(model, cell)
            generation(paths["cuda-graph"], ids, cuda)
            result["cuda_graph_setup_s"] = time.perf_counter() - t0
        samples: dict[str, list[float]] = {name: [] for name in paths}
        first_tokens = {}
        for _ in range(args.generations):
            for name, session in paths.items():
                ms, tokens = generation(session, ids, cuda)
                samples[name].append(ms)
                first_tokens.setdefault(name, tokens[:8])
    result["first_tokens"] = first_tokens
    for name, values in samples.items():
        arr = np.array(values)
        low, high = bootstrap_ci(arr, np.median)
        result[name] = {"median_ms": float(np.median(arr)), "ci95": [low, high], "n": len(values)}
        print(f"{name:18s} {np.median(arr):.4f} ms/token  95% CI [{low:.4f}, {high:.4f}] over {len(values)} generations")
    if "cuda-graph" in samples:
        pairs = np.array(samples["cuda-graph"]) / np.array(samples["hf-static-compile"])
        low, high = bootstrap_ci(pairs, np.median)
        result["ratio_cuda_graph_to_hf"] = {"median": float(np.median(pairs)), "ci95": [low, high]}
        print(f"cuda-graph / hf-static-compile = {np.median(pairs):.3f} [{low:.3f}, {high:.3f}] "
              f"({result['gpu']}, {args.dtype}, batch {args.batch})")
        result["same_first_tokens"] = first_tokens["cuda-graph"] == first_tokens["hf-static-compile"]
    else:
        print("no CUDA: the HF path ran on the CPU as a check of the code; nothing measured")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
