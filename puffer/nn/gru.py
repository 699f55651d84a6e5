"""GRU cell and unrolled GRU with torch.nn.GRUCell semantics (gate order r, z, n).

Parameters as in `puffer.nn.lstm` with G = 3 gates; `lstm.from_torch`/`lstm.to_torch` convert. The
biases stay separate because torch's candidate gate multiplies the hidden part, bias included, by r.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.nn import init as _init
from puffer.nn import lstm

Array = Any


def init(be: Any, seed: _init.Seed, in_size: int, hidden_size: int, gain: float = 1.0, prefix: str = "",
         dtype: Any = np.float32) -> dict[str, Any]:
    """Orthogonal weights and zero biases."""
    return lstm.init_gated(be, seed, in_size, hidden_size, 3, gain, prefix, dtype)


def initial_state(be: Any, batch_size: int, hidden_size: int, dtype: Any = np.float32) -> Array:
    """Zero h [batch_size, hidden_size]."""
    return be.asarray(np.zeros((batch_size, hidden_size), dtype=dtype))


def _update(be: Any, gi: Array, h: Array, params: dict[str, Array], prefix: str) -> Array:
    hs = h.shape[-1]
    gh = h @ params[f"{prefix}w_hh"] + params[f"{prefix}b_hh"]
    r = be.sigmoid(gi[..., :hs] + gh[..., :hs])
    z = be.sigmoid(gi[..., hs:2 * hs] + gh[..., hs:2 * hs])
    n = be.xp.tanh(gi[..., 2 * hs:] + r * gh[..., 2 * hs:])
    return n + z * (h - n)  # (1 - z) * n + z * h with one multiply


def cell(be: Any, params: dict[str, Array], x: Array, h: Array, prefix: str = "") -> Array:
    """One step: `x` [B, in], `h` [B, H] -> new h (also the output)."""
    return _update(be, x @ params[f"{prefix}w_ih"] + params[f"{prefix}b_ih"], h, params, prefix)


def unroll(be: Any, params: dict[str, Array], xs: Array, h: Array, resets: Array | None = None,
           prefix: str = "") -> tuple[Array, Array]:
    """Run over `xs` [T, B, in] from `h`; returns (hs [T, B, H], final h); `resets` as in `lstm.unroll`."""
    gi = xs @ params[f"{prefix}w_ih"] + params[f"{prefix}b_ih"]
    keep = lstm.keep_mask(be, resets, h.dtype)

    def step(h, inp):
        if keep is None:
            g = inp
        else:
            g, k = inp
            h = h * k
        h = _update(be, g, h, params, prefix)
        return h, h

    final, hs = be.scan(step, h, gi if keep is None else (gi, keep))
    return hs, final
