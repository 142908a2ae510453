"""`fused`: each decode step is a few Triton kernels a layer, captured in one CUDA graph.

cuda-graph and torch-compile still launch 35-60 kernels a step for a 3-layer model, and
inside a graph each costs a few microseconds, far above the time to read the weights. This
backend's step is 4 phases a layer plus one for the head (runner/backends/fused_kernels.py
says what each fuses), over the static KV cache of the static model (StaticGPT2, or
StaticLlama for llama and qwen2), whose eager forward also runs the prefill. Options (a
plan's `[backend_options.fused]`, recorded with every cell):

- `pdl` (default true): on sm90 and newer, launch the kernels with programmatic dependent
  launch, so each one fetches its weights while its predecessor finishes. Older GPUs run
  without it whatever the option says; false turns it off, to measure what it is worth.
- `persistent` (default false): the whole step as one kernel of one block per SM, phases
  ordered by completion counters in global memory. Refused when its blocks cannot all be
  resident at once. `blocks` overrides the grid (default: the SM count); `spin_limit` is
  the counter reads a block may spend waiting in one step before the step fails (a hang
  becomes a failed cell). GPT-2 only: llama and qwen2 cells that ask for it are refused.

On the CPU the same kernels run through Triton's interpreter (TRITON_INTERPRET=1) without a
graph: that is how the tests check them; it is never a latency worth measuring, so cells on
the CPU are refused.
"""
from __future__ import annotations

import torch

from runner.backends.base import Backend, Session, Unsupported
from runner.backends.static_gpt2 import StaticGPT2, StaticSession
from runner.backends.static_llama import StaticLlama
from runner.backends.static_model import static_model

# Batch rows are a grid axis, each re-reading the weights (from L2 after the first): past a
# handful of rows a GEMM-shaped kernel would serve better than these GEMVs.
MAX_BATCH = 8
# One row of the residual (and of each weight tile) is held in registers at once.
MAX_WIDTH = 1024
# The backend's options and their types; absent ones take the defaults in FusedSession.
OPTIONS = {"pdl": bool, "persistent": bool, "blocks": int, "spin_limit": int}
PERSISTENT_GPT2_ONLY = ("fused's persistent step implements GPT-2's block only; llama and qwen2 run "
                        "with persistent = false (plain launches, or PDL on sm90+)")


