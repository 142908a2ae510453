"""Model shapes: the reference GPT-2 family, the Llama-style catalogue, depth x width x KV-heads
grids, local checkpoints, hub ids.

A shape names its architecture (`family`): `gpt2` (learned positions, LayerNorm, GELU MLP,
full multi-head attention), `llama` (RMSNorm, rotary positions, SwiGLU MLP, grouped-query
attention: `n_kv_head` key/value heads shared by `n_head` query heads) and `qwen2` (llama
with a bias on the query, key and value projections). Shapes are validated here, before
anything is built, so that a bad plan fails in milliseconds with the field named, not
minutes later inside transformers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vocabulary import FAMILIES

if TYPE_CHECKING:  # torch stays out of import time: the dashboard validates plans without it
    import torch

GPT2_VOCAB = 50257  # GPT-2's BPE vocabulary; the embedding is a large share of small models
GPT2_CONTEXT = 1024  # GPT-2's position table
LLAMA_VOCAB = 32000  # Llama 2's SentencePiece vocabulary (TinyLlama, MobileLLM): a custom llama's default
LLAMA_CONTEXT = 2048  # the context SmolLM2-135M, MobileLLM and TinyLlama were trained at
# Refuse shapes whose float32 weights alone exceed this: they cannot be a "small model" and
# would only fail later with an out-of-memory after a long build.
MAX_PARAMS = 20_000_000_000
MAX_VOCAB = 1_000_000  # Llama 3's 128k and Qwen's 152k fit with room; a typo of 10x does not
MAX_CONTEXT = 131072  # Llama 3.2's advertised context, the longest in the catalogue

Family = Literal[FAMILIES]  # vocabulary.FAMILIES: gpt2, llama, qwen2
FAMILY_NOTES = {
    "gpt2": "learned positions, LayerNorm, GELU MLP (4 x width), full multi-head attention",
    "llama": "rotary positions, RMSNorm, SwiGLU MLP, grouped-query attention (n_kv_head divides n_head)",
    "qwen2": "llama with a bias on the query, key and value projections",
}
# Checkpoint config.json model_type -> family (the only architectures built without remote code)
MODEL_TYPES = {"gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2"}
# Fields a GPT-2 shape had before families: a GPT-2 cell's key leaves the newer ones out,
# so a cell measured before them keeps its key (resume, reproducibility across runs).
FAMILY_FIELDS = ("family", "n_kv_head", "tie_embeddings")


def default_inner(family: str, n_embd: int) -> int:
    """The MLP size a shape of this family has unless it names one."""
    return 4 * n_embd if family == "gpt2" else swiglu_inner(n_embd)


def swiglu_inner(n_embd: int) -> int:
    """The default MLP size of a SwiGLU block: 8/3 x width rounded up to a multiple of 64.

    Three matrices of width x 8/3 width hold as many weights as GPT-2's two of width x 4 width
    (the LLaMA paper's choice); 64 keeps the matrices tile-friendly.
    """
    return 64 * math.ceil(8 * n_embd / 3 / 64)


class ModelSpec(BaseModel):
    """One decoder shape of one family. Parameters are counted from the built model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="label used in tables and charts, e.g. 'gpt2-5m' or '12x80'")
    family: Family = Field(default="gpt2", description="architecture: gpt2, llama or qwen2 (llama with QKV bias)")
    n_layer: int = Field(gt=0, le=512, description="depth: number of transformer blocks")
    n_embd: int = Field(gt=0, le=65536, description="width: hidden size")
    n_head: int = Field(gt=0, le=1024, description="query heads; must divide n_embd")
    n_kv_head: int | None = Field(default=None, gt=0, le=1024,
                                  description="key/value heads (grouped-query attention); must divide n_head; default n_head")
    n_inner: int | None = Field(default=None, gt=0, le=1 << 20,
                                description="MLP size; default 4 x n_embd (gpt2) or 8/3 x n_embd rounded up to 64 (llama, qwen2)")
    vocab_size: int | None = Field(default=None, gt=0, le=MAX_VOCAB, description="default 50257 (gpt2) or 32000 (llama, qwen2)")
    n_positions: int | None = Field(default=None, gt=0, le=MAX_CONTEXT, description="context length; default 1024 (gpt2) or 2048")
    tie_embeddings: bool = Field(default=True, description="the output projection shares the input embedding's weights")
    source: Literal["registry", "catalogue", "grid", "custom", "checkpoint", "hub"] = "custom"
    path: str | None = Field(default=None, description="checkpoint directory or hub id")

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Fill what the family decides (vocabulary, context, KV heads), so that a spec read
        back from JSON equals the one written and the store holds the values used."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        gpt2 = data.get("family", "gpt2") == "gpt2"
        if data.get("vocab_size") is None:
            data["vocab_size"] = GPT2_VOCAB if gpt2 else LLAMA_VOCAB
        if data.get("n_positions") is None:
            data["n_positions"] = GPT2_CONTEXT if gpt2 else LLAMA_CONTEXT
        if data.get("n_kv_head") is None and isinstance(data.get("n_head"), int):
            data["n_kv_head"] = data["n_head"]
        return data

    @model_validator(mode="after")
    def _check_shape(self) -> "ModelSpec":
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) "
                f"in model '{self.name}'"
            )
        if self.n_head % self.kv_heads != 0:
            raise ValueError(
                f"n_kv_head: {self.kv_heads} key/value heads do not divide the {self.n_head} query heads "
                f"(n_head) in model '{self.name}'"
            )
        if self.family != "gpt2" and self.head_dim % 2:
            raise ValueError(
                f"n_head: head_dim n_embd / n_head = {self.head_dim} must be even for rotary positions "
                f"in model '{self.name}'"
            )
        if self.family == "gpt2" and self.kv_heads != self.n_head:
            raise ValueError(
                f"n_kv_head: gpt2 has full multi-head attention (n_kv_head = n_head = {self.n_head}); "
                f"use family 'llama' for grouped-query attention in model '{self.name}'"
            )
        if self.approx_params() > MAX_PARAMS:
            raise ValueError(
                f"model '{self.name}' has about {self.approx_params() / 1e9:.0f}B parameters "
                f"(n_layer={self.n_layer}, n_embd={self.n_embd}); the limit is "
                f"{MAX_PARAMS / 1e9:.0f}B"
            )
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def inner(self) -> int:
        if self.n_inner is not None:
            return self.n_inner
        return default_inner(self.family, self.n_embd)

    @property
    def vocab(self) -> int:
        return int(self.vocab_size)  # filled by _family_defaults

    @property
    def context(self) -> int:
        return int(self.n_positions)  # filled by _family_defaults

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_width(self) -> int:
        """Keys (or values) stored per token and layer: n_kv_head x head_dim (n_embd for GPT-2)."""
        return self.kv_heads * self.head_dim

    def approx_params(self) -> int:
        """Closed-form count (tied embeddings once); equal to the build's for every family."""
        d, inner, vocab = self.n_embd, self.inner, self.vocab
        if self.family == "gpt2":
            per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
            head = 0 if self.tie_embeddings else vocab * d
            return vocab * d + self.context * d + self.n_layer * per_layer + 2 * d + head
        kv = self.kv_width
        bias = (d + 2 * kv) if self.family == "qwen2" else 0
        attention = d * d + 2 * d * kv + d * d + bias
        per_layer = attention + 3 * d * inner + 2 * d  # q, k, v, o; gate, up, down; two RMSNorms
        head = 0 if self.tie_embeddings else vocab * d
        return vocab * d + self.n_layer * per_layer + d + head

    def key_payload(self) -> dict:
        """The spec as a cell key sees it: a GPT-2 shape without the fields families added
        (they hold GPT-2's only values), so its key is the one it had before them."""
        payload = self.model_dump(mode="json")
        payload.pop("name", None)  # a renamed shape is the same cell
        if self.family == "gpt2" and self.kv_heads == self.n_head and self.tie_embeddings:
            for field in FAMILY_FIELDS:
                payload.pop(field, None)
        return payload

    def describe(self) -> str:
        """One line naming the whole shape: family, depth x width, heads / KV heads, MLP, vocab."""
        tied = "tied" if self.tie_embeddings else "untied"
        return (f"{self.family} {self.n_layer} x {self.n_embd}, {self.n_head}/{self.kv_heads} heads, "
                f"MLP {self.inner}, vocab {self.vocab}, {tied}")


