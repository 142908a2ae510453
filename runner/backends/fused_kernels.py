"""Triton kernels for one GPT-2 decode step over a static KV cache: four launches a layer.

A decode step at batch 1 moves each weight once and does almost no arithmetic, so its cost
is the number of dependent launches times their latency plus the bytes over bandwidth.
Every stage that needs a whole row of its input (layer norm, a GEMV over all of it) ends a
launch; everything else is fused into the launch that produces or consumes it:

1. ``qkv``: (layer 0: token + position embedding) + layer norm 1 + QKV GEMV + bias; writes
   q to a buffer and k, v into the cache at the current position.
2. ``attention``: flash-decoding over the cache, split along positions; writes per-split
   partial softmax statistics.
3. ``out``: merges the splits, output projection + bias + residual; writes the residual to
   both halves of a double buffer.
4. ``mlp``: layer norm 2 + up-projection + GELU + down-projection, split over the hidden
   dimension; each program adds its share into the residual with atomics. The double buffer
   keeps those adds away from the copy the other programs still read for the layer norm.

and one ``head`` launch: final layer norm + LM head. The residual stream and all
accumulation are float32 whatever the weight dtype; weights and the KV cache stay in the
model's dtype. Batch rows are a grid axis (weights are re-read per row, from L2). The
current position comes from a device tensor, so one captured graph serves every step.
"""
from __future__ import annotations

import triton
import triton.language as tl

# Elements of the largest register tile a program loads at once: enough bytes in flight per
# program to hide DRAM latency, few enough registers (64 a thread at 8 warps) not to spill.
TILE = 8192
# Output columns per program at least this wide: 16 float32 = 64 contiguous bytes per row.
MIN_COLS = 16
# Aim for about this many programs per GEMV launch: one H100/H200 has 132 SMs.
TARGET_PROGRAMS = 128
# Flash-decoding: at most this many splits along the cache (the merge loads them all at once).
MAX_SPLITS = 16


@triton.jit
def _layer_norm_row(x, mask, w_ptr, b_ptr, offs, n, eps):
    """LayerNorm of one row held in registers; zero outside the row."""
    mean = tl.sum(x, axis=0) / n
    diff = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, axis=0) / n + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return tl.where(mask, diff * rstd * w + b, 0.0)


@triton.jit
def qkv_kernel(x_ptr, tok_ptr, pos_ptr, wte_ptr, wpe_ptr, ln_w_ptr, ln_b_ptr, w_ptr, bias_ptr,
               q_ptr, k_cache_ptr, v_cache_ptr, E, H, D, L, eps,
               EMBED: tl.constexpr, BLOCK_E: tl.constexpr, BN: tl.constexpr):
    b = tl.program_id(0)
    pid = tl.program_id(1)
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    pos = tl.load(pos_ptr)
    if EMBED:
        tok = tl.load(tok_ptr + b)
        x = (tl.load(wte_ptr + tok * E + offs_e, mask=mask_e, other=0.0).to(tl.float32)
             + tl.load(wpe_ptr + pos * E + offs_e, mask=mask_e, other=0.0).to(tl.float32))
        # program 0 keeps the embedding as the residual; the others only need it for the norm
        if pid == 0:
            tl.store(x_ptr + b * E + offs_e, x, mask=mask_e)
    else:
        x = tl.load(x_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _layer_norm_row(x, mask_e, ln_w_ptr, ln_b_ptr, offs_e, E, eps)

    N = 3 * E
    offs_n = pid * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    w = tl.load(w_ptr + offs_e[:, None] * N + offs_n[None, :], mask=mask_e[:, None] & mask_n[None, :],
                other=0.0).to(tl.float32)
    y = tl.sum(h[:, None] * w, axis=0) + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)

    which = offs_n // E  # 0: q, 1: k, 2: v
    col = offs_n % E
    head = col // D
    cache = ((b * H + head) * L + pos) * D + col % D
    tl.store(q_ptr + b * E + col, y, mask=mask_n & (which == 0))
    tl.store(k_cache_ptr + cache, y.to(k_cache_ptr.dtype.element_ty), mask=mask_n & (which == 1))
    tl.store(v_cache_ptr + cache, y.to(v_cache_ptr.dtype.element_ty), mask=mask_n & (which == 2))


