"""Llama-style decoders (llama, qwen2) with a static KV cache, sharing the weights of an HF model.

The same design as StaticGPT2 (runner/backends/static_gpt2.py): fixed-shape cache buffers and
a position tensor make every decode step the same computation on the same memory, so a step
can be captured in one CUDA graph or compiled once by Inductor. The cache holds n_kv_head
heads (grouped-query attention): what a GQA model saves in KV-cache bytes is saved here too.
Rotary tables are taken from the HF model's own rotary module for every position at build
time, so the positions match HF's to the bit; the correctness gate compares every cell with
the HF eager model.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

KVWriter = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class StaticLlama(nn.Module):
    # SDPA's own grouped-query path reads each KV head once; an exporter without it (ONNX)
    # expands the heads instead (FunctionalStaticLlama).
    expand_kv_heads = False

    def __init__(self, hf_model, batch_size: int, max_len: int) -> None:
        super().__init__()
        config = hf_model.config
        body = hf_model.model
        self.n_head = config.num_attention_heads
        self.n_kv_head = config.num_key_value_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.eps = config.rms_norm_eps
        self.wte = body.embed_tokens.weight
        self.lm_head = hf_model.lm_head.weight
        self.norm = body.norm.weight
        self.blocks = body.layers
        self.max_len = max_len
        param = self.wte
        positions = torch.arange(max_len, device=param.device)
        with torch.no_grad():
            cos, sin = body.rotary_emb(param[None, :1], positions[None])
        self.cos, self.sin = cos[0], sin[0]  # (max_len, head_dim), in the weights' dtype as HF casts them
        shape = (batch_size, self.n_kv_head, max_len, self.head_dim)
        self.k_cache = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in self.blocks]
        self.v_cache = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in self.blocks]
        # row p: which cache slots position p may attend to (itself and everything before)
        self.causal = positions[None, :] <= positions[:, None]

    @property
    def n_layer(self) -> int:
        return len(self.blocks)

    @property
    def vocab(self) -> int:
        return self.lm_head.shape[0]

    def cache_shape(self, batch_size: int) -> tuple[int, ...]:
        """(layers, batch, KV heads, max_len, head_dim): the whole cache as one tensor."""
        return (self.n_layer, batch_size, self.n_kv_head, self.max_len, self.head_dim)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # as LlamaRMSNorm: the statistics in float32, the scale in the input's dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_dim).transpose(1, 2)

    def _write_in_place(self, index: int, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor):
        self.k_cache[index].index_copy_(2, input_pos, k)
        self.v_cache[index].index_copy_(2, input_pos, v)
        return self.k_cache[index], self.v_cache[index]

    def decoder(self, input_ids: torch.Tensor, input_pos: torch.Tensor, write: KVWriter) -> torch.Tensor:
        """Logits of the last position (B, V); `write` stores each layer's new keys and values
        and returns the layer's whole cache."""
        x = F.embedding(input_ids, self.wte)
        batch, length, width = x.shape
        mask = self.causal[input_pos][None, None]
        cos, sin = self.cos[input_pos][None, None], self.sin[input_pos][None, None]
        groups = self.n_head // self.n_kv_head
        for index, block in enumerate(self.blocks):
            attn = block.self_attn
            h = self._rms(x, block.input_layernorm.weight)
            q = self._heads(F.linear(h, attn.q_proj.weight, attn.q_proj.bias), self.n_head)
            k = self._heads(F.linear(h, attn.k_proj.weight, attn.k_proj.bias), self.n_kv_head)
            v = self._heads(F.linear(h, attn.v_proj.weight, attn.v_proj.bias), self.n_kv_head)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k_all, v_all = write(index, k, v, input_pos)
            if groups > 1 and self.expand_kv_heads:
                y = F.scaled_dot_product_attention(q, k_all.repeat_interleave(groups, dim=1),
                                                   v_all.repeat_interleave(groups, dim=1), attn_mask=mask)
            else:
                y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, enable_gqa=groups > 1)
            y = y.transpose(1, 2).reshape(batch, length, width)
            x = x + F.linear(y, attn.o_proj.weight, attn.o_proj.bias)
            h = self._rms(x, block.post_attention_layernorm.weight)
            mlp = block.mlp
            x = x + F.linear(F.silu(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight),
                             mlp.down_proj.weight)
        last = self._rms(x[:, -1], self.norm)
        return last @ self.lm_head.t()

    def forward(self, input_ids: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """Logits of the last position (B, V) after writing input_pos into the cache."""
        return self.decoder(input_ids, input_pos, self._write_in_place)
