"""Global-norm gradient clipping, as torch.nn.utils.clip_grad_norm_."""

from __future__ import annotations

from typing import Any

Params = dict[str, Any]


def clip_by_global_norm(be: Any, grads: Params, max_norm: Any) -> tuple[Params, Any]:
    """Grads scaled by min(1, max_norm / (norm + 1e-6)) and the pre-clipping global L2 norm (0-d)."""
    xp = be.xp
    norm = xp.sqrt(sum(xp.sum(g * g) for g in grads.values()))
    coef = max_norm / (norm + 1e-6)
    # where rather than minimum(coef, 1.0): array-API minimum does not take Python scalars everywhere
    coef = xp.where(coef < 1.0, coef, xp.ones_like(coef))
    return {k: g * xp.astype(coef, g.dtype) for k, g in grads.items()}, norm
