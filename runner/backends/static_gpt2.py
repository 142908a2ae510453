"""GPT-2 with a static KV cache (gpt-fast style), sharing the weights of an HF model.

Fixed-shape buffers and a position tensor make every decode step the same computation on
the same memory: that is what lets a step be captured in one CUDA graph, or compiled once
by Inductor without recompiling as the cache grows. The correctness gate compares it with
the HF eager model on every cell.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StaticGPT2(nn.Module):
    def __init__(self, hf_model, batch_size: int, max_len: int) -> None:
        super().__init__()
        config = hf_model.config
        transformer = hf_model.transformer
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.eps = config.layer_norm_epsilon
        self.wte = transformer.wte.weight
        self.wpe = transformer.wpe.weight
        self.ln_f = transformer.ln_f
        self.blocks = transformer.h
        param = self.wte
        shape = (batch_size, self.n_head, max_len, self.head_dim)
        self.k_cache = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in self.blocks]
        self.v_cache = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in self.blocks]
        positions = torch.arange(max_len, device=param.device)
        # row p: which cache slots position p may attend to (itself and everything before)
        self.causal = positions[None, :] <= positions[:, None]

    def _attention(self, index: int, block, x: torch.Tensor, input_pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = torch.addmm(block.attn.c_attn.bias, x.reshape(-1, width), block.attn.c_attn.weight)
        q, k, v = qkv.view(batch, length, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        self.k_cache[index].index_copy_(2, input_pos, k)
        self.v_cache[index].index_copy_(2, input_pos, v)
        y = F.scaled_dot_product_attention(q, self.k_cache[index], self.v_cache[index], attn_mask=mask)
        y = y.transpose(1, 2).reshape(-1, width)
        return torch.addmm(block.attn.c_proj.bias, y, block.attn.c_proj.weight).view(batch, length, width)

    def _mlp(self, block, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        h = torch.addmm(block.mlp.c_fc.bias, x.reshape(-1, width), block.mlp.c_fc.weight)
        h = F.gelu(h, approximate="tanh")  # GPT-2's gelu_new
        return torch.addmm(block.mlp.c_proj.bias, h, block.mlp.c_proj.weight).view(batch, length, width)

    def forward(self, input_ids: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """Logits of the last position (B, V) after writing input_pos into the cache."""
        x = F.embedding(input_ids, self.wte) + F.embedding(input_pos, self.wpe)[None]
        mask = self.causal[input_pos][None, None]
        for index, block in enumerate(self.blocks):
            h = F.layer_norm(x, (x.shape[-1],), block.ln_1.weight, block.ln_1.bias, self.eps)
            x = x + self._attention(index, block, h, input_pos, mask)
            h = F.layer_norm(x, (x.shape[-1],), block.ln_2.weight, block.ln_2.bias, self.eps)
            x = x + self._mlp(block, h)
        last = F.layer_norm(x[:, -1], (x.shape[-1],), self.ln_f.weight, self.ln_f.bias, self.eps)
        return last @ self.wte.t()


class StaticSession:
    """Eager prefill and decode over the static cache; the base of cuda-graph and compile."""

    def __init__(self, model: StaticGPT2, prompt_len: int) -> None:
        self.model = model
        self.device = model.wte.device
        self.prompt_pos = torch.arange(prompt_len, device=self.device)
        self.pos = prompt_len

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.pos = input_ids.shape[1]
        return self.model(input_ids, self.prompt_pos[: self.pos])

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(tokens, torch.tensor([self.pos], device=self.device))
        self.pos += 1
        return logits
