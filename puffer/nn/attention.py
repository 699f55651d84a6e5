"""Causal multi-head self-attention block, pre-LN (GPT-2 style): x + MHA(LN(x)), then + MLP(LN(x)) with GELU.

Parameters (D = d_model = n_heads * head_dim):
- `ln1/g`, `ln1/b`, `ln2/g`, `ln2/b` [D]: the two layer norms;
- `attn/qkv/w` [D, 3, n_heads, head_dim], `attn/qkv/b` [3, n_heads, head_dim]: the fused q, k, v
  projection, stored per head so `apply` reads the head count from the shapes (torch's
  MultiheadAttention `in_proj_weight.T.reshape(D, 3, n_heads, head_dim)`);
- `attn/out/w` [D, D], `attn/out/b` [D]: the output projection;
- `mlp/0/w` [D, mlp_ratio*D], `mlp/0/b`, `mlp/1/w` [mlp_ratio*D, D], `mlp/1/b`: the feed-forward net.
All names carry `prefix` in front; stack blocks with prefixes such as "block0/", "block1/".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from puffer.nn import init as _init
from puffer.nn import layer_norm, linear, mlp

Array = Any


def init(be: Any, seed: _init.Seed, d_model: int, n_heads: int, mlp_ratio: int = 4, std: float = 0.02,
         prefix: str = "", dtype: Any = np.float32) -> dict[str, Any]:
    """Normal(0, `std`) weights, zero biases, unit layer-norm scales."""
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
    rng = _init.rng(seed)
    hd = d_model // n_heads
    p = prefix
    params = {
        **layer_norm.init(None, rng, d_model, prefix=f"{p}ln1/", dtype=dtype),
        f"{p}attn/qkv/w": _init.normal(rng, (d_model, 3, n_heads, hd), std, dtype),
        f"{p}attn/qkv/b": _init.zeros((3, n_heads, hd), dtype),
        **linear.init(None, rng, d_model, d_model, std=std, prefix=f"{p}attn/out/", dtype=dtype),
        **layer_norm.init(None, rng, d_model, prefix=f"{p}ln2/", dtype=dtype),
        **linear.init(None, rng, d_model, mlp_ratio * d_model, std=std, prefix=f"{p}mlp/0/", dtype=dtype),
        **linear.init(None, rng, mlp_ratio * d_model, d_model, std=std, prefix=f"{p}mlp/1/", dtype=dtype),
    }
    return _init.to_backend(be, params)


def causal_attention(be: Any, q: Array, k: Array, v: Array) -> Array:
    """softmax(q k^T / sqrt(head_dim) + causal mask) v for q, k, v [..., T, head_dim]."""
    xp = be.xp
    t, hd = q.shape[-2], q.shape[-1]
    scores = (q @ xp.matrix_transpose(k)) * (1.0 / math.sqrt(hd))
    # query i sees keys j <= i; the diagonal is always visible, so no row is fully masked
    # a host constant (the length is static), so every backend and the ONNX exporter build the same mask
    visible = xp.asarray(np.tril(np.ones((t, t), dtype=bool)))
    scores = xp.where(visible, scores, xp.full_like(scores, -math.inf))
    return be.softmax(scores, axis=-1) @ v


def apply(be: Any, params: dict[str, Array], x: Array, prefix: str = "") -> Array:
    """The block's output for `x` [B, T, D]; position t depends only on positions <= t."""
    xp = be.xp
    p = prefix
    b, t, d = x.shape
    w = params[f"{p}attn/qkv/w"]
    nh, hd = w.shape[2], w.shape[3]
    h = layer_norm.apply(be, params, x, prefix=f"{p}ln1/")
    qkv = h @ xp.reshape(w, (d, 3 * d)) + xp.reshape(params[f"{p}attn/qkv/b"], (3 * d,))
    qkv = xp.permute_dims(xp.reshape(qkv, (b, t, 3, nh, hd)), (2, 0, 3, 1, 4))  # [3, B, heads, T, hd]
    a = causal_attention(be, qkv[0], qkv[1], qkv[2])
    a = xp.reshape(xp.permute_dims(a, (0, 2, 1, 3)), (b, t, d))
    x = x + linear.apply(be, params, a, prefix=f"{p}attn/out/")
    h = layer_norm.apply(be, params, x, prefix=f"{p}ln2/")
    return x + mlp.apply(be, params, h, activation="gelu", prefix=f"{p}mlp/")