class FusedSession(StaticSession, Session):
    """Eager static-model prefill; decode through the fused kernels (a graph replay on CUDA)."""

    def __init__(self, model: StaticGPT2 | StaticLlama, batch_size: int, prompt_len: int, use_graph: bool | None = None,
                 pdl: bool = True, persistent: bool = False, blocks: int | None = None,
                 spin_limit: int | None = None) -> None:
        from runner.backends import fused_kernels as fk

        super().__init__(model, prompt_len)
        self._launch = fk.launch_step
        self._timed_out = fk.StepTimedOut
        if isinstance(model, StaticLlama):
            if persistent:
                raise Unsupported(PERSISTENT_GPT2_ONLY)
            self.plan, self.layers, self.final = _llama_weights(fk, model, batch_size)
        else:
            self.plan, self.layers, self.final = _gpt2_weights(fk, model, batch_size)
        n_embd = self.plan.E
        self.kernels_per_step = self.plan.kernels_per_step(len(self.layers), persistent)
        self.phases_per_step = self.plan.phases_per_step(len(self.layers))
        p, dev = self.plan, self.device
        f32 = dict(dtype=torch.float32, device=dev)
        self.buffers = {
            "tokens": torch.zeros((batch_size, 1), dtype=torch.long, device=dev),
            "pos": torch.zeros((1,), dtype=torch.long, device=dev),
            # residual double buffer: the MLP's atomics add into x_b while x_a is read for its norm
            "x_a": torch.zeros((batch_size, n_embd), **f32),
            "x_b": torch.zeros((batch_size, n_embd), **f32),
            "q": torch.zeros((batch_size, n_embd), **f32),
            "part_acc": torch.zeros((batch_size, p.H, p.S, p.D), **f32),
            "part_ml": torch.zeros((batch_size, p.H, p.S, 2), **f32),
            "logits": torch.zeros((batch_size, p.V), **f32),
        }
        capability = torch.cuda.get_device_capability(dev) if dev.type == "cuda" else None
        # what ran, beside what was asked: PDL falls back to plain launches where it cannot run
        self.pdl = bool(pdl) and not persistent and fk.pdl_unsupported_reason(capability) is None
        self.persistent = None
        if persistent:
            self.persistent = self._persistent_step(fk, blocks, spin_limit)
        # the error word as last copied to the host (pinned, so the copy needs no synchronisation)
        self._error_seen = torch.zeros(1, dtype=torch.int32, pin_memory=dev.type == "cuda")
        self._error_seen_host = self._error_seen.numpy()  # the same memory: a read costs no tensor op
        self.graph = None
        if use_graph is None:
            use_graph = dev.type == "cuda"
        if use_graph:
            self._capture()

    def _persistent_step(self, fk, blocks: int | None, spin_limit: int | None):
        model, dev = self.model, self.device
        # the kernel steps through layers by offset: the caches become views of one stacked tensor
        # (still zero: nothing has been written to them yet)
        k_caches, v_caches = torch.stack(model.k_cache), torch.stack(model.v_cache)
        model.k_cache, model.v_cache = list(k_caches.unbind(0)), list(v_caches.unbind(0))
        limits = fk.SMLimits.of_device(dev) if dev.type == "cuda" else None
        if blocks is None:
            # one block per SM; the interpreter runs programs one after another, so one block
            # (whose every wait is satisfied in program order) is the grid it can run
            blocks = limits.sm_count if limits else 1
        step = fk.PersistentStep(self.plan, self.layers, self.final, self.buffers, k_caches, v_caches, blocks,
                                 fk.SPIN_LIMIT if spin_limit is None else spin_limit)
        for index, layer in enumerate(self.layers):
            layer["k_cache"], layer["v_cache"] = model.k_cache[index], model.v_cache[index]
        if limits is not None:
            step.check_resident(limits)
        return step

    def _step(self) -> None:
        if self.persistent is not None:
            self.persistent.launch()
        else:
            self._launch(self.plan, self.layers, self.final, self.buffers, pdl=self.pdl)

    def _capture(self) -> None:
        # Compile every kernel and warm up on a side stream before capture, as torch.cuda.graphs
        # requires; the writes land in cache slots no prefill has reached yet, so they are harmless.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.raise_if_timed_out()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()

    def raise_if_timed_out(self) -> None:
        """Fail if a persistent step gave up on a counter so far (synchronises with the device)."""
        if self.persistent is not None and self.persistent.timed_out():
            self._error_seen.fill_(1)
        self._check_error_seen()

    def _check_error_seen(self) -> None:
        if self._error_seen_host[0]:
            raise self._timed_out(
                f"a persistent decode step of {self.persistent.blocks} blocks gave up waiting on a completion "
                f"counter after {self.persistent.spin_limit} reads: its blocks could not all run at once")

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.persistent is not None:
            # The error word of every step so far, copied without a synchronisation: the copy
            # lands behind the steps already enqueued and is read at the next prefill (the
            # protocol synchronises between generations), so a hang fails the cell one
            # generation later at most, and no decode step pays for the check.
            self._check_error_seen()
            self._error_seen.copy_(self.persistent.error, non_blocking=True)
        return super().prefill(input_ids)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.persistent is not None:
            self._check_error_seen()  # a host read of pinned memory
        self.buffers["tokens"].copy_(tokens)
        self.buffers["pos"].fill_(self.pos)
        self.pos += 1
        if self.graph is not None:
            self.graph.replay()
            return self.buffers["logits"]  # overwritten by the next replay, as cuda-graph's
        self._step()
        if self.device.type != "cuda":
            self.raise_if_timed_out()  # the interpreter ran the step already: the check is free
        # without a graph (the interpreter, on the CPU) a caller's .cpu() would alias the buffer
        return self.buffers["logits"].clone()

    def close(self) -> None:
        self.graph = None


