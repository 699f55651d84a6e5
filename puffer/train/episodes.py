"""Whole episodes in groups: the collector of the `Episodes` source (GRPO and other outcome-based methods).

Each collection restarts every group of `group_size` envs from one grouped reset
(`reset_group`, a fresh seed per group drawn from the trainer's generator), so the rows of a group
start from the same state: the "prompt" of an RL episode. It then steps every row until each has
finished its episode (or `max_len` steps, the longest episode kept, have passed) and
masks every step after a row's end. The algorithm gets the `[rows, max_len]` buffer with:

- `mask` 1 on the steps of each row's episode, 0 after it (and on steps the env masks itself),
- `buffer.outcomes` `[rows]`: each row's episode return (sum of its rewards, or of the reward
  model's when the run has one), `buffer.lengths` `[rows]` its length, `buffer.finished` `[rows]`
  whether it ended (False: cut at `rollout_len`),
- `buffer.groups` `[num_groups, group_size, agents_per_env]`: the rows of each group.

The steps rows take after their episode ended are real env steps (a vector env steps every row),
so `global_step` counts them; `episode_steps` in the statistics counts the kept ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.errors import PufferError
from puffer.train.plan import Episodes
from puffer.train.rollout import ActingCollector
from puffer.vector.base import divisors


def check_groups(env: Any, env_name: str, group_size: int, sync: bool, seed: int) -> int:
    """The number of groups `env` splits into, or a PufferError naming what does not work.

    It resets the env and tries one grouped reset, so an env that cannot is an error before training.
    """
    num_envs = int(env.num_envs)
    ok = [d for d in divisors(num_envs) if d >= 2]
    if group_size < 2 or num_envs % group_size:
        raise PufferError(f"group_size={group_size} must be at least 2 and divide num_envs={num_envs}; values that "
                          f"work: {', '.join(map(str, ok)) or 'none (use num_envs >= 2)'}")
    if not sync:
        raise PufferError(f"{env_name}: whole-episode groups need synchronous stepping (vec_batch_size = num_envs), "
                          "not asynchronous batches")
    try:
        if not callable(getattr(env, "reset_group", None)):
            raise PufferError(f"{type(env).__name__} has no reset_group")
        env.reset(seed=seed)
        env.reset_group(np.arange(group_size), seed)
    except PufferError as e:
        raise PufferError(f"env {env_name} cannot restart a group of envs from one seed, which episode groups "
                          f"need ({e})") from e
    return num_envs // group_size


class EpisodeCollector(ActingCollector):
    """The `Episodes` source: fills the buffer with one episode per row, in groups sharing a reset."""

    def __init__(self, run: Any, source: Episodes):
        super().__init__(run, source, source.max_len, {})
        self.group_size = source.group_size
        check_groups(self.env, run.env_name, source.group_size, self.sync, run.config.seed)

    def collect(self) -> Any:
        """Reset every group from its own seed, step until each row's episode ended, mask what follows."""
        run, env, buf = self.run, self.env, self.buffer
        T, a, G = self.rollout_len, self.policy.head.action_dim, self.group_size
        apg = self.rows // env.num_envs
        if self._obs is None:
            env.reset(seed=run.config.seed)
        num_groups = env.num_envs // G
        obs = []
        for g, seed in enumerate(run.rng.integers(0, 2**31 - 1, num_groups).tolist()):
            group_obs, _ = env.reset_group(np.arange(g * G, (g + 1) * G), int(seed))
            obs.append(np.array(group_obs, copy=True))
        obs = np.concatenate(obs)
        for field in buf.data.values():
            field[...] = 0.0
        active = np.ones(self.rows, bool)
        lengths = np.zeros(self.rows, np.int64)
        self._starts = np.ones(self.rows, np.float32)
        self._state = self.policy.initial_state(self.be, self.rows)
        steps = 0
        for t in range(T):
            masks = getattr(env, "masks", None)
            mask = active.astype(np.float32) * (1.0 if masks is None else np.asarray(masks, np.float32))
            out = self._policy_step(obs, None, mask)
            self._store_step(slice(None), t, out, self._starts, mask)
            obs, rewards, term, trunc, infos = self._env_step(out[:, :a])
            done = term | trunc
            self._store_result(slice(None), t, self._channels(rewards, infos), done & active)
            lengths += active
            self._record_group_episodes(infos, done, active, lengths)
            active &= ~done
            self._starts = done.astype(np.float32)
            steps = t + 1
            if not active.any():
                break
        self._obs = obs
        run.global_step += self.rows * steps
        buf.rewards[...] *= buf.mask
        buf.outcomes = buf.rewards.sum(axis=1)
        buf.lengths = lengths
        buf.finished = ~active
        buf.groups = np.arange(self.rows).reshape(num_groups, G, apg)
        buf.episode_steps = int(buf.mask.sum())
        return buf

    def _record_group_episodes(self, infos: dict, done: np.ndarray, active: np.ndarray, lengths: np.ndarray) -> None:
        """Keep the episodes of this collection (each row's first), not those rows start after it."""
        ended = np.flatnonzero(done)
        first = done & active
        if not first.any():
            return
        episodes = infos.get("episodes", [])
        if len(episodes) == len(ended):  # one per ended row, in row order (native and serial envs)
            kept = [e for e, row in zip(episodes, ended) if first[row]]
        else:  # cannot tell which row each came from: report the env's reward sums ourselves
            kept = [{"episode_return": float(self.buffer.rewards[row].sum()), "episode_length": int(lengths[row])}
                    for row in np.flatnonzero(first)]
        self.run.record_episodes(kept)

    def resume_arrays(self) -> dict[str, np.ndarray]:
        """Nothing: every collection starts its groups afresh from the trainer's generator."""
        return {}

    def fits(self, resume: dict[str, np.ndarray], path: Any) -> bool:
        """Always: there is nothing to continue from."""
        return True

    def load_resume_arrays(self, resume: dict[str, np.ndarray], path: Any) -> None:
        """Mark the env as started (the next collection resets its groups anyway)."""
        self._obs = np.zeros((self.rows, self.obs_dim), np.float32)
