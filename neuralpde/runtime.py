"""Device choice and seeding: ``device: auto`` means CUDA when present, else CPU; a run is reproducible.

    >>> resolve_device("cpu")
    'cpu'
"""

from __future__ import annotations

import os
import random

import numpy as np

from .errors import CaseError


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` if torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CaseError(f"device {device!r} requested but torch sees no CUDA device", field="device",
                        fix="use device: auto or cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise CaseError(f"unknown device {device!r}", field="device", fix="use auto, cpu or cuda[:N]")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
