"""torch.compile (Inductor) over the static-KV-cache model (StaticGPT2, or StaticLlama for llama and qwen2).

Compiling the static model with fullgraph=True gives exactly two graphs (prefill shape and
decode shape) that never recompile as the cache grows. A graph break, a fallback to eager
or a compile that never ran raises: it is never reported as a compiled latency.
"""
from __future__ import annotations

import torch

from runner.backends.base import Backend, Session
from runner.backends.static_gpt2 import StaticGPT2, StaticSession
from runner.backends.static_model import static_model

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileFailed(RuntimeError):
    """Inductor did not produce the graphs this backend promises."""


class CompiledSession(StaticSession, Session):
    def __init__(self, model: StaticGPT2, prompt_len: int, batch_size: int, mode: str) -> None:
        super().__init__(model, prompt_len)
        import torch._dynamo

        torch._dynamo.config.suppress_errors = False  # an error must surface, not fall back
        # Protocol v2 keeps every cell's session alive between its rounds, so many compiled
        # models (2 graphs each) share the static model's forward code cache: no reset (it would
        # make the others recompile), and room for every live cell's entries.
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 4096))
        for name in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 65536))
        before = _graph_count()
        self.model = torch.compile(model, mode=mode, fullgraph=True, dynamic=False, backend="inductor")
        # Trigger both compilations now, so that compile time is setup, not a phase.
        tokens = torch.zeros((batch_size, prompt_len), dtype=torch.long, device=self.device)
        logits = self.prefill(tokens)
        self.decode(logits.argmax(-1, keepdim=True))
        self.decode(logits.argmax(-1, keepdim=True))
        compiled = _graph_count() - before
        if compiled < 2:
            raise CompileFailed(f"torch.compile produced {compiled} graphs, expected 2 (prefill and decode)")

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        # a device-side position tensor of fixed shape: no recompilation per step
        logits = self.model(tokens, torch.full((1,), self.pos, device=self.device, dtype=torch.long))
        self.pos += 1
        return logits


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class TorchCompile(Backend):
    name = "torch-compile"
    attn_implementation = "eager"
    description = "torch.compile(fullgraph=True, Inductor) of the static-KV-cache model; mode recorded"

    def unsupported_reason(self, cell) -> str | None:
        reason = super().unsupported_reason(cell)
        if reason:
            return reason
        mode = cell.backend_options.get("mode", "default")
        if mode not in MODES:
            return f"torch-compile mode '{mode}' is not one of {', '.join(MODES)}"
        if cell.device == "cpu" and "reduce-overhead" in mode:
            return "mode 'reduce-overhead' uses CUDA graphs and needs a GPU"
        return None

    def prepare(self, model, cell) -> Session:
        mode = cell.backend_options.get("mode", "default")
        static = static_model(model, cell.batch_size, cell.prompt_len + cell.gen_len + 1)
        return CompiledSession(static, cell.prompt_len, cell.batch_size, mode)
