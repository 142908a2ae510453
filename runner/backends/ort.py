"""ONNX Runtime over the static-KV-cache model (GPT-2, llama, qwen2): one prefill graph and one decode-step graph.

The graphs are functional: the whole cache (layers, batch, KV heads, max_len, head_dim) goes
in and the updated cache comes out, so each graph has fixed shapes and no state. The
session keeps two cache buffers and swaps them every call (a step reads one and writes the
other), binding inputs and outputs by pointer with I/O binding: nothing is allocated or
copied between the engine and torch inside a timed region, on the CPU or on the GPU.

Export (TorchScript exporter, `dynamo=False`: it traces this small fixed-shape module in
seconds and needs no onnxscript) and session creation are setup.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from runner.backends.base import Backend, Session, Unsupported
from runner.backends.static_gpt2 import StaticGPT2
from runner.backends.static_llama import StaticLlama

# Opset 17 has LayerNormalization, which ORT fuses; any opset >= 14 exports SDPA.
OPSET = 17


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def write_slots(slots: torch.Tensor, cache: torch.Tensor, new: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """The cache with `new` written at `input_pos`, as a new tensor (the graph is functional)."""
    length = new.shape[2]
    if length > 1:  # prefill: positions 0..length-1, fixed at export
        return torch.cat([new, cache[:, :, length:]], dim=2)
    hit = (slots == input_pos)[None, None, :, None]
    return torch.where(hit, new, cache)


class FunctionalStaticGPT2(StaticGPT2):
    """StaticGPT2's math with the cache as graph inputs and outputs instead of buffers.

    Prefill (T > 1 tokens at positions 0..T-1) overwrites the first T slots; a decode step
    (T = 1) writes the slot `input_pos` with a one-hot select. Both are plain elementwise
    ops that every exporter and provider handles; slots past the position are masked.
    """

    def __init__(self, hf_model, batch_size: int, max_len: int) -> None:
        super().__init__(hf_model, batch_size, max_len=max_len)
        self.k_cache, self.v_cache = [], []  # the buffers live in the session, not here
        self.max_len = max_len
        self.slots = torch.arange(max_len, device=self.wte.device)

    def cache_shape(self, batch_size: int) -> tuple[int, ...]:
        return (len(self.blocks), batch_size, self.n_head, self.max_len, self.head_dim)

    @property
    def vocab(self) -> int:
        return self.wte.shape[0]

    def _write(self, cache: torch.Tensor, new: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return write_slots(self.slots, cache, new, input_pos)

    def forward(self, input_ids, input_pos, k_cache, v_cache):
        x = F.embedding(input_ids, self.wte) + F.embedding(input_pos, self.wpe)[None]
        mask = self.causal[input_pos][None, None]
        batch, length, width = x.shape
        new_k, new_v = [], []
        for index, block in enumerate(self.blocks):
            h = F.layer_norm(x, (width,), block.ln_1.weight, block.ln_1.bias, self.eps)
            qkv = torch.addmm(block.attn.c_attn.bias, h.reshape(-1, width), block.attn.c_attn.weight)
            q, k, v = qkv.view(batch, length, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
            k_all = self._write(k_cache[index], k, input_pos)
            v_all = self._write(v_cache[index], v, input_pos)
            new_k.append(k_all)
            new_v.append(v_all)
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
            y = torch.addmm(block.attn.c_proj.bias, y.transpose(1, 2).reshape(-1, width), block.attn.c_proj.weight)
            x = x + y.view(batch, length, width)
            h = F.layer_norm(x, (width,), block.ln_2.weight, block.ln_2.bias, self.eps)
            x = x + self._mlp(block, h)
        last = F.layer_norm(x[:, -1], (width,), self.ln_f.weight, self.ln_f.bias, self.eps)
        return last @ self.wte.t(), torch.stack(new_k), torch.stack(new_v)


class FunctionalStaticLlama(StaticLlama):
    """StaticLlama's math with the cache as graph inputs and outputs (as FunctionalStaticGPT2),
    and the KV heads expanded before attention: the exporter has no grouped-query SDPA."""

    expand_kv_heads = True

    def __init__(self, hf_model, batch_size: int, max_len: int) -> None:
        super().__init__(hf_model, batch_size, max_len=max_len)
        self.k_cache, self.v_cache = [], []  # the buffers live in the session, not here
        self.slots = torch.arange(max_len, device=self.wte.device)

    def forward(self, input_ids, input_pos, k_cache, v_cache):
        new_k, new_v = [], []

        def write(index, k, v, pos):
            k_all = write_slots(self.slots, k_cache[index], k, pos)
            v_all = write_slots(self.slots, v_cache[index], v, pos)
            new_k.append(k_all)
            new_v.append(v_all)
            return k_all, v_all

        logits = self.decoder(input_ids, input_pos, write)
        return logits, torch.stack(new_k), torch.stack(new_v)


def functional_static_model(hf_model, batch_size: int, max_len: int):
    """The functional static model of a built HF model, by its family."""
    if hf_model.config.model_type == "gpt2":
        return FunctionalStaticGPT2(hf_model, batch_size, max_len)
    return FunctionalStaticLlama(hf_model, batch_size, max_len)


def export_graphs(model: FunctionalStaticGPT2 | FunctionalStaticLlama, batch_size: int, prompt_len: int,
                  directory: Path) -> tuple[Path, Path]:
    """Write prefill.onnx (batch x prompt_len tokens) and decode.onnx (batch x 1 token)."""
    device = model.wte.device
    cache = torch.zeros(model.cache_shape(batch_size), dtype=model.wte.dtype, device=device)
    paths = []
    for name, length in (("prefill", prompt_len), ("decode", 1)):
        ids = torch.zeros((batch_size, length), dtype=torch.long, device=device)
        pos = torch.arange(length, device=device) + (prompt_len if length == 1 else 0)
        path = directory / f"{name}.onnx"
        torch.onnx.export(
            model, (ids, pos, cache, cache), str(path),
            input_names=["input_ids", "input_pos", "k_cache", "v_cache"],
            output_names=["logits", "k_out", "v_out"],
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
        paths.append(path)
    return paths[0], paths[1]


class OrtSession(Session):
    """Prefill and decode through two ORT sessions sharing ping-pong cache buffers."""

    def __init__(self, ort, prefill_path: Path, decode_path: Path, model: FunctionalStaticGPT2 | FunctionalStaticLlama,
                 batch_size: int, prompt_len: int, device: str) -> None:
        self.device = device
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The same thread count as torch's backends use here: a fair comparison on the CPU.
        options.intra_op_num_threads = torch.get_num_threads()
        if device == "cuda":
            index = torch.cuda.current_device()
            # ORT works on torch's current stream: CUDA-event timers bracket its kernels and
            # no cross-stream synchronisation is needed around a step.
            providers = [("CUDAExecutionProvider", {
                "device_id": index,
                "user_compute_stream": str(torch.cuda.current_stream().cuda_stream),
            })]
            self.ort_device = ("cuda", index)
            # Everything is ordered on that one stream: no host wait at the end of each run,
            # like the other GPU backends (the timer synchronises when it reads its events).
            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        else:
            self.run_options = None
            providers = ["CPUExecutionProvider"]
            self.ort_device = ("cpu", 0)
        self.sessions = {
            name: ort.InferenceSession(str(path), sess_options=options, providers=providers)
            for name, path in (("prefill", prefill_path), ("decode", decode_path))
        }
        expected = providers[0] if isinstance(providers[0], str) else providers[0][0]
        for name, sess in self.sessions.items():
            if sess.get_providers()[0] != expected:
                raise Unsupported(f"onnxruntime fell back to {sess.get_providers()} for the {name} graph")
        self.bindings = {name: sess.io_binding() for name, sess in self.sessions.items()}
        cache_shape = model.cache_shape(batch_size)
        dtype = model.wte.dtype
        self.k = [torch.zeros(cache_shape, dtype=dtype, device=device) for _ in range(2)]
        self.v = [torch.zeros(cache_shape, dtype=dtype, device=device) for _ in range(2)]
        self.current = 0  # index of the buffer pair holding the valid cache
        self.ids = torch.zeros((batch_size, prompt_len), dtype=torch.long, device=device)
        self.tokens = torch.zeros((batch_size, 1), dtype=torch.long, device=device)
        self.prompt_pos = torch.arange(prompt_len, device=device)
        self.step_pos = torch.zeros((1,), dtype=torch.long, device=device)
        self.logits_shape = (batch_size, model.vocab)
        self.pos = prompt_len
        self._np_dtype = {torch.float32: "float32", torch.float16: "float16"}[dtype]

    def _bind(self, binding, name: str, tensor: torch.Tensor, output: bool = False) -> None:
        import numpy as np

        element = np.int64 if tensor.dtype == torch.long else np.dtype(self._np_dtype)
        kind, index = self.ort_device
        bind = binding.bind_output if output else binding.bind_input
        bind(name, kind, index, element, tuple(tensor.shape), tensor.data_ptr())

    def _run(self, name: str, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        src, dst = self.current, 1 - self.current
        binding = self.bindings[name]
        self._bind(binding, "input_ids", ids)
        self._bind(binding, "input_pos", pos)
        self._bind(binding, "k_cache", self.k[src])
        self._bind(binding, "v_cache", self.v[src])
        # A fresh logits tensor per call (as eager torch returns): callers may keep them.
        logits = torch.empty(self.logits_shape, dtype=self.k[0].dtype, device=self.device)
        self._bind(binding, "logits", logits, output=True)
        self._bind(binding, "k_out", self.k[dst], output=True)
        self._bind(binding, "v_out", self.v[dst], output=True)
        self.sessions[name].run_with_iobinding(binding, self.run_options)
        self.current = dst
        return logits

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.ids.copy_(input_ids)
        self.pos = input_ids.shape[1]
        return self._run("prefill", self.ids, self.prompt_pos)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.step_pos.fill_(self.pos)
        logits = self._run("decode", self.tokens, self.step_pos)
        self.pos += 1
        return logits

    def close(self) -> None:
        self.sessions.clear()
        self.bindings.clear()
        self.k = self.v = []


class OnnxRuntime(Backend):
    name = "onnxruntime"
    dtypes = ("float32",)
    attn_implementation = "eager"
    # weights and activations live in ORT's arena, which reports no peak to Python
    device_allocator = "onnxruntime"
    description = (
        "ONNX Runtime (CPU provider, or CUDA provider with I/O binding): static-KV-cache "
        "model (gpt2, llama, qwen2) exported as a prefill graph and a decode-step graph"
    )

    def availability(self) -> str | None:
        if _onnxruntime() is None:
            return "onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
        return None

    def unsupported_reason(self, cell) -> str | None:
        if cell.dtype != "float32":
            return (
                f"onnxruntime runs float32 here: its CPU provider has no {cell.dtype} kernels for "
                "MatMul/attention, and half-precision graphs are not exported by this backend"
            )
        reason = super().unsupported_reason(cell)
        if reason:
            return reason
        ort = _onnxruntime()
        if cell.device == "cuda" and ort is not None:
            providers = ort.get_available_providers()
            if "CUDAExecutionProvider" not in providers:
                return (
                    f"onnxruntime {ort.__version__} has no CUDAExecutionProvider here "
                    f"(providers: {', '.join(providers)}); install onnxruntime-gpu"
                )
        return None

    def prepare(self, model, cell) -> Session:
        ort = _onnxruntime()
        max_len = cell.prompt_len + cell.gen_len + 1
        # Tracing for export records ops; inference mode would make its inputs unusable there.
        with torch.inference_mode(False), torch.no_grad():
            functional = functional_static_model(model, cell.batch_size, max_len)
            with tempfile.TemporaryDirectory(prefix="shapebench-onnx-") as tmp, warnings.catch_warnings():
                # The trace is exact for the fixed shapes it is exported at; its warnings say
                # that shapes are constants, which is the design.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                prefill_path, decode_path = export_graphs(functional, cell.batch_size, cell.prompt_len, Path(tmp))
                # ORT loads the graphs (weights included) into memory: the files can go.
                return OrtSession(ort, prefill_path, decode_path, functional, cell.batch_size, cell.prompt_len, cell.device)
