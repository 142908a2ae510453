"""Decode steps captured in a CUDA graph over a static KV cache (gpt-fast style).

One replay launches a whole step: per-kernel launch cost, which dominates small models,
is paid once per token instead of once per kernel. Prefill runs the same static model
uncaptured (one large forward, where launches matter little).
"""
from __future__ import annotations

import torch

from runner.backends.base import Backend, Session
from runner.backends.static_gpt2 import StaticGPT2, StaticSession
from runner.backends.static_model import static_model


class CudaGraphSession(StaticSession, Session):
    def __init__(self, model: StaticGPT2, batch_size: int, prompt_len: int) -> None:
        super().__init__(model, prompt_len)
        self.static_tokens = torch.zeros((batch_size, 1), dtype=torch.long, device=self.device)
        self.static_pos = torch.zeros((1,), dtype=torch.long, device=self.device)
        # Warm up on a side stream before capture, as torch.cuda.graphs requires.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.model(self.static_tokens, self.static_pos)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_logits = self.model(self.static_tokens, self.static_pos)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.static_tokens.copy_(tokens)
        self.static_pos.fill_(self.pos)
        self.graph.replay()
        self.pos += 1
        return self.static_logits

    def close(self) -> None:
        self.graph = None


class CudaGraph(Backend):
    name = "cuda-graph"
    devices = ("cuda",)
    attn_implementation = "eager"
    description = "static KV cache (n_kv_head heads), each decode step one CUDA graph replay; eager prefill"

    def prepare(self, model, cell) -> Session:
        static = static_model(model, cell.batch_size, cell.prompt_len + cell.gen_len + 1)
        return CudaGraphSession(static, cell.batch_size, cell.prompt_len)
