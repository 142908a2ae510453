"""What each backend supports, and whether it can run on this machine right now."""
from __future__ import annotations

from runner.plan import BACKEND_NAMES


def backend_capabilities() -> list[dict]:
    import torch

    from runner.backends import get_backend

    here = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name in BACKEND_NAMES:
        backend = get_backend(name)
        missing = backend.availability()
        usable = [d for d in backend.devices if d in here]
        rows.append({
            "backend": name,
            "devices": list(backend.devices),
            "dtypes": list(backend.dtypes),
            "phases": list(backend.phases),
            "available_here": missing or (", ".join(usable) if usable else f"needs {', '.join(backend.devices)}"),
            "description": backend.description,
        })
    return rows
