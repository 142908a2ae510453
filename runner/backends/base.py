"""The backend interface: what a backend supports, and the step-wise session it prepares.

Every step-based backend exposes the same two calls, so the protocol (warm-up, phases,
correctness gate) is written once: `prefill(ids)` resets the KV cache, runs the prompt and
returns the last position's logits; `decode(tokens)` appends one token per sequence and
returns its logits.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from vocabulary import DEVICES, DTYPES, PHASES

if TYPE_CHECKING:
    import torch

    from runner.plan import Cell


class Unsupported(Exception):
    """This backend cannot run this cell here; the cell is stored as unsupported with the reason."""


class Session(ABC):
    """A prepared model on one device for one (batch, prompt_len, gen_len) shape."""

    @abstractmethod
    def prefill(self, input_ids: "torch.Tensor") -> "torch.Tensor":
        """Fill a fresh KV cache with the prompt; return logits of the last position (B, V)."""

    @abstractmethod
    def decode(self, tokens: "torch.Tensor") -> "torch.Tensor":
        """Append tokens (B, 1) to the cache; return their logits (B, V)."""

    def close(self) -> None:
        """Release what the session holds (graphs, caches)."""


class Backend(ABC):
    name: str = ""
    devices: tuple[str, ...] = DEVICES
    dtypes: tuple[str, ...] = DTYPES
    phases: tuple[str, ...] = PHASES
    description: str = ""
    # Who allocates the device memory: "torch" when torch.cuda's peak counters see it all.
    device_allocator: str = "torch"

    def unsupported_reason(self, cell: "Cell") -> str | None:
        """Why this cell cannot run here, or None. Checked before any model is built."""
        if cell.device not in self.devices:
            return f"{self.name} runs on {', '.join(self.devices)}, not {cell.device}"
        if cell.dtype not in self.dtypes:
            return f"{self.name} supports dtypes {', '.join(self.dtypes)}, not {cell.dtype}"
        if cell.device == "cpu" and cell.dtype == "float16":
            return "float16 matrix products on the CPU are emulated and not representative; use bfloat16"
        return None

    def availability(self) -> str | None:
        """Why this backend cannot run on this machine at all (missing package), or None."""
        return None

    @abstractmethod
    def prepare(self, model, cell: "Cell") -> Session:
        """Make a session from a built model (compile, capture...). Timed as setup."""
