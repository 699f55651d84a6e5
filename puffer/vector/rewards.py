"""A vector env whose rewards come from a learned reward model (`puffer preferences fit`), applied by `puffer.make`.

Each step's reward is the model's for the observation the action was taken in and the action;
the env's own episode statistics (`infos["episodes"]`) are left as they are, so reported returns
stay the true ones. Sync (`step`), async (`send`/`recv`) and grouped resets are all covered.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.errors import PufferError


def _flat(actions: Any, rows: int) -> np.ndarray:
    return np.asarray(actions, np.float32).reshape(rows, -1)


class RewardModelEnv:
    """`env` with its rewards replaced by `model.rewards(obs, actions)`; every other attribute is the env's."""

    def __init__(self, env: Any, model: Any):
        self.env, self.model = env, model
        self._obs: np.ndarray | None = None
        self._sent = np.zeros(env.num_agents, np.float32)  # async: the model's reward of each row's action in flight
        self._batch: tuple[np.ndarray, np.ndarray] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        """Reset every env (see `VecEnv.reset`)."""
        obs, infos = self.env.reset(seed=seed)
        self._obs = np.array(obs, copy=True)
        return obs, infos

    def reset_group(self, env_ids: Any, seed: int) -> tuple[np.ndarray, dict]:
        """Restart a group of envs (see `VecEnv.reset_group`)."""
        obs, infos = self.env.reset_group(env_ids, seed)
        if self._obs is not None:
            self._obs[self.env._group_rows(np.asarray(env_ids).reshape(-1))] = obs
        return obs, infos

    def step(self, actions: Any) -> tuple:
        """Step every env; the rewards are the model's."""
        if self._obs is None:
            raise PufferError("step() before reset()")
        rewards = self.model.rewards(self._obs, _flat(actions, len(self._obs)))
        obs, _, term, trunc, infos = self.env.step(actions)
        self._obs = np.array(obs, copy=True)
        return obs, rewards, term, trunc, infos

    def async_reset(self, seed: int | None = None) -> None:
        """Start resetting every env (see `VecEnv.async_reset`)."""
        self._sent[...] = 0.0
        self.env.async_reset(seed=seed)

    def recv(self) -> tuple:
        """The next ready batch; its rewards are the model's for the actions those rows were sent."""
        obs, _, term, trunc, infos, ids, masks = self.env.recv()
        ids = np.asarray(ids)
        self._batch = (np.array(obs, copy=True), ids)
        return obs, self._sent[ids].copy(), term, trunc, infos, ids, masks

    def send(self, actions: Any) -> None:
        """Actions for the rows of the last `recv`."""
        obs, ids = self._batch
        self._sent[ids] = self.model.rewards(obs, _flat(actions, len(obs)))
        self.env.send(actions)

    def state_dict(self) -> dict:
        """Not saved: the observations the next reward depends on live outside the env's state."""
        raise PufferError("an env with a reward model cannot save its state; a resume starts it afresh")

    def close(self) -> None:
        """Close the env."""
        self.env.close()
