"""The "ocean" sanity suite: tiny envs that each test one capability of a learner, quick to solve.

Each class documents its optimum; `solved_return` sits between the best return a learner lacking
the capability can get and the optimum, so reaching it means the capability works. "Measured" is
where puffer's PPO (torch, 32 envs, rollout 32, minibatch 256, other defaults; a 64x2 MLP, an
LSTM for Memory) first had a mean return over 100 episodes at `solved_return`, one seed; the
suggested budgets leave room for other seeds and settings.
"""

from __future__ import annotations

import math

import numpy as np

from puffer.envs.base import NativeEnv
from puffer.spaces import Box, Dict, Discrete


class Bandit(NativeEnv):
    """A k-armed bandit: arm `best_arm` pays 1 with probability 0.8, every other arm with 0.2.

    One-step episodes; the observation is a constant 1. Optimum: always pull `best_arm`, expected
    return 0.8 (max 1). Solved at 0.7, i.e. the best arm pulled at least 5 times out of 6; a
    uniform policy gets 0.35 with 4 arms. Reports `success` (1 when the best arm was pulled).
    Measured: solved at 6k env steps; suggested PPO budget 20k.
    """

    single_observation_space = Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    single_action_space = Discrete(4)
    solved_return = 0.7
    optimal_return = 0.8
    max_return = 1.0
    max_episode_steps = 1
    p_best = 0.8
    p_other = 0.2

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None,
                 best_arm: int = 2):
        super().__init__(num_envs, seed, buffers)
        n = self.single_action_space.n
        if not 0 <= best_arm < n:
            raise ValueError(f"Bandit: best_arm must be in [0, {n}), got {best_arm}")
        self.best_arm = best_arm
        self._pay = np.full(n, self.p_other, np.float32)
        self._pay[best_arm] = self.p_best
        self._success = np.zeros(self.num_agents, np.float32)

    def oracle_actions(self) -> np.ndarray:
        """Always the best arm."""
        return np.full(self.num_agents, self.best_arm, np.int64)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.observations[rows] = 1.0

    def _step(self, actions: np.ndarray) -> None:
        draws = self._rng.random(self.num_agents, dtype=np.float32)
        np.less(draws, self._pay[actions], out=draws, casting="unsafe")
        self.rewards[:] = draws
        np.equal(actions, self.best_arm, out=self._success, casting="unsafe")
        self.terminals[:] = True
        self.truncations[:] = False

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"success": self._success[rows].astype(np.int64)}


class Memory(NativeEnv):
    """Recall a cue: a bit shown only at the first step must be repeated at the last step.

    Observation `[cue == 0, cue == 1, is_last_step]`: the cue one-hot appears at step 0 only,
    then zeros until the last of `length` steps (default 4) sets `is_last_step`. Only the action at
    the last step counts: reward 1 if it equals the cue, else 0; the episode then terminates.
    Reports `success`. Optimum: return 1 (needs memory); a memoryless policy gets 0.5. Solved at
    0.9. Measured (LSTM): solved at 4k env steps; suggested budget 20-50k.
    """

    single_observation_space = Box(0.0, 1.0, shape=(3,), dtype=np.float32)
    single_action_space = Discrete(2)
    solved_return = 0.9
    optimal_return = 1.0
    max_return = 1.0

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None,
                 length: int = 4):
        super().__init__(num_envs, seed, buffers)
        if length < 2:
            raise ValueError(f"Memory: length must be >= 2 (a cue step and a recall step), got {length}")
        self.length = int(length)
        self._cue = np.zeros(self.num_agents, np.int64)
        self._t = np.zeros(self.num_agents, np.int64)

    def oracle_actions(self) -> np.ndarray:
        """The cue (the remembered bit); the action only matters at the last step."""
        return self._cue.copy()

    def _reset_rows(self, rows: np.ndarray) -> None:
        cue = self._rng.integers(0, 2, len(rows))
        self._cue[rows] = cue
        self._t[rows] = 0
        obs = np.zeros((len(rows), 3), np.float32)
        obs[np.arange(len(rows)), cue] = 1.0
        self.observations[rows] = obs

    def _step(self, actions: np.ndarray) -> None:
        self._t += 1
        last = self._t == self.length - 1  # the observation now shown asks for the recall
        ended = self._t == self.length
        self.rewards[:] = ended & (actions == self._cue)
        self.terminals[:] = ended
        self.truncations[:] = False
        self.observations[:] = 0.0
        self.observations[:, 2] = last

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"success": (self._episode_return[rows] > 0).astype(np.int64)}


