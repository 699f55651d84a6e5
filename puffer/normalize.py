"""Observation normalization on the host (numpy only): what training applies and exports fold into their graphs."""

from __future__ import annotations

import numpy as np


class RunningNorm:
    """Running mean/variance of observations (parallel Welford), applied with clipping as SB3's VecNormalize."""

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        self.mean = np.zeros(dim, np.float64)
        self.var = np.ones(dim, np.float64)
        self.count = eps
        self.clip = clip
        self.eps = eps

    def update(self, x: np.ndarray) -> None:
        """Fold a batch `[B, dim]` into the statistics."""
        if len(x) == 0:
            return
        b_mean, b_var, b_count = x.mean(axis=0), x.var(axis=0), len(x)
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total

    def __call__(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Normalized, clipped float32 copy of `x` written into `out`."""
        np.subtract(x, self.mean.astype(np.float32), out=out, casting="unsafe")
        np.multiply(out, (1.0 / np.sqrt(self.var + self.eps)).astype(np.float32), out=out)
        return np.clip(out, -self.clip, self.clip, out=out)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Statistics as arrays (for checkpoints and export metadata)."""
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": np.asarray(self.count)}

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore statistics saved by `state_dict`."""
        self.mean, self.var, self.count = np.asarray(d["mean"], np.float64), np.asarray(d["var"], np.float64), float(
            d["count"])
