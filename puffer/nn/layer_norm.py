"""Layer normalization over the last axis, as torch.nn.LayerNorm: params `f"{prefix}g"` (scale) and `f"{prefix}b"`."""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.nn import init as _init


def init(be: Any, seed: _init.Seed, size: int, prefix: str = "", dtype: Any = np.float32) -> dict[str, Any]:
    """Scale ones and bias zeros; `seed` is unused and kept so every layer's `init` has the same shape."""
    params = {f"{prefix}g": np.ones((size,), dtype=dtype), f"{prefix}b": _init.zeros((size,), dtype)}
    return _init.to_backend(be, params)


def apply(be: Any, params: dict[str, Any], x: Any, eps: float = 1e-5, prefix: str = "") -> Any:
    """`(x - mean) / sqrt(var + eps) * g + b` with the biased variance over the last axis."""
    xp = be.xp
    d = x - xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean(d * d, axis=-1, keepdims=True)
    return d / xp.sqrt(var + eps) * params[f"{prefix}g"] + params[f"{prefix}b"]
