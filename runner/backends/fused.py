"""`fused`: each decode step is a few Triton kernels a layer, captured in one CUDA graph.

cuda-graph and torch-compile still launch 35-60 kernels a step for a 3-layer model, and
inside a graph each costs a few microseconds, far above the time to read the weights. This
backend's step is 4 launches a layer plus one for the head (runner/backends/fused_kernels.py
says what each fuses), over the static KV cache of StaticGPT2, whose eager forward also runs
the prefill. On the CPU the same kernels run through Triton's interpreter (TRITON_INTERPRET=1)
without a graph: that is how the tests check them; it is never a latency worth measuring, so
cells on the CPU are refused.
"""
from __future__ import annotations

import torch

from runner.backends.base import Backend, Session, Unsupported
from runner.backends.static_gpt2 import StaticGPT2, StaticSession

# Batch rows are a grid axis, each re-reading the weights (from L2 after the first): past a
# handful of rows a GEMM-shaped kernel would serve better than these GEMVs.
MAX_BATCH = 8
# One row of the residual (and of each weight tile) is held in registers at once.
MAX_WIDTH = 1024


class FusedSession(StaticSession, Session):
    """Eager static-model prefill; decode through the fused kernels (a graph replay on CUDA)."""

    def __init__(self, model: StaticGPT2, batch_size: int, prompt_len: int, use_graph: bool | None = None) -> None:
        from runner.backends import fused_kernels as fk

        super().__init__(model, prompt_len)
        self._launch = fk.launch_step
        blocks = model.blocks
        first = blocks[0]
        n_embd = model.wte.shape[1]
        self.plan = fk.DecodePlan(n_embd=n_embd, n_head=model.n_head, n_inner=first.mlp.c_fc.weight.shape[1],
                                  vocab=model.wte.shape[0], max_len=model.k_cache[0].shape[2], batch=batch_size)
        self.kernels_per_step = self.plan.kernels_per_step(len(blocks))
        self.layers = [{
            "ln_1_w": b.ln_1.weight, "ln_1_b": b.ln_1.bias,
            "attn_w": _contiguous(b.attn.c_attn.weight), "attn_b": b.attn.c_attn.bias,
            "proj_w": _contiguous(b.attn.c_proj.weight), "proj_b": b.attn.c_proj.bias,
            "ln_2_w": b.ln_2.weight, "ln_2_b": b.ln_2.bias,
            "fc_w": _contiguous(b.mlp.c_fc.weight), "fc_b": b.mlp.c_fc.bias,
            "mlp_proj_w": _contiguous(b.mlp.c_proj.weight), "mlp_proj_b": b.mlp.c_proj.bias,
            "k_cache": model.k_cache[i], "v_cache": model.v_cache[i],
        } for i, b in enumerate(blocks)]
        self.final = {"wte": _contiguous(model.wte), "wpe": _contiguous(model.wpe),
                      "ln_f_w": model.ln_f.weight, "ln_f_b": model.ln_f.bias, "eps": float(model.eps)}
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
        self.graph = None
        if use_graph is None:
            use_graph = dev.type == "cuda"
        if use_graph:
            self._capture()

    def _step(self) -> None:
        self._launch(self.plan, self.layers, self.final, self.buffers)

    def _capture(self) -> None:
        # Compile every kernel and warm up on a side stream before capture, as torch.cuda.graphs
        # requires; the writes land in cache slots no prefill has reached yet, so they are harmless.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.buffers["tokens"].copy_(tokens)
        self.buffers["pos"].fill_(self.pos)
        self.pos += 1
        if self.graph is not None:
            self.graph.replay()
            return self.buffers["logits"]  # overwritten by the next replay, as cuda-graph's
        self._step()
        # without a graph (the interpreter, on the CPU) a caller's .cpu() would alias the buffer
        return self.buffers["logits"].clone()

    def close(self) -> None:
        self.graph = None


def config_reason(config) -> str | None:
    """Why the kernels cannot run this transformers config (a checkpoint may differ from GPT-2's)."""
    if getattr(config, "model_type", None) != "gpt2":
        return f"fused implements GPT-2 only, not model_type '{getattr(config, 'model_type', None)}'"
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        return f"fused implements GPT-2's tanh GELU, not activation_function '{config.activation_function}'"
    if not config.scale_attn_weights or config.scale_attn_by_inverse_layer_idx:
        return "fused scales attention by 1/sqrt(head_dim) only, as GPT-2 does"
    if not getattr(config, "tie_word_embeddings", True):
        return "fused projects onto the tied input embedding; this model has a separate LM head"
    return None


def _contiguous(weight: torch.Tensor) -> torch.Tensor:
    # HF's Conv1D weights are (in, out) row-major already; a copy only if something changed that
    return weight if weight.is_contiguous() else weight.contiguous()


class Fused(Backend):
    name = "fused"
    devices = ("cuda",)
    dtypes = ("float32", "bfloat16")
    attn_implementation = "eager"
    description = ("static KV cache, decode step as 4 Triton kernels a layer + 1 for the head, "
                   "one CUDA graph replay; eager static-model prefill")

    def availability(self) -> str | None:
        try:
            import triton  # noqa: F401
        except ImportError:
            return "fused needs triton (pip install triton; the CUDA build of torch ships it)"
        return None

    def unsupported_reason(self, cell) -> str | None:
        if cell.model.family != "gpt2":
            return (f"fused kernels implement GPT-2's block (LayerNorm, GELU MLP, full multi-head attention); "
                    f"{cell.model.family} (RMSNorm, rotary positions, SwiGLU, grouped-query attention) is not covered yet")
        reason = super().unsupported_reason(cell)
        if reason:
            return reason
        spec = cell.model
        if cell.batch_size > MAX_BATCH:
            return f"fused kernels serve batch sizes up to {MAX_BATCH}, not {cell.batch_size}"
        if spec.n_embd > MAX_WIDTH:
            return f"fused kernels hold a row of the residual in registers: n_embd up to {MAX_WIDTH}, not {spec.n_embd}"
        if spec.inner > 4 * MAX_WIDTH:
            return f"fused kernels serve an MLP size up to {4 * MAX_WIDTH}, not {spec.inner}"
        if cell.prompt_len + cell.gen_len + 1 > spec.n_positions:
            return (f"prompt_len + gen_len ({cell.prompt_len + cell.gen_len}) does not fit the model's "
                    f"{spec.n_positions} positions")
        return None

    def prepare(self, model, cell) -> Session:
        reason = config_reason(model.config)
        if reason:
            raise Unsupported(reason)
        static = StaticGPT2(model, cell.batch_size, cell.prompt_len + cell.gen_len + 1)
        return FusedSession(static, cell.batch_size, cell.prompt_len)
