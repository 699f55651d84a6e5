"""Run one env of a native class through gymnasium's or PettingZoo's API.

`to_gymnasium(cls, **kwargs)` gives a `gymnasium.Env`; `to_pettingzoo(cls, **kwargs)` a PettingZoo
`ParallelEnv` (agents `agent_0 ... agent_{N-1}`). Both wrap `cls(1, **kwargs)` and return fresh
copies of everything (gymnasium's checker requires that users may keep what they are given).
When an episode ends they return its true last observation; the native env has already started
the next episode, which the following `reset()` replaces (or, stepping on without a reset, continues).
gymnasium and PettingZoo are imported only when these are called.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from puffer import spaces as S
from puffer.envs.base import NativeEnv
from puffer.errors import SpaceError


def _row(space: S.Space, obs: np.ndarray, row: int) -> Any:
    """A fresh copy of row `row` of a batch of observations, as a nested value of `space`."""
    if obs.dtype.names is None:
        return obs[row].copy()
    return _copy_tree(S.from_structured(space, obs[row : row + 1]), 0)


def _copy_tree(value: Any, row: int) -> Any:
    if isinstance(value, dict):
        return {k: _copy_tree(v, row) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_copy_tree(v, row) for v in value)
    return np.array(value[row])


def _batch_action(space: S.Space, action: Any) -> Any:
    """One action of `space` as a batch of one, in the form the native env's `step` accepts."""
    if isinstance(space, S.Dict):
        if not isinstance(action, dict):
            raise SpaceError(f"expected a dict action for {space!r}, got {type(action).__name__}")
        return {k: _batch_action(sub, action.get(k)) for k, sub in space.items()}
    a = np.asarray(action)
    if isinstance(space, S.Box) and a.dtype.kind in "iu":
        a = a.astype(space.dtype)  # an integer literal for a float Box is still a valid action
    return a.reshape((1, *space.shape)) if a.size == int(np.prod(space.shape)) else a


def _episode_info(infos: dict[str, Any], row: int) -> dict[str, Any]:
    """The per-row values of `infos` for one row, as Python scalars (the per-step `cost`)."""
    info: dict[str, Any] = {}
    if "cost" in infos:
        info["cost"] = float(infos["cost"][row])
    return info


@functools.cache
def _gymnasium_class() -> type:
    import gymnasium

    class NativeGymnasiumEnv(gymnasium.Env):
        """One env of a puffer native class behind gymnasium's `Env` API."""

        metadata: dict[str, Any] = {"render_modes": []}
        render_mode = None

        def __init__(self, cls: type[NativeEnv], **kwargs: Any):
            if cls.agents_per_env != 1:
                raise ValueError(f"{cls.__name__} has {cls.agents_per_env} agents per env; use to_pettingzoo")
            self.native = cls(1, **kwargs)
            self.observation_space = cls.single_observation_space.to_gymnasium()
            self.action_space = cls.single_action_space.to_gymnasium()
            self._obs_space = cls.single_observation_space
            self._act_space = cls.single_action_space
            self._np_random = self.native._rng

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
            """Start a new episode; a seed reseeds the native env's generator."""
            obs, _ = self.native.reset(seed)
            self._np_random = self.native._rng
            return _row(self._obs_space, obs, 0), {}

        def step(self, action: Any):
            """Step with one action; at an episode's end, return its last observation."""
            obs, rewards, terminals, truncations, infos = self.native.step(_batch_action(self._act_space, action))
            info = _episode_info(infos, 0)
            if infos["episodes"]:
                info.update(infos["episodes"][0])
                obs = infos["final_observation"]
            return (_row(self._obs_space, obs, 0), float(rewards[0]), bool(terminals[0]),
                    bool(truncations[0]), info)

        def close(self) -> None:
            """Close the native env."""
            self.native.close()

    return NativeGymnasiumEnv


def to_gymnasium(cls: type[NativeEnv], **kwargs: Any) -> Any:
    """A `gymnasium.Env` running one env of native class `cls` (built with `cls(1, **kwargs)`)."""
    return _gymnasium_class()(cls, **kwargs)