def _ref(name: str, n_layer: int, n_embd: int, n_head: int) -> ModelSpec:
    return ModelSpec(name=name, n_layer=n_layer, n_embd=n_embd, n_head=n_head, source="registry")


# The reference family of DESIGN.md: similar parameter counts, very different depths.
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _ref("tiny-gpt2", 2, 2, 2),
        _ref("gpt2-5m", 12, 80, 2),
        _ref("gpt2-25m", 3, 384, 2),
        _ref("gpt2-45m", 6, 512, 8),
        _ref("gpt2-50m", 8, 512, 2),
        _ref("gpt2-75m", 5, 768, 2),
        _ref("gpt2-100m", 8, 768, 2),
    )
}


def _cat(name: str, family: str, n_layer: int, n_embd: int, n_head: int, n_kv_head: int, n_inner: int,
         vocab_size: int, n_positions: int, tie_embeddings: bool) -> ModelSpec:
    return ModelSpec(name=name, family=family, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_kv_head=n_kv_head,
                     n_inner=n_inner, vocab_size=vocab_size, n_positions=n_positions,
                     tie_embeddings=tie_embeddings, source="catalogue")


# The small Llama-style decoders people choose between, each from its published config.json
# (random weights: latency depends on the shapes only). Sources, one per entry:
CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # HuggingFaceTB/SmolLM2-135M: 30 layers, hidden 576, 9/3 heads, intermediate 1536, vocab 49152,
        # max_position_embeddings 2048, tied (https://www.anyiwn.com/jatingargiitk/SmolLM2, a copy of
        # its config; https://mintlify.wiki/kvark/meganeura/models/smollm2)
        _cat("SmolLM2-135M", "llama", 30, 576, 9, 3, 1536, 49152, 2048, True),
        # facebook/MobileLLM-125M: 30 layers, 9/3 heads, token dimension 576, 2k context, shared
        # embeddings, 124.6M parameters (its model card, https://huggingface.co/facebook/MobileLLM-125M);
        # MLP 1536 and Llama 2's vocabulary of 32000 are its config.json's: with them the count built
        # here is the card's 124.6M
        _cat("MobileLLM-125M", "llama", 30, 576, 9, 3, 1536, 32000, 2048, True),
        # HuggingFaceTB/SmolLM2-360M: 32 layers, hidden 960, 15/5 heads, intermediate 2560, vocab 49152,
        # 8192 positions, tied (http://204.152.198.140/phanerozoic/8bit-threshold-computer/blob/main/
        # llm_integration/smollm2/SMOLLM2_ARCHITECTURE.md, its config read with transformers)
        _cat("SmolLM2-360M", "llama", 32, 960, 15, 5, 2560, 49152, 8192, True),
        # Qwen/Qwen2.5-0.5B: Qwen2ForCausalLM (QKV bias), 24 layers, hidden 896, 14/2 heads, 32768
        # context, tied (https://www.fitmygpu.com/models/qwen-2.5-0.5b); intermediate 4864 and vocab
        # 151936, shared with Qwen2-0.5B (https://apxml.com/models/qwen2-0-5b)
        _cat("Qwen2.5-0.5B", "qwen2", 24, 896, 14, 2, 4864, 151936, 32768, True),
        # TinyLlama/TinyLlama-1.1B: 22 layers, 32 heads in 4 query groups, embedding 2048, intermediate
        # 5632, sequence length 2048, Llama 2's architecture and tokenizer (vocab 32000, untied)
        # (https://huggingface.co/jncraton/TinyLlama-1.1B-step-50K-105b-ct2-int8, the model card)
        _cat("TinyLlama-1.1B", "llama", 22, 2048, 32, 4, 5632, 32000, 2048, False),
        # meta-llama/Llama-3.2-1B: 16 layers, hidden 2048, 32/8 heads, intermediate 8192, vocab 128256,
        # max_position_embeddings 131072, tie_word_embeddings true (LlamaConfig.from_pretrained of
        # meta-llama/Llama-3.2-1B-Instruct, quoted in a public kernel source found by code search)
        _cat("Llama-3.2-1B", "llama", 16, 2048, 32, 8, 8192, 128256, 131072, True),
    )
}


