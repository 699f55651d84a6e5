"""Dreamer's acting path as a recurrent policy: symlog encoder, one RSSM filtering step, the actor.

The state is (h, z, previous model action); rows restart from zeros where an episode starts (the
callers' `reset_state`, as for the LSTM). `step` takes the posterior's mode and returns the
actor's distribution in the standard head's form (`puffer.policies.ActionHead`), so evaluation
(`CheckpointPolicy`), `puffer export` and `puffer.deploy` treat it as any recurrent policy. The
previous action fed back is the actor's mode, the action deterministic acting takes (sampled
acting would feed the mode, not the sample: evaluate and export Dreamer deterministically).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from puffer.backends.base import Array, Backend, Params
from puffer.nn import rssm
from puffer.policies.core import ActionHead, Dist
from puffer.policies.kinds import Kind

NAME = "dreamer"
ACTING = ("wm/enc/", "wm/img_in/", "wm/gru/", "wm/post/", "actor/")


@dataclass(frozen=True)
class DreamerPolicy:
    """The RSSM filter and actor of a Dreamer (`puffer.nn.rssm.Spec` sizes), acting on flat observations."""

    model: rssm.Spec
    head: ActionHead
    recurrent: bool = True

    @property
    def obs_dim(self) -> int:
        """Observation width."""
        return self.model.obs_dim

    def spec(self) -> dict[str, Any]:
        """The JSON description checkpoints and exports keep."""
        sizes = dataclasses.asdict(self.model)
        for k in ("obs_dim", "act_dim", "discrete"):
            sizes.pop(k)
        return {"kind": NAME, **sizes}

    def init(self, be: Backend | None, seed: int) -> Params:
        """The acting subset of a Dreamer's initial parameters (encoder, transition, posterior, actor)."""
        p = {k: v for k, v in rssm.init_params(self.model, seed).items() if k.startswith(ACTING)}
        return p if be is None else {k: be.asarray(v) for k, v in p.items()}

    def initial_state(self, be: Backend, batch: int) -> tuple:
        """Zero h [B, deter], z [B, stoch * classes] and previous action [B, act_dim]."""
        m = self.model
        return tuple(be.asarray(np.zeros((batch, n), np.float32)) for n in (m.deter, m.latent, m.act_dim))

    def step(self, be: Backend, params: Params, obs: Array, state: tuple) -> tuple[Dist, Array, tuple]:
        """One filtering step on `obs` [B, D] from `state`: (actor distribution, zero value [B], new state)."""
        xp, m = be.xp, self.model
        h, z, prev = state
        h = rssm.transition(be, params, h, z, prev)
        post = rssm.posterior(be, m, params, h, rssm.embed(be, params, obs))
        z = rssm.flat(be, xp.astype(post >= xp.max(post, axis=-1, keepdims=True), post.dtype))
        first, std = rssm.actor_dist(be, m, params, xp.concat([h, z], axis=-1))
        if m.discrete:
            dist = (first, None, None)
            action = xp.astype(first >= xp.max(first, axis=-1, keepdims=True), first.dtype)
        else:
            dist = (None, first, xp.log(std))
            action = first
        return dist, xp.zeros_like(obs[..., 0]), (h, z, action)


def from_spec(observation_space: Any, action_space: Any, spec: dict[str, Any]) -> DreamerPolicy:
    """The Dreamer policy a spec describes, for these spaces."""
    sizes = {k: v for k, v in spec.items() if k != "kind"}
    model = rssm.make_spec(observation_space, action_space, "xs", **sizes)
    return DreamerPolicy(model, ActionHead.for_space(action_space))


KIND = Kind(NAME, from_spec)
