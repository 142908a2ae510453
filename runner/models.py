"""Model shapes: the reference GPT-2 family, depth x width grids, local checkpoints, hub ids.

Shapes are validated here, before anything is built, so that a bad plan fails in
milliseconds with the field named, not minutes later inside transformers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # torch stays out of import time: the dashboard validates plans without it
    import torch

GPT2_VOCAB = 50257  # GPT-2's BPE vocabulary; the embedding is a large share of small models
GPT2_CONTEXT = 1024  # GPT-2's position table
# Refuse shapes whose float32 weights alone exceed this: they cannot be a "small model" and
# would only fail later with an out-of-memory after a long build.
MAX_PARAMS = 20_000_000_000


class ModelSpec(BaseModel):
    """One GPT-2 shape. Parameters are counted from the built model, not from this spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="label used in tables and charts, e.g. 'gpt2-5m' or '12x80'")
    n_layer: int = Field(gt=0, le=512, description="depth: number of transformer blocks")
    n_embd: int = Field(gt=0, le=65536, description="width: hidden size")
    n_head: int = Field(gt=0, le=1024, description="attention heads; must divide n_embd")
    n_inner: int | None = Field(default=None, gt=0, description="MLP size; default 4 x n_embd")
    vocab_size: int = Field(default=GPT2_VOCAB, gt=0, le=1_000_000)
    n_positions: int = Field(default=GPT2_CONTEXT, gt=0, le=131072)
    source: Literal["registry", "grid", "custom", "checkpoint", "hub"] = "custom"
    path: str | None = Field(default=None, description="checkpoint directory or hub id")

    @model_validator(mode="after")
    def _check_shape(self) -> "ModelSpec":
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) "
                f"in model '{self.name}'"
            )
        if self.approx_params() > MAX_PARAMS:
            raise ValueError(
                f"model '{self.name}' has about {self.approx_params() / 1e9:.0f}B parameters "
                f"(n_layer={self.n_layer}, n_embd={self.n_embd}); the limit is "
                f"{MAX_PARAMS / 1e9:.0f}B"
            )
        return self

    @property
    def inner(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def approx_params(self) -> int:
        """Closed-form GPT-2 count (tied embeddings once); the build's count is authoritative."""
        d, inner = self.n_embd, self.inner
        per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
        return self.vocab_size * d + self.n_positions * d + self.n_layer * per_layer + 2 * d


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


def get_registered(name: str) -> ModelSpec:
    """Look a reference model up by name, listing the known names when it is missing."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model '{name}'; known: {', '.join(REGISTRY)}"
        ) from None


def grid(depths: list[int], widths: list[int], n_head: int = 2) -> list[ModelSpec]:
    """A full depth x width factorial, so regressions see depth and width vary independently."""
    return [
        ModelSpec(name=f"{d}x{w}", n_layer=d, n_embd=w, n_head=n_head, source="grid")
        for d in depths
        for w in widths
    ]


def spec_from_checkpoint(path: str | Path, name: str | None = None) -> ModelSpec:
    """Read a local GPT-2 checkpoint's config.json; refuse anything that is not safetensors."""
    path = Path(path).expanduser()
    config_file = path / "config.json"
    if not path.is_dir() or not config_file.exists():
        raise ValueError(f"checkpoint path '{path}' is not a directory with a config.json")
    if not list(path.glob("*.safetensors")):
        raise ValueError(
            f"checkpoint '{path}' has no .safetensors weights; only safetensors are loaded "
            "(pickle-based .bin files can run code on load)"
        )
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "gpt2":
        raise ValueError(
            f"checkpoint '{path}' is model_type '{config.get('model_type')}'; only gpt2 is supported"
        )
    return ModelSpec(
        name=name or path.name,
        n_layer=config["n_layer"],
        n_embd=config["n_embd"],
        n_head=config["n_head"],
        n_inner=config.get("n_inner"),
        vocab_size=config["vocab_size"],
        n_positions=config["n_positions"],
        source="checkpoint",
        path=str(path),
    )


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
    """The transformers GPT2Config for a spec, with every dropout at 0 (inference only)."""
    from transformers import GPT2Config

    return GPT2Config(
        n_layer=spec.n_layer,
        n_embd=spec.n_embd,
        n_head=spec.n_head,
        n_inner=spec.n_inner,
        vocab_size=spec.vocab_size,
        n_positions=spec.n_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        # GPT-2's end-of-text id is 50256; keep it inside a smaller custom vocabulary
        bos_token_id=min(50256, spec.vocab_size - 1),
        eos_token_id=min(50256, spec.vocab_size - 1),
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
    from transformers import GPT2LMHeadModel

    dtype = dtype or torch.float32
    if spec.source in ("checkpoint", "hub") and spec.path:
        model = GPT2LMHeadModel.from_pretrained(
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
        model = GPT2LMHeadModel._from_config(
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
    ids = torch.randint(0, cell.model.vocab_size, (cell.batch_size, cell.prompt_len), generator=generator)
    return ids.to(cell.device)
