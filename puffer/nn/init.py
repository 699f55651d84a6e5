"""Initializers computed in numpy from a seed, so every backend starts from identical weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Seed = int | np.random.Generator


def rng(seed_or_rng: Seed) -> np.random.Generator:
    """A numpy Generator: a PCG64 seeded with `seed_or_rng`, or the Generator itself."""
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.Generator(np.random.PCG64(int(seed_or_rng)))


def orthogonal(rng: np.random.Generator, shape: Sequence[int], gain: float = 1.0,
               dtype: Any = np.float32) -> np.ndarray:
    """A (semi-)orthogonal matrix times `gain`, as torch.nn.init.orthogonal_ (QR with sign fix)."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"orthogonal init needs at least 2 dimensions, got shape {shape}")
    rows, cols = shape[0], int(np.prod(shape[1:]))
    flat = rng.standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    # the sign correction makes Q uniformly (Haar) distributed instead of biased by QR's convention
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(dtype)


def zeros(shape: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
    """An array of zeros."""
    return np.zeros(tuple(shape), dtype=dtype)


def normal(rng: np.random.Generator, shape: Sequence[int], std: float, dtype: Any = np.float32) -> np.ndarray:
    """Normal(0, std) samples."""
    return (std * rng.standard_normal(tuple(shape))).astype(dtype)


def to_backend(be: Any, params: dict[str, np.ndarray]) -> dict[str, Any]:
    """`params` converted with `be.asarray`, or the numpy arrays themselves when `be` is None."""
    if be is None:
        return params
    return {k: be.asarray(v) for k, v in params.items()}
