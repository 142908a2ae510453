"""fused decode at the synchronisation floor: plain launches, PDL and the persistent step, in one GPU run.

For tiny-gpt2, gpt2-5m, gpt2-25m and SmolLM2-135M (llama: grouped-query attention, SwiGLU,
rotary positions) in float32 and bfloat16 (batch 1, prompt 128, 64 greedy steps), three ways
to run the same kernels: `kernels` (one launch a phase in a CUDA graph, pdl off), `pdl` (the
same with programmatic dependent launch, sm90 and newer) and `persistent` (one launch a step,
one block per SM, completion counters; GPT-2 only, refused for SmolLM2). Per cell: ms/token
(median over generations, the variants interleaved generation by generation so drift hits
them alike), the ratio to the weight-read limit (unique weight bytes / the device-to-device
copy bandwidth measured in the same run, bytes read + written), the correctness gate against
hf-eager float32 (teacher-forced logits within the dtype's tolerance, runner.correctness),
and the floor model: phases x the measured hand-off cost + weight bytes / bandwidth.
The run also records the hand-off costs (runner.sync_cost) and checks the targets:
gpt2-25m float32 within 1.6x its limit, SmolLM2-135M bfloat16 within 2x its limit, gpt2-5m
float32 at most 0.08 ms, bfloat16 no slower than float32.

    python benchmarks/bench_fused_floor.py --json OUT.json [--shapes tiny-gpt2 gpt2-5m] [--variants pdl]

Needs torch with CUDA, triton and transformers, nothing else (no pydantic, duckdb or
streamlit): the shapes are written out here (tests check them against runner.models), and
a variant that fails, refuses or hangs (the persistent step's spin limit ends a hang)
records its error and the run goes on. The JSON is rewritten after every cell.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from runner.backends.fused import FusedSession  # noqa: E402
from runner.backends.hf import HFSession  # noqa: E402
from runner.backends.static_model import static_model  # noqa: E402
from runner.correctness import compare, make_reference  # noqa: E402

PROMPT, GEN, REPS = 128, 64, 7  # batch 1, prompt 128; median of 7 generations of 64 steps
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Shape(NamedTuple):
    family: str
    n_layer: int
    n_embd: int
    n_head: int
    n_kv_head: int
    n_inner: int | None  # None: GPT-2's 4 x n_embd
    vocab: int
    context: int
    tied: bool


# The shapes this benchmark covers, as runner.models' registry and catalogue define them (a
# test checks that both build the same transformers config)
SHAPES = {
    "tiny-gpt2": Shape("gpt2", 2, 2, 2, 2, None, 50257, 1024, True),
    "gpt2-5m": Shape("gpt2", 12, 80, 2, 2, None, 50257, 1024, True),
    "gpt2-25m": Shape("gpt2", 3, 384, 2, 2, None, 50257, 1024, True),
    "SmolLM2-135M": Shape("llama", 30, 576, 9, 3, 1536, 49152, 2048, True),
}
VARIANTS = {"kernels": dict(pdl=False), "pdl": dict(pdl=True), "persistent": dict(persistent=True)}
# the targets: (shape, dtype) -> most ratio to the limit, or most ms/token
RATIO_TARGETS = {("gpt2-25m", "float32"): 1.6, ("SmolLM2-135M", "bfloat16"): 2.0}
MS_TARGETS = {("gpt2-5m", "float32"): 0.08}


def hf_config(shape: str):
    """The transformers config of a shape, as runner.models.hf_config writes it."""
    s = SHAPES[shape]
    if s.family == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(n_layer=s.n_layer, n_embd=s.n_embd, n_head=s.n_head, n_inner=s.n_inner,
                          vocab_size=s.vocab, n_positions=s.context, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, tie_word_embeddings=s.tied, bos_token_id=min(50256, s.vocab - 1),
                          eos_token_id=min(50256, s.vocab - 1))
    from transformers import LlamaConfig, Qwen2Config

    config_class = LlamaConfig if s.family == "llama" else Qwen2Config
    return config_class(num_hidden_layers=s.n_layer, hidden_size=s.n_embd, num_attention_heads=s.n_head,
                        num_key_value_heads=s.n_kv_head, intermediate_size=s.n_inner, vocab_size=s.vocab,
                        max_position_embeddings=s.context, tie_word_embeddings=s.tied, attention_dropout=0.0,
                        bos_token_id=min(1, s.vocab - 1), eos_token_id=min(2, s.vocab - 1), pad_token_id=None)


def build(shape: str, dtype: torch.dtype, seed: int = 0):
    """The shape with random init, as runner.models.build_model makes it (float32, then cast)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(shape), attn_implementation="eager",
                                             dtype=torch.float32).to(dtype)
    return model.to("cuda").eval()


def weight_bytes(model) -> int:
    """Unique parameter bytes: the tied embedding once."""
    seen = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    return sum(seen.values())