@functools.cache
def _pettingzoo_class() -> type:
    from pettingzoo import ParallelEnv

    class NativeParallelEnv(ParallelEnv):
        """One env of a puffer native class behind PettingZoo's `ParallelEnv` API.

        All agents act every step until the episode ends, then `agents` is empty until `reset`.
        `state()` is the global state when the class publishes one (`single_state_space`).
        """

        metadata: dict[str, Any] = {"render_modes": [], "name": "puffer_native"}
        render_mode = None

        def __init__(self, cls: type[NativeEnv], **kwargs: Any):
            self.native = cls(1, **kwargs)
            self.metadata = {**self.metadata, "name": f"puffer_{cls.__name__.lower()}"}
            self.possible_agents = [f"agent_{i}" for i in range(cls.agents_per_env)]
            self.agents: list[str] = []
            obs_space = cls.single_observation_space.to_gymnasium()
            act_space = cls.single_action_space.to_gymnasium()
            self.observation_spaces = dict.fromkeys(self.possible_agents, obs_space)
            self.action_spaces = dict.fromkeys(self.possible_agents, act_space)
            state_space = getattr(cls, "single_state_space", None)
            if state_space is not None:
                self.state_space = state_space.to_gymnasium()
            self._obs_space = cls.single_observation_space
            self._act_space = cls.single_action_space
            self._state: np.ndarray | None = None

        def observation_space(self, agent: str) -> Any:
            """The (shared) observation space of `agent`."""
            return self.observation_spaces[agent]

        def action_space(self, agent: str) -> Any:
            """The (shared) action space of `agent`."""
            return self.action_spaces[agent]

        def state(self) -> np.ndarray:
            """The global state of the env, as published by the native env."""
            if self._state is None:
                raise RuntimeError(f"{self.native.name}: no global state (call reset first, or the env has none)")
            return self._state.copy()

        def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
            """Start a new episode for every agent."""
            obs, infos = self.native.reset(seed)
            self.agents = list(self.possible_agents)
            self._state = infos["global_state"][0].copy() if "global_state" in infos else None
            return ({a: _row(self._obs_space, obs, i) for i, a in enumerate(self.agents)},
                    {a: {} for a in self.agents})

        def step(self, actions: dict[str, Any]):
            """Step every agent; all of them must act while the episode runs."""
            if not self.agents:
                raise RuntimeError(f"{self.native.name}: the episode is over; call reset()")
            missing = [a for a in self.possible_agents if a not in actions]
            if missing:
                raise ValueError(f"{self.native.name}: no action for {missing}; every agent acts every step")
            batch = [_batch_action(self._act_space, actions[a]) for a in self.possible_agents]
            if isinstance(self._act_space, S.Dict):
                batched: Any = {k: np.concatenate([b[k] for b in batch]) for k in self._act_space.keys()}
            else:
                batched = np.concatenate(batch)
            obs, rewards, terminals, truncations, infos = self.native.step(batched)
            ended = bool(infos["episodes"])
            if ended:
                obs = infos["final_observation"]
            state = infos.get("final_global_state" if ended else "global_state")
            if state is not None:
                self._state = state[0].copy()
            agents = self.possible_agents
            out_infos = {a: _episode_info(infos, i) for i, a in enumerate(agents)}
            for episode in infos["episodes"]:
                out_infos[agents[episode.get("agent", 0)]].update(episode)
            result = (
                {a: _row(self._obs_space, obs, i) for i, a in enumerate(agents)},
                {a: float(rewards[i]) for i, a in enumerate(agents)},
                {a: bool(terminals[i]) for i, a in enumerate(agents)},
                {a: bool(truncations[i]) for i, a in enumerate(agents)},
                out_infos,
            )
            if ended:
                self.agents = []
            return result

        def close(self) -> None:
            """Close the native env."""
            self.native.close()

    return NativeParallelEnv


def to_pettingzoo(cls: type[NativeEnv], **kwargs: Any) -> Any:
    """A PettingZoo `ParallelEnv` running one env of native class `cls` (built with `cls(1, **kwargs)`)."""
    return _pettingzoo_class()(cls, **kwargs)
