"""Numerics every algorithm shares: masked means, standardization, explained variance, schedules, the update.

Pure functions of `(be, ...)` (or numpy on the host); each algorithm module imports them from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from puffer import optim
from puffer.backends.base import Array, Backend, Params


def masked_mean(be: Backend, x: Array, mask: Array) -> Array:
    """Mean of `x` over entries where `mask` is 1 (0 if there are none)."""
    xp = be.xp
    return xp.sum(x * mask) / xp.maximum(xp.sum(mask), xp.ones_like(xp.sum(mask)))


def standardize(be: Backend, x: Array, mask: Array) -> Array:
    """`x` shifted and scaled to mean 0 and std 1 over the masked entries."""
    mean = masked_mean(be, x, mask)
    var = masked_mean(be, (x - mean) ** 2, mask)
    return (x - mean) / (be.xp.sqrt(var) + 1e-8)


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var(returns - values) / Var(returns) (nan when the returns do not vary)."""
    v, r = values.ravel(), returns.ravel()
    var_r = np.var(r)
    return float("nan") if var_r == 0 else float(1 - np.var(r - v) / var_r)


def learning_rate(cfg: Any, fraction: float) -> float:
    """`cfg.learning_rate` annealed by `cfg.lr_schedule` (linear or cosine to 0, or constant) after `fraction`."""
    if cfg.lr_schedule == "linear":
        return optim.linear(fraction, 1.0, cfg.learning_rate, 0.0)
    if cfg.lr_schedule == "cosine":
        return optim.cosine(fraction, 1.0, cfg.learning_rate, 0.0)
    return cfg.learning_rate


def gradient_update(be: Backend, loss: Callable, opt: Any = optim.adam, opt_kwargs: dict | None = None) -> Callable:
    """`update(params, opt_state, mb, consts, hyper) -> (params, opt_state, stats)`: loss, grads, clip, step.

    `loss(params, mb, consts, hyper) -> (loss, stats)`; the gradient norm is clipped to
    `hyper["max_grad_norm"]` and the optimizer steps with `hyper["lr"]`.
    """
    opt_kwargs = dict(opt_kwargs or {})
    loss_and_grad = be.value_and_grad(loss, has_aux=True)

    def update(params: Params, opt_state: dict, mb: dict, consts: dict, hyper: dict):
        (value, stats), grads = loss_and_grad(params, mb, consts, hyper)
        grads, grad_norm = optim.clip_by_global_norm(be, grads, hyper["max_grad_norm"])
        params, opt_state = opt.update(be, params, grads, opt_state, hyper["lr"], **opt_kwargs)
        return params, opt_state, {"loss": value, "grad_norm": grad_norm, **stats}

    return update
