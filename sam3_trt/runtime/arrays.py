"""Helpers for code that takes torch tensors or numpy arrays without importing torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (a finder that refuses it counts as absent)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def is_torch_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (checked by type, so torch is never imported here)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array (torch tensors are detached and copied to the host; dtype kept)."""
    if isinstance(x, np.ndarray):
        return x
    if is_torch_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_float32(x: Any) -> np.ndarray:
    """``x`` as a float32 numpy array on the host (torch tensors of any float type, bfloat16 included)."""
    if is_torch_tensor(x):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
