"""Embedding table `f"{prefix}w"` [num, dim]: integer indices of any shape -> vectors [..., dim]."""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.nn import init as _init


def init(be: Any, seed: _init.Seed, num: int, dim: int, std: float = 1.0, prefix: str = "",
         dtype: Any = np.float32) -> dict[str, Any]:
    """Normal(0, `std`) rows, as torch.nn.Embedding (std 1) by default."""
    return _init.to_backend(be, {f"{prefix}w": _init.normal(_init.rng(seed), (num, dim), std, dtype)})


def apply(be: Any, params: dict[str, Any], idx: Any, prefix: str = "") -> Any:
    """Rows of the table at `idx`, shape `(*idx.shape, dim)`."""
    xp = be.xp
    w = params[f"{prefix}w"]
    # the array API's take wants 1-d indices: gather flat, then restore the index shape
    rows = xp.take(w, xp.reshape(idx, (-1,)), axis=0)
    return xp.reshape(rows, (*tuple(idx.shape), w.shape[-1]))
