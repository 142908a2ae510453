"""fused vs cuda-graph vs torch-compile decode against the weight-read limit, in one GPU run.

Per reference shape and dtype (batch 1, prompt 128, 64 greedy steps): ms/token of each
backend's decode step (a whole greedy step: token copy, position update, the step, argmax),
the kernels one step runs (torch.profiler, after the timing), the weight-read limit (unique
weight bytes / the device-to-device copy bandwidth measured here, bytes read + written, the
figure the issue uses) and each backend's ratio to it. The fused cells also go through the
project's protocol with the correctness gate against hf-eager (runner.protocol.measure_cell).
torch-compile's Inductor compile is the slow part (tens of seconds a shape), so it runs last,
in the issue's order of interest, while the time budget lasts.

    python3 benchmarks/bench_fused.py --out DIR --budget-s 300

On the lent H200 (no pydantic in its image: carry the wheels of .whl, see the device notes):
    run(carry=[".whl"], timeout_s=420, command="python3 -m pip install -q --no-index --no-deps
        --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1;
        export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1;
        timeout 100 python3 -m pytest tests/backends/test_fused.py -q -p no:cacheprovider | tee $OUT/pytest.log;
        timeout 285 python3 benchmarks/bench_fused.py --out $OUT --budget-s 190 | tee $OUT/bench.log")
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.bench_fused_floor import copy_bandwidth, generation_ms  # one copy limit and one timed generation for both
from runner.backends.compiled import CompiledSession
from runner.backends.cuda_graph import CudaGraphSession
from runner.backends.fused import FusedSession
from runner.backends.static_gpt2 import StaticGPT2
from runner.models import REGISTRY, build_model, count_params

PROMPT, GEN, REPS = 128, 64, 7  # the seed cell: batch 1, prompt 128; median of 7 generations (as bench_fused_floor)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SHAPES = ["gpt2-5m", "gpt2-25m", "gpt2-45m", "gpt2-50m", "gpt2-75m", "gpt2-100m", "tiny-gpt2"]
COMPILE_ORDER = [("gpt2-25m", "float32"), ("gpt2-5m", "float32"), ("gpt2-25m", "bfloat16"), ("gpt2-5m", "bfloat16"),
                 ("gpt2-50m", "float32"), ("gpt2-100m", "float32"), ("gpt2-45m", "float32"), ("gpt2-75m", "float32")]


def decode_ms(session, input_ids: torch.Tensor) -> float:
    """Median over REPS generations of (GEN greedy steps' time / GEN), after warm-up."""
    for _ in range(2):
        generation_ms(session, input_ids)
    return statistics.median(generation_ms(session, input_ids) for _ in range(REPS))


def kernels_per_step(session, input_ids: torch.Tensor) -> int:
    """CUDA kernels the device ran during one profiled greedy step (graph replays included)."""
    from torch.profiler import ProfilerActivity, profile

    import runner.profiling  # noqa: F401 - sets TEARDOWN_CUPTI so later timings are not slowed

    token = session.prefill(input_ids).argmax(-1, keepdim=True)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        session.decode(token).argmax(-1, keepdim=True)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def make_session(backend: str, model, max_len: int):
    static = StaticGPT2(model, 1, max_len)
    if backend == "fused":
        return FusedSession(static, 1, PROMPT)
    if backend == "cuda-graph":
        return CudaGraphSession(static, 1, PROMPT)
    return CompiledSession(static, PROMPT, 1, "default")


def measure(shape: str, dtype: str, backend: str, row: dict) -> None:
    spec = REGISTRY[shape]
    model = build_model(spec, dtype=DTYPES[dtype], device="cuda", seed=0)
    row["params"] = count_params(model)
    row["weight_mb"] = row["params"] * DTYPES[dtype].itemsize / 1e6
    ids = torch.randint(0, spec.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0)).cuda()
    t0 = time.perf_counter()
    session = make_session(backend, model, PROMPT + GEN + 1)
    torch.cuda.synchronize()
    row[f"{backend}_setup_s"] = time.perf_counter() - t0
    row[f"{backend}_ms"] = decode_ms(session, ids)
    row[f"{backend}_kernels"] = kernels_per_step(session, ids)
    if backend == "fused":
        row["fused_static_kernels"] = session.kernels_per_step
    session.close()
    del session, model
    gc.collect()
    torch.cuda.empty_cache()


