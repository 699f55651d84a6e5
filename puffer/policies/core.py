"""Actor-critic policies built from `puffer.nn`: the action head, MLP and LSTM, any flat action space.

A policy object holds only static configuration (sizes, spaces); parameters are a flat dict and
every method is a pure function of `(be, params, ...)`, so the same code trains on every backend
and traces into ONNX.

Actions travel as one float32 array `[..., action_dim]`: discrete indices first (as floats holding
integers), then continuous values. The action head turns network outputs into a distribution:
- Discrete(n): Categorical; MultiDiscrete/MultiBinary: MultiCategorical;
- float Box: DiagGaussian with a state-independent log-std parameter (CleanRL's continuous PPO);
- Tuple((MultiDiscrete, Box)), the emulation layer's mixed action space: both, factorized.
Noise for sampling is drawn on the host (`head.noise`): uniforms for the discrete part, standard
normals for the continuous part, so one seed gives the same actions on every backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from puffer import spaces
from puffer.backends.base import Array, Backend, Params
from puffer.errors import SpaceError
from puffer.nn import distributions, linear, lstm, mlp
from puffer.policies.kinds import Kind

Dist = tuple[Any, Any, Any]  # (logits or None, mean or None, log_std or None)


@dataclass(frozen=True)
class ActionHead:
    """Factorized discrete + Gaussian action distribution over a flat float action vector."""

    discrete: distributions.Categorical | distributions.MultiCategorical | None
    gaussian: distributions.DiagGaussian | None

    @classmethod
    def for_space(cls, space: Any) -> ActionHead:
        """The head for a flat action space (see the module docstring)."""
        if isinstance(space, spaces.Tuple) and len(space.spaces) == 2:
            disc, cont = space.spaces
            if isinstance(disc, (spaces.MultiDiscrete, spaces.Discrete)) and isinstance(cont, spaces.Box):
                return cls(distributions.for_space(disc), distributions.for_space(cont))
        if isinstance(space, spaces.Box):
            return cls(None, distributions.for_space(space))
        if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
            return cls(distributions.for_space(space), None)
        raise SpaceError(f"no policy head for action space {space!r}; puffer.make flattens Dict/Tuple actions "
                         "into Discrete, MultiDiscrete, Box or Tuple((MultiDiscrete, Box))")

    @property
    def num_discrete(self) -> int:
        """Columns of the action vector that hold discrete indices."""
        if self.discrete is None:
            return 0
        return 1 if isinstance(self.discrete, distributions.Categorical) else len(self.discrete.nvec)

    @property
    def num_continuous(self) -> int:
        """Columns of the action vector that hold continuous values."""
        return 0 if self.gaussian is None else self.gaussian.dim

    @property
    def action_dim(self) -> int:
        """Width of the flat float32 action vector."""
        return self.num_discrete + self.num_continuous

    @property
    def param_size(self) -> int:
        """Network outputs the head consumes: logits, then Gaussian means."""
        return (0 if self.discrete is None else self.discrete.param_size) + self.num_continuous

    def split(self, be: Backend, out: Array, log_std: Array | None) -> Dist:
        """Network output `[..., param_size]` (and the log-std parameter) -> distribution parameters."""
        nl = 0 if self.discrete is None else self.discrete.param_size
        logits = out[..., :nl] if self.discrete is not None else None
        mean = out[..., nl:] if self.gaussian is not None else None
        return logits, mean, log_std

    def _discrete_actions(self, be: Backend, actions: Array) -> Array:
        a = be.xp.astype(actions[..., :self.num_discrete], be.xp.int64)
        return a[..., 0] if self.num_discrete == 1 and isinstance(self.discrete, distributions.Categorical) else a

    def log_prob(self, be: Backend, dist: Dist, actions: Array) -> Array:
        """log pi(actions) `[...]` for flat float actions `[..., action_dim]`."""
        logits, mean, log_std = dist
        total = 0.0
        if self.discrete is not None:
            total = total + self.discrete.log_prob(be, logits, self._discrete_actions(be, actions))
        if self.gaussian is not None:
            total = total + self.gaussian.log_prob(be, (mean, log_std), actions[..., self.num_discrete:])
        return total

    def entropy(self, be: Backend, dist: Dist) -> Array:
        """Entropy `[...]` (sum over the factors)."""
        logits, mean, log_std = dist
        total = 0.0
        if self.discrete is not None:
            total = total + self.discrete.entropy(be, logits)
        if self.gaussian is not None:
            total = total + self.gaussian.entropy(be, (mean, log_std))
        return total

    def _as_columns(self, be: Backend, a: Array) -> Array:
        a = be.xp.astype(a, be.xp.float32)
        return be.xp.expand_dims(a, axis=-1) if isinstance(self.discrete, distributions.Categorical) else a

    def sample(self, be: Backend, dist: Dist, noise: Array) -> tuple[Array, Array]:
        """Actions `[..., action_dim]` and their log-probability from host noise `[..., noise_dim]`."""
        logits, mean, log_std = dist
        parts, logp = [], 0.0
        k = self.noise_discrete
        if self.discrete is not None:
            u = noise[..., 0] if isinstance(self.discrete, distributions.Categorical) else noise[..., :k]
            a, lp = self.discrete.sample_and_log_prob(be, logits, u)
            parts.append(self._as_columns(be, a))
            logp = logp + lp
        if self.gaussian is not None:
            a, lp = self.gaussian.sample_and_log_prob(be, (mean, log_std), noise[..., k:])
            parts.append(be.xp.astype(a, be.xp.float32))
            logp = logp + lp
        return (parts[0] if len(parts) == 1 else be.xp.concat(parts, axis=-1)), logp

    def mode(self, be: Backend, dist: Dist) -> Array:
        """The most likely action `[..., action_dim]` (deterministic evaluation)."""
        logits, mean, log_std = dist
        parts = []
        if self.discrete is not None:
            parts.append(self._as_columns(be, self.discrete.mode(be, logits)))
        if self.gaussian is not None:
            parts.append(be.xp.astype(self.gaussian.mode(be, (mean, log_std)), be.xp.float32))
        return parts[0] if len(parts) == 1 else be.xp.concat(parts, axis=-1)

    @property
    def noise_discrete(self) -> int:
        """Noise columns used by the discrete part (one uniform per categorical)."""
        return self.num_discrete

    @property
    def noise_dim(self) -> int:
        """Width of the host noise array."""
        return self.num_discrete + self.num_continuous

    def noise(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """Host noise `[batch, noise_dim]`: uniforms then standard normals."""
        k, d = self.num_discrete, self.num_continuous
        out = np.empty((batch, k + d), dtype=np.float32)
        if k:
            out[:, :k] = rng.random((batch, k), dtype=np.float32)
        if d:
            out[:, k:] = rng.standard_normal((batch, d), dtype=np.float32)
        return out


def sizes_spec(kind: str, policy: Any) -> dict[str, Any]:
    """A policy spec of `kind` with the policy's hidden size, layer count and activation."""
    return {"kind": kind, "hidden_size": policy.hidden_size, "num_layers": policy.num_layers,
            "activation": policy.activation}