class Password(NativeEnv):
    """Exploration: type a fixed bit string; reward 1 only if every bit is right.

    Each episode lasts `len(password)` steps (default "10110", 5 bits); action b in {0, 1} types
    bit b. The observation shows the bits typed so far (+1 for a 1, -1 for a 0, 0 not yet typed).
    Reward 1 at the last step iff the typed string equals the password, else 0; reports `success`.
    A uniform policy succeeds with probability 2**-5 = 1/32. Optimum 1; solved at 0.9.
    Measured: solved at 6k env steps; suggested budget 30k. A subclass may set another
    `password`; its observation space follows.
    """

    single_observation_space = Box(-1.0, 1.0, shape=(5,), dtype=np.float32)
    single_action_space = Discrete(2)
    solved_return = 0.9
    optimal_return = 1.0
    max_return = 1.0
    password = "10110"

    def __init_subclass__(cls, **kwargs: object):
        super().__init_subclass__(**kwargs)
        if set(cls.password) - {"0", "1"} or not cls.password:
            raise ValueError(f"{cls.__name__}: password must be a non-empty string of 0s and 1s, got {cls.password!r}")
        if "single_observation_space" not in cls.__dict__:
            cls.single_observation_space = Box(-1.0, 1.0, shape=(len(cls.password),), dtype=np.float32)

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None):
        super().__init__(num_envs, seed, buffers)
        self._bits = np.array([int(c) for c in self.password], np.int64)
        self._signs = np.where(self._bits == 1, 1.0, -1.0).astype(np.float32)
        self._t = np.zeros(self.num_agents, np.int64)
        self._correct = np.zeros(self.num_agents, bool)
        self._rows = np.arange(self.num_agents)

    def oracle_actions(self) -> np.ndarray:
        """The password's next bit."""
        return self._bits[np.minimum(self._t, len(self._bits) - 1)]

    def _reset_rows(self, rows: np.ndarray) -> None:
        self._t[rows] = 0
        self._correct[rows] = True
        self.observations[rows] = 0.0

    def _step(self, actions: np.ndarray) -> None:
        t = self._t
        self._correct &= actions == self._bits[t]
        self.observations[self._rows, t] = np.where(actions == 1, 1.0, -1.0)
        t += 1
        ended = t == len(self._bits)
        self.rewards[:] = ended & self._correct
        self.terminals[:] = ended
        self.truncations[:] = False

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"success": self._correct[rows].astype(np.int64)}


class Squared(NativeEnv):
    """Grid navigation: walk from the centre of a `size` x `size` grid (default 9) to a target cell.

    Observation `[agent_x, agent_y, target_x, target_y]` scaled to [-1, 1]; actions 0 stay,
    1 up, 2 down, 3 left, 4 right (moves into a wall do nothing). The target is a uniformly random
    cell other than the centre. Reward 1 on reaching it (terminal); truncated after
    `2 * (size - 1)` steps, twice the longest shortest path. Reports `success`. Optimum: walk a
    shortest path, return 1; a uniform random walk succeeds about 11% of the time. Solved at 0.9.
    Measured: solved at 14k env steps; suggested budget 50k.
    """

    single_observation_space = Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    single_action_space = Discrete(5)
    solved_return = 0.9
    optimal_return = 1.0
    max_return = 1.0
    _MOVES = np.array([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]], np.int64)

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None,
                 size: int = 9):
        super().__init__(num_envs, seed, buffers)
        if size < 3 or size % 2 == 0:
            raise ValueError(f"Squared: size must be odd and >= 3 (the agent starts at the centre), got {size}")
        self.size = int(size)
        self.half = self.size // 2
        self.max_steps = 2 * (self.size - 1)
        self._agent = np.zeros((self.num_agents, 2), np.int64)
        self._target = np.zeros((self.num_agents, 2), np.int64)
        self._t = np.zeros(self.num_agents, np.int64)

    def oracle_actions(self) -> np.ndarray:
        """A shortest path: step along the axis with the larger remaining distance."""
        dx, dy = (self._target - self._agent).T
        horizontal = np.abs(dx) >= np.abs(dy)
        return np.where(horizontal, np.where(dx > 0, 4, 3), np.where(dy > 0, 1, 2)).astype(np.int64)

    def _reset_rows(self, rows: np.ndarray) -> None:
        cells = self.size * self.size
        centre = cells // 2
        # Draw among the cells other than the centre: skip over it.
        cell = self._rng.integers(0, cells - 1, len(rows))
        cell += cell >= centre
        self._target[rows, 0] = cell % self.size - self.half
        self._target[rows, 1] = cell // self.size - self.half
        self._agent[rows] = 0
        self._t[rows] = 0
        self._write_obs(rows)

    def _write_obs(self, rows: np.ndarray | slice) -> None:
        scale = np.float32(1.0 / self.half)
        self.observations[rows, :2] = self._agent[rows] * scale
        self.observations[rows, 2:] = self._target[rows] * scale

    def _step(self, actions: np.ndarray) -> None:
        np.clip(self._agent + self._MOVES[actions], -self.half, self.half, out=self._agent)
        self._t += 1
        reached = (self._agent == self._target).all(axis=1)
        self.rewards[:] = reached
        self.terminals[:] = reached
        np.logical_and(self._t >= self.max_steps, ~reached, out=self.truncations)
        self._write_obs(slice(None))

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"success": self.terminals[rows].astype(np.int64)}


