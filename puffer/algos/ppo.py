"""PPO as pure functions over the backend interface: the clipped loss and the compiled update step.

Minibatches are `[S, L]` sequences (L = 1 for shuffled single steps, L = bptt_horizon for recurrent
policies or V-trace). Every per-call value that may change (lr, clip coefficients, entropy weight)
arrives in `hyper` as 0-d arrays so compiled steps never freeze them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from puffer import optim
from puffer.algos.advantage import vtrace
from puffer.backends.base import Array, Backend, Params

HYPER_KEYS = ("lr", "clip_coef", "vf_clip", "vf_coef", "ent_coef", "max_grad_norm")


@dataclass(frozen=True)
class LossStatic:
    """Loss settings fixed for a whole run (safe to close over in compiled code)."""

    advantage: str = "gae"
    norm_adv: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    rho_clip: float = 1.0
    c_clip: float = 1.0
    clip_vloss: bool = True


def masked_mean(be: Backend, x: Array, mask: Array) -> Array:
    """Mean of `x` over entries where `mask` is 1 (0 if there are none)."""
    xp = be.xp
    return xp.sum(x * mask) / xp.maximum(xp.sum(mask), xp.ones_like(xp.sum(mask)))


def ppo_loss(be: Backend, policy: Any, static: LossStatic, params: Params, mb: dict[str, Array],
             hyper: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """Clipped-surrogate PPO loss with clipped value loss and entropy bonus; returns (loss, stats)."""
    xp = be.xp
    dist, new_values = policy.sequence(be, params, mb["obs"], mb["state"], mb["starts"])
    new_logp = policy.head.log_prob(be, dist, mb["actions"])
    entropy = policy.head.entropy(be, dist)
    mask = mb["mask"]
    log_ratio = new_logp - mb["logp"]
    ratio = xp.exp(log_ratio)

    if static.advantage == "vtrace":
        # live importance ratios of the current policy, as PufferLib's trainer recomputes them
        adv = vtrace(be, mb["rewards"], mb["values"], mb["next_value"], mb["dones"], be.stop_gradient(ratio),
                     static.gamma, static.gae_lambda, static.rho_clip, static.c_clip)
        returns = adv + mb["values"]
    else:
        adv, returns = mb["adv"], mb["returns"]

    if static.norm_adv:
        mean = masked_mean(be, adv, mask)
        var = masked_mean(be, (adv - mean) ** 2, mask)
        adv = (adv - mean) / (xp.sqrt(var) + 1e-8)

    clip = hyper["clip_coef"]
    pg_loss = masked_mean(be, xp.maximum(-adv * ratio, -adv * xp.clip(ratio, 1.0 - clip, 1.0 + clip)), mask)

    v_err = (new_values - returns) ** 2
    if static.clip_vloss:
        v_clipped = mb["values"] + xp.clip(new_values - mb["values"], -hyper["vf_clip"], hyper["vf_clip"])
        v_err = xp.maximum(v_err, (v_clipped - returns) ** 2)
    v_loss = 0.5 * masked_mean(be, v_err, mask)
    ent = masked_mean(be, entropy, mask)
    loss = pg_loss - hyper["ent_coef"] * ent + hyper["vf_coef"] * v_loss

    stats = {
        "policy_loss": pg_loss,
        "value_loss": v_loss,
        "entropy": ent,
        "approx_kl": be.stop_gradient(masked_mean(be, (ratio - 1.0) - log_ratio, mask)),
        "clipfrac": masked_mean(be, xp.astype(xp.abs(ratio - 1.0) > clip, ratio.dtype), mask),
    }
    return loss, stats


def make_update(be: Backend, policy: Any, static: LossStatic, opt: Any = optim.adam,
                opt_kwargs: dict | None = None) -> Callable:
    """`update(params, opt_state, mb, hyper) -> (params, opt_state, stats)`: loss, grads, clip, step."""
    opt_kwargs = dict(opt_kwargs or {})
    loss_and_grad = be.value_and_grad(lambda p, mb, hyper: ppo_loss(be, policy, static, p, mb, hyper), has_aux=True)

    def update(params: Params, opt_state: dict, mb: dict, hyper: dict):
        (loss, stats), grads = loss_and_grad(params, mb, hyper)
        grads, grad_norm = optim.clip_by_global_norm(be, grads, hyper["max_grad_norm"])
        params, opt_state = opt.update(be, params, grads, opt_state, hyper["lr"], **opt_kwargs)
        return params, opt_state, {"loss": loss, "grad_norm": grad_norm, **stats}

    return update


def hyper_arrays(be: Backend, values: dict[str, float]) -> dict[str, Array]:
    """0-d float32 arrays for the per-call hyperparameters."""
    return {k: be.asarray(np.asarray(values[k], dtype=np.float32)) for k in HYPER_KEYS}