def get_registered(name: str) -> ModelSpec:
    """Look a reference or catalogue model up by name, listing the known names when it is missing."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in CATALOGUE:
        return CATALOGUE[name]
    raise ValueError(f"unknown model '{name}'; known: {', '.join([*REGISTRY, *CATALOGUE])}")


def grid(depths: list[int], widths: list[int], n_head: int = 2, *, family: str = "gpt2",
         kv_heads: list[int] | None = None, n_inner: int | None = None,
         vocab_size: int | None = None, n_positions: int | None = None,
         tie_embeddings: bool = True) -> list[ModelSpec]:
    """A full depth x width (x KV heads) factorial, so regressions see each vary independently."""
    out = []
    for d in depths:
        for w in widths:
            for kv in kv_heads or [n_head]:
                suffix = f"-kv{kv}" if kv_heads else ""
                out.append(ModelSpec(name=f"{d}x{w}{suffix}", family=family, n_layer=d, n_embd=w, n_head=n_head,
                                     n_kv_head=kv, n_inner=n_inner, vocab_size=vocab_size, n_positions=n_positions,
                                     tie_embeddings=tie_embeddings, source="grid"))
    return out


def width_for_budget(params: int, n_layer: int, *, family: str, heads_of: Callable[[int], int],
                     n_kv_head: int | None, multiple: int, vocab_size: int | None = None,
                     n_positions: int | None = None, tie_embeddings: bool = True, max_width: int = 16384) -> int:
    """The width (a multiple of `multiple`) whose shape at this depth comes closest to `params`
    parameters: MobileLLM's question, deep-and-thin versus shallow-and-wide at one budget,
    asked directly. `heads_of(width)` gives the query heads of a width; counts are closed-form
    (nothing is built or validated while searching)."""
    gpt2 = family == "gpt2"
    vocab = vocab_size or (GPT2_VOCAB if gpt2 else LLAMA_VOCAB)
    context = n_positions or (GPT2_CONTEXT if gpt2 else LLAMA_CONTEXT)

    def count(width: int) -> int:
        heads = heads_of(width)
        return ModelSpec.model_construct(
            name="budget", family=family, n_layer=n_layer, n_embd=width, n_head=heads, n_kv_head=n_kv_head or heads,
            n_inner=None, vocab_size=vocab, n_positions=context, tie_embeddings=tie_embeddings).approx_params()

    low, high = 1, max(1, max_width // multiple)  # in units of `multiple`; the count grows with the width
    while low < high:
        mid = (low + high) // 2
        if count(mid * multiple) < params:
            low = mid + 1
        else:
            high = mid
    candidates = [c for c in (low - 1, low) if c >= 1]
    return multiple * min(candidates, key=lambda c: abs(count(c * multiple) - params))


def _checkpoint_spec(config: dict, name: str, path: Path) -> ModelSpec:
    """A spec from a config.json of a family this tool builds, refusing remote code first."""
    where = f"checkpoint '{path}'"
    if config.get("auto_map") or config.get("trust_remote_code"):
        raise ValueError(f"{where}: config.json field auto_map asks for remote code; "
                         "only built-in architectures (gpt2, llama, qwen2) are loaded")
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{where}: model_type '{model_type}' is not one of {', '.join(MODEL_TYPES)}")
    family = MODEL_TYPES[model_type]
    if family == "gpt2":
        return ModelSpec(name=name, n_layer=config["n_layer"], n_embd=config["n_embd"], n_head=config["n_head"],
                         n_inner=config.get("n_inner"), vocab_size=config["vocab_size"],
                         n_positions=config["n_positions"], tie_embeddings=config.get("tie_word_embeddings", True),
                         source="checkpoint", path=str(path))
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim")
    if head_dim is not None and heads and hidden % heads == 0 and head_dim != hidden // heads:
        raise ValueError(f"{where}: head_dim {head_dim} is not hidden_size / num_attention_heads "
                         f"({hidden} / {heads}); only that layout is supported")
    if family == "llama" and (config.get("attention_bias") or config.get("mlp_bias")):
        raise ValueError(f"{where}: attention_bias/mlp_bias are not supported for llama shapes")
    return ModelSpec(name=name, family=family, n_layer=config["num_hidden_layers"], n_embd=hidden, n_head=heads,
                     n_kv_head=config.get("num_key_value_heads") or heads, n_inner=config["intermediate_size"],
                     vocab_size=config["vocab_size"], n_positions=config["max_position_embeddings"],
                     tie_embeddings=bool(config.get("tie_word_embeddings", False)),
                     source="checkpoint", path=str(path))


def spec_from_checkpoint(path: str | Path, name: str | None = None) -> ModelSpec:
    """Read a local checkpoint's config.json (gpt2, llama or qwen2); refuse anything that is
    not safetensors, and any config that asks for remote code."""
    path = Path(path).expanduser()
    config_file = path / "config.json"
    if not path.is_dir() or not config_file.exists():
        raise ValueError(f"checkpoint path '{path}' is not a directory with a config.json")
    if not list(path.glob("*.safetensors")):
        raise ValueError(
            f"checkpoint '{path}' has no .safetensors weights; only safetensors are loaded "
            "(pickle-based .bin files can run code on load)"
        )
    return _checkpoint_spec(json.loads(config_file.read_text()), name or path.name, path)


def resolve_hub_id(model_id: str) -> Path:
    """Find a hub model (e.g. 'Crusadersk/gpt2-25m') online or in the local cache.

    Downloads safetensors and config only when the machine is online; falls back to the
    local cache; otherwise says that neither worked, rather than hanging or tracebacking.
    """
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors"]
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except Exception as online_error:  # noqa: BLE001 - any network failure means "try the cache"
        try:
            return Path(snapshot_download(model_id, allow_patterns=patterns, local_files_only=True))
        except Exception:  # noqa: BLE001
            raise ValueError(
                f"hub model '{model_id}' could not be downloaded ({type(online_error).__name__}) "
                "and is not in the local Hugging Face cache"
            ) from None


def hf_config(spec: ModelSpec):
    """The transformers config of a spec (GPT2Config, LlamaConfig or Qwen2Config), with
    every dropout at 0 (inference only)."""
    if spec.family == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            n_layer=spec.n_layer,
            n_embd=spec.n_embd,
            n_head=spec.n_head,
            n_inner=spec.n_inner,
            vocab_size=spec.vocab,
            n_positions=spec.context,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=spec.tie_embeddings,
            # GPT-2's end-of-text id is 50256; keep it inside a smaller custom vocabulary
            bos_token_id=min(50256, spec.vocab - 1),
            eos_token_id=min(50256, spec.vocab - 1),
        )
    from transformers import LlamaConfig, Qwen2Config

    config_class = LlamaConfig if spec.family == "llama" else Qwen2Config
    return config_class(
        num_hidden_layers=spec.n_layer,
        hidden_size=spec.n_embd,
        num_attention_heads=spec.n_head,
        num_key_value_heads=spec.kv_heads,
        intermediate_size=spec.inner,
        vocab_size=spec.vocab,
        max_position_embeddings=spec.context,
        tie_word_embeddings=spec.tie_embeddings,
        attention_dropout=0.0,
        bos_token_id=min(1, spec.vocab - 1),
        eos_token_id=min(2, spec.vocab - 1),
        pad_token_id=None,
    )


def build_model(
    spec: ModelSpec,
    *,
    attn_implementation: str = "eager",
    dtype: "torch.dtype | None" = None,
    device: str = "cpu",
    seed: int = 0,
):
    """Build the model in eval mode: random init with a fixed seed, or the checkpoint's weights.

    Latency does not depend on weight values, so random init is as good as trained weights
    for timing; the seed keeps outputs reproducible for the correctness gate.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    if spec.source in ("checkpoint", "hub") and spec.path:
        model = AutoModelForCausalLM.from_pretrained(
            spec.path,
            attn_implementation=attn_implementation,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=False,
        )
    else:
        # Initialise in float32 and cast: initialising directly in bfloat16 draws different
        # weights from the same seed, and the correctness gate needs the same model.
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(
            hf_config(spec), attn_implementation=attn_implementation, dtype=torch.float32
        ).to(dtype)
    return model.to(device).eval()


def count_params(model) -> int:
    """Unique parameters: the tied input/output embedding counts once."""
    seen = {}
    for param in model.parameters():
        seen[param.data_ptr()] = param.numel()
    return sum(seen.values())


def make_inputs(cell, seed: int) -> "torch.Tensor":
    """Random prompt token ids from a seeded generator (never zeros), on the cell's device."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cell.model.vocab, (cell.batch_size, cell.prompt_len), generator=generator)
    return ids.to(cell.device)