@triton.jit
def attention_kernel(q_ptr, k_cache_ptr, v_cache_ptr, pos_ptr, part_acc_ptr, part_ml_ptr,
                     E, H, D, L, scale,
                     S: tl.constexpr, CHUNK: tl.constexpr, BL: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0)  # b * H + head
    split = tl.program_id(1)
    b = bh // H
    head = bh % H
    pos = tl.load(pos_ptr)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    q = tl.load(q_ptr + b * E + head * D + offs_d, mask=mask_d, other=0.0) * scale
    base = bh * L * D
    m_i = -1e30
    l_i = 0.0
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for step in tl.static_range(CHUNK // BL):
        offs_j = split * CHUNK + step * BL + tl.arange(0, BL)
        valid = offs_j <= pos  # the cache holds positions 0..pos; pos < L
        tile_mask = valid[:, None] & mask_d[None, :]
        tile = offs_j[:, None] * D + offs_d[None, :]
        k = tl.load(k_cache_ptr + base + tile, mask=tile_mask, other=0.0).to(tl.float32)
        s = tl.where(valid, tl.sum(k * q[None, :], axis=1), -1e30)
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        alpha = tl.exp(m_i - m_new)
        p = tl.where(valid, tl.exp(s - m_new), 0.0)
        v = tl.load(v_cache_ptr + base + tile, mask=tile_mask, other=0.0).to(tl.float32)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m_i = m_new
    part = bh * S + split
    tl.store(part_acc_ptr + part * D + offs_d, acc, mask=mask_d)
    tl.store(part_ml_ptr + part * 2, m_i)
    tl.store(part_ml_ptr + part * 2 + 1, l_i)


@triton.jit
def out_kernel(part_acc_ptr, part_ml_ptr, w_ptr, bias_ptr, x_in_ptr, x_a_ptr, x_b_ptr, E, H, D,
               S: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, BN: tl.constexpr):
    b = tl.program_id(0)
    pid = tl.program_id(1)
    offs_n = pid * BN + tl.arange(0, BN)
    mask_n = offs_n < E
    offs_s = tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    out = tl.zeros([BN], dtype=tl.float32)
    for head in range(H):
        part = (b * H + head) * S + offs_s
        m = tl.load(part_ml_ptr + part * 2, mask=mask_s, other=-1e30)
        l = tl.load(part_ml_ptr + part * 2 + 1, mask=mask_s, other=0.0)
        weight = tl.exp(m - tl.max(m, axis=0))
        acc = tl.load(part_acc_ptr + part[:, None] * D + offs_d[None, :],
                      mask=mask_s[:, None] & mask_d[None, :], other=0.0)
        y = tl.sum(weight[:, None] * acc, axis=0) / tl.sum(weight * l, axis=0)
        w = tl.load(w_ptr + (head * D + offs_d[:, None]) * E + offs_n[None, :],
                    mask=mask_d[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
        out += tl.sum(y[:, None] * w, axis=0)
    out += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    x = tl.load(x_in_ptr + b * E + offs_n, mask=mask_n, other=0.0) + out
    tl.store(x_a_ptr + b * E + offs_n, x, mask=mask_n)
    tl.store(x_b_ptr + b * E + offs_n, x, mask=mask_n)


@triton.jit
def mlp_kernel(x_a_ptr, x_b_ptr, ln_w_ptr, ln_b_ptr, w_fc_ptr, b_fc_ptr, w_proj_ptr, b_proj_ptr,
               E, F, eps, BLOCK_E: tl.constexpr, BH: tl.constexpr):
    b = tl.program_id(0)
    pid = tl.program_id(1)
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    x = tl.load(x_a_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _layer_norm_row(x, mask_e, ln_w_ptr, ln_b_ptr, offs_e, E, eps)

    offs_f = pid * BH + tl.arange(0, BH)
    mask_f = offs_f < F
    w_fc = tl.load(w_fc_ptr + offs_e[:, None] * F + offs_f[None, :], mask=mask_e[:, None] & mask_f[None, :],
                   other=0.0).to(tl.float32)
    u = tl.sum(h[:, None] * w_fc, axis=0) + tl.load(b_fc_ptr + offs_f, mask=mask_f, other=0.0).to(tl.float32)
    # GPT-2's gelu_new (tanh approximation); tanh(z) = 1 - 2 / (exp(2z) + 1) saturates cleanly
    z = 0.7978845608028654 * (u + 0.044715 * u * u * u)
    u = 0.5 * u * (2.0 - 2.0 / (tl.exp(2.0 * z) + 1.0))
    u = tl.where(mask_f, u, 0.0)

    w_proj = tl.load(w_proj_ptr + offs_f[:, None] * E + offs_e[None, :], mask=mask_f[:, None] & mask_e[None, :],
                     other=0.0).to(tl.float32)
    out = tl.sum(u[:, None] * w_proj, axis=0)
    if pid == 0:  # the bias once, from one program
        out += tl.load(b_proj_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    tl.atomic_add(x_b_ptr + b * E + offs_e, out, mask=mask_e, sem="relaxed")


@triton.jit
def head_kernel(x_ptr, ln_w_ptr, ln_b_ptr, wte_ptr, logits_ptr, E, V, eps,
                BLOCK_E: tl.constexpr, BV: tl.constexpr):
    b = tl.program_id(0)
    pid = tl.program_id(1)
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    x = tl.load(x_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _layer_norm_row(x, mask_e, ln_w_ptr, ln_b_ptr, offs_e, E, eps)
    offs_v = pid * BV + tl.arange(0, BV)
    mask_v = offs_v < V
    w = tl.load(wte_ptr + offs_v[:, None] * E + offs_e[None, :], mask=mask_v[:, None] & mask_e[None, :],
                other=0.0).to(tl.float32)
    tl.store(logits_ptr + b * V + offs_v, tl.sum(w * h[None, :], axis=1), mask=mask_v)


def _pow2_floor(n: int) -> int:
    return 1 << (max(int(n), 1).bit_length() - 1)


def columns_per_program(n_cols: int, rows: int) -> int:
    """Output columns a GEMV program owns: about TARGET_PROGRAMS programs, within one tile."""
    most = max(TILE // triton.next_power_of_2(rows), 1)
    wanted = max(_pow2_floor(n_cols // TARGET_PROGRAMS), MIN_COLS)
    return min(wanted, most, triton.next_power_of_2(n_cols))


def _warps(tile_elements: int) -> int:
    return 8 if tile_elements >= 8192 else 4


class DecodePlan:
    """Launch shapes of one decode step for a (width, heads, hidden, vocab, cache length, batch)."""

    def __init__(self, n_embd: int, n_head: int, n_inner: int, vocab: int, max_len: int, batch: int) -> None:
        self.E, self.H, self.F, self.V, self.L, self.B = n_embd, n_head, n_inner, vocab, max_len, batch
        self.D = n_embd // n_head
        self.BLOCK_E = triton.next_power_of_2(n_embd)
        self.BLOCK_D = triton.next_power_of_2(self.D)
        self.qkv_cols = columns_per_program(3 * n_embd, n_embd)
        self.mlp_cols = columns_per_program(n_inner, n_embd)
        self.out_cols = columns_per_program(n_embd, self.D)
        self.head_rows = max(min(TILE // self.BLOCK_E, triton.next_power_of_2(vocab)), 1)
        # positions per attention block: one K (and one V) tile of about TILE / 2 elements
        self.BL = max(min(TILE // 2 // self.BLOCK_D, 64), 16)
        blocks = triton.cdiv(max_len, self.BL)
        self.S = min(blocks, MAX_SPLITS)
        self.CHUNK = triton.cdiv(blocks, self.S) * self.BL
        self.BLOCK_S = triton.next_power_of_2(self.S)
        self.scale = self.D ** -0.5

    def kernels_per_step(self, n_layer: int) -> int:
        return 4 * n_layer + 1


def launch_step(plan: DecodePlan, layers: list[dict], final: dict, buffers: dict) -> None:
    """Enqueue one decode step: 4 launches a layer, then the head. No host sync, no allocation."""
    p, bufs = plan, buffers
    for index, layer in enumerate(layers):
        qkv_kernel[(p.B, triton.cdiv(3 * p.E, p.qkv_cols))](
            bufs["x_b"], bufs["tokens"], bufs["pos"], final["wte"], final["wpe"], layer["ln_1_w"], layer["ln_1_b"],
            layer["attn_w"], layer["attn_b"], bufs["q"], layer["k_cache"], layer["v_cache"],
            p.E, p.H, p.D, p.L, final["eps"],
            EMBED=index == 0, BLOCK_E=p.BLOCK_E, BN=p.qkv_cols, num_warps=_warps(p.BLOCK_E * p.qkv_cols))
        attention_kernel[(p.B * p.H, p.S)](
            bufs["q"], layer["k_cache"], layer["v_cache"], bufs["pos"], bufs["part_acc"], bufs["part_ml"],
            p.E, p.H, p.D, p.L, p.scale,
            S=p.S, CHUNK=p.CHUNK, BL=p.BL, BLOCK_D=p.BLOCK_D, num_warps=_warps(p.BL * p.BLOCK_D * 2))
        out_kernel[(p.B, triton.cdiv(p.E, p.out_cols))](
            bufs["part_acc"], bufs["part_ml"], layer["proj_w"], layer["proj_b"], bufs["x_b"], bufs["x_a"], bufs["x_b"],
            p.E, p.H, p.D,
            S=p.S, BLOCK_S=p.BLOCK_S, BLOCK_D=p.BLOCK_D, BN=p.out_cols,
            num_warps=_warps(max(p.BLOCK_D * p.out_cols, p.BLOCK_S * p.BLOCK_D)))
        mlp_kernel[(p.B, triton.cdiv(p.F, p.mlp_cols))](
            bufs["x_a"], bufs["x_b"], layer["ln_2_w"], layer["ln_2_b"], layer["fc_w"], layer["fc_b"],
            layer["mlp_proj_w"], layer["mlp_proj_b"], p.E, p.F, final["eps"],
            BLOCK_E=p.BLOCK_E, BH=p.mlp_cols, num_warps=_warps(p.BLOCK_E * p.mlp_cols))
    head_kernel[(p.B, triton.cdiv(p.V, p.head_rows))](
        bufs["x_b"], final["ln_f_w"], final["ln_f_b"], final["wte"], bufs["logits"], p.E, p.V, final["eps"],
        BLOCK_E=p.BLOCK_E, BV=p.head_rows, num_warps=_warps(p.BLOCK_E * p.head_rows))
