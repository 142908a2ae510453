"""Hugging Face transformers forward passes with their dynamic KV cache: what most users run."""
from __future__ import annotations

import torch

from runner.backends.base import Backend, Session


class HFSession(Session):
    def __init__(self, model) -> None:
        self.model = model
        self.past = None

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        # logits_to_keep=1: like generate(), project only the last position onto the vocabulary
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        self.past = out.past_key_values
        return out.logits[:, -1, :]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=tokens, past_key_values=self.past, use_cache=True, logits_to_keep=1)
        self.past = out.past_key_values
        return out.logits[:, -1, :]

    def close(self) -> None:
        self.past = None


class HFEager(Backend):
    name = "hf-eager"
    attn_implementation = "eager"
    description = "transformers (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM), attn_implementation='eager', DynamicCache"

    def prepare(self, model, cell) -> Session:
        return HFSession(model)


class HFSdpa(HFEager):
    name = "hf-sdpa"
    attn_implementation = "sdpa"
    description = "transformers (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM), attn_implementation='sdpa', DynamicCache"