def _gpt2_weights(fk, model: StaticGPT2, batch_size: int):
    """The decode plan and the kernels' weights of a GPT-2 model: HF's own tensors."""
    blocks = model.blocks
    plan = fk.DecodePlan(n_embd=model.wte.shape[1], n_head=model.n_head,
                         n_inner=blocks[0].mlp.c_fc.weight.shape[1], vocab=model.wte.shape[0],
                         max_len=model.k_cache[0].shape[2], batch=batch_size)
    layers = [{
        "ln_1_w": b.ln_1.weight, "ln_1_b": b.ln_1.bias,
        "attn_w": _contiguous(b.attn.c_attn.weight), "attn_b": b.attn.c_attn.bias,
        "proj_w": _contiguous(b.attn.c_proj.weight), "proj_b": b.attn.c_proj.bias,
        "ln_2_w": b.ln_2.weight, "ln_2_b": b.ln_2.bias,
        "fc_w": _contiguous(b.mlp.c_fc.weight), "fc_b": b.mlp.c_fc.bias,
        "mlp_proj_w": _contiguous(b.mlp.c_proj.weight), "mlp_proj_b": b.mlp.c_proj.bias,
        "k_cache": model.k_cache[i], "v_cache": model.v_cache[i],
    } for i, b in enumerate(blocks)]
    final = {"wte": _contiguous(model.wte), "wpe": _contiguous(model.wpe),
             "ln_f_w": model.ln_f.weight, "ln_f_b": model.ln_f.bias, "eps": float(model.eps)}
    return plan, layers, final


def _llama_weights(fk, model: StaticLlama, batch_size: int):
    """The decode plan and the kernels' weights of a llama or qwen2 model.

    HF's (out, in) weights serve as they are, but for two copies the session holds beside
    them: q, k and v concatenated (one GEMV, one launch) and down_proj transposed (the MLP
    program that owns some rows of gate and up needs the matching columns of down, which
    are contiguous only in the transpose). The prefill keeps using HF's tensors.
    """
    width = model.wte.shape[1]
    if model.n_head * model.head_dim != width:
        raise Unsupported(f"fused needs n_head x head_dim = hidden size, not {model.n_head} x {model.head_dim} "
                          f"for {width}")
    if model.cos.shape[-1] != model.head_dim:
        raise Unsupported(f"fused rotates the whole head ({model.head_dim} dimensions), not "
                          f"{model.cos.shape[-1]} of them (partial rotary)")
    blocks = model.blocks
    plan = fk.DecodePlan(n_embd=width, n_head=model.n_head, n_inner=blocks[0].mlp.gate_proj.weight.shape[0],
                         vocab=model.vocab, max_len=model.k_cache[0].shape[2], batch=batch_size,
                         block="llama", n_kv_head=model.n_kv_head)
    layers = []
    for i, b in enumerate(blocks):
        attn, mlp = b.self_attn, b.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        biases = [proj.bias for proj in projections]
        layers.append({
            "norm_1_w": b.input_layernorm.weight,
            "qkv_w": torch.cat([proj.weight for proj in projections]),
            "qkv_b": None if biases[0] is None else torch.cat(biases),
            "o_w": _contiguous(attn.o_proj.weight), "o_b": attn.o_proj.bias,
            "norm_2_w": b.post_attention_layernorm.weight,
            "gate_w": _contiguous(mlp.gate_proj.weight), "up_w": _contiguous(mlp.up_proj.weight),
            "down_t": mlp.down_proj.weight.t().contiguous(),
            "k_cache": model.k_cache[i], "v_cache": model.v_cache[i],
        })
    final = {"wte": _contiguous(model.wte), "lm_head": _contiguous(model.lm_head), "norm_w": model.norm,
             "cos": model.cos.contiguous(), "sin": model.sin.contiguous(), "eps": float(model.eps)}
    return plan, layers, final


def config_reason(config) -> str | None:
    """Why the kernels cannot run this transformers config (a checkpoint may differ from the
    blocks they implement: GPT-2's, and llama's with qwen2's QKV bias)."""
    model_type = getattr(config, "model_type", None)
    if model_type in ("llama", "qwen2"):
        return _llama_config_reason(config)
    if model_type != "gpt2":
        return f"fused implements GPT-2, llama and qwen2, not model_type '{model_type}'"
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        return f"fused implements GPT-2's tanh GELU, not activation_function '{config.activation_function}'"
    if not config.scale_attn_weights or config.scale_attn_by_inverse_layer_idx:
        return "fused scales attention by 1/sqrt(head_dim) only, as GPT-2 does"
    if not getattr(config, "tie_word_embeddings", True):
        return "fused projects onto the tied input embedding; this model has a separate LM head"
    return None


