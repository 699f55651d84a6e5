"""Hazard: a constrained point-navigation env with a per-step cost next to the reward (Safe RL)."""

from __future__ import annotations

import numpy as np

from puffer.envs.base import Infos, NativeEnv
from puffer.spaces import Box


class Hazard(NativeEnv):
    """Reach a goal past a hazard disc: the straight path is fastest but costly.

    A point starts at `(-1, y0)` and must reach the goal `(1, y1)` (y0, y1 uniform in [-0.1, 0.1]);
    a hazard disc of radius 0.5 sits at `(0, yc)`, yc uniform in [-0.1, 0.1], across the straight
    line. Action: a velocity in the Box [-1, 1]^2, clipped to the box and then to norm 1, times
    `speed` = 0.1 per step (a Euclidean limit, so a detour is really longer). Reward per step:
    the decrease of the distance to the goal, minus 0.05 (time pressure), plus 1 on reaching the
    goal (within 0.1: terminal). Truncated after 60 steps. Cost per step: 1 while inside the disc,
    in `infos["cost"]` (float32 `[rows]`, every step); episodes report `episode_cost` and
    `success`.

    Mean returns of the scripted policies (`oracle_actions`, checked in the tests): the greedy
    straight path returns 2.0 in 20 steps with an episode cost of 9.3 (the unconstrained optimum,
    `optimal_return`); the shortest cost-free path (tangent, arc just outside the disc, tangent)
    returns 1.86 in 22 steps with cost 0 (the cost-free optimum, `safe_return`). Any cost limit
    below ~9 forces a trade-off. `solved_return` (1.7) is reachable at zero cost; uniform random
    actions return -3.0 with cost 1.8. Observation (7): position, goal
    minus position, hazard centre minus position, signed distance to the hazard's edge.
    Measured: unconstrained PPO (torch, 32 envs) reaches 1.7 at 20k env steps (taking the costly
    path); suggested PPO-Lagrangian budget 100-200k.
    """

    single_observation_space = Box(-4.0, 4.0, shape=(7,), dtype=np.float32)
    single_action_space = Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    solved_return = 1.7
    optimal_return = 2.0
    safe_return = 1.86
    max_return = None
    speed = 0.1
    radius = 0.5
    goal_radius = 0.1
    time_penalty = 0.05
    goal_bonus = 1.0
    horizon = 60
    bound = 1.5

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None):
        super().__init__(num_envs, seed, buffers)
        rows = self.num_agents
        self._pos = np.zeros((rows, 2), np.float32)
        self._goal = np.zeros((rows, 2), np.float32)
        self._hazard = np.zeros((rows, 2), np.float32)
        self._dist = np.zeros(rows, np.float32)
        self._t = np.zeros(rows, np.int64)
        self._cost = np.zeros(rows, np.float32)
        self._episode_cost = np.zeros(rows, np.float32)

    def _reset_rows(self, rows: np.ndarray) -> None:
        k = len(rows)
        y = self._rng.uniform(-0.1, 0.1, (3, k)).astype(np.float32)
        self._pos[rows] = np.stack([np.full(k, -1.0, np.float32), y[0]], axis=1)
        self._goal[rows] = np.stack([np.full(k, 1.0, np.float32), y[1]], axis=1)
        self._hazard[rows] = np.stack([np.zeros(k, np.float32), y[2]], axis=1)
        self._dist[rows] = np.linalg.norm(self._goal[rows] - self._pos[rows], axis=1)
        self._t[rows] = 0
        # `_cost` keeps the ended rows' last cost: this step's infos["cost"] still reports it.
        self._episode_cost[rows] = 0.0
        self._write_obs(rows)

    def oracle_actions(self, safe: bool = True) -> np.ndarray:
        """Full speed toward the goal; with `safe`, around the disc along its tangents instead.

        The safe path is the shortest cost-free one: while the straight segment to the goal cuts
        the disc (inflated by a small margin), head along the tangent on the goal's side.
        """
        to_goal = self._goal - self._pos
        direction = to_goal / np.maximum(np.linalg.norm(to_goal, axis=1, keepdims=True), 1e-9)
        if safe:
            r = self.radius + 0.02
            to_c = self._hazard - self._pos
            d = np.maximum(np.linalg.norm(to_c, axis=1), r + 1e-6)
            # Closest point of the segment to the centre: does the straight path cut the disc?
            seg_len2 = np.maximum((to_goal**2).sum(axis=1), 1e-12)
            s = np.clip((to_c * to_goal).sum(axis=1) / seg_len2, 0.0, 1.0)
            blocked = np.linalg.norm(self._pos + s[:, None] * to_goal - self._hazard, axis=1) < r
            alpha = np.arcsin(r / d)
            base = np.arctan2(to_c[:, 1], to_c[:, 0])
            goal_angle = np.arctan2(to_goal[:, 1], to_goal[:, 0])
            # The tangent on the goal's side of the centre line is the shorter way round.
            side = np.where(np.sin(goal_angle - base) >= 0, 1.0, -1.0)
            angle = base + side * alpha
            tangent = np.stack([np.cos(angle), np.sin(angle)], axis=1)
            direction = np.where(blocked[:, None], tangent, direction)
        return direction.astype(np.float32)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Start a new episode in every env; `infos["cost"]` is zero."""
        self._cost[:] = 0.0
        return super().reset(seed)

    def _reset_group_rows(self, env_rows: list[np.ndarray], seed: int) -> None:
        super()._reset_group_rows(env_rows, seed)
        self._cost[np.concatenate(env_rows)] = 0.0  # a fresh start has no cost yet, as after reset()

    def _write_obs(self, rows: np.ndarray | slice) -> None:
        pos = self._pos[rows]
        to_hazard = self._hazard[rows] - pos
        obs = self.observations
        obs[rows, 0:2] = pos
        obs[rows, 2:4] = self._goal[rows] - pos
        obs[rows, 4:6] = to_hazard
        obs[rows, 6] = np.linalg.norm(to_hazard, axis=1) - self.radius

    def _step(self, actions: np.ndarray) -> None:
        norm = np.linalg.norm(actions, axis=1, keepdims=True)
        velocity = actions * (self.speed / np.maximum(norm, 1.0))
        self._pos += velocity
        np.clip(self._pos, -self.bound, self.bound, out=self._pos)
        dist = np.linalg.norm(self._goal - self._pos, axis=1)
        reached = dist < self.goal_radius
        self.rewards[:] = self._dist - dist - self.time_penalty + self.goal_bonus * reached
        self._dist[:] = dist
        inside = np.linalg.norm(self._pos - self._hazard, axis=1) < self.radius
        self._cost[:] = inside
        self._episode_cost += self._cost
        self._t += 1
        self.terminals[:] = reached
        np.logical_and(self._t >= self.horizon, ~reached, out=self.truncations)
        self._write_obs(slice(None))

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"episode_cost": self._episode_cost[rows].copy(), "success": self.terminals[rows].astype(np.int64)}

    def _add_infos(self, infos: Infos) -> None:
        infos["cost"] = self._cost.copy()
