"""Helpers shared by the optimizers: key checks and dtype-safe hyperparameters."""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.errors import GradientError


def check_keys(name: str, params: dict[str, Any], grads: dict[str, Any]) -> None:
    """Raise GradientError unless `params` and `grads` have the same keys."""
    if params.keys() != grads.keys():
        missing, extra = sorted(params.keys() - grads.keys()), sorted(grads.keys() - params.keys())
        raise GradientError(
            f"{name}: params and grads must have the same keys; grads lack {missing or 'nothing'}, "
            f"grads have extra {extra or 'nothing'}"
        )


def hyper(be: Any, value: Any, dtype: Any) -> Any:
    """`value` usable against arrays of `dtype`: Python floats stay weakly typed, arrays are cast.

    Casting matters: float32 params times a float64 learning-rate array would promote to float64 under
    the array API's rules (and numpy scalars are not weakly typed in JAX).
    """
    if isinstance(value, (int, float, np.generic)):
        return float(value)
    return be.xp.astype(value, dtype)


def is_zero(value: Any) -> bool:
    """True for a Python/numpy zero: a branch that can be skipped at trace time (arrays never are)."""
    return isinstance(value, (int, float, np.generic)) and float(value) == 0.0


def zeros_like_state(be: Any, params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`f"{prefix}/{k}"`: zeros shaped and typed like each parameter."""
    return {f"{prefix}/{k}": be.xp.zeros_like(v) for k, v in params.items()}


def step0(be: Any) -> Any:
    """The 0-d float32 step counter (exact up to 2**24 steps)."""
    return be.asarray(np.zeros((), dtype=np.float32))
