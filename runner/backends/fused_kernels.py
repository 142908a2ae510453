"""Triton kernels for one decode step over a static KV cache, GPT-2 or llama: four phases a layer.

A decode step at batch 1 moves each weight once and does almost no arithmetic, so its cost
is the number of dependent phases times their hand-off latency plus the bytes over bandwidth.
Every stage that needs a whole row of its input (layer norm, a GEMV over all of it) ends a
phase; everything else is fused into the phase that produces or consumes it:

1. ``qkv``: (layer 0: token + position embedding) + layer norm 1 + QKV GEMV + bias; writes
   q to a buffer and k, v into the cache at the current position.
2. ``attention``: flash-decoding over the cache, split along positions; writes per-split
   partial softmax statistics.
3. ``out``: merges the splits, output projection + bias + residual; writes the residual to
   both halves of a double buffer.
4. ``mlp``: layer norm 2 + up-projection + GELU + down-projection, split over the hidden
   dimension; each program adds its share into the residual with atomics. The double buffer
   keeps those adds away from the copy the other programs still read for the layer norm.

and one ``head`` phase: final layer norm + LM head. The residual stream and all accumulation
are float32 whatever the weight dtype; weights and the KV cache stay in the model's dtype.
Batch rows are a grid axis (weights are re-read per row, from L2). The current position comes
from a device tensor, so one captured graph serves every step.

The llama block (llama, and qwen2 with its QKV bias) has the same phases and head, with
RMSNorm for layer norm, no position embedding, and: rotary positions applied to q and k in
the ``qkv`` epilogue (HF's cos/sin tables, one row per cache position); ``attention`` run by
one program per KV head and split for the whole group of query heads that share it (each K
and V tile read once); ``mlp`` as SwiGLU (rows of gate and up in one pass, silu(gate) * up,
the matching rows of the transposed down projection); the head over the tied embedding or a
separate LM head. Its weights are read in HF's (out, in) layout.

Each phase is written once, as an item function (one program's share), and run three ways:
one launch a phase (``launch_step``), the same with programmatic dependent launch on sm90
and newer (``launch_step(pdl=True)``: a kernel starts while its predecessor runs, issues its
weight loads and waits in ``gdc_wait``), or all phases in one persistent launch
(``PersistentStep``: one block per SM, phases ordered by completion counters; GPT-2's
block only, the llama items take the same arguments so that a schedule is all it lacks).
Every item issues its weight loads before it waits for its inputs: weights never change
between steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

try:  # grid dependency control (Triton 3.3 and newer): what programmatic dependent launch waits with
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    GDC_IN_TRITON = True
except ImportError:  # an older Triton: PDL is never asked of the kernels, these stand in
    GDC_IN_TRITON = False

    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass

# Elements of the largest register tile a program loads at once: enough bytes in flight per
# program to hide DRAM latency, few enough registers (64 a thread at 8 warps) not to spill.
TILE = 8192
# Output columns per program at least this wide: 16 float32 = 64 contiguous bytes per row.
MIN_COLS = 16
# Aim for about this many programs per GEMV launch: one H100/H200 has 132 SMs.
TARGET_PROGRAMS = 128
# The layers these kernels implement (DecodePlan.block): qwen2 is llama with a QKV bias.
BLOCKS = ("gpt2", "llama")
# Flash-decoding: at most this many splits along the cache (the merge loads them all at once).
MAX_SPLITS = 16


# How a phase waits for the phase that wrote its inputs (the MODE constexpr of every phase):
# KERNELS: each phase is its own launch and stream order is the wait; PDL: each phase is its
# own launch with programmatic dependent launch, so the kernel starts while its predecessor
# runs, fetches its weights and then waits in `gdc_wait`; PERSISTENT: phases are loops of one
# kernel and wait on a completion counter in global memory.
KERNELS = tl.constexpr(0)
PDL = tl.constexpr(1)
PERSISTENT = tl.constexpr(2)


@triton.jit
def _layer_norm_row(x, mask, w, b, n, eps):
    """LayerNorm of one row held in registers (weight and bias already loaded); zero outside the row."""
    mean = tl.sum(x, axis=0) / n
    diff = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, axis=0) / n + eps)
    return tl.where(mask, diff * rstd * w + b, 0.0)


@triton.jit
def wait_counter(counter_ptr, target, error_ptr, spins):
    """Spin until a completion counter reaches target (acquire), at most `spins` reads in all.

    The spin budget is shared by every wait of a launch, so a step whose blocks cannot all
    run at once ends in bounded time with the error word set instead of hanging the GPU; once
    the budget is spent every later wait reads the counter once and moves on.
    """
    seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while (seen < target) & (spins > 0):
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        spins -= 1
    if seen < target:
        tl.atomic_xchg(error_ptr, 1, sem="relaxed", scope="gpu")
        spins = spins * 0
    # thread 0 did the acquire: the barrier orders every thread's loads after it
    tl.debug_barrier()
    return spins


@triton.jit
def _wait_for_inputs(MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins):
    """Called after a phase has issued its weight loads and before it reads activations."""
    if MODE == PDL:
        gdc_wait()
        # only now may the next launch start fetching its weights: at most two kernels overlap
        gdc_launch_dependents()
    if MODE == PERSISTENT:
        if need_wait:
            spins = wait_counter(counter_ptr, target, error_ptr, spins)
    return spins


@triton.jit
def signal_done(counter_ptr, n_items, me, grid):
    """Add the items this block finished in a phase to the phase's counter (release)."""
    mine = (n_items - me + grid - 1) // grid
    if mine > 0:
        tl.debug_barrier()  # every thread's stores precede thread 0's release
        tl.atomic_add(counter_ptr, mine, sem="release", scope="gpu")


