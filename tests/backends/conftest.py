"""Without a GPU, Triton kernels in these tests run through Triton's interpreter.

Triton reads TRITON_INTERPRET=1 when a kernel is decorated, its own library functions
included, so the flag must be set before anything imports triton: this conftest is loaded
when pytest collects this folder, before its test modules are imported (and nothing
collected earlier imports triton). With a GPU the flag stays unset and the compiled kernels
run. The interpreter runs no CUDA code, so setting it for the rest of a CPU-only session
changes nothing else.
"""
from __future__ import annotations

import os

try:
    import torch
except ImportError:  # the hosted, torch-free install: these tests skip themselves
    torch = None

if torch is not None and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