def _llama_config_reason(config) -> str | None:
    if config.hidden_act != "silu":
        return f"fused implements SwiGLU with SiLU, not hidden_act '{config.hidden_act}'"
    if getattr(config, "mlp_bias", False):
        return "fused implements a bias-free SwiGLU MLP; this model has mlp_bias"
    head_dim = getattr(config, "head_dim", None)
    if head_dim is not None and head_dim * config.num_attention_heads != config.hidden_size:
        return (f"fused needs head_dim x heads = hidden size, not {head_dim} x {config.num_attention_heads} "
                f"for {config.hidden_size}")
    if getattr(config, "use_sliding_window", False) or any(
            kind != "full_attention" for kind in (getattr(config, "layer_types", None) or ())):
        return "fused attends to the whole cache; this model has sliding-window layers"
    return None


def _contiguous(weight: torch.Tensor) -> torch.Tensor:
    # HF's Conv1D weights are (in, out) row-major already; a copy only if something changed that
    return weight if weight.is_contiguous() else weight.contiguous()


class Fused(Backend):
    name = "fused"
    devices = ("cuda",)
    dtypes = ("float32", "bfloat16")
    attn_implementation = "eager"
    description = ("static KV cache, decode step as 4 Triton kernels a layer + 1 for the head "
                   "(programmatic dependent launch on sm90+), or one persistent kernel (GPT-2); one CUDA "
                   "graph replay; eager static-model prefill; gpt2, llama and qwen2")

    def availability(self) -> str | None:
        try:
            import triton  # noqa: F401
        except ImportError:
            return "fused needs triton (pip install triton; the CUDA build of torch ships it)"
        return None

    def unsupported_reason(self, cell) -> str | None:
        reason = super().unsupported_reason(cell)
        if reason:
            return reason
        spec = cell.model
        if spec.family != "gpt2" and cell.backend_options.get("persistent", False):
            return PERSISTENT_GPT2_ONLY
        if cell.batch_size > MAX_BATCH:
            return f"fused kernels serve batch sizes up to {MAX_BATCH}, not {cell.batch_size}"
        if spec.n_embd > MAX_WIDTH:
            return f"fused kernels hold a row of the residual in registers: n_embd up to {MAX_WIDTH}, not {spec.n_embd}"
        if spec.inner > 4 * MAX_WIDTH:
            return f"fused kernels serve an MLP size up to {4 * MAX_WIDTH}, not {spec.inner}"
        if cell.prompt_len + cell.gen_len + 1 > spec.n_positions:
            return (f"prompt_len + gen_len ({cell.prompt_len + cell.gen_len}) does not fit the model's "
                    f"{spec.n_positions} positions")
        return options_reason(cell.backend_options)

    def prepare(self, model, cell) -> Session:
        reason = config_reason(model.config)
        if reason:
            raise Unsupported(reason)
        static = static_model(model, cell.batch_size, cell.prompt_len + cell.gen_len + 1)
        return FusedSession(static, cell.batch_size, cell.prompt_len, **cell.backend_options)


def options_reason(options: dict) -> str | None:
    """Why a cell's fused options are not valid (None: they are): names, types and ranges."""
    for name, value in options.items():
        kind = OPTIONS.get(name)
        if kind is None:
            return f"fused has no option '{name}'; its options are {', '.join(OPTIONS)}"
        # bool is an int in Python: a flag given as 1 or a count given as true is a mistake
        if type(value) is not kind:
            return f"fused option '{name}' takes a {kind.__name__}, not {value!r}"
        if kind is int and value < 1:
            return f"fused option '{name}' must be at least 1, not {value}"
    if not options.get("persistent", False):
        extra = [name for name in ("blocks", "spin_limit") if name in options]
        if extra:
            return f"fused option '{extra[0]}' applies to the persistent step only (persistent = true)"
    return None