@triton.jit
def _qkv_item(b, pid, x_ptr, tok_ptr, pos_ptr, wte_ptr, wpe_ptr, ln_w_ptr, ln_b_ptr, w_ptr, bias_ptr,
              q_ptr, k_cache_ptr, v_cache_ptr, E, H, D, L, eps, embed,
              MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
              BLOCK_E: tl.constexpr, BN: tl.constexpr):
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    N = 3 * E
    offs_n = pid * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    # weights (and the token's embedding: the host wrote tokens and pos before the step) first
    w = tl.load(w_ptr + offs_e[:, None] * N + offs_n[None, :], mask=mask_e[:, None] & mask_n[None, :],
                other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    ln_w = tl.load(ln_w_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    ln_b = tl.load(ln_b_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    pos = tl.load(pos_ptr)
    x = tl.zeros([BLOCK_E], dtype=tl.float32)
    if embed:
        tok = tl.load(tok_ptr + b)
        x = (tl.load(wte_ptr + tok * E + offs_e, mask=mask_e, other=0.0).to(tl.float32)
             + tl.load(wpe_ptr + pos * E + offs_e, mask=mask_e, other=0.0).to(tl.float32))
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    if embed:
        # program 0 keeps the embedding as the residual; the others only need it for the norm
        if pid == 0:
            tl.store(x_ptr + b * E + offs_e, x, mask=mask_e)
    else:
        x = tl.load(x_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _layer_norm_row(x, mask_e, ln_w, ln_b, E, eps)
    y = tl.sum(h[:, None] * w, axis=0) + bias

    which = offs_n // E  # 0: q, 1: k, 2: v
    col = offs_n % E
    head = col // D
    cache = ((b * H + head) * L + pos) * D + col % D
    tl.store(q_ptr + b * E + col, y, mask=mask_n & (which == 0))
    tl.store(k_cache_ptr + cache, y.to(k_cache_ptr.dtype.element_ty), mask=mask_n & (which == 1))
    tl.store(v_cache_ptr + cache, y.to(v_cache_ptr.dtype.element_ty), mask=mask_n & (which == 2))
    return spins


@triton.jit
def _attention_item(bh, split, q_ptr, k_cache_ptr, v_cache_ptr, pos_ptr, part_acc_ptr, part_ml_ptr,
                    E, H, D, L, scale, MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
                    S: tl.constexpr, CHUNK: tl.constexpr, BL: tl.constexpr, BLOCK_D: tl.constexpr):
    b = bh // H
    head = bh % H
    pos = tl.load(pos_ptr)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
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
    return spins


@triton.jit
def _merge_splits(b, part_acc_ptr, part_ml_ptr, H, D, offs_e, mask_e, S: tl.constexpr, BLOCK_E: tl.constexpr):
    """Row b of the attention output: the flash-decoding splits of every head merged, one
    column (head offs_e // D, dimension offs_e % D) per element; zero outside the row."""
    part = (b * H + offs_e // D) * S
    m_run = tl.full([BLOCK_E], -1e30, dtype=tl.float32)
    l_run = tl.zeros([BLOCK_E], dtype=tl.float32)
    acc_run = tl.zeros([BLOCK_E], dtype=tl.float32)
    for split in tl.static_range(S):
        m = tl.load(part_ml_ptr + (part + split) * 2, mask=mask_e, other=-1e30)
        l = tl.load(part_ml_ptr + (part + split) * 2 + 1, mask=mask_e, other=0.0)
        a = tl.load(part_acc_ptr + (part + split) * D + offs_e % D, mask=mask_e, other=0.0)
        m_new = tl.maximum(m_run, m)
        alpha = tl.exp(m_run - m_new)
        beta = tl.exp(m - m_new)
        l_run = l_run * alpha + l * beta
        acc_run = acc_run * alpha + a * beta
        m_run = m_new
    return tl.where(mask_e, acc_run / tl.where(mask_e, l_run, 1.0), 0.0)


@triton.jit
def _out_item(b, pid, part_acc_ptr, part_ml_ptr, w_ptr, bias_ptr, x_in_ptr, x_a_ptr, x_b_ptr, E, H, D,
              MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
              S: tl.constexpr, BLOCK_E: tl.constexpr, BN: tl.constexpr):
    offs_n = pid * BN + tl.arange(0, BN)
    mask_n = offs_n < E
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    w = tl.load(w_ptr + offs_e[:, None] * E + offs_n[None, :], mask=mask_e[:, None] & mask_n[None, :],
                other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    y = _merge_splits(b, part_acc_ptr, part_ml_ptr, H, D, offs_e, mask_e, S, BLOCK_E)
    out = tl.sum(y[:, None] * w, axis=0) + bias
    x = tl.load(x_in_ptr + b * E + offs_n, mask=mask_n, other=0.0) + out
    tl.store(x_a_ptr + b * E + offs_n, x, mask=mask_n)
    tl.store(x_b_ptr + b * E + offs_n, x, mask=mask_n)
    return spins


@triton.jit
def _mlp_item(b, pid, x_a_ptr, x_b_ptr, ln_w_ptr, ln_b_ptr, w_fc_ptr, b_fc_ptr, w_proj_ptr, b_proj_ptr,
              E, F, eps, MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
              BLOCK_E: tl.constexpr, BH: tl.constexpr):
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    offs_f = pid * BH + tl.arange(0, BH)
    mask_f = offs_f < F
    w_fc = tl.load(w_fc_ptr + offs_e[:, None] * F + offs_f[None, :], mask=mask_e[:, None] & mask_f[None, :],
                   other=0.0).to(tl.float32)
    b_fc = tl.load(b_fc_ptr + offs_f, mask=mask_f, other=0.0).to(tl.float32)
    w_proj = tl.load(w_proj_ptr + offs_f[:, None] * E + offs_e[None, :], mask=mask_f[:, None] & mask_e[None, :],
                     other=0.0).to(tl.float32)
    b_proj = tl.load(b_proj_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    ln_w = tl.load(ln_w_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    ln_b = tl.load(ln_b_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    x = tl.load(x_a_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _layer_norm_row(x, mask_e, ln_w, ln_b, E, eps)
    u = tl.sum(h[:, None] * w_fc, axis=0) + b_fc
    # GPT-2's gelu_new (tanh approximation); tanh(z) = 1 - 2 / (exp(2z) + 1) saturates cleanly
    z = 0.7978845608028654 * (u + 0.044715 * u * u * u)
    u = 0.5 * u * (2.0 - 2.0 / (tl.exp(2.0 * z) + 1.0))
    u = tl.where(mask_f, u, 0.0)
    out = tl.sum(u[:, None] * w_proj, axis=0)
    if pid == 0:  # the bias once, from one program
        out += b_proj
    tl.atomic_add(x_b_ptr + b * E + offs_e, out, mask=mask_e, sem="relaxed")
    return spins


@triton.jit
def _head_item(b, pid, x_ptr, ln_w_ptr, ln_b_ptr, wte_ptr, logits_ptr, E, V, eps,
               MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
               BLOCK_E: tl.constexpr, BV: tl.constexpr):
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    offs_v = pid * BV + tl.arange(0, BV)
    mask_v = offs_v < V
    w = tl.load(wte_ptr + offs_v[:, None] * E + offs_e[None, :], mask=mask_v[:, None] & mask_e[None, :],
                other=0.0).to(tl.float32)
    ln_w = tl.load(ln_w_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    ln_b = tl.load(ln_b_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    x = tl.load(x_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _layer_norm_row(x, mask_e, ln_w, ln_b, E, eps)
    tl.store(logits_ptr + b * V + offs_v, tl.sum(w * h[None, :], axis=1), mask=mask_v)
    return spins


# The llama block (llama and qwen2): the same four phases and head, each reading the HF
# weights in their (out, in) layout, where an output element's weights are one contiguous
# row. RMSNorm replaces LayerNorm; rotary positions are applied to q and k as they leave the
# QKV GEMV; the attention program of one KV head serves its whole group of query heads; the
# MLP is SwiGLU, gate and up read in one pass.

@triton.jit
def _rms_norm_row(x, mask, w, n, eps):
    """RMSNorm of one row held in registers (zero outside the row, weight already loaded)."""
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n + eps)
    return tl.where(mask, x * rstd * w, 0.0)


@triton.jit
def _llama_qkv_item(b, pid, x_ptr, tok_ptr, pos_ptr, wte_ptr, norm_w_ptr, w_ptr, bias_ptr, cos_ptr, sin_ptr,
                    q_ptr, k_cache_ptr, v_cache_ptr, E, H, KV, D, L, eps, embed,
                    MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
                    HAS_BIAS: tl.constexpr, BLOCK_E: tl.constexpr, BP: tl.constexpr):
    """RMSNorm + the q, k, v rows of one concatenated (H + 2 KV) x D by E weight + rotary.

    Rotation mixes dimension i of a head with i + D/2, so a program owns BP such pairs
    (`pair` j: head slot j // (D/2), dimension j % (D/2)) and computes both of each; every
    weight row is still read once. Slots below H are query heads, then KV key heads, then
    KV value heads (which are not rotated).
    """
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    half = D // 2
    pair = pid * BP + tl.arange(0, BP)
    mask_p = pair < (H + 2 * KV) * half
    slot = pair // half
    dim = pair % half
    lo = slot * D + dim
    hi = lo + half
    w_mask = mask_p[:, None] & mask_e[None, :]
    w_lo = tl.load(w_ptr + lo[:, None] * E + offs_e[None, :], mask=w_mask, other=0.0).to(tl.float32)
    w_hi = tl.load(w_ptr + hi[:, None] * E + offs_e[None, :], mask=w_mask, other=0.0).to(tl.float32)
    norm_w = tl.load(norm_w_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    pos = tl.load(pos_ptr)
    # HF's tables, in the weights' dtype as HF casts them: the rotation of position pos
    cos_lo = tl.load(cos_ptr + pos * D + dim, mask=mask_p, other=0.0).to(tl.float32)
    cos_hi = tl.load(cos_ptr + pos * D + half + dim, mask=mask_p, other=0.0).to(tl.float32)
    sin_lo = tl.load(sin_ptr + pos * D + dim, mask=mask_p, other=0.0).to(tl.float32)
    sin_hi = tl.load(sin_ptr + pos * D + half + dim, mask=mask_p, other=0.0).to(tl.float32)
    x = tl.zeros([BLOCK_E], dtype=tl.float32)
    if embed:
        tok = tl.load(tok_ptr + b)
        x = tl.load(wte_ptr + tok * E + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    if embed:
        if pid == 0:  # as in _qkv_item: program 0 keeps the embedding as the residual
            tl.store(x_ptr + b * E + offs_e, x, mask=mask_e)
    else:
        x = tl.load(x_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _rms_norm_row(x, mask_e, norm_w, E, eps)
    y_lo = tl.sum(w_lo * h[None, :], axis=1)
    y_hi = tl.sum(w_hi * h[None, :], axis=1)
    if HAS_BIAS:  # qwen2: the bias precedes the rotation, as in HF
        y_lo += tl.load(bias_ptr + lo, mask=mask_p, other=0.0).to(tl.float32)
        y_hi += tl.load(bias_ptr + hi, mask=mask_p, other=0.0).to(tl.float32)
    # x * cos + rotate_half(x) * sin, rotate_half(x) = (-x[D/2:], x[:D/2])
    rotate = slot < H + KV
    r_lo = tl.where(rotate, y_lo * cos_lo - y_hi * sin_lo, y_lo)
    r_hi = tl.where(rotate, y_hi * cos_hi + y_lo * sin_hi, y_hi)
    is_q = mask_p & (slot < H)
    tl.store(q_ptr + b * H * D + lo, r_lo, mask=is_q)
    tl.store(q_ptr + b * H * D + hi, r_hi, mask=is_q)
    is_k = mask_p & (slot >= H) & (slot < H + KV)
    is_v = mask_p & (slot >= H + KV)
    kv_head = tl.where(is_k, slot - H, slot - H - KV)
    cache = ((b * KV + kv_head) * L + pos) * D + dim
    dtype = k_cache_ptr.dtype.element_ty
    tl.store(k_cache_ptr + cache, r_lo.to(dtype), mask=is_k)
    tl.store(k_cache_ptr + cache + half, r_hi.to(dtype), mask=is_k)
    tl.store(v_cache_ptr + cache, r_lo.to(dtype), mask=is_v)
    tl.store(v_cache_ptr + cache + half, r_hi.to(dtype), mask=is_v)
    return spins


@triton.jit
def _gqa_attention_item(bkv, split, q_ptr, k_cache_ptr, v_cache_ptr, pos_ptr, part_acc_ptr, part_ml_ptr,
                        H, KV, D, L, scale, MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
                        S: tl.constexpr, CHUNK: tl.constexpr, BL: tl.constexpr, BLOCK_D: tl.constexpr,
                        BG: tl.constexpr):
    """Flash-decoding of one KV head's split for all H / KV query heads of its group: each
    K and V tile is read once; the partials are per query head, as _attention_item's."""
    b = bkv // KV
    kv_head = bkv % KV
    group = H // KV
    pos = tl.load(pos_ptr)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    offs_g = tl.arange(0, BG)
    mask_g = offs_g < group
    head = kv_head * group + offs_g  # HF's repeat_kv: query head h reads KV head h // group
    q_mask = mask_g[:, None] & mask_d[None, :]
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    q = tl.load(q_ptr + (b * H + head)[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0) * scale
    base = bkv * L * D
    m_i = tl.full([BG], -1e30, dtype=tl.float32)
    l_i = tl.zeros([BG], dtype=tl.float32)
    acc = tl.zeros([BG, BLOCK_D], dtype=tl.float32)
    for step in tl.static_range(CHUNK // BL):
        offs_j = split * CHUNK + step * BL + tl.arange(0, BL)
        valid = offs_j <= pos  # the cache holds positions 0..pos; pos < L
        tile_mask = valid[:, None] & mask_d[None, :]
        tile = offs_j[:, None] * D + offs_d[None, :]
        k = tl.load(k_cache_ptr + base + tile, mask=tile_mask, other=0.0).to(tl.float32)
        s = tl.where(valid[None, :], tl.sum(q[:, None, :] * k[None, :, :], axis=2), -1e30)  # (BG, BL)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.where(valid[None, :], tl.exp(s - m_new[:, None]), 0.0)
        v = tl.load(v_cache_ptr + base + tile, mask=tile_mask, other=0.0).to(tl.float32)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        m_i = m_new
    part = (b * H + head) * S + split
    tl.store(part_acc_ptr + part[:, None] * D + offs_d[None, :], acc, mask=q_mask)
    tl.store(part_ml_ptr + part * 2, m_i, mask=mask_g)
    tl.store(part_ml_ptr + part * 2 + 1, l_i, mask=mask_g)
    return spins


@triton.jit
def _llama_out_item(b, pid, part_acc_ptr, part_ml_ptr, w_ptr, bias_ptr, x_in_ptr, x_a_ptr, x_b_ptr, E, H, D,
                    MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
                    HAS_BIAS: tl.constexpr, S: tl.constexpr, BLOCK_E: tl.constexpr, BN: tl.constexpr):
    """_out_item over o_proj's (out, in) rows; a bias only where the config has one."""
    offs_n = pid * BN + tl.arange(0, BN)
    mask_n = offs_n < E
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    w = tl.load(w_ptr + offs_n[:, None] * E + offs_e[None, :], mask=mask_n[:, None] & mask_e[None, :],
                other=0.0).to(tl.float32)
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    y = _merge_splits(b, part_acc_ptr, part_ml_ptr, H, D, offs_e, mask_e, S, BLOCK_E)
    out = tl.sum(w * y[None, :], axis=1)
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    x = tl.load(x_in_ptr + b * E + offs_n, mask=mask_n, other=0.0) + out
    tl.store(x_a_ptr + b * E + offs_n, x, mask=mask_n)
    tl.store(x_b_ptr + b * E + offs_n, x, mask=mask_n)
    return spins


@triton.jit
def _swiglu_item(b, pid, x_a_ptr, x_b_ptr, norm_w_ptr, gate_w_ptr, up_w_ptr, down_t_ptr, E, F, eps,
                 MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
                 BLOCK_E: tl.constexpr, BH: tl.constexpr):
    """RMSNorm + rows of gate and up in one pass + silu(gate) * up + the matching rows of the
    down projection (transposed: F x E), added into the residual with atomics as _mlp_item."""
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    offs_f = pid * BH + tl.arange(0, BH)
    mask_f = offs_f < F
    w_mask = mask_f[:, None] & mask_e[None, :]
    rows = offs_f[:, None] * E + offs_e[None, :]
    gate_w = tl.load(gate_w_ptr + rows, mask=w_mask, other=0.0).to(tl.float32)
    up_w = tl.load(up_w_ptr + rows, mask=w_mask, other=0.0).to(tl.float32)
    down = tl.load(down_t_ptr + rows, mask=w_mask, other=0.0).to(tl.float32)
    norm_w = tl.load(norm_w_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    x = tl.load(x_a_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _rms_norm_row(x, mask_e, norm_w, E, eps)
    gate = tl.sum(gate_w * h[None, :], axis=1)
    up = tl.sum(up_w * h[None, :], axis=1)
    # silu(g) = g / (1 + exp(-g)): exp overflows to inf for very negative g, giving -0, as it should
    u = tl.where(mask_f, gate / (1.0 + tl.exp(-gate)) * up, 0.0)
    out = tl.sum(u[:, None] * down, axis=0)
    tl.atomic_add(x_b_ptr + b * E + offs_e, out, mask=mask_e, sem="relaxed")
    return spins


@triton.jit
def _llama_head_item(b, pid, x_ptr, norm_w_ptr, lm_head_ptr, logits_ptr, E, V, eps,
                     MODE: tl.constexpr, need_wait, counter_ptr, target, error_ptr, spins,
                     BLOCK_E: tl.constexpr, BV: tl.constexpr):
    """_head_item with RMSNorm, over the LM head (the input embedding when tied)."""
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    offs_v = pid * BV + tl.arange(0, BV)
    mask_v = offs_v < V
    w = tl.load(lm_head_ptr + offs_v[:, None] * E + offs_e[None, :], mask=mask_v[:, None] & mask_e[None, :],
                other=0.0).to(tl.float32)
    norm_w = tl.load(norm_w_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    spins = _wait_for_inputs(MODE, need_wait, counter_ptr, target, error_ptr, spins)
    x = tl.load(x_ptr + b * E + offs_e, mask=mask_e, other=0.0)
    h = _rms_norm_row(x, mask_e, norm_w, E, eps)
    tl.store(logits_ptr + b * V + offs_v, tl.sum(w * h[None, :], axis=1), mask=mask_v)
    return spins


# One launch a phase. The counter arguments of the items are unused outside PERSISTENT: the
# residual pointer stands in for them.

@triton.jit
def qkv_kernel(x_ptr, tok_ptr, pos_ptr, wte_ptr, wpe_ptr, ln_w_ptr, ln_b_ptr, w_ptr, bias_ptr,
               q_ptr, k_cache_ptr, v_cache_ptr, E, H, D, L, eps,
               EMBED: tl.constexpr, MODE: tl.constexpr, BLOCK_E: tl.constexpr, BN: tl.constexpr):
    _qkv_item(tl.program_id(0), tl.program_id(1), x_ptr, tok_ptr, pos_ptr, wte_ptr, wpe_ptr, ln_w_ptr, ln_b_ptr,
              w_ptr, bias_ptr, q_ptr, k_cache_ptr, v_cache_ptr, E, H, D, L, eps, EMBED,
              MODE, True, x_ptr, 0, x_ptr, 0, BLOCK_E, BN)


@triton.jit
def attention_kernel(q_ptr, k_cache_ptr, v_cache_ptr, pos_ptr, part_acc_ptr, part_ml_ptr, E, H, D, L, scale,
                     MODE: tl.constexpr, S: tl.constexpr, CHUNK: tl.constexpr, BL: tl.constexpr,
                     BLOCK_D: tl.constexpr):
    _attention_item(tl.program_id(0), tl.program_id(1), q_ptr, k_cache_ptr, v_cache_ptr, pos_ptr, part_acc_ptr,
                    part_ml_ptr, E, H, D, L, scale, MODE, True, q_ptr, 0, q_ptr, 0, S, CHUNK, BL, BLOCK_D)


@triton.jit
def out_kernel(part_acc_ptr, part_ml_ptr, w_ptr, bias_ptr, x_in_ptr, x_a_ptr, x_b_ptr, E, H, D,
               MODE: tl.constexpr, S: tl.constexpr, BLOCK_E: tl.constexpr, BN: tl.constexpr):
    _out_item(tl.program_id(0), tl.program_id(1), part_acc_ptr, part_ml_ptr, w_ptr, bias_ptr, x_in_ptr, x_a_ptr,
              x_b_ptr, E, H, D, MODE, True, x_a_ptr, 0, x_a_ptr, 0, S, BLOCK_E, BN)


@triton.jit
def mlp_kernel(x_a_ptr, x_b_ptr, ln_w_ptr, ln_b_ptr, w_fc_ptr, b_fc_ptr, w_proj_ptr, b_proj_ptr, E, F, eps,
               MODE: tl.constexpr, BLOCK_E: tl.constexpr, BH: tl.constexpr):
    _mlp_item(tl.program_id(0), tl.program_id(1), x_a_ptr, x_b_ptr, ln_w_ptr, ln_b_ptr, w_fc_ptr, b_fc_ptr,
              w_proj_ptr, b_proj_ptr, E, F, eps, MODE, True, x_a_ptr, 0, x_a_ptr, 0, BLOCK_E, BH)


@triton.jit
def head_kernel(x_ptr, ln_w_ptr, ln_b_ptr, wte_ptr, logits_ptr, E, V, eps,
                MODE: tl.constexpr, BLOCK_E: tl.constexpr, BV: tl.constexpr):
    _head_item(tl.program_id(0), tl.program_id(1), x_ptr, ln_w_ptr, ln_b_ptr, wte_ptr, logits_ptr, E, V, eps,
               MODE, True, x_ptr, 0, x_ptr, 0, BLOCK_E, BV)


@triton.jit
def llama_qkv_kernel(x_ptr, tok_ptr, pos_ptr, wte_ptr, norm_w_ptr, w_ptr, bias_ptr, cos_ptr, sin_ptr,
                     q_ptr, k_cache_ptr, v_cache_ptr, E, H, KV, D, L, eps,
                     EMBED: tl.constexpr, MODE: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_E: tl.constexpr,
                     BP: tl.constexpr):
    _llama_qkv_item(tl.program_id(0), tl.program_id(1), x_ptr, tok_ptr, pos_ptr, wte_ptr, norm_w_ptr, w_ptr,
                    bias_ptr, cos_ptr, sin_ptr, q_ptr, k_cache_ptr, v_cache_ptr, E, H, KV, D, L, eps, EMBED,
                    MODE, True, x_ptr, 0, x_ptr, 0, HAS_BIAS, BLOCK_E, BP)


@triton.jit
def gqa_attention_kernel(q_ptr, k_cache_ptr, v_cache_ptr, pos_ptr, part_acc_ptr, part_ml_ptr, H, KV, D, L, scale,
                         MODE: tl.constexpr, S: tl.constexpr, CHUNK: tl.constexpr, BL: tl.constexpr,
                         BLOCK_D: tl.constexpr, BG: tl.constexpr):
    _gqa_attention_item(tl.program_id(0), tl.program_id(1), q_ptr, k_cache_ptr, v_cache_ptr, pos_ptr,
                        part_acc_ptr, part_ml_ptr, H, KV, D, L, scale, MODE, True, q_ptr, 0, q_ptr, 0,
                        S, CHUNK, BL, BLOCK_D, BG)


@triton.jit
def llama_out_kernel(part_acc_ptr, part_ml_ptr, w_ptr, bias_ptr, x_in_ptr, x_a_ptr, x_b_ptr, E, H, D,
                     MODE: tl.constexpr, HAS_BIAS: tl.constexpr, S: tl.constexpr, BLOCK_E: tl.constexpr,
                     BN: tl.constexpr):
    _llama_out_item(tl.program_id(0), tl.program_id(1), part_acc_ptr, part_ml_ptr, w_ptr, bias_ptr, x_in_ptr,
                    x_a_ptr, x_b_ptr, E, H, D, MODE, True, x_a_ptr, 0, x_a_ptr, 0, HAS_BIAS, S, BLOCK_E, BN)


@triton.jit
def swiglu_kernel(x_a_ptr, x_b_ptr, norm_w_ptr, gate_w_ptr, up_w_ptr, down_t_ptr, E, F, eps,
                  MODE: tl.constexpr, BLOCK_E: tl.constexpr, BH: tl.constexpr):
    _swiglu_item(tl.program_id(0), tl.program_id(1), x_a_ptr, x_b_ptr, norm_w_ptr, gate_w_ptr, up_w_ptr,
                 down_t_ptr, E, F, eps, MODE, True, x_a_ptr, 0, x_a_ptr, 0, BLOCK_E, BH)


@triton.jit
def llama_head_kernel(x_ptr, norm_w_ptr, lm_head_ptr, logits_ptr, E, V, eps,
                      MODE: tl.constexpr, BLOCK_E: tl.constexpr, BV: tl.constexpr):
    _llama_head_item(tl.program_id(0), tl.program_id(1), x_ptr, norm_w_ptr, lm_head_ptr, logits_ptr, E, V, eps,
                     MODE, True, x_ptr, 0, x_ptr, 0, BLOCK_E, BV)


@triton.jit
def persistent_step_kernel(
        tok_ptr, pos_ptr, wte_ptr, wpe_ptr, ln_f_w_ptr, ln_f_b_ptr,
        ln_1_w_ptr, ln_1_b_ptr, attn_w_ptr, attn_b_ptr, proj_w_ptr, proj_b_ptr,
        ln_2_w_ptr, ln_2_b_ptr, fc_w_ptr, fc_b_ptr, mlp_proj_w_ptr, mlp_proj_b_ptr,
        k_cache_ptr, v_cache_ptr, x_a_ptr, x_b_ptr, q_ptr, part_acc_ptr, part_ml_ptr, logits_ptr,
        counters_ptr, error_ptr, n_layer, B, E, H, D, F, V, L, eps, scale, spin_limit,
        S: tl.constexpr, CHUNK: tl.constexpr, BL: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
        QKV_COLS: tl.constexpr, OUT_COLS: tl.constexpr, MLP_COLS: tl.constexpr, HEAD_ROWS: tl.constexpr):
    """One whole decode step: every phase of every layer, then the head, in one launch.

    Block `me` of `grid` takes items me, me + grid, ... of each phase (the programs of the
    phase's own launch in the other modes), and adds how many it finished to the phase's
    completion counter. Before its first item of a phase it has already issued that item's
    weight loads; only then does it wait for the counter of the phase that wrote the item's
    inputs to be complete. Every phase needs all of its predecessor (a layer norm or a GEMV
    reads the whole row), so a complete counter also means every earlier phase is done and
    the same buffers serve every layer, as between launches. Per-layer weights and caches
    are stacked along a leading layer axis. The last block to finish resets the counters for
    the next step's launch.
    """
    me = tl.program_id(0)
    grid = tl.num_programs(0)
    spins = spin_limit
    qkv_per_row = tl.cdiv(3 * E, QKV_COLS)
    out_per_row = tl.cdiv(E, OUT_COLS)
    mlp_per_row = tl.cdiv(F, MLP_COLS)
    head_per_row = tl.cdiv(V, HEAD_ROWS)
    n_qkv = B * qkv_per_row
    n_attention = B * H * S
    n_out = B * out_per_row
    n_mlp = B * mlp_per_row
    n_head = B * head_per_row
    for layer in range(n_layer):
        done = counters_ptr + layer * 4  # this layer's counters: qkv, attention, out, mlp
        cache = layer * B * H * L * D
        for item in range(me, n_qkv, grid):
            spins = _qkv_item(item // qkv_per_row, item % qkv_per_row, x_b_ptr, tok_ptr, pos_ptr, wte_ptr, wpe_ptr,
                              ln_1_w_ptr + layer * E, ln_1_b_ptr + layer * E, attn_w_ptr + layer * E * 3 * E,
                              attn_b_ptr + layer * 3 * E, q_ptr, k_cache_ptr + cache, v_cache_ptr + cache,
                              E, H, D, L, eps, layer == 0,
                              PERSISTENT, (item == me) & (layer > 0), done - 1, n_mlp, error_ptr, spins,
                              BLOCK_E, QKV_COLS)
        signal_done(done, n_qkv, me, grid)
        for item in range(me, n_attention, grid):
            spins = _attention_item(item // S, item % S, q_ptr, k_cache_ptr + cache, v_cache_ptr + cache, pos_ptr,
                                    part_acc_ptr, part_ml_ptr, E, H, D, L, scale,
                                    PERSISTENT, item == me, done, n_qkv, error_ptr, spins, S, CHUNK, BL, BLOCK_D)
        signal_done(done + 1, n_attention, me, grid)
        for item in range(me, n_out, grid):
            spins = _out_item(item // out_per_row, item % out_per_row, part_acc_ptr, part_ml_ptr,
                              proj_w_ptr + layer * E * E, proj_b_ptr + layer * E, x_b_ptr, x_a_ptr, x_b_ptr, E, H, D,
                              PERSISTENT, item == me, done + 1, n_attention, error_ptr, spins, S, BLOCK_E, OUT_COLS)
        signal_done(done + 2, n_out, me, grid)
        for item in range(me, n_mlp, grid):
            spins = _mlp_item(item // mlp_per_row, item % mlp_per_row, x_a_ptr, x_b_ptr,
                              ln_2_w_ptr + layer * E, ln_2_b_ptr + layer * E, fc_w_ptr + layer * E * F,
                              fc_b_ptr + layer * F, mlp_proj_w_ptr + layer * F * E, mlp_proj_b_ptr + layer * E,
                              E, F, eps, PERSISTENT, item == me, done + 2, n_out, error_ptr, spins, BLOCK_E, MLP_COLS)
        signal_done(done + 3, n_mlp, me, grid)
    last_mlp = counters_ptr + (n_layer - 1) * 4 + 3
    for item in range(me, n_head, grid):
        spins = _head_item(item // head_per_row, item % head_per_row, x_b_ptr, ln_f_w_ptr, ln_f_b_ptr, wte_ptr,
                           logits_ptr, E, V, eps, PERSISTENT, item == me, last_mlp, n_mlp, error_ptr, spins,
                           BLOCK_E, HEAD_ROWS)
    # No block reads a counter after this point: the last one to arrive zeroes them all
    # (the arrival counter, after the phases' ones, included) for the next launch.
    tl.debug_barrier()
    arrived = tl.atomic_add(counters_ptr + n_layer * 4, 1, sem="acq_rel", scope="gpu")
    if arrived == grid - 1:
        for start in range(0, n_layer * 4 + 1, 128):
            offs = start + tl.arange(0, 128)
            tl.store(counters_ptr + offs, tl.zeros([128], dtype=tl.int32), mask=offs <= n_layer * 4)


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
    """Launch shapes of one decode step for a (width, heads, hidden, vocab, cache length, batch).

    `block` is the layer the kernels implement: "gpt2", or "llama" (qwen2 too: the QKV bias
    is a kernel flag), whose `n_kv_head` KV heads each serve n_head / n_kv_head query heads.
    """

    def __init__(self, n_embd: int, n_head: int, n_inner: int, vocab: int, max_len: int, batch: int,
                 block: str = "gpt2", n_kv_head: int | None = None) -> None:
        if block not in BLOCKS:
            raise ValueError(f"block: the kernels implement {', '.join(BLOCKS)}, not '{block}'")
        self.block = block
        self.E, self.H, self.F, self.V, self.L, self.B = n_embd, n_head, n_inner, vocab, max_len, batch
        self.KV = n_kv_head or n_head
        if block == "gpt2" and self.KV != n_head:
            raise ValueError(f"n_kv_head: GPT-2's attention has one KV head a query head, not {self.KV} for {n_head}")
        self.D = n_embd // n_head
        self.BLOCK_E = triton.next_power_of_2(n_embd)
        self.BLOCK_D = triton.next_power_of_2(self.D)
        # query heads a KV head serves, padded: the rows of one attention program's score tile
        self.BG = triton.next_power_of_2(n_head // self.KV)
        self.qkv_cols = columns_per_program((n_head + 2 * self.KV) * self.D, n_embd)
        # llama's QKV programs own pairs of columns (dimensions i and i + D/2 of a head), two tiles
        self.qkv_pairs = max(self.qkv_cols // 2, 1)
        self.mlp_cols = columns_per_program(n_inner, n_embd)
        self.out_cols = columns_per_program(n_embd, n_embd)
        self.head_rows = max(min(TILE // self.BLOCK_E, triton.next_power_of_2(vocab)), 1)
        # positions per attention block: one K (and one V) tile of about TILE / 2 elements, and
        # one score product of the group's query heads by that tile (the same for BG = 1)
        self.BL = max(min(TILE // 2 // (self.BLOCK_D * self.BG), 64), 16)
        blocks = triton.cdiv(max_len, self.BL)
        self.S = min(blocks, MAX_SPLITS)
        self.CHUNK = triton.cdiv(blocks, self.S) * self.BL
        self.scale = self.D ** -0.5

    def items(self) -> dict[str, int]:
        """Programs of each phase (a launch's grid, or the items a persistent step shares out)."""
        if self.block == "llama":
            qkv = triton.cdiv((self.H + 2 * self.KV) * self.D // 2, self.qkv_pairs)
        else:
            qkv = triton.cdiv(3 * self.E, self.qkv_cols)
        return {"qkv": self.B * qkv, "attention": self.B * self.KV * self.S,
                "out": self.B * triton.cdiv(self.E, self.out_cols), "mlp": self.B * triton.cdiv(self.F, self.mlp_cols),
                "head": self.B * triton.cdiv(self.V, self.head_rows)}

    def phases_per_step(self, n_layer: int) -> int:
        """Dependent hand-offs of a step, however it is launched."""
        return PHASES_PER_LAYER * n_layer + 1

    def kernels_per_step(self, n_layer: int, persistent: bool = False) -> int:
        return 1 if persistent else self.phases_per_step(n_layer)


PHASES_PER_LAYER = 4  # qkv, attention, out, mlp


def persistent_phases(plan: DecodePlan, n_layer: int) -> list[tuple[str, int, int | None]]:
    """The persistent step's phases in order: (name, items, index of the phase it waits for).

    Phase i's completion counter is counters[i]; the head (last) is waited on by nobody, so
    its slot holds the blocks' arrival count instead, which the last block to arrive uses to
    reset every counter. persistent_step_kernel follows this schedule.
    """
    items = plan.items()
    phases = []
    for layer in range(n_layer):
        for name in ("qkv", "attention", "out", "mlp"):
            phases.append((name, items[name], len(phases) - 1 if phases else None))
    phases.append(("head", items["head"], len(phases) - 1))
    return phases


def interpreted() -> bool:
    """Whether these kernels run through Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    return isinstance(qkv_kernel, InterpretedFunction)


def pdl_unsupported_reason(capability: tuple[int, int] | None) -> str | None:
    """Why programmatic dependent launch cannot be used here (None: it can).

    `capability` is the GPU's compute capability, None without a GPU.
    """
    if interpreted() or capability is None:
        return "programmatic dependent launch needs a GPU (the interpreter runs phases in order)"
    if capability[0] < 9:
        return f"programmatic dependent launch needs sm90 or newer, not sm{capability[0]}{capability[1]}"
    if not GDC_IN_TRITON or not _launcher_knows_pdl():
        return f"Triton {triton.__version__} has no programmatic dependent launch (3.3 and newer do)"
    return None


def _launcher_knows_pdl() -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})


def launch_step(plan: DecodePlan, layers: list[dict], final: dict, buffers: dict, pdl: bool = False) -> None:
    """Enqueue one decode step: 4 launches a layer, then the head. No host sync, no allocation.

    With `pdl` (sm90 and newer, see `pdl_unsupported_reason`) each launch may start while the
    one before it runs; it fetches its weights, then waits for its predecessor in gdc_wait.
    `layers` and `final` hold the weights under the names of the plan's block (FusedSession).
    """
    mode = PDL if pdl else KERNELS
    extra = {"launch_pdl": True} if pdl else {}
    if plan.block == "llama":
        _launch_llama_step(plan, layers, final, buffers, mode, extra)
    else:
        _launch_gpt2_step(plan, layers, final, buffers, mode, extra)


def _launch_gpt2_step(p: DecodePlan, layers: list[dict], final: dict, bufs: dict, mode, extra: dict) -> None:
    for index, layer in enumerate(layers):
        qkv_kernel[(p.B, triton.cdiv(3 * p.E, p.qkv_cols))](
            bufs["x_b"], bufs["tokens"], bufs["pos"], final["wte"], final["wpe"], layer["ln_1_w"], layer["ln_1_b"],
            layer["attn_w"], layer["attn_b"], bufs["q"], layer["k_cache"], layer["v_cache"],
            p.E, p.H, p.D, p.L, final["eps"],
            EMBED=index == 0, MODE=mode, BLOCK_E=p.BLOCK_E, BN=p.qkv_cols,
            num_warps=_warps(p.BLOCK_E * p.qkv_cols), **extra)
        attention_kernel[(p.B * p.H, p.S)](
            bufs["q"], layer["k_cache"], layer["v_cache"], bufs["pos"], bufs["part_acc"], bufs["part_ml"],
            p.E, p.H, p.D, p.L, p.scale,
            MODE=mode, S=p.S, CHUNK=p.CHUNK, BL=p.BL, BLOCK_D=p.BLOCK_D, num_warps=_warps(p.BL * p.BLOCK_D * 2),
            **extra)
        out_kernel[(p.B, triton.cdiv(p.E, p.out_cols))](
            bufs["part_acc"], bufs["part_ml"], layer["proj_w"], layer["proj_b"], bufs["x_b"], bufs["x_a"], bufs["x_b"],
            p.E, p.H, p.D,
            MODE=mode, S=p.S, BLOCK_E=p.BLOCK_E, BN=p.out_cols, num_warps=_warps(p.BLOCK_E * p.out_cols), **extra)
        mlp_kernel[(p.B, triton.cdiv(p.F, p.mlp_cols))](
            bufs["x_a"], bufs["x_b"], layer["ln_2_w"], layer["ln_2_b"], layer["fc_w"], layer["fc_b"],
            layer["mlp_proj_w"], layer["mlp_proj_b"], p.E, p.F, final["eps"],
            MODE=mode, BLOCK_E=p.BLOCK_E, BH=p.mlp_cols, num_warps=_warps(p.BLOCK_E * p.mlp_cols), **extra)
    head_kernel[(p.B, triton.cdiv(p.V, p.head_rows))](
        bufs["x_b"], final["ln_f_w"], final["ln_f_b"], final["wte"], bufs["logits"], p.E, p.V, final["eps"],
        MODE=mode, BLOCK_E=p.BLOCK_E, BV=p.head_rows, num_warps=_warps(p.BLOCK_E * p.head_rows), **extra)


def _launch_llama_step(p: DecodePlan, layers: list[dict], final: dict, bufs: dict, mode, extra: dict) -> None:
    qkv_grid = (p.B, triton.cdiv((p.H + 2 * p.KV) * p.D // 2, p.qkv_pairs))
    for index, layer in enumerate(layers):
        qkv_bias = layer["qkv_b"]
        llama_qkv_kernel[qkv_grid](
            bufs["x_b"], bufs["tokens"], bufs["pos"], final["wte"], layer["norm_1_w"], layer["qkv_w"],
            layer["qkv_w"] if qkv_bias is None else qkv_bias, final["cos"], final["sin"],
            bufs["q"], layer["k_cache"], layer["v_cache"], p.E, p.H, p.KV, p.D, p.L, final["eps"],
            EMBED=index == 0, MODE=mode, HAS_BIAS=qkv_bias is not None, BLOCK_E=p.BLOCK_E, BP=p.qkv_pairs,
            num_warps=_warps(p.BLOCK_E * p.qkv_cols), **extra)
        gqa_attention_kernel[(p.B * p.KV, p.S)](
            bufs["q"], layer["k_cache"], layer["v_cache"], bufs["pos"], bufs["part_acc"], bufs["part_ml"],
            p.H, p.KV, p.D, p.L, p.scale,
            MODE=mode, S=p.S, CHUNK=p.CHUNK, BL=p.BL, BLOCK_D=p.BLOCK_D, BG=p.BG,
            num_warps=_warps(p.BG * p.BL * p.BLOCK_D * 2), **extra)
        out_bias = layer["o_b"]
        llama_out_kernel[(p.B, triton.cdiv(p.E, p.out_cols))](
            bufs["part_acc"], bufs["part_ml"], layer["o_w"], layer["o_w"] if out_bias is None else out_bias,
            bufs["x_b"], bufs["x_a"], bufs["x_b"], p.E, p.H, p.D,
            MODE=mode, HAS_BIAS=out_bias is not None, S=p.S, BLOCK_E=p.BLOCK_E, BN=p.out_cols,
            num_warps=_warps(p.BLOCK_E * p.out_cols), **extra)
        swiglu_kernel[(p.B, triton.cdiv(p.F, p.mlp_cols))](
            bufs["x_a"], bufs["x_b"], layer["norm_2_w"], layer["gate_w"], layer["up_w"], layer["down_t"],
            p.E, p.F, final["eps"],
            MODE=mode, BLOCK_E=p.BLOCK_E, BH=p.mlp_cols, num_warps=_warps(p.BLOCK_E * p.mlp_cols), **extra)
    llama_head_kernel[(p.B, triton.cdiv(p.V, p.head_rows))](
        bufs["x_b"], final["norm_w"], final["lm_head"], bufs["logits"], p.E, p.V, final["eps"],
        MODE=mode, BLOCK_E=p.BLOCK_E, BV=p.head_rows, num_warps=_warps(p.BLOCK_E * p.head_rows), **extra)


# Reads of a completion counter a block may spend in one step, all its waits together, before
# it gives up and sets the step's error word: far above what a healthy step spends (a few per
# hand-off), so only a step that cannot finish (blocks that are not all resident) reaches it.
SPIN_LIMIT = 1 << 22
# The persistent step's blocks: 8 warps hold the largest tile without spilling (see TILE).
PERSISTENT_WARPS = 8
STACKED = ("ln_1_w", "ln_1_b", "attn_w", "attn_b", "proj_w", "proj_b", "ln_2_w", "ln_2_b",
           "fc_w", "fc_b", "mlp_proj_w", "mlp_proj_b")


@dataclass(frozen=True)
class SMLimits:
    """What one streaming multiprocessor holds at once (from the device's properties)."""

    sm_count: int
    threads_per_sm: int
    registers_per_sm: int
    shared_bytes_per_sm: int
    blocks_per_sm: int = 32  # the hardware's cap on resident blocks per SM since Volta

    @classmethod
    def of_device(cls, device) -> "SMLimits":
        import torch

        props = torch.cuda.get_device_properties(device)
        return cls(sm_count=props.multi_processor_count,
                   threads_per_sm=props.max_threads_per_multi_processor,
                   registers_per_sm=getattr(props, "regs_per_multiprocessor", 65536),
                   shared_bytes_per_sm=getattr(props, "shared_memory_per_multiprocessor", 228 * 1024))


def resident_blocks(limits: SMLimits, warps: int, registers_per_thread: int, shared_bytes: int) -> int:
    """Blocks of a kernel that can be resident on the whole device at once.

    Registers are allocated per warp in units of 256, as CUDA's occupancy calculator does.
    """
    threads = warps * 32
    per_warp = -(-max(registers_per_thread, 1) * 32 // 256) * 256
    by_threads = limits.threads_per_sm // threads
    by_registers = limits.registers_per_sm // (per_warp * warps)
    by_shared = limits.shared_bytes_per_sm // shared_bytes if shared_bytes > 0 else limits.blocks_per_sm
    return limits.sm_count * min(by_threads, by_registers, by_shared, limits.blocks_per_sm)


def persistent_grid_reason(blocks: int, resident: int) -> str | None:
    """Why a persistent step of `blocks` blocks cannot run (None: it can).

    A block spins until the blocks before it in the dependency chain finish; a block that
    is not resident never runs while the resident ones spin, so all must be resident at once.
    """
    if blocks < 1:
        return f"a persistent step needs at least one block, not {blocks}"
    if blocks > resident:
        return (f"a persistent step of {blocks} blocks cannot run: only {resident} can be resident at once "
                f"on this GPU, and a block that waits on one that never starts would hang")
    return None


class StepTimedOut(RuntimeError):
    """A persistent step gave up waiting on a completion counter: its blocks could not all run."""


class PersistentStep:
    """One decode step as one launch: stacked per-layer weights, the counters and the error word.

    The weights are copied into one tensor per kind with a leading layer axis; the KV caches
    must already be stacked that way (`k_caches[i]` is layer i's cache, the tensor the prefill
    writes), since a copy would not see what the prefill wrote.
    """

    def __init__(self, plan: DecodePlan, layers: list[dict], final: dict, buffers: dict, k_caches, v_caches,
                 blocks: int, spin_limit: int = SPIN_LIMIT) -> None:
        import torch

        self.plan, self.final, self.buffers = plan, final, buffers
        self.n_layer = len(layers)
        self.blocks, self.spin_limit = blocks, spin_limit
        # one tensor per kind with a leading layer axis: the kernel steps through layers by offset
        self.stacked = {name: torch.stack([layer[name] for layer in layers]).contiguous() for name in STACKED}
        self.stacked.update(k_cache=k_caches, v_cache=v_caches)
        device = final["wte"].device
        # one counter a phase; the head's slot counts the blocks' arrivals
        self.counters = torch.zeros(len(persistent_phases(plan, self.n_layer)), dtype=torch.int32, device=device)
        self.error = torch.zeros(1, dtype=torch.int32, device=device)

    def _arguments(self) -> tuple[tuple, dict]:
        p, f, s, bufs = self.plan, self.final, self.stacked, self.buffers
        args = (bufs["tokens"], bufs["pos"], f["wte"], f["wpe"], f["ln_f_w"], f["ln_f_b"],
                s["ln_1_w"], s["ln_1_b"], s["attn_w"], s["attn_b"], s["proj_w"], s["proj_b"],
                s["ln_2_w"], s["ln_2_b"], s["fc_w"], s["fc_b"], s["mlp_proj_w"], s["mlp_proj_b"],
                s["k_cache"], s["v_cache"], bufs["x_a"], bufs["x_b"], bufs["q"], bufs["part_acc"], bufs["part_ml"],
                bufs["logits"], self.counters, self.error,
                self.n_layer, p.B, p.E, p.H, p.D, p.F, p.V, p.L, f["eps"], p.scale, self.spin_limit)
        constants = dict(S=p.S, CHUNK=p.CHUNK, BL=p.BL, BLOCK_D=p.BLOCK_D, BLOCK_E=p.BLOCK_E, QKV_COLS=p.qkv_cols,
                         OUT_COLS=p.out_cols, MLP_COLS=p.mlp_cols, HEAD_ROWS=p.head_rows,
                         num_warps=PERSISTENT_WARPS)
        return args, constants

    def check_resident(self, limits: SMLimits) -> None:
        """Compile (without launching) and refuse a grid whose blocks cannot all be resident."""
        from runner.backends.base import Unsupported

        args, constants = self._arguments()
        compiled = persistent_step_kernel.warmup(*args, grid=(self.blocks,), **constants)
        compiled.run  # noqa: B018 - loading the binary is what reports its registers (Triton 3.5+)
        if getattr(compiled, "n_regs", None) is None and hasattr(compiled, "_init_handles"):
            compiled._init_handles()  # Triton versions that load lazily only at launch
        resident = resident_blocks(limits, compiled.metadata.num_warps, compiled.n_regs, compiled.metadata.shared)
        reason = persistent_grid_reason(self.blocks, resident)
        if reason:
            raise Unsupported(reason)

    def launch(self) -> None:
        args, constants = self._arguments()
        persistent_step_kernel[(self.blocks,)](*args, **constants)

    def timed_out(self) -> bool:
        """Whether any step so far gave up on a counter (reads the device: a synchronisation)."""
        return bool(self.error.item())
