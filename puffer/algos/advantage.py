"""Advantage estimators written once over the backend namespace: GAE and V-trace.

Layout: time is axis 1 (`[B, T]`, one row per sequence segment). `dones[:, t]` means the episode
ended with transition t, so nothing is bootstrapped across it. Truncated episodes are not special
here: the trainer adds `gamma * V(final observation)` to the reward of the truncated step, so the
value of the true final observation is used and the reset observation never is.

The trainer runs these on the host through the numpy backend (GAE, once per rollout) and inside
the compiled loss on the training backend (V-trace with live importance ratios, every minibatch).
"""

from __future__ import annotations

from typing import Any

from puffer.backends.base import Array, Backend


def _next_values(be: Backend, values: Array, next_value: Array) -> Array:
    xp = be.xp
    return xp.concat([values[:, 1:], xp.expand_dims(next_value, axis=1)], axis=1)


def _reverse_discounted_sum(be: Backend, deltas: Array, decay: Array) -> Array:
    """out[:, t] = deltas[:, t] + decay[:, t] * out[:, t + 1], computed right to left."""
    xp = be.xp

    def step(carry, x):
        delta, k = x
        out = delta + k * carry
        return out, out

    xs = (xp.matrix_transpose(deltas), xp.matrix_transpose(decay))
    _, ys = be.scan(step, xp.zeros_like(deltas[:, 0]), xs, reverse=True)
    return xp.matrix_transpose(ys)


def gae(be: Backend, rewards: Array, values: Array, next_value: Array, dones: Array,
        gamma: Any, lam: Any) -> Array:
    """Generalized advantage estimation; returns advantages `[B, T]` (value targets = adv + values)."""
    xp = be.xp
    notdone = 1.0 - xp.astype(dones, values.dtype)
    deltas = rewards + gamma * notdone * _next_values(be, values, next_value) - values
    return _reverse_discounted_sum(be, deltas, gamma * lam * notdone)


def vtrace(be: Backend, rewards: Array, values: Array, next_value: Array, dones: Array, ratios: Array,
           gamma: Any, lam: Any, rho_clip: Any = 1.0, c_clip: Any = 1.0) -> Array:
    """V-trace (IMPALA) advantages `vs - V` with truncated importance weights rho and c.

    `ratios` are pi/mu for the taken actions; with all ratios 1 (and clips >= 1) this equals GAE.
    Pass ratios computed from the *current* policy (stop-gradient) to get PufferLib's live V-trace.
    """
    xp = be.xp
    notdone = 1.0 - xp.astype(dones, values.dtype)
    rho = xp.minimum(ratios, xp.full_like(ratios, rho_clip))
    c = xp.minimum(ratios, xp.full_like(ratios, c_clip))
    deltas = rho * (rewards + gamma * notdone * _next_values(be, values, next_value) - values)
    return _reverse_discounted_sum(be, deltas, gamma * lam * c * notdone)