class Stochastic(NativeEnv):
    """The best memoryless policy is stochastic: play action 1 a fraction `p` = 0.75 of the time.

    Episodes last `horizon` = 32 steps and the observation is a constant 1, so a memoryless policy
    is one fixed distribution. At the last step the reward is `1 - |k / 32 - p| / max(p, 1 - p)`,
    k the number of 1s played. Any deterministic memoryless policy gets at most 2/3 (always 1);
    the optimum plays 1 with probability ~0.755 for an expected return of 0.9197 (binomial
    average). Solved at 0.85, reached for a probability of 1 roughly between 0.65 and 0.85. A
    policy that counts (memory) can reach 1, the max. Measured: solved at 7k env steps; suggested
    budget 30k.
    """

    single_observation_space = Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    single_action_space = Discrete(2)
    solved_return = 0.85
    optimal_return = 0.9197
    max_return = 1.0
    p = 0.75
    horizon = 32
    optimal_q = 0.755

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None):
        super().__init__(num_envs, seed, buffers)
        self._t = np.zeros(self.num_agents, np.int64)
        self._ones = np.zeros(self.num_agents, np.int64)

    @classmethod
    def expected_return(cls, q: float) -> float:
        """Expected return of the memoryless policy that plays 1 with probability `q`."""
        n, p = cls.horizon, cls.p
        return sum(math.comb(n, k) * q**k * (1 - q) ** (n - k) * (1 - abs(k / n - p) / max(p, 1 - p))
                   for k in range(n + 1))

    def oracle_actions(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """The best memoryless policy: 1 with probability `optimal_q`, drawn from `rng`."""
        rng = rng if rng is not None else np.random.default_rng()
        return (rng.random(self.num_agents) < self.optimal_q).astype(np.int64)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self._t[rows] = 0
        self._ones[rows] = 0
        self.observations[rows] = 1.0

    def _step(self, actions: np.ndarray) -> None:
        self._ones += actions
        self._t += 1
        ended = self._t == self.horizon
        err = np.abs(self._ones / self.horizon - self.p) / max(self.p, 1 - self.p)
        self.rewards[:] = np.where(ended, 1.0 - err, 0.0)
        self.terminals[:] = ended
        self.truncations[:] = False


class Continuous(NativeEnv):
    """Continuous control in one step: output the 2-D target point shown in the observation.

    Observation: a target uniform in [-1, 1]^2; action: a point in the Box [-1, 1]^2 (clipped).
    Reward `max(0, 1 - ||action - target||)`, one-step episodes; `success` when the distance is
    below `success_radius` = 0.1, the documented threshold. Optimum: action = target, return 1.
    Solved at 0.8 (mean miss distance 0.2, reachable by a Gaussian policy with std ~0.1 around
    the target); the constant action 0 gets pi/12 ~ 0.26, uniform actions 0.18. Measured: solved
    at 54k env steps; suggested budget 100k.
    """

    single_observation_space = Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    single_action_space = Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    solved_return = 0.8
    optimal_return = 1.0
    max_return = 1.0
    success_radius = 0.1

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None):
        super().__init__(num_envs, seed, buffers)
        self._target = np.zeros((self.num_agents, 2), np.float32)
        self._success = np.zeros(self.num_agents, bool)

    def oracle_actions(self) -> np.ndarray:
        """The target itself."""
        return self._target.copy()

    def _reset_rows(self, rows: np.ndarray) -> None:
        self._target[rows] = self._rng.uniform(-1.0, 1.0, (len(rows), 2))
        self.observations[rows] = self._target[rows]

    def _step(self, actions: np.ndarray) -> None:
        dist = np.linalg.norm(actions - self._target, axis=1)
        self.rewards[:] = np.maximum(0.0, 1.0 - dist)
        np.less(dist, self.success_radius, out=self._success)
        self.terminals[:] = True
        self.truncations[:] = False

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"success": self._success[rows].astype(np.int64)}


