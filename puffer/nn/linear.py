"""Affine layer `x @ w + b` with `w` [in, out] (the transpose of torch.nn.Linear.weight) and `b` [out].

Parameter names are `f"{prefix}w"` and `f"{prefix}b"`; the prefix is prepended as given, so pass
e.g. "actor/0/" to get "actor/0/w".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.nn import init as _init


def init(be: Any, seed: _init.Seed, in_size: int, out_size: int, gain: float = 1.0, bias: float = 0.0,
         std: float | None = None, prefix: str = "", dtype: Any = np.float32) -> dict[str, Any]:
    """Orthogonal weights times `gain` (Normal(0, `std`) when `std` is given) and constant bias."""
    rng = _init.rng(seed)
    if std is None:
        w = _init.orthogonal(rng, (in_size, out_size), gain, dtype)
    else:
        w = _init.normal(rng, (in_size, out_size), std, dtype)
    b = np.full((out_size,), bias, dtype=dtype)
    return _init.to_backend(be, {f"{prefix}w": w, f"{prefix}b": b})


def apply(be: Any, params: dict[str, Any], x: Any, prefix: str = "") -> Any:
    """`x @ w + b` over the last axis of `x`."""
    return x @ params[f"{prefix}w"] + params[f"{prefix}b"]
