"""The serial backend: every env in the main process (a native env is used as is, gym envs in a loop)."""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.errors import PufferError
from puffer.vector.base import EnvFactory, Infos, VecEnv, check_num_envs


def _rows_of(infos: Infos, rows: np.ndarray, num_rows: int) -> Infos:
    """`infos` with its per-row arrays cut down to `rows`."""
    return {k: v[rows] if isinstance(v, np.ndarray) and v.shape[:1] == (num_rows,) else v for k, v in infos.items()}


class Serial(VecEnv):
    """All envs in this process; `async_reset`/`recv`/`send` work too, with one batch of all rows."""

    def __init__(self, factory: EnvFactory, num_envs: int = 1, seed: int | None = None,
                 batch_size: int | None = None, num_workers: int | None = None, check_finite: bool = True,
                 probe: Any = None):
        self.name = factory.name
        self.num_envs = check_num_envs(num_envs)
        self.check_finite = check_finite
        self._closed = False
        if num_workers not in (None, 1):
            raise PufferError(f"{self.name}: the serial backend runs in one process, so num_workers must be None "
                              f"or 1 (got {num_workers}); use backend='multiprocessing' for workers")
        self.env = factory(self.num_envs, seed, envs=(probe,) if probe is not None else ())
        self._init_spaces(self.env)
        if batch_size not in (None, self.num_agents):
            self.env.close()
            raise PufferError(f"{self.name}: the serial backend steps all {self.num_agents} rows at once, so "
                              f"batch_size must be None or {self.num_agents} (got {batch_size}); use "
                              "backend='multiprocessing' for smaller batches")
        self.batch_size = self.num_agents
        self._env_ids = np.arange(self.num_agents)
        self._pending: tuple | None = None

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Reset every env; returns (obs, infos)."""
        self._pending = None
        obs, infos = self.env.reset(seed)
        self._check_obs(obs)
        return obs, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step every env; returns (obs, rewards, terminals, truncations, infos)."""
        obs, rew, term, trunc, infos = self.env.step(actions)
        self._check_obs(obs)
        return obs, rew, term, trunc, infos

    def async_reset(self, seed: int | None = None) -> None:
        """Reset now; the next `recv` returns the result."""
        obs, infos = self.reset(seed)
        self._pending = (obs, self.env.rewards, self.env.terminals, self.env.truncations, infos)

    def send(self, actions: Any) -> None:
        """Step now with these actions; the next `recv` returns the result."""
        if self._pending is not None:
            raise PufferError(f"{self.name}: send() called twice without recv() in between")
        self._pending = self.step(actions)

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray, np.ndarray]:
        """The result of the last `async_reset` or `send`, with env_ids and masks."""
        if self._pending is None:
            raise PufferError(f"{self.name}: recv() needs an async_reset() or send() first")
        out, self._pending = self._pending, None
        return (*out, self._env_ids, self.env.masks)

    def reset_group(self, env_ids: Any, seed: int) -> tuple[np.ndarray, Infos]:
        """Restart envs `env_ids` from the one initial state `seed` gives; returns (their obs rows, infos)."""
        if self._pending is not None:
            raise PufferError(f"{self.name}: reset_group() between send()/async_reset() and recv(); recv() first")
        ids = self._group(env_ids, seed)
        infos = self.env.reset_group(ids.tolist(), int(seed))
        rows = self._group_rows(ids)
        obs = self.env.observations[rows]
        self._check_obs(obs)
        return obs, _rows_of(infos, rows, self.num_agents)

    def state_dict(self) -> dict[str, Any]:
        """The state of every env, for exact resume (native envs only; gymnasium envs cannot save theirs)."""
        if not hasattr(self.env, "state_dict"):
            raise PufferError(f"{self.name}: {type(self.env).__name__} envs cannot save their state")
        if self._pending is not None:
            raise PufferError(f"{self.name}: cannot save the env state between send()/async_reset() and recv()")
        return self.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`."""
        if not hasattr(self.env, "load_state_dict"):
            raise PufferError(f"{self.name}: {type(self.env).__name__} envs cannot restore a saved state")
        self._pending = None
        self.env.load_state_dict(state)

    def close(self) -> None:
        """Close the envs (idempotent)."""
        if not self._closed:
            self._closed = True
            self.env.close()