class Spaces(NativeEnv):
    """Structured spaces: a Dict observation (uint8 image + int8 vector) and a Dict of two Discretes.

    Observation `{"image": Box(0, 1, (5, 5), uint8), "vector": Box(-1, 1, (5,), int8)}`: a random
    binary image and a random vector of +-1. Action `{"image": Discrete(2), "vector": Discrete(2)}`:
    answer 1 for "more than half the pixels are lit" and 1 for "the vector sums to more than 0";
    each right answer pays 0.5, one-step episodes, max return 1 (the optimum). Guessing gets 0.5;
    solved at 0.9. Measured: solved at 11k env steps; suggested budget 50k.

    `observations` is a numpy structured array `[rows]` of `puffer.spaces.structured_dtype` of the
    observation space (fields "image" and "vector"); `buffers["observations"]` may be that array or
    the equivalent C-contiguous uint8 byte buffer `[rows, itemsize]`, viewed with
    `puffer.spaces.bytes_view`. Actions are an integer array `[rows, 2]` (columns image, vector:
    the emulation layer's MultiDiscrete) or a dict of two integer arrays `[rows]`.
    """

    single_observation_space = Dict({
        "image": Box(0, 1, shape=(5, 5), dtype=np.uint8),
        "vector": Box(-1, 1, shape=(5,), dtype=np.int8),
    })
    single_action_space = Dict({"image": Discrete(2), "vector": Discrete(2)})
    solved_return = 0.9
    optimal_return = 1.0
    max_return = 1.0

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None):
        super().__init__(num_envs, seed, buffers)
        self._labels = np.zeros((self.num_agents, 2), np.int64)

    def observation_layout(self) -> tuple[tuple[int, ...], np.dtype]:
        """One structured record per row."""
        from puffer.spaces import structured_dtype

        return (self.num_agents,), structured_dtype(self.single_observation_space)

    def _bind_buffers(self, buffers: dict[str, np.ndarray] | None) -> None:
        if buffers is not None and isinstance(buffers.get("observations"), np.ndarray):
            obs = buffers["observations"]
            if obs.dtype == np.uint8:
                from puffer.spaces import bytes_view

                buffers = {**buffers, "observations": bytes_view(self.single_observation_space, obs)}
        super()._bind_buffers(buffers)

    def _expected_actions(self) -> str:
        return (f"an integer array ({self.num_agents}, 2) (columns image, vector) or a dict of two integer "
                f"arrays ({self.num_agents},) for {self.single_action_space!r}")

    def _check_actions(self, actions: object) -> np.ndarray:
        if isinstance(actions, dict):
            if set(actions) != {"image", "vector"}:
                raise self._bad_action(actions, "dict keys must be 'image' and 'vector'")
            actions = np.stack([np.asarray(actions["image"]), np.asarray(actions["vector"])], axis=-1)
        a = actions if type(actions) is np.ndarray else np.asarray(actions)
        if a.shape != (self.num_agents, 2):
            raise self._bad_action(a, "wrong shape")
        if a.dtype.kind not in "iu":
            raise self._bad_action(a, "not an integer dtype")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise self._bad_action(a, "out of range")
        return a

    def oracle_actions(self) -> np.ndarray:
        """Both right answers, as an integer array [rows, 2]."""
        return self._labels.copy()

    def _reset_rows(self, rows: np.ndarray) -> None:
        k = len(rows)
        image = self._rng.integers(0, 2, (k, 5, 5), dtype=np.uint8)
        vector = (2 * self._rng.integers(0, 2, (k, 5), dtype=np.int8) - 1).astype(np.int8)
        self.observations["image"][rows] = image
        self.observations["vector"][rows] = vector
        # 25 pixels and 5 entries of +-1: neither sum can tie, so each label is well defined.
        self._labels[rows, 0] = image.sum(axis=(1, 2)) > 12
        self._labels[rows, 1] = vector.sum(axis=1, dtype=np.int64) > 0

    def _step(self, actions: np.ndarray) -> None:
        self.rewards[:] = 0.5 * (actions == self._labels).sum(axis=1)
        self.terminals[:] = True
        self.truncations[:] = False

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"success": (self._episode_return[rows] == 1.0).astype(np.int64)}
