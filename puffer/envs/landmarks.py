"""Landmarks: cooperative multi-agent coverage with a shared team reward and a global state."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np

from puffer.envs.base import Infos, NativeEnv
from puffer.spaces import Box, Discrete


def _spaces(n: int) -> tuple[Box, Box]:
    """Per-agent observation and global state spaces for `n` agents and `n` landmarks."""
    obs_dim = 2 + 2 * n + 2 * (n - 1) + n
    return Box(-2.0, 2.0, shape=(obs_dim,), dtype=np.float32), Box(-1.0, 1.0, shape=(4 * n,), dtype=np.float32)


class Landmarks(NativeEnv):
    """N agents (default 3) must cover N landmarks in [-1, 1]^2; one shared team reward.

    Each episode places agents and landmarks uniformly at random. Actions are Discrete(5): stay,
    +x, -x, +y, -y, moving 0.1 (positions clipped to the square). Every step all agents of an env
    get the same reward `-(1/N) * sum over landmarks of the distance to its nearest agent` (0 when
    every landmark is occupied), for 25 steps (then truncated; there is no terminal state).
    Collisions are not penalised. `success` = every landmark within 0.1 of some agent at the end.

    Observation per agent (dim 5N): own position (2), every landmark relative to the agent (2N),
    every other agent relative to it in index order (2(N-1)), the agent's one-hot id (N).
    `infos["global_state"]` `[rows, 4N]` (every reset and step; `single_state_space`) holds all
    agent positions then all landmark positions, the same for every agent of an env, and
    `infos["final_global_state"]` the state before an auto-reset (as `final_observation`).

    Mean returns with 3 agents (`oracle_actions`, checked in the tests): uniform random -16;
    every agent to its nearest landmark (no coordination) -8.9; agent i to landmark i -6.2; the
    optimal assignment walked greedily -4.5 (`optimal_return`, 98% success). Solved at -5.5:
    better than the fixed convention, which needs coordination; every agent sees all positions,
    so decentralised agents can agree on the optimal assignment. Measured learning: independent
    PPO with shared parameters (64x2 MLP, no central critic) only climbs from -16 to about -13
    in 500k env steps, because the team reward credits each agent's action poorly; the
    one-agent subclass reaches its scripted optimum in ~100k steps. Expect MAPPO (centralised
    critic on `global_state`) to need a few million env steps to reach `solved_return`.
    """

    agents_per_env: ClassVar[int] = 3
    single_action_space = Discrete(5)
    single_observation_space, single_state_space = _spaces(3)
    solved_return = -5.5
    optimal_return = -4.5
    max_return = 0.0
    horizon: ClassVar[int] = 25
    speed: ClassVar[float] = 0.1
    cover_radius: ClassVar[float] = 0.1
    _MOVES = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)

    def __init_subclass__(cls, **kwargs: Any):
        # A subclass that only changes `agents_per_env` gets matching spaces.
        super().__init_subclass__(**kwargs)
        if "single_observation_space" not in cls.__dict__:
            cls.single_observation_space, cls.single_state_space = _spaces(cls.agents_per_env)

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None):
        super().__init__(num_envs, seed, buffers)
        n = self.agents_per_env
        self._agents = np.zeros((self.num_envs, n, 2), np.float32)
        self._landmarks = np.zeros((self.num_envs, n, 2), np.float32)
        self._t = np.zeros(self.num_envs, np.int64)
        self._covered = np.zeros(self.num_envs, bool)
        self._eye = np.eye(n, dtype=np.float32)
        # others[i] lists the agents other than i, in index order.
        self._others = np.array([[j for j in range(n) if j != i] for i in range(n)], np.int64).reshape(n, n - 1)
        self._state = np.zeros((self.num_envs, 4 * n), np.float32)

    def oracle_actions(self, assignment: str = "optimal") -> np.ndarray:
        """Each agent walks greedily to an assigned landmark; actions `[rows]`.

        `assignment`: "optimal" (the permutation with the least total distance, re-chosen every
        step; the documented optimum), "fixed" (agent i to landmark i) or "nearest" (each agent
        to its own nearest landmark, uncoordinated).
        """
        n = self.agents_per_env
        # dist[e, a, l]: agent a to landmark l.
        dist = np.linalg.norm(self._agents[:, :, None, :] - self._landmarks[:, None, :, :], axis=-1)
        if assignment == "optimal":
            perms = np.array(list(itertools.permutations(range(n))), np.int64)  # [P, n]
            total = dist[:, np.arange(n), perms].sum(axis=2)  # [E, P]
            goal = perms[total.argmin(axis=1)]
        elif assignment == "fixed":
            goal = np.broadcast_to(np.arange(n), (self.num_envs, n))
        elif assignment == "nearest":
            goal = dist.argmin(axis=2)
        else:
            raise ValueError(f"Landmarks: assignment must be 'optimal', 'fixed' or 'nearest', got {assignment!r}")
        delta = np.take_along_axis(self._landmarks, goal[..., None], axis=1) - self._agents  # [E, n, 2]
        dx, dy = delta[..., 0], delta[..., 1]
        horizontal = np.abs(dx) >= np.abs(dy)
        action = np.where(horizontal, np.where(dx > 0, 1, 2), np.where(dy > 0, 3, 4))
        # Stay once within half a step: moving would only overshoot.
        action[np.maximum(np.abs(dx), np.abs(dy)) <= self.speed / 2] = 0
        return action.reshape(-1).astype(np.int64)

    def _reset_rows(self, rows: np.ndarray) -> None:
        envs = rows[:: self.agents_per_env] // self.agents_per_env
        n = self.agents_per_env
        self._agents[envs] = self._rng.uniform(-1.0, 1.0, (len(envs), n, 2))
        self._landmarks[envs] = self._rng.uniform(-1.0, 1.0, (len(envs), n, 2))
        self._t[envs] = 0
        self._write_obs(envs)

    def _write_obs(self, envs: np.ndarray | slice) -> None:
        n = self.agents_per_env
        agents, landmarks = self._agents[envs], self._landmarks[envs]  # [E, n, 2]
        e = len(agents)
        obs = np.empty((e, n, self.single_observation_space.shape[0]), np.float32)
        obs[..., :2] = agents
        obs[..., 2 : 2 + 2 * n] = (landmarks[:, None, :, :] - agents[:, :, None, :]).reshape(e, n, 2 * n)
        rel = agents[:, self._others, :] - agents[:, :, None, :]  # [E, n, n-1, 2]
        obs[..., 2 + 2 * n : 4 * n] = rel.reshape(e, n, 2 * (n - 1))
        obs[..., 4 * n :] = self._eye
        rows = slice(None) if isinstance(envs, slice) else (envs[:, None] * n + np.arange(n)).ravel()
        self.observations[rows] = obs.reshape(-1, obs.shape[2])
        self._state[envs, : 2 * n] = agents.reshape(e, 2 * n)
        self._state[envs, 2 * n :] = landmarks.reshape(e, 2 * n)

    def _step(self, actions: np.ndarray) -> None:
        n = self.agents_per_env
        self._agents += self.speed * self._MOVES[actions].reshape(self.num_envs, n, 2)
        np.clip(self._agents, -1.0, 1.0, out=self._agents)
        # dist[e, l, a]: landmark l to agent a; each landmark counts its nearest agent.
        dist = np.linalg.norm(self._landmarks[:, :, None, :] - self._agents[:, None, :, :], axis=-1)
        nearest = dist.min(axis=2)
        team = -nearest.mean(axis=1)
        np.all(nearest < self.cover_radius, axis=1, out=self._covered)
        self._t += 1
        self.rewards[:] = np.repeat(team, n)
        self.terminals[:] = False
        self.truncations[:] = np.repeat(self._t >= self.horizon, n)
        self._write_obs(slice(None))

    def _before_reset(self, infos: Infos, rows: np.ndarray) -> None:
        super()._before_reset(infos, rows)
        infos["final_global_state"] = np.repeat(self._state, self.agents_per_env, axis=0)

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"agent": rows % self.agents_per_env,
                "success": self._covered[rows // self.agents_per_env].astype(np.int64)}

    def _add_infos(self, infos: Infos) -> None:
        infos["global_state"] = np.repeat(self._state, self.agents_per_env, axis=0)
