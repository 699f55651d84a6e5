"""`Sequence`: an outcome-reward task in miniature, GRPO's home ground (a prompt, a generated answer, a verifier)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from puffer.envs.base import NativeEnv
from puffer.spaces import Box, Discrete


class Sequence(NativeEnv):
    """Write the prompt sorted: a verifier scores the finished sequence, at the end only.

    Each episode shows a prompt of `length` integers in [0, `vocab`) (default 3 and 4); the policy
    emits one token per step for `length` steps, then the verifier compares the emitted sequence
    with the sorted prompt. Reward 0 at every step but the last, where it is the fraction of
    positions that match (so an episode's return is its outcome); `success` is 1 when all match.
    The observation is the prompt one-hot (`length * vocab`) followed by the position one-hot
    (`length`). A uniform policy succeeds with probability vocab**-length (1/64) and returns 1/4;
    the optimum is 1, solved at 0.9. The prompt is drawn from the env's generator, so a grouped
    reset gives every env of a group the same prompt. Measured with puffer's GRPO (torch, 32 envs
    in groups of 8, seeds 0-2): 90% greedy success first at 2.9k-3.8k env steps.
    """

    length: ClassVar[int] = 3
    vocab: ClassVar[int] = 4
    single_observation_space = Box(0.0, 1.0, shape=(length * vocab + length,), dtype=np.float32)
    single_action_space = Discrete(vocab)
    solved_return = 0.9
    optimal_return = 1.0
    max_return = 1.0
    max_episode_steps: ClassVar[int] = length

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None):
        super().__init__(num_envs, seed, buffers)
        self._prompt = np.zeros((self.num_agents, self.length), np.int64)
        self._answer = np.zeros((self.num_agents, self.length), np.int64)
        self._emitted = np.zeros((self.num_agents, self.length), np.int64)
        self._t = np.zeros(self.num_agents, np.int64)
        self._success = np.zeros(self.num_agents, np.int64)

    def oracle_actions(self) -> np.ndarray:
        """The sorted prompt's token at each row's position."""
        return self._answer[np.arange(self.num_agents), np.minimum(self._t, self.length - 1)]

    def _observe(self, rows: np.ndarray) -> None:
        k, v = self.length, self.vocab
        obs = np.zeros((len(rows), k * v + k), np.float32)
        index = np.arange(len(rows))[:, None]
        obs[index, np.arange(k) * v + self._prompt[rows]] = 1.0
        obs[np.arange(len(rows)), k * v + np.minimum(self._t[rows], k - 1)] = 1.0
        self.observations[rows] = obs

    def _reset_rows(self, rows: np.ndarray) -> None:
        self._prompt[rows] = self._rng.integers(0, self.vocab, (len(rows), self.length))
        self._answer[rows] = np.sort(self._prompt[rows], axis=1)
        self._emitted[rows] = 0
        self._t[rows] = 0
        self._observe(rows)

    def _step(self, actions: np.ndarray) -> None:
        rows = np.arange(self.num_agents)
        self._emitted[rows, self._t] = actions
        self._t += 1
        ended = self._t >= self.length
        correct = (self._emitted == self._answer).sum(axis=1)
        self.rewards[:] = np.where(ended, correct / self.length, 0.0)
        self._success[:] = ended & (correct == self.length)
        self.terminals[:] = ended
        self.truncations[:] = False
        self._observe(rows)

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"success": self._success[rows].copy()}
