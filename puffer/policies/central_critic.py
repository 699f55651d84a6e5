"""MAPPO's acting policy: a decentralized actor (with an optional one-hot agent id) and a centralized critic."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from puffer.backends.base import Array, Backend, Params
from puffer.nn import linear, lstm, mlp
from puffer.policies.core import ActionHead, Dist, finish_init, make_policy, sizes_spec
from puffer.policies.kinds import Kind


@dataclass(frozen=True)
class CentralCriticPolicy:
    """Decentralized actor (MLP or LSTM over each agent's observation, plus an optional one-hot agent id) and
    a centralized MLP critic over a global state (MAPPO); parameters `actor/`, `encoder/`, `lstm/`, `critic/`.

    The actor never reads the global state. `step` (evaluation, export) appends the agent id of row
    `r` as `r % agents` (rows in env order, as every synchronous vector env lays them out) and
    returns a zero value, since the critic needs the state; training calls `actor` and `critic`
    with ids and states from the rollout.
    """

    obs_dim: int
    head: ActionHead
    kind: str = "mlp"
    hidden_size: int = 64
    num_layers: int = 2
    activation: str = "tanh"
    agents: int = 0
    """Width of the one-hot agent id appended to the actor's and critic's inputs (0: none)."""
    state_dim: int = 0
    """Width of the critic's global state."""

    @property
    def recurrent(self) -> bool:
        """True for the LSTM actor."""
        return self.kind == "lstm"

    def spec(self) -> dict[str, Any]:
        """The actor's spec plus the critic's `central_critic` sizes."""
        return {**sizes_spec(self.kind, self), "central_critic": {"agents": self.agents, "state_dim": self.state_dim}}

    def init(self, be: Backend | None, seed: int) -> Params:
        """Initial parameters (identical on every backend for the same seed)."""
        rng = np.random.Generator(np.random.PCG64(seed))
        h, d = self.hidden_size, self.obs_dim + self.agents
        if self.recurrent:
            p = linear.init(None, rng, d, h, gain=math.sqrt(2.0), prefix="encoder/")
            p.update(lstm.init(None, rng, h, h, forget_bias=1.0, prefix="lstm/"))
            p.update(linear.init(None, rng, h, self.head.param_size, gain=0.01, prefix="actor/"))
        else:
            p = mlp.init(None, rng, [d, *[h] * self.num_layers, self.head.param_size], out_gain=0.01,
                         prefix="actor/")
        p.update(mlp.init(None, rng, [self.state_dim + self.agents, *[h] * self.num_layers, 1], out_gain=1.0,
                          prefix="critic/"))
        return finish_init(be, self.head, p)

    def initial_state(self, be: Backend, batch: int) -> tuple:
        """Zero (h, c) for the LSTM actor, nothing for the MLP."""
        return lstm.initial_state(be, batch, self.hidden_size) if self.recurrent else ()

    def with_ids(self, be: Backend, x: Array, ids: Array | None) -> Array:
        """`x` with the one-hot agent ids `ids` (same leading axes) appended (unchanged without ids)."""
        return x if not self.agents else be.xp.concat([x, ids], axis=-1)

    def row_ids(self, be: Backend, x: Array) -> Array | None:
        """One-hot ids `[B, agents]` of the rows of `x` `[B, ...]` in env order (row r is agent r % agents)."""
        if not self.agents:
            return None
        xp = be.xp
        # the row index from a running sum, so an exported graph keeps its batch axis dynamic
        row = xp.cumulative_sum(xp.ones_like(x[..., 0]), axis=0) - 1.0
        slot = xp.expand_dims(row - xp.floor(row / self.agents) * self.agents, axis=-1)
        return xp.astype(slot == xp.arange(self.agents, dtype=xp.float32), xp.float32)

    def actor(self, be: Backend, params: Params, x: Array, state: tuple) -> tuple[Dist, tuple]:
        """One actor step on `[B, obs_dim + agents]` inputs: (distribution, new state)."""
        if self.recurrent:
            enc = mlp.activate(be, linear.apply(be, params, x, prefix="encoder/"), self.activation)
            state = lstm.cell(be, params, enc, state, prefix="lstm/")
            out = linear.apply(be, params, state[0], prefix="actor/")
        else:
            out = mlp.apply(be, params, x, self.activation, prefix="actor/")
        return self.head.split(be, out, params.get("actor/log_std")), state

    def actor_sequence(self, be: Backend, params: Params, x: Array, state: tuple, starts: Array) -> Dist:
        """The actor over `[S, L, obs_dim + agents]` from per-sequence `state` (zeroed where `starts` is 1)."""
        if not self.recurrent:
            return self.actor(be, params, x, state)[0]
        xp = be.xp
        enc = mlp.activate(be, linear.apply(be, params, x, prefix="encoder/"), self.activation)
        hs, _ = lstm.unroll(be, params, xp.permute_dims(enc, (1, 0, 2)), state,
                            resets=xp.matrix_transpose(starts), prefix="lstm/")
        out = linear.apply(be, params, xp.permute_dims(hs, (1, 0, 2)), prefix="actor/")
        return self.head.split(be, out, params.get("actor/log_std"))

    def critic(self, be: Backend, params: Params, state_in: Array) -> Array:
        """Values `[...]` of critic inputs `[..., state_dim + agents]` (global state, then the agent id)."""
        return mlp.apply(be, params, state_in, self.activation, prefix="critic/")[..., 0]

    def step(self, be: Backend, params: Params, obs: Array, state: tuple) -> tuple[Dist, Array, tuple]:
        """Acting on local observations `[B, obs_dim]` alone: (distribution, zero value [B], new state)."""
        dist, state = self.actor(be, params, self.with_ids(be, obs, self.row_ids(be, obs)), state)
        return dist, be.xp.zeros_like(obs[..., 0]), state


def from_spec(observation_space: Any, action_space: Any, spec: dict[str, Any]) -> CentralCriticPolicy:
    """The central-critic policy a spec describes, for these spaces."""
    base = make_policy(observation_space, action_space, spec["kind"], spec["hidden_size"], spec["num_layers"],
                       spec["activation"])
    cc = spec["central_critic"]
    return CentralCriticPolicy(base.obs_dim, base.head, spec["kind"], base.hidden_size, base.num_layers,
                               base.activation, int(cc["agents"]), int(cc["state_dim"]))


KIND = Kind("central_critic", from_spec)
