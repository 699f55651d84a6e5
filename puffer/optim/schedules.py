"""Learning-rate schedules on the host: plain Python floats, passed to a compiled step as 0-d arrays."""

from __future__ import annotations

import math


def linear(step: float, total: float, start: float, end: float) -> float:
    """`start` at step 0 to `end` at step `total`, constant afterwards."""
    frac = min(max(step / total, 0.0), 1.0)
    return start * (1.0 - frac) + end * frac  # exact at both ends


def cosine(step: float, total: float, start: float, end: float = 0.0, warmup: float = 0) -> float:
    """Linear warm-up from 0 to `start` over `warmup` steps, then cosine decay to `end` at step `total`."""
    if step < warmup:
        return start * step / warmup
    frac = min(max((step - warmup) / max(total - warmup, 1e-12), 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * frac))
