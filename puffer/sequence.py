"""The Decision Transformer's network (Chen et al. 2021), written once: tokens, causal transformer, action heads.

A context of the last K steps becomes 3K tokens `(R_1, s_1, a_1, ..., R_K, s_K, a_K)` (2K for
behaviour cloning, which drops the return-to-go tokens): each is a linear embedding plus the
embedding of its episode timestep, then layer norm, then `layers` GPT-2 blocks of causal
self-attention (`puffer.nn.attention`). The action at step k is predicted from the output at the
state token `s_k`, which sees `R_1..R_k`, `s_1..s_k` and `a_1..a_{k-1}`, never `a_k` or later.

Contexts are right-padded: a window shorter than K holds its steps at positions 0..n-1 and
`mask` [B, K] marks them. Causal attention never lets a real step see the padding after it, so no
attention mask is needed; the loss ignores padded steps and acting reads the last real position.
Observations are normalized by the dataset's mean and std (part of the spec, so export folds them
in), returns-to-go are divided by `rtg_scale`, and timesteps are clipped to `max_timestep - 1`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from puffer import spaces
from puffer.backends.base import Array, Backend, Params
from puffer.errors import PufferError
from puffer.nn import attention, embedding, layer_norm, linear
from puffer.nn import init as _init
from puffer.policies import ActionHead
from puffer.policies.kinds import Kind

KIND = "decision_transformer"


@dataclass
class DecisionTransformer:
    """The network and its fixed settings; `spec()` / `from_spec` round-trip it through JSON."""

    observation_space: spaces.Box
    action_space: spaces.Space
    context: int = 20
    embed: int = 64
    layers: int = 2
    heads: int = 1
    max_timestep: int = 1000
    rtg_scale: float = 100.0
    returns: bool = True
    """False: behaviour cloning (no return-to-go tokens)."""
    state_mean: list[float] = field(default_factory=list)
    state_std: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.head = ActionHead.for_space(self.action_space)
        self.obs_dim = int(self.observation_space.shape[0])
        if not self.state_mean:
            self.state_mean = [0.0] * self.obs_dim
            self.state_std = [1.0] * self.obs_dim
        # discrete actions enter the network one-hot (per column for MultiDiscrete)
        disc = self.head.discrete
        self.nvec = [] if disc is None else [int(n) for n in getattr(disc, "nvec", [getattr(disc, "n", 0)])]
        self.action_in = sum(self.nvec) + self.head.num_continuous
        self.tokens_per_step = 3 if self.returns else 2

    recurrent = False

    def spec(self) -> dict[str, Any]:
        """JSON description (with the dataset statistics) from which `from_spec` rebuilds the network."""
        return {"kind": KIND, "context": self.context, "embed": self.embed, "layers": self.layers,
                "heads": self.heads, "max_timestep": self.max_timestep, "rtg_scale": self.rtg_scale,
                "returns": self.returns, "state_mean": [float(x) for x in self.state_mean],
                "state_std": [float(x) for x in self.state_std]}

    @classmethod
    def from_spec(cls, observation_space: Any, action_space: Any, spec: dict[str, Any]) -> DecisionTransformer:
        """The network described by `spec()`."""
        kw = {k: v for k, v in spec.items() if k != "kind"}
        return cls(observation_space, action_space, **kw)

    # ---- parameters -------------------------------------------------------------------------
    def init(self, be: Backend | None, seed: int) -> Params:
        """GPT-2 style initialization: Normal(0, 0.02) weights, zero biases."""
        rng = _init.rng(seed)
        e, std = self.embed, 0.02
        p: dict[str, np.ndarray] = {}
        p.update(embedding.init(None, rng, self.max_timestep, e, std=std, prefix="embed_t/"))
        p.update(linear.init(None, rng, self.obs_dim, e, std=std, prefix="embed_s/"))
        p.update(linear.init(None, rng, self.action_in, e, std=std, prefix="embed_a/"))
        if self.returns:
            p.update(linear.init(None, rng, 1, e, std=std, prefix="embed_r/"))
        p.update(layer_norm.init(None, rng, e, prefix="embed_ln/"))
        for i in range(self.layers):
            p.update(attention.init(None, rng, e, self.heads, std=std, prefix=f"block{i}/"))
        p.update(layer_norm.init(None, rng, e, prefix="ln_f/"))
        p.update(linear.init(None, rng, e, self.head.param_size, std=std, prefix="head/"))
        return _init.to_backend(be, p)

    # ---- forward ----------------------------------------------------------------------------
    @property
    def noise_width(self) -> int:
        """Host dropout noise per call: one uniform per token feature, [B, tokens_per_step * K, embed]."""
        return self.tokens_per_step * self.context * self.embed

    def embed_actions(self, be: Backend, actions: Array) -> Array:
        """Flat float actions [..., action_dim] -> the network's action input [..., action_in]."""
        xp = be.xp
        parts = []
        for i, n in enumerate(self.nvec):
            parts.append(be.one_hot(xp.astype(actions[..., i], xp.int64), n, dtype=actions.dtype))
        if self.head.num_continuous:
            parts.append(actions[..., self.head.num_discrete:])
        return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)

    def forward(self, be: Backend, params: Params, states: Array, actions: Array, rtg: Array, timesteps: Array,
                dropout: Array | None = None, rate: Array | float = 0.0) -> Array:
        """Head outputs at every state token, [B, K, param_size].

        `states` [B, K, obs_dim] are normalized already; `actions` [B, K, action_dim] flat float;
        `rtg` [B, K, 1] scaled; `timesteps` [B, K] integers (any dtype); `dropout` [B, tokens, embed]
        host uniforms with `rate` the drop probability (None: no dropout).
        """
        xp = be.xp
        b, k = states.shape[0], states.shape[1]
        t = xp.clip(xp.astype(timesteps, xp.int64), 0, self.max_timestep - 1)
        time = embedding.apply(be, params, t, prefix="embed_t/")
        tokens = []
        if self.returns:
            tokens.append(linear.apply(be, params, rtg, prefix="embed_r/") + time)
        tokens.append(linear.apply(be, params, states, prefix="embed_s/") + time)
        tokens.append(linear.apply(be, params, self.embed_actions(be, actions), prefix="embed_a/") + time)
        n = len(tokens)
        x = xp.reshape(xp.stack(tokens, axis=2), (b, n * k, self.embed))  # interleaved per step
        x = layer_norm.apply(be, params, x, prefix="embed_ln/")
        if dropout is not None:
            keep = xp.astype(dropout >= rate, xp.float32)
            x = x * keep / (1.0 - rate)
        for i in range(self.layers):
            x = attention.apply(be, params, x, prefix=f"block{i}/")
        x = layer_norm.apply(be, params, x, prefix="ln_f/")
        x = xp.reshape(x, (b, k, n, self.embed))[:, :, n - 2, :]  # the state token of each step
        return linear.apply(be, params, x, prefix="head/")

    def dist(self, out: Array) -> tuple[Array | None, Array | None, None]:
        """Head outputs -> (logits, mean, None), the ActionHead's distribution tuple."""
        return self.head.split(None, out, None)

    def last(self, be: Backend, out: Array, mask: Array) -> Array:
        """The outputs at each row's last real position [B, param_size] (mask [B, K] right-padded)."""
        xp = be.xp
        shifted = xp.concat([mask[:, 1:], xp.zeros_like(mask[:, :1])], axis=1)
        pick = xp.expand_dims(mask - shifted, axis=-1)  # one-hot of the last 1 in each row
        return xp.sum(out * pick, axis=1)

    def act(self, be: Backend, params: Params, states: Array, actions: Array, rtg: Array, timesteps: Array,
            mask: Array, noise: Array | None = None) -> Array:
        """The next action [B, action_dim]: the mode, or sampled with host noise [B, noise_dim]."""
        out = self.last(be, self.forward(be, params, states, actions, rtg, timesteps), mask)
        dist = self.dist(out)
        if noise is None or self.head.discrete is None:
            return self.head.mode(be, dist)
        if self.head.gaussian is None:
            return self.head.sample(be, dist, noise)[0]
        # sampling is for the discrete part only; continuous actions stay the predicted mean
        sampled = self.head.sample(be, (dist[0], dist[1], be.xp.zeros_like(dist[1])), noise)[0]
        mode = self.head.mode(be, dist)
        k = self.head.num_discrete
        return be.xp.concat([sampled[:, :k], mode[:, k:]], axis=-1)


