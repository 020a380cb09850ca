"""Where tensors go and in which precision: the one device rule and the one dtype rule.

>>> resolve_dtype("auto", "cpu")
torch.float32
"""

from __future__ import annotations

from .config import DTYPES


def default_device() -> str:
    """``cuda`` when a CUDA GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str | None = None):
    """A torch dtype from a profile's ``model.dtype``: ``auto`` is bfloat16 on a GPU that supports it, float16
    on an older GPU and float32 on a CPU; any other value names a torch dtype (``float32``, ``bfloat16``)."""
    import torch

    if dtype == "auto":
        if (device or default_device()).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"model.dtype {dtype!r} is not a torch dtype; use one of {DTYPES}")
    return value
