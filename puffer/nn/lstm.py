"""LSTM cell and unrolled LSTM with torch.nn.LSTMCell semantics (gate order i, f, g, o).

Parameters, with H the hidden size and G = 4 gates:
- `f"{prefix}w_ih"` [in, G*H] = torch `weight_ih.T`,  `f"{prefix}w_hh"` [H, G*H] = torch `weight_hh.T`,
- `f"{prefix}b_ih"` [G*H] = torch `bias_ih`,          `f"{prefix}b_hh"` [G*H] = torch `bias_hh`.
`from_torch`/`to_torch` convert (the same layout serves torch.nn.GRUCell with G = 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from puffer.nn import init as _init

Array = Any
State = tuple[Array, Array]
_TORCH_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}


def init_gated(be: Any, seed: _init.Seed, in_size: int, hidden_size: int, gates: int, gain: float = 1.0,
               prefix: str = "", dtype: Any = np.float32) -> dict[str, Any]:
    """Orthogonal weights (drawn in torch's [G*H, in] layout, as CleanRL's LSTM init) and zero biases."""
    rng = _init.rng(seed)
    g = gates * hidden_size
    return _init.to_backend(be, {
        f"{prefix}w_ih": np.ascontiguousarray(_init.orthogonal(rng, (g, in_size), gain, dtype).T),
        f"{prefix}w_hh": np.ascontiguousarray(_init.orthogonal(rng, (g, hidden_size), gain, dtype).T),
        f"{prefix}b_ih": _init.zeros((g,), dtype),
        f"{prefix}b_hh": _init.zeros((g,), dtype),
    })


def init(be: Any, seed: _init.Seed, in_size: int, hidden_size: int, gain: float = 1.0, forget_bias: float = 0.0,
         prefix: str = "", dtype: Any = np.float32) -> dict[str, Any]:
    """Orthogonal weights, zero biases except `forget_bias` on the forget gate."""
    params = init_gated(None, seed, in_size, hidden_size, 4, gain, prefix, dtype)
    params[f"{prefix}b_ih"][hidden_size:2 * hidden_size] = forget_bias
    return _init.to_backend(be, params)


def initial_state(be: Any, batch_size: int, hidden_size: int, dtype: Any = np.float32) -> State:
    """Zero `(h, c)`, each [batch_size, hidden_size]."""
    z = np.zeros((batch_size, hidden_size), dtype=dtype)
    return be.asarray(z), be.asarray(z)


def _gates(be: Any, z: Array, c: Array) -> State:
    hs = c.shape[-1]
    i = be.sigmoid(z[..., :hs])
    f = be.sigmoid(z[..., hs:2 * hs])
    g = be.xp.tanh(z[..., 2 * hs:3 * hs])
    o = be.sigmoid(z[..., 3 * hs:])
    c = f * c + i * g
    return o * be.xp.tanh(c), c


def cell(be: Any, params: dict[str, Array], x: Array, state: State, prefix: str = "") -> State:
    """One step: `x` [B, in], `state` (h, c) [B, H] -> new (h, c); h is the output."""
    h, c = state
    p = prefix
    z = x @ params[f"{p}w_ih"] + params[f"{p}b_ih"] + h @ params[f"{p}w_hh"] + params[f"{p}b_hh"]
    return _gates(be, z, c)


def keep_mask(be: Any, resets: Array | None, dtype: Any) -> Array | None:
    """1 - resets as `dtype` [T, B, 1]: multiplying the state by it zeroes it where an episode starts."""
    if resets is None:
        return None
    return be.xp.expand_dims(1.0 - be.xp.astype(resets, dtype), axis=-1)


def unroll(be: Any, params: dict[str, Array], xs: Array, state: State, resets: Array | None = None,
           prefix: str = "") -> tuple[Array, State]:
    """Run over `xs` [T, B, in] from `state`; returns (hs [T, B, H], final (h, c)).

    Where `resets[t, b]` is true the state is zeroed before step t consumes `xs[t, b]`, so a
    segment of several episodes trains with BPTT without leaking state across episode starts.
    """
    p = prefix
    w_hh = params[f"{p}w_hh"]
    # the input projection does not depend on the state: one big matmul instead of T small ones
    zx = xs @ params[f"{p}w_ih"] + (params[f"{p}b_ih"] + params[f"{p}b_hh"])
    keep = keep_mask(be, resets, state[0].dtype)

    def step(carry, inp):
        h, c = carry
        if keep is None:
            z = inp
        else:
            z, k = inp
            h, c = h * k, c * k
        h, c = _gates(be, z + h @ w_hh, c)
        return (h, c), h

    final, hs = be.scan(step, tuple(state), zx if keep is None else (zx, keep))
    return hs, final


def from_torch(be: Any, tensors: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Params from numpy copies of a torch.nn.LSTMCell/GRUCell state dict (weight_ih, weight_hh, bias_ih, bias_hh)."""
    out = {}
    for name, torch_name in _TORCH_NAMES.items():
        v = np.asarray(tensors[torch_name])
        out[f"{prefix}{name}"] = np.ascontiguousarray(v.T if v.ndim == 2 else v)
    return _init.to_backend(be, out)


def to_torch(be: Any, params: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Numpy arrays named and laid out as a torch.nn.LSTMCell/GRUCell state dict."""
    out = {}
    for name, torch_name in _TORCH_NAMES.items():
        v = params[f"{prefix}{name}"]
        v = np.asarray(v) if be is None else be.to_numpy(v)
        out[torch_name] = np.ascontiguousarray(v.T if v.ndim == 2 else v)
    return out