def from_spec(observation_space: Any, action_space: Any, spec: dict[str, Any]) -> DecisionTransformer:
    """`DecisionTransformer.from_spec`."""
    return DecisionTransformer.from_spec(observation_space, action_space, spec)


class ContextActor:
    """A trained DT acting on a vector env: keeps each row's rolling context, conditioned on `target_return`.

    `act(obs)` returns env actions; `observe(rewards, ended)` decrements the target by each reward
    and restarts the rows whose episodes ended (`puffer.train.evaluate.run_episodes` calls both).
    """

    recurrent = False

    def __init__(self, be: Backend, model: DecisionTransformer, params: Params, target_return: float,
                 deterministic: bool = True, seed: int = 0):
        from puffer.deploy import RollingContext

        self.be, self.model, self.params = be, model, params
        self.target_return = float(target_return)
        self.deterministic = deterministic
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.context: RollingContext | None = None
        self._new_context = lambda batch: RollingContext.for_model(model, batch, self.target_return)

        def step(params, states, actions, rtg, timesteps, mask, noise):
            return model.act(be, params, states, actions, rtg, timesteps, mask, None if deterministic else noise)

        self._step = be.compile(step)

    def act(self, obs: np.ndarray, state: Any = None) -> np.ndarray:
        """Env actions for `obs` [B, obs_dim]."""
        from puffer.policies import to_env_actions

        obs = np.asarray(obs, np.float32)
        if self.context is None or self.context.batch != len(obs):
            self.context = self._new_context(len(obs))
        ctx = self.context
        ctx.push(obs)
        be = self.be
        noise = self.model.head.noise(self.rng, len(obs))
        a = self._step(self.params, *(be.asarray(x) for x in ctx.inputs()), be.asarray(noise))
        a = np.asarray(be.to_numpy(a), np.float32)
        ctx.record(a)
        return to_env_actions(self.model.action_space, a)

    def observe(self, rewards: np.ndarray, ended: np.ndarray) -> None:
        """Decrement each row's return-to-go by its reward; restart rows whose episode ended."""
        if self.context is not None:
            self.context.observe(rewards, ended)


def checkpoint_actor(groups: dict, meta: dict, be: Any, deterministic: bool, seed: int,
                     target_return: float | None) -> ContextActor:
    """The acting side of a Decision Transformer checkpoint, conditioned on `target_return` (default: the
    one it was trained with)."""
    from puffer import checkpoint

    model = from_spec(spaces.from_json(meta["observation_space"]), spaces.from_json(meta["action_space"]),
                      checkpoint.policy_spec(meta))
    target = meta["config"].get("target_return", 0.0) if target_return is None else target_return
    if not np.isfinite(target):
        raise PufferError(f"the target return must be a finite number, got {target}")
    actor = ContextActor(be, model, {k: be.asarray(v) for k, v in groups["params"].items()}, float(target),
                         deterministic, seed)
    actor.meta, actor.be = meta, be
    return actor


def _export(groups: dict, manifest: dict, to: Any, sample_graph: bool, opset: int | None) -> Any:
    from puffer.export.sequence import export_sequence  # the context window is the model's input

    return export_sequence(groups, manifest, to, sample_graph, opset)


POLICY_KIND = Kind(KIND, from_spec, actor=checkpoint_actor, export=_export, conditioned=True)