def finish_init(be: Backend | None, head: ActionHead, params: dict[str, np.ndarray]) -> Params:
    """Add the Gaussian head's state-independent log-std (starting at std 1) and move to `be`."""
    if head.gaussian is not None:
        params["actor/log_std"] = np.zeros(head.num_continuous, np.float32)
    return params if be is None else {k: be.asarray(v) for k, v in params.items()}


@dataclass(frozen=True)
class MLPPolicy:
    """Separate actor and critic MLPs (CleanRL's layout), orthogonal init, 0.01-gain policy output."""

    obs_dim: int
    head: ActionHead
    hidden_size: int = 64
    num_layers: int = 2
    activation: str = "tanh"
    recurrent = False

    def spec(self) -> dict[str, Any]:
        """The JSON description checkpoints and exports keep (`puffer.policies.from_spec` rebuilds it)."""
        return sizes_spec("mlp", self)

    def init(self, be: Backend | None, seed: int) -> Params:
        """Initial parameters (identical on every backend for the same seed)."""
        rng = np.random.Generator(np.random.PCG64(seed))
        hidden = [self.hidden_size] * self.num_layers
        p = mlp.init(None, rng, [self.obs_dim, *hidden, self.head.param_size], out_gain=0.01, prefix="actor/")
        p.update(mlp.init(None, rng, [self.obs_dim, *hidden, 1], out_gain=1.0, prefix="critic/"))
        return finish_init(be, self.head, p)

    def initial_state(self, be: Backend, batch: int) -> tuple:
        """MLPs carry no state."""
        return ()

    def step(self, be: Backend, params: Params, obs: Array, state: tuple) -> tuple[Dist, Array, tuple]:
        """One step for a batch `[B, obs_dim]`: (distribution, value [B], state)."""
        out = mlp.apply(be, params, obs, self.activation, prefix="actor/")
        value = mlp.apply(be, params, obs, self.activation, prefix="critic/")[..., 0]
        return self.head.split(be, out, params.get("actor/log_std")), value, state

    def sequence(self, be: Backend, params: Params, obs: Array, state: tuple, starts: Array) -> tuple[Dist, Array]:
        """A batch of sequences `[S, L, obs_dim]`: (distribution over [S, L], values [S, L])."""
        dist, value, _ = self.step(be, params, obs, state)
        return dist, value


