"""Multi-layer perceptron: linear layers `f"{prefix}{i}/w"`, `f"{prefix}{i}/b"` with an activation between them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from puffer.nn import init as _init
from puffer.nn import linear

ACTIVATIONS = ("tanh", "relu", "gelu", "identity")


def init(be: Any, seed: _init.Seed, sizes: Sequence[int], gain: float = math.sqrt(2.0), out_gain: float = 1.0,
         out_bias: float = 0.0, prefix: str = "", dtype: Any = np.float32) -> dict[str, Any]:
    """Orthogonal layers `sizes[0] -> ... -> sizes[-1]`: hidden layers with `gain`, the last with `out_gain`."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got sizes={list(sizes)}")
    rng = _init.rng(seed)
    params: dict[str, Any] = {}
    n = len(sizes) - 1
    for i in range(n):
        last = i == n - 1
        params.update(linear.init(None, rng, sizes[i], sizes[i + 1], gain=out_gain if last else gain,
                                  bias=out_bias if last else 0.0, prefix=f"{prefix}{i}/", dtype=dtype))
    return _init.to_backend(be, params)


def activate(be: Any, x: Any, activation: str) -> Any:
    """`x` through the named activation ("tanh", "relu", "gelu" or "identity")."""
    if activation == "tanh":
        return be.xp.tanh(x)
    if activation == "relu":
        return be.relu(x)
    if activation == "gelu":
        return be.gelu(x)
    if activation == "identity":
        return x
    raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")


def num_layers(params: dict[str, Any], prefix: str = "") -> int:
    """How many consecutive layers `f"{prefix}{i}/w"` the parameter dict holds."""
    n = 0
    while f"{prefix}{n}/w" in params:
        n += 1
    return n


def apply(be: Any, params: dict[str, Any], x: Any, activation: str = "tanh", prefix: str = "") -> Any:
    """The MLP's output; the activation follows every layer but the last."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    n = num_layers(params, prefix)
    if n == 0:
        raise KeyError(f"no MLP layers named {prefix!r}0/w in the parameters")
    for i in range(n):
        x = linear.apply(be, params, x, prefix=f"{prefix}{i}/")
        if i < n - 1:
            x = activate(be, x, activation)
    return x
