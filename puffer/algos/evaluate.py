"""Running a trained policy: load it from a checkpoint on any backend and measure episode returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

import puffer
from puffer import checkpoint, spaces
from puffer.algos.rollout import RunningNorm
from puffer.errors import PufferError
from puffer.policies import make_policy, reset_state, to_env_actions


class Actor(Protocol):
    """Anything that maps a batch of observations (and a recurrent state) to env actions."""

    def initial_state(self, batch: int) -> Any: ...

    def act(self, obs: np.ndarray, state: Any = None) -> Any: ...


class CheckpointPolicy:
    """A trained policy loaded from a checkpoint, acting deterministically (or by sampling) on any backend."""

    def __init__(self, path: str | Path, backend: str | None = None, deterministic: bool = True, seed: int = 0):
        groups, meta = checkpoint.load(path)
        self.meta = meta
        self.be = puffer.backend(backend or meta.get("backend"))
        self.observation_space = spaces.from_json(meta["observation_space"])
        self.action_space = spaces.from_json(meta["action_space"])
        cfg = meta["config"]
        self.policy = make_policy(self.observation_space, self.action_space, cfg["policy"], cfg["hidden_size"],
                                  cfg["num_layers"], cfg["activation"])
        expected = set(self.policy.init(None, 0))
        if set(groups["params"]) != expected:
            raise PufferError(f"{path}: parameters {sorted(groups['params'])} do not fit the policy, which needs "
                              f"{sorted(expected)}")
        self.params = {k: self.be.asarray(v) for k, v in groups["params"].items()}
        self.norm = None
        if "obs_norm" in groups:
            self.norm = RunningNorm(self.observation_space.shape[0])
            self.norm.load_state_dict(groups["obs_norm"])
        self.deterministic = deterministic
        self.rng = np.random.Generator(np.random.PCG64(seed))
        be, policy = self.be, self.policy

        def step(params, obs, state, starts, noise):
            dist, _, state = policy.step(be, params, obs, reset_state(be, state, starts))
            if deterministic:
                return policy.head.mode(be, dist), state
            return policy.head.sample(be, dist, noise)[0], state

        self._step = be.compile(step)

    def initial_state(self, batch: int) -> Any:
        """The recurrent state for `batch` rows (an empty tuple for MLPs)."""
        return self.policy.initial_state(self.be, batch)

    def act(self, obs: np.ndarray, state: Any = None, starts: np.ndarray | None = None) -> Any:
        """Env actions for `obs` `[B, D]`; recurrent policies take and return `state`."""
        obs = np.asarray(obs, np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.observation_space.shape[0]:
            raise PufferError(f"observations must be [batch, {self.observation_space.shape[0]}] float32, "
                              f"got shape {obs.shape}")
        if self.norm is not None:
            obs = self.norm(obs, np.empty_like(obs))
        b = len(obs)
        state = self.initial_state(b) if state is None else state
        starts = np.zeros(b, np.float32) if starts is None else starts.astype(np.float32)
        noise = self.policy.head.noise(self.rng, b)
        be = self.be
        actions, state = self._step(self.params, be.asarray(obs), state, be.asarray(starts), be.asarray(noise))
        env_actions = to_env_actions(self.action_space, be.to_numpy(actions))
        return (env_actions, state) if self.policy.recurrent else env_actions


def run_episodes(env: Any, actor: Any, episodes: int, seed: int = 0, max_steps: int = 1_000_000) -> list[float]:
    """Returns of the first `episodes` episodes finished by `actor` on vector env `env`."""
    obs, _ = env.reset(seed=seed)
    recurrent = getattr(getattr(actor, "policy", None), "recurrent", False) or getattr(actor, "recurrent", False)
    state = actor.initial_state(env.num_agents) if recurrent else None
    starts = np.zeros(env.num_agents, np.float32)
    returns: list[float] = []
    for _ in range(max_steps):
        if recurrent:
            actions, state = actor.act(obs, state, starts)
        else:
            actions = actor.act(obs)
        obs, _, term, trunc, infos = env.step(actions)
        starts = (term | trunc).astype(np.float32)
        returns.extend(float(e["episode_return"]) for e in infos.get("episodes", ()))
        if len(returns) >= episodes:
            return returns[:episodes]
    raise PufferError(f"only {len(returns)} of {episodes} episodes finished within {max_steps} steps")