def gate(shape: str, dtype: str, row: dict) -> None:
    """The project's protocol on a fused cell: phases timed, correctness against hf-eager."""
    from runner.plan import Cell, MeasureSettings
    from runner.protocol import ReferenceCache, measure_cell

    cell = Cell(model=REGISTRY[shape], backend="fused", device="cuda", dtype=dtype, batch_size=1,
                prompt_len=PROMPT, gen_len=GEN)
    settings = MeasureSettings(prefill_reps=3, decode_reps=3, e2e_reps=2, warmup_min_s=0.2, warmup_max_iters=10)
    result = measure_cell(cell, settings, seed=0, references=ReferenceCache())
    row["gate_status"] = result.status
    row["gate_error"] = result.error
    if result.correctness:
        row["gate_ok"] = result.correctness["ok"]
        row["gate_rel_err"] = result.correctness["max_rel_logit_error"]
        row["gate_tokens"] = f"{result.correctness['tokens_checked']}/{result.correctness['tokens_total']}"
    if result.decode:
        row["runner_fused_ms"] = statistics.median(v for rep in result.decode for v in rep)


def table(rows: list[dict], limit_bw: float) -> str:
    head = (f"{'shape':10} {'dtype':8} {'MB':>6} {'limit':>7} | {'fused':>7} {'x':>5} {'k':>4} | "
            f"{'cgraph':>7} {'x':>5} {'k':>4} | {'compile':>7} {'x':>5} {'k':>4} | gate")
    lines = [f"copy bandwidth {limit_bw / 1e12:.2f} TB/s (read + write); ms/token, x = ratio to the limit, "
             f"k = kernels per step", head, "-" * len(head)]
    for r in rows:
        cells = []
        for b in ("fused", "cuda-graph", "torch-compile"):
            ms = r.get(f"{b}_ms")
            if ms is None:
                cells.append(f"{r.get(b + '_error', '-')[:7]:>7} {'':>5} {'':>4}")
            else:
                cells.append(f"{ms:7.4f} {ms / r['limit_ms']:5.1f} {r.get(b + '_kernels', 0):4d}")
        gate_text = (f"{'ok' if r.get('gate_ok') else 'FAIL'} err {r.get('gate_rel_err', float('nan')):.1e} "
                     f"tok {r.get('gate_tokens', '-')}" if "gate_status" in r else "-")
        if r.get("gate_status") not in (None, "ok"):
            gate_text = f"{r['gate_status']}: {r.get('gate_error')}"[:60]
        lines.append(f"{r['shape']:10} {r['dtype']:8} {r.get('weight_mb', 0):6.1f} {r.get('limit_ms', 0):7.4f} | "
                     + " | ".join(cells) + f" | {gate_text}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    parser.add_argument("--budget-s", type=float, default=300, help="stop starting torch-compile cells after this")
    parser.add_argument("--shapes", nargs="*", default=SHAPES)
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    import triton

    print("triton", triton.__version__, flush=True)
    bandwidth = copy_bandwidth()
    rows = {}

    def save():
        (out / "bench_fused.json").write_text(json.dumps({"copy_bandwidth": bandwidth, "rows": list(rows.values())},
                                                           indent=1, default=str))
        (out / "bench_fused.txt").write_text(table(list(rows.values()), bandwidth) + "\n")

    with torch.inference_mode():
        for shape in args.shapes:
            for dtype in DTYPES:
                row = rows.setdefault((shape, dtype), {"shape": shape, "dtype": dtype})
                for backend in ("fused", "cuda-graph"):
                    try:
                        measure(shape, dtype, backend, row)
                    except Exception as error:  # noqa: BLE001 - record and go on to the next cell
                        row[f"{backend}_error"] = f"{type(error).__name__}: {error}"[:300]
                        print(shape, dtype, backend, row[f"{backend}_error"], flush=True)
                row["limit_ms"] = row.get("weight_mb", 0) * 1e6 / bandwidth * 1e3
                save()
                print(shape, dtype, {k: v for k, v in row.items() if k.endswith(("_ms", "_kernels"))}, flush=True)
    for shape, dtype in [(s, d) for s in args.shapes for d in DTYPES]:
        try:
            gate(shape, dtype, rows[(shape, dtype)])
        except Exception as error:  # noqa: BLE001
            rows[(shape, dtype)]["gate_status"] = "error"
            rows[(shape, dtype)]["gate_error"] = f"{type(error).__name__}: {error}"[:300]
        save()
        print("gate", shape, dtype, rows[(shape, dtype)].get("gate_ok"), rows[(shape, dtype)].get("gate_error"),
              flush=True)
    with torch.inference_mode():
        for shape, dtype in COMPILE_ORDER:
            if (shape, dtype) not in rows:
                continue
            if time.monotonic() > deadline:
                rows[(shape, dtype)]["torch-compile_error"] = "budget"
                continue
            try:
                measure(shape, dtype, "torch-compile", rows[(shape, dtype)])
            except Exception as error:  # noqa: BLE001
                rows[(shape, dtype)]["torch-compile_error"] = f"{type(error).__name__}: {error}"[:300]
            save()
            print("compile", shape, dtype, rows[(shape, dtype)].get("torch-compile_ms"), flush=True)
    for row in rows.values():
        row.setdefault("torch-compile_error", "budget")
    save()
    print(table(list(rows.values()), bandwidth))


if __name__ == "__main__":
    main()