def copy_bandwidth() -> float:
    """Bytes per second of a 2 GiB device-to-device copy, counting bytes read plus written."""
    src = torch.empty(2**29, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * 2**31 / statistics.median(times)


def generation_ms(session, input_ids: torch.Tensor) -> float:
    """ms/token of one greedy generation of GEN steps (token copy, position, step, argmax)."""
    token = session.prefill(input_ids).argmax(-1, keepdim=True)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(GEN):
        token = session.decode(token).argmax(-1, keepdim=True)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / GEN


def measure_shape(shape: str, dtype: str, variants: list[str], costs: dict, bandwidth: float) -> dict:
    """Every variant of one (shape, dtype): setup, gate, then interleaved timed generations."""
    row = {"shape": shape, "dtype": dtype}
    model = build(shape, DTYPES[dtype])
    row["weight_bytes"] = weight_bytes(model)
    row["limit_ms"] = row["weight_bytes"] / bandwidth * 1e3
    n_layer = SHAPES[shape].n_layer
    ids = torch.randint(0, SHAPES[shape].vocab, (1, PROMPT), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.inference_mode():
        reference = make_reference(HFSession(build(shape, torch.float32)), ids, GEN)
    gc.collect()
    sessions = {}
    for variant in variants:
        cell = row.setdefault(variant, {})
        try:
            t0 = time.perf_counter()
            with torch.inference_mode():
                static = static_model(model, 1, PROMPT + GEN + 1)
                session = FusedSession(static, 1, PROMPT, **VARIANTS[variant])
                torch.cuda.synchronize()
                cell["setup_s"] = time.perf_counter() - t0
                cell["pdl_active"] = session.pdl
                cell["kernels_per_step"] = session.kernels_per_step
                cell["phases_per_step"] = session.phases_per_step
                if session.persistent is not None:
                    cell["blocks"] = session.persistent.blocks
                gate = compare(session, reference, dtype, "cuda")
                if session.persistent is not None:
                    session.raise_if_timed_out()
            cell["gate_ok"] = bool(gate["ok"])
            cell["gate_rel_err"] = gate["max_rel_logit_error"]
            cell["gate_tokens"] = f"{gate['tokens_checked']}/{gate['tokens_total']}"
            sessions[variant] = session
        except Exception as error:  # noqa: BLE001 - record it, the other variants and shapes go on
            cell["error"] = f"{type(error).__name__}: {error}"[:400]
            print(shape, dtype, variant, cell["error"], flush=True)
    samples = {variant: [] for variant in sessions}
    with torch.inference_mode():
        for variant, session in list(sessions.items()):  # warm-up: two generations each
            try:
                for _ in range(2):
                    generation_ms(session, ids)
            except Exception as error:  # noqa: BLE001
                row[variant]["error"] = f"{type(error).__name__}: {error}"[:400]
                sessions.pop(variant)
        for _ in range(REPS):
            for variant, session in list(sessions.items()):
                try:
                    samples[variant].append(generation_ms(session, ids))
                except Exception as error:  # noqa: BLE001 - a timed-out step: the variant stops here
                    row[variant]["error"] = f"{type(error).__name__}: {error}"[:400]
                    sessions.pop(variant)
        for variant, session in sessions.items():
            try:
                if session.persistent is not None:
                    session.prefill(ids)  # the last generation's error word, copied at this prefill
                    session.raise_if_timed_out()
            except Exception as error:  # noqa: BLE001
                row[variant]["error"] = f"{type(error).__name__}: {error}"[:400]
                samples[variant] = []
    for variant, values in samples.items():
        cell = row[variant]
        if not values:
            continue
        cell["ms"] = statistics.median(values)
        cell["ms_samples"] = values
        cell["ratio"] = cell["ms"] / row["limit_ms"]
        handoff = costs.get("counter_handoff_us" if variant == "persistent" else
                            "graph_kernel_pdl_us" if cell.get("pdl_active") else "graph_kernel_us")
        if handoff is not None:
            cell["floor_ms"] = cell["phases_per_step"] * handoff / 1e3 + row["limit_ms"]
    for variant in ("pdl", "persistent"):
        if row.get(variant, {}).get("ms") and row.get("kernels", {}).get("ms"):
            row[f"{variant}_over_kernels"] = row[variant]["ms"] / row["kernels"]["ms"]
    row["n_layer"] = n_layer
    for session in sessions.values():
        session.close()
    del sessions, model
    gc.collect()
    torch.cuda.empty_cache()
    return row


def check_targets(rows: list[dict]) -> list[str]:
    """One line per target: what it asks, what the best variant reached, met or not."""
    lines = []
    best = {}
    for row in rows:
        timed = {v: row[v]["ms"] for v in VARIANTS if isinstance(row.get(v), dict) and row[v].get("ms")
                 and row[v].get("gate_ok")}
        if timed:
            variant = min(timed, key=timed.get)
            best[(row["shape"], row["dtype"])] = (variant, timed[variant], timed[variant] / row["limit_ms"])
    for key, most in RATIO_TARGETS.items():
        if key in best:
            variant, ms, ratio = best[key]
            lines.append(f"{key[0]} {key[1]}: {ratio:.2f}x the limit ({variant}, {ms:.4f} ms) "
                         f"target <= {most}x: {'met' if ratio <= most else 'NOT met'}")
    for key, most in MS_TARGETS.items():
        if key in best:
            variant, ms, _ = best[key]
            lines.append(f"{key[0]} {key[1]}: {ms:.4f} ms ({variant}) target <= {most} ms: "
                         f"{'met' if ms <= most else 'NOT met'}")
    for shape in SHAPES:
        if (shape, "float32") in best and (shape, "bfloat16") in best:
            f32, bf16 = best[(shape, "float32")][1], best[(shape, "bfloat16")][1]
            lines.append(f"{shape}: bfloat16 {bf16:.4f} ms vs float32 {f32:.4f} ms: "
                         f"{'met' if bf16 <= f32 else 'NOT met'} (bfloat16 no slower)")
    return lines


def table(rows: list[dict], bandwidth: float, costs: dict, variants: list[str], device: str) -> str:
    head = f"{'shape':10} {'dtype':8} {'MB':>7} {'limit':>7}" + "".join(
        f" | {v:>10} {'x':>5} {'floor':>7} {'gate':>4}" for v in variants) + " | pdl/k  pers/k"
    lines = [f"{device}: copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write); "
             + ", ".join(f"{k} {v:.2f}" for k, v in costs.items() if isinstance(v, float)),
             "ms/token; x = ratio to the weight-read limit; floor = phases x hand-off + bytes / bandwidth",
             head, "-" * len(head)]
    for row in rows:
        parts = [f"{row['shape']:10} {row['dtype']:8} {row['weight_bytes'] / 1e6:7.1f} {row['limit_ms']:7.4f}"]
        for variant in variants:
            cell = row.get(variant, {})
            if "ms" in cell:
                gate = "ok" if cell.get("gate_ok") else "FAIL"
                floor = f"{cell['floor_ms']:7.4f}" if "floor_ms" in cell else f"{'-':>7}"
                parts.append(f"{cell['ms']:10.4f} {cell['ratio']:5.2f} {floor} {gate:>4}")
            else:
                parts.append(f"{cell.get('error', row.get('error', '-'))[:30]:>30}")
        ratios = [f"{row[k]:6.3f}" if k in row else f"{'-':>6}" for k in ("pdl_over_kernels", "persistent_over_kernels")]
        lines.append(" | ".join(parts) + " | " + " ".join(ratios))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="where to write the results (JSON)")
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--dtypes", nargs="*", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA GPU")
    import triton

    from runner.backends.fused_kernels import pdl_unsupported_reason
    from runner.host import host_fingerprint
    from runner.sync_cost import counter_handoff_us, graph_kernel_us

    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
            "torch": torch.__version__, "triton": triton.__version__,
            "pdl_unsupported": pdl_unsupported_reason(torch.cuda.get_device_capability()),
            "host_class": host_fingerprint().get("host_class"), "prompt": PROMPT, "gen": GEN, "reps": REPS}
    print(meta, flush=True)
    bandwidth = copy_bandwidth()
    costs = {}
    for name, probe in (("graph_kernel_us", lambda: graph_kernel_us(False)),
                        ("graph_kernel_pdl_us", lambda: graph_kernel_us(True) if meta["pdl_unsupported"] is None else None),
                        ("counter_handoff_us", counter_handoff_us)):
        try:
            value = probe()
            if value is not None:
                costs[name] = value
        except Exception as error:  # noqa: BLE001 - a probe that fails leaves its floor out
            costs[name + "_error"] = f"{type(error).__name__}: {error}"[:300]
    print("bandwidth", bandwidth, costs, flush=True)
    rows = []

    def save() -> None:
        args.json.write_text(json.dumps({**meta, "copy_bandwidth": bandwidth, "sync_costs": costs, "rows": rows,
                                         "targets": check_targets(rows)}, indent=1, default=str))

    for shape in args.shapes:
        for dtype in args.dtypes:
            try:
                rows.append(measure_shape(shape, dtype, args.variants, costs, bandwidth))
            except Exception as error:  # noqa: BLE001 - the model or reference failed: record, go on
                rows.append({"shape": shape, "dtype": dtype, "error": f"{type(error).__name__}: {error}"[:400],
                             "weight_bytes": 0, "limit_ms": float("nan")})
            save()
            print(table(rows[-1:], bandwidth, costs, args.variants, meta["device"]).splitlines()[-1], flush=True)
    save()
    print(table(rows, bandwidth, costs, args.variants, meta["device"]))
    print("\n".join(check_targets(rows)))


if __name__ == "__main__":
    main()
