"""The correctness gate: every backend against the hf-eager float32 reference.

Random-init models have nearly flat logits, so greedy tokens can legitimately diverge on a
near-tie after a rounding difference and then cascade. So the gate compares
teacher-forced logits at every step (relative L2 error within the dtype's tolerance), and
free-running greedy tokens only up to the first step whose reference top-2 margin is
small enough for the backend's own logit error (measured at that step) to flip it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Relative L2 error of a logits vector allowed per dtype: float32 kernels differ in
# summation order only; bf16/fp16 round every activation (8 and 11 mantissa bits).
TOLERANCE = {"float32": 1e-3, "bfloat16": 6e-2, "float16": 1e-2}


@dataclass
class Reference:
    """hf-eager float32 outputs for one model and input: prefill logits, greedy tokens and
    the logits of every decode step when fed those tokens."""

    input_ids: torch.Tensor  # (B, P) on CPU
    tokens: torch.Tensor  # (B, G) greedy tokens, the first from prefill
    logits: torch.Tensor  # (G, B, V) float32 on CPU: logits that produced tokens[:, g]


def greedy_logits(session, input_ids: torch.Tensor, gen_len: int, forced: torch.Tensor | None = None):
    """Run prefill then gen_len-1 decode steps; feed `forced` tokens when given (teacher forcing)."""
    logits = session.prefill(input_ids)
    steps = [logits.float().cpu()]
    tokens = [logits.argmax(-1)]
    for g in range(1, gen_len):
        feed = forced[:, g - 1 : g].to(input_ids.device) if forced is not None else tokens[-1][:, None]
        logits = session.decode(feed)
        steps.append(logits.float().cpu())
        tokens.append(logits.argmax(-1))
    return torch.stack(steps), torch.stack(tokens, dim=1).cpu()


def make_reference(session, input_ids: torch.Tensor, gen_len: int) -> Reference:
    logits, tokens = greedy_logits(session, input_ids, gen_len)
    return Reference(input_ids=input_ids.cpu(), tokens=tokens, logits=logits)


def compare(session, reference: Reference, dtype: str, device: str) -> dict:
    """Check a backend session against the reference; returns the details stored on the cell."""
    tol = TOLERANCE[dtype]
    gen_len = reference.tokens.shape[1]
    device_ids = reference.input_ids.to(device)
    forced_logits, _ = greedy_logits(session, device_ids, gen_len, forced=reference.tokens)
    diff = (forced_logits - reference.logits).flatten(2).norm(dim=-1)
    scale = reference.logits.flatten(2).norm(dim=-1).clamp_min(1e-12)
    rel_err = (diff / scale).max().item()

    _, free_tokens = greedy_logits(session, device_ids, gen_len)
    top2 = reference.logits.topk(2, dim=-1).values  # (G, B, 2)
    margin = top2[..., 0] - top2[..., 1]  # (G, B)
    # A near-tie: the reference's top-2 margin is within twice the largest logit error this
    # backend showed at that step under teacher forcing, so rounding alone could flip it.
    step_error = (forced_logits - reference.logits).abs().amax(dim=-1)  # (G, B)
    tie = margin <= 2 * step_error
    checked_steps = gen_len
    tie_steps = tie.any(dim=1).nonzero()
    if len(tie_steps):
        checked_steps = int(tie_steps[0].item())
    token_match = bool((free_tokens[:, :checked_steps] == reference.tokens[:, :checked_steps]).all())
    ok = rel_err <= tol and token_match
    return {
        "ok": ok,
        "max_rel_logit_error": rel_err,
        "tolerance": tol,
        "tokens_checked": checked_steps,
        "tokens_total": gen_len,
        "tokens_match": token_match,
    }

