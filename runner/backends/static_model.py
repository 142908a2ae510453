"""The static-KV-cache model of a built HF model, whatever its family."""
from __future__ import annotations


def static_model(hf_model, batch_size: int, max_len: int):
    """StaticGPT2 for GPT-2, StaticLlama for llama and qwen2 (the QKV bias rides on the
    projections), over the HF model's own weights."""
    model_type = getattr(hf_model.config, "model_type", None)
    if model_type == "gpt2":
        from runner.backends.static_gpt2 import StaticGPT2

        return StaticGPT2(hf_model, batch_size, max_len)
    if model_type in ("llama", "qwen2"):
        from runner.backends.static_llama import StaticLlama

        return StaticLlama(hf_model, batch_size, max_len)
    raise ValueError(f"no static-cache model for model_type '{model_type}'")
