"""Running a trained policy: load it from a checkpoint on any backend and measure episode returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

import puffer
from puffer import checkpoint, spaces
from puffer.errors import PufferError
from puffer.normalize import RunningNorm
from puffer.policies import from_spec, reset_state, to_env_actions
from puffer.policies import kind as policy_kind


class Actor(Protocol):
    """Anything that maps a batch of observations (and a recurrent state) to env actions."""

    def initial_state(self, batch: int) -> Any: ...

    def act(self, obs: np.ndarray, state: Any = None) -> Any: ...


class PolicyActor:
    """A policy with fixed parameters acting on numpy observations, deterministically or by sampling."""

    def __init__(self, be: Any, policy: Any, params: dict, action_space: Any, norm: RunningNorm | None = None,
                 deterministic: bool = True, seed: int = 0):
        self.be, self.policy, self.params, self.action_space, self.norm = be, policy, params, action_space, norm
        self.obs_dim = policy.obs_dim
        self.deterministic = deterministic
        self.rng = np.random.Generator(np.random.PCG64(seed))

        def step(params, obs, state, starts, noise):
            dist, _, state = policy.step(be, params, obs, reset_state(be, state, starts))
            if deterministic:
                return policy.head.mode(be, dist), state
            return policy.head.sample(be, dist, noise)[0], state

        self._step = be.compile(step)

    @property
    def recurrent(self) -> bool:
        """True when `act` takes and returns a state."""
        return self.policy.recurrent

    def initial_state(self, batch: int) -> Any:
        """The recurrent state for `batch` rows (an empty tuple for MLPs)."""
        return self.policy.initial_state(self.be, batch)

    def act(self, obs: np.ndarray, state: Any = None, starts: np.ndarray | None = None) -> Any:
        """Env actions for `obs` `[B, D]`; recurrent policies take and return `state`."""
        obs = np.asarray(obs, np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise PufferError(f"observations must be [batch, {self.obs_dim}] float32, got shape {obs.shape}")
        if self.norm is not None:
            obs = self.norm(obs, np.empty_like(obs))
        b = len(obs)
        state = self.initial_state(b) if state is None else state
        starts = np.zeros(b, np.float32) if starts is None else starts.astype(np.float32)
        noise = self.policy.head.noise(self.rng, b)
        be = self.be
        actions, state = self._step(self.params, be.asarray(obs), state, be.asarray(starts), be.asarray(noise))
        env_actions = to_env_actions(self.action_space, be.to_numpy(actions))
        return (env_actions, state) if self.recurrent else env_actions


class CheckpointPolicy(PolicyActor):
    """The acting policy of a checkpoint (any algorithm, saved on any backend, or hf://user/name), on any backend."""

    def __init__(self, path: str | Path, backend: str | None = None, deterministic: bool = True, seed: int = 0):
        from puffer.hub import locate

        groups, meta = checkpoint.load(locate(path))
        self.meta = meta
        be = puffer.backend(backend or meta.get("backend"))
        observation_space = spaces.from_json(meta["observation_space"])
        action_space = spaces.from_json(meta["action_space"])
        policy = from_spec(observation_space, action_space, checkpoint.policy_spec(meta))
        expected = set(policy.init(None, 0))
        # an algorithm may train more than the policy (e.g. a cost critic): only the policy's own parameters act
        if not expected <= set(groups["params"]):
            raise PufferError(f"{path}: parameters {sorted(groups['params'])} do not fit the policy, which needs "
                              f"{sorted(expected)}")
        norm = None
        if "obs_norm" in groups:
            norm = RunningNorm(observation_space.shape[0])
            norm.load_state_dict(groups["obs_norm"])
        params = {k: be.asarray(groups["params"][k]) for k in expected}
        super().__init__(be, policy, params, action_space, norm, deterministic, seed)


def load_actor(path: str | Path, backend: str | None = None, deterministic: bool = True, seed: int = 0,
               target_return: float | None = None) -> Any:
    """The acting side of a checkpoint, by its policy's kind (`puffer.policies.kinds`): a `CheckpointPolicy`,
    or the kind's own actor (a return-conditioned sequence model takes `target_return`)."""
    from puffer.hub import locate

    where = locate(path)
    manifest = checkpoint.read_manifest(where)
    kind = policy_kind(checkpoint.policy_spec(manifest))
    if target_return is not None and not kind.conditioned:
        raise PufferError(f"{path} is a {manifest.get('algo')} policy; --target-return needs a return-conditioned "
                          "one (--algo dt)")
    if kind.actor is None:
        return CheckpointPolicy(path, backend=backend, deterministic=deterministic, seed=seed)
    groups, meta = checkpoint.load(where)
    return kind.actor(groups, meta, puffer.backend(backend or meta.get("backend")), deterministic, seed,
                      target_return)


def run_episodes(env: Any, actor: Any, episodes: int, seed: int = 0, max_steps: int = 1_000_000,
                 key: str | None = "episode_return") -> list[Any]:
    """`key` (default the return; None: the whole statistics dict) of the first `episodes` episodes of `actor`.

    An actor with an `observe(rewards, ended)` method (a sequence model's rolling context) sees each step's outcome.
    """
    observe = getattr(actor, "observe", None)
    obs, _ = env.reset(seed=seed)
    recurrent = getattr(actor, "recurrent", False)
    state = actor.initial_state(env.num_agents) if recurrent else None
    starts = np.zeros(env.num_agents, np.float32)
    returns: list[float] = []
    for _ in range(max_steps):
        if recurrent:
            actions, state = actor.act(obs, state, starts)
        else:
            actions = actor.act(obs)
        obs, rewards, term, trunc, infos = env.step(actions)
        starts = (term | trunc).astype(np.float32)
        if observe is not None:
            observe(rewards, term | trunc)
        returns.extend(dict(e) if key is None else float(e.get(key, np.nan)) for e in infos.get("episodes", ()))
        if len(returns) >= episodes:
            return returns[:episodes]
    raise PufferError(f"only {len(returns)} of {episodes} episodes finished within {max_steps} steps")