@dataclass(frozen=True)
class LSTMPolicy:
    """PufferLib's recurrent layout: linear encoder, LSTM cell, linear actor and critic heads."""

    obs_dim: int
    head: ActionHead
    hidden_size: int = 128
    num_layers: int = 1
    activation: str = "tanh"
    recurrent = True

    def spec(self) -> dict[str, Any]:
        """The JSON description checkpoints and exports keep (`puffer.policies.from_spec` rebuilds it)."""
        return sizes_spec("lstm", self)

    def init(self, be: Backend | None, seed: int) -> Params:
        """Initial parameters (identical on every backend for the same seed)."""
        rng = np.random.Generator(np.random.PCG64(seed))
        h = self.hidden_size
        p = linear.init(None, rng, self.obs_dim, h, gain=math.sqrt(2.0), prefix="encoder/")
        p.update(lstm.init(None, rng, h, h, forget_bias=1.0, prefix="lstm/"))
        p.update(linear.init(None, rng, h, self.head.param_size, gain=0.01, prefix="actor/"))
        p.update(linear.init(None, rng, h, 1, gain=1.0, prefix="critic/"))
        return finish_init(be, self.head, p)

    def initial_state(self, be: Backend, batch: int) -> tuple:
        """Zero (h, c), each `[batch, hidden_size]`."""
        return lstm.initial_state(be, batch, self.hidden_size)

    def _encode(self, be: Backend, params: Params, obs: Array) -> Array:
        return mlp.activate(be, linear.apply(be, params, obs, prefix="encoder/"), self.activation)

    def _heads(self, be: Backend, params: Params, h: Array) -> tuple[Dist, Array]:
        out = linear.apply(be, params, h, prefix="actor/")
        value = linear.apply(be, params, h, prefix="critic/")[..., 0]
        return self.head.split(be, out, params.get("actor/log_std")), value

    def step(self, be: Backend, params: Params, obs: Array, state: tuple) -> tuple[Dist, Array, tuple]:
        """One step for a batch `[B, obs_dim]` from `state`: (distribution, value [B], new state)."""
        state = lstm.cell(be, params, self._encode(be, params, obs), state, prefix="lstm/")
        dist, value = self._heads(be, params, state[0])
        return dist, value, state

    def sequence(self, be: Backend, params: Params, obs: Array, state: tuple, starts: Array) -> tuple[Dist, Array]:
        """BPTT over `[S, L, obs_dim]` from per-sequence `state`, zeroing it where `starts` is 1."""
        xp = be.xp
        x = xp.permute_dims(self._encode(be, params, obs), (1, 0, 2))
        hs, _ = lstm.unroll(be, params, x, state, resets=xp.matrix_transpose(starts), prefix="lstm/")
        return self._heads(be, params, xp.permute_dims(hs, (1, 0, 2)))


Policy = Any  # MLPPolicy, LSTMPolicy, or any kind of `puffer.policies.kinds`


def make_policy(observation_space: Any, action_space: Any, kind: str = "mlp", hidden_size: int | None = None,
                num_layers: int = 2, activation: str = "tanh") -> Policy:
    """The policy for a flat observation space and an action space; kind is "mlp" or "lstm"."""
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise SpaceError(f"policies take a flat 1-D Box observation (puffer.make flattens others), "
                         f"got {observation_space!r}")
    head = ActionHead.for_space(action_space)
    obs_dim = int(observation_space.shape[0])
    if kind == "mlp":
        return MLPPolicy(obs_dim, head, hidden_size or 64, num_layers, activation)
    if kind == "lstm":
        return LSTMPolicy(obs_dim, head, hidden_size or 128, 1, activation)
    raise SpaceError(f"unknown policy kind {kind!r}; choose mlp or lstm")


def reset_state(be: Backend, state: tuple, starts: Array) -> tuple:
    """State with rows zeroed where `starts` [B] is 1 (a new episode begins)."""
    if not state:
        return state
    keep = be.xp.expand_dims(1.0 - starts, axis=-1)
    return tuple(s * keep for s in state)


def act(be: Backend, policy: Policy, params: Params, obs: Array, state: tuple, starts: Array,
        noise: Array) -> tuple[Array, Array, Array, tuple]:
    """Rollout step: (actions [B, action_dim], log-prob [B], value [B], new state)."""
    dist, value, state = policy.step(be, params, obs, reset_state(be, state, starts))
    actions, logp = policy.head.sample(be, dist, noise)
    return actions, logp, value, state


def to_env_actions(space: Any, actions: np.ndarray) -> np.ndarray:
    """Flat float32 policy actions `[B, action_dim]` -> the env's action array for `space`."""
    if isinstance(space, spaces.Discrete):
        return actions[:, 0].astype(np.int64)
    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        return actions.astype(np.int64).reshape(len(actions), *space.shape)
    if isinstance(space, spaces.Box):
        return actions.reshape(len(actions), *space.shape)
    return actions


def _from_spec(observation_space: Any, action_space: Any, spec: dict[str, Any]) -> Policy:
    return make_policy(observation_space, action_space, spec["kind"], spec["hidden_size"], spec["num_layers"],
                       spec["activation"])


MLP_KIND = Kind("mlp", _from_spec)
LSTM_KIND = Kind("lstm", _from_spec)
