"""`NativeEnv`: a whole batch of environments stepped together in numpy.

The contract the vector layer and the trainers rely on:

- `cls(num_envs, seed=None, buffers=None, **kwargs)`; class attributes `single_observation_space`,
  `single_action_space`, `agents_per_env` (1 unless multi-agent), `solved_return` (the mean episode
  return that counts as solved), `optimal_return` (the expected return of the optimal policy) and
  `max_return` (the largest possible return, `None` where there is none).
- A "row" is one agent of one env: `num_agents = num_envs * agents_per_env` rows, agents of env `e`
  in rows `e * agents_per_env ...`. The env writes `observations [rows, *obs_shape]`,
  `rewards [rows] float32`, `terminals [rows] bool`, `truncations [rows] bool`, `masks [rows] bool`.
  When `buffers` (exactly those five keys) is given, it writes into those arrays in place and never
  rebinds them, so they can be views of shared memory. `step` returns those same arrays: they are
  overwritten by the next `step`, copy them to keep them.
- `reset(seed=None) -> (observations, infos)`, `step(actions) -> (observations, rewards, terminals,
  truncations, infos)`, `close()`.
- Auto-reset in the same step: when a row ends (terminal or truncated) the returned observation
  row is the first observation of its next episode, and `infos["final_observation"]` (present
  only when some row ended) is a fresh array shaped like `observations` whose ended rows hold the
  true last observation (other rows hold the returned observation).
- `infos["episodes"]` is always present: one dict per episode finished this step (per agent for
  multi-agent envs) with `episode_return` (float) and `episode_length` (int), plus env-specific
  keys (`success`, `episode_cost`, `agent`). Per-row arrays in `infos` (`cost`, `global_state`)
  are fresh copies.
- `reset(seed)` makes everything after it deterministic; `reset()` without a seed continues the
  generator seeded at construction.
- Global state (optional): an env with a state for a centralised critic sets the class attribute
  `single_state_space` (a 1-D float32 Box of size S; `None`, the default, means no state) and puts
  `infos["global_state"]` float32 `[rows, S]` (each agent's row holds its env's state) in the infos
  of every reset and step, plus `infos["final_global_state"]` whenever `final_observation` is
  there: the state of the true last step for ended rows (other rows: `global_state`).
- Per-step channels (optional): per-row float32 `[rows]` arrays such as `infos["cost"]`, present
  in every reset and step of an env that has them; episodes then carry the sum (`episode_cost`).
- Grouped reset: `reset_group(envs, seed)` restarts the given envs (env indices, not rows) so
  that each of them starts from the same initial state, the one `seed` gives; the other envs are
  untouched (their state and the env's generator are not advanced). Their rows' observations are
  written into `observations`, their rewards/terminals/truncations cleared and their episode
  bookkeeping restarted (the interrupted episodes are not reported); it returns the infos of a
  reset (per-row arrays for all rows). The default implementation runs `_reset_rows` once per env
  with a fresh generator seeded with `seed`, which is right whenever `_reset_rows` draws every
  initial value from `self._rng`; an env that draws otherwise overrides `_reset_group_rows`, and one
  that cannot sets `supports_group_reset = False` (then `reset_group` is an error naming it).
  Randomness in `_step` and in later auto-resets still comes from the env's own generator, so
  deterministic envs given identical actions replay one identical first episode in every env of
  the group, while stochastic transitions and later episodes differ between them.
- Actions are validated with vectorized checks; a bad action raises `SpaceError` naming the env,
  the expected space and what was given. Discrete actions must be integers in range; Box actions
  must be finite floats and are clipped to the box (as SB3 and gymnasium's `ClipAction` do,
  since a Gaussian policy's samples leave any bounded box).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from puffer.errors import CheckpointError, PufferError, SpaceError

BUFFER_KEYS = ("observations", "rewards", "terminals", "truncations", "masks")

Infos = dict[str, Any]


class NativeEnv(abc.ABC):
    """Base class of puffer's numpy environments: one object steps `num_envs` envs at once."""

    single_observation_space: ClassVar[Any]
    single_action_space: ClassVar[Any]
    agents_per_env: ClassVar[int] = 1
    solved_return: ClassVar[float]
    optimal_return: ClassVar[float]
    max_return: ClassVar[float | None] = None
    single_state_space: ClassVar[Any] = None
    supports_group_reset: ClassVar[bool] = True

    def __init__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"{self.name}: num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.num_agents = self.num_envs * self.agents_per_env
        self._bind_buffers(buffers)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        # float32 like the rewards: float64 would cost a casting pass every step.
        self._episode_return = np.zeros(self.num_agents, np.float32)
        self._episode_length = np.zeros(self.num_agents, np.int64)
        self._done = np.zeros(self.num_agents, bool)
        self._reset_called = False
        self._setup_action_check()

    @property
    def name(self) -> str:
        """The class name, used in error messages."""
        return type(self).__name__

    # ---- buffers ----------------------------------------------------------------------------
    def observation_layout(self) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of the `observations` buffer."""
        space = self.single_observation_space
        return (self.num_agents, *space.shape), np.dtype(space.dtype)

    def _bind_buffers(self, buffers: dict[str, np.ndarray] | None) -> None:
        rows = self.num_agents
        obs_shape, obs_dtype = self.observation_layout()
        layout = {
            "observations": (obs_shape, obs_dtype),
            "rewards": ((rows,), np.dtype(np.float32)),
            "terminals": ((rows,), np.dtype(bool)),
            "truncations": ((rows,), np.dtype(bool)),
            "masks": ((rows,), np.dtype(bool)),
        }
        if buffers is None:
            buffers = {key: np.zeros(shape, dtype) for key, (shape, dtype) in layout.items()}
        elif set(buffers) != set(BUFFER_KEYS):
            raise ValueError(
                f"{self.name}: buffers must have exactly the keys {sorted(BUFFER_KEYS)}, got {sorted(buffers)}"
            )
        for key, (shape, dtype) in layout.items():
            buf = buffers[key]
            if not isinstance(buf, np.ndarray) or buf.shape != shape or buf.dtype != dtype:
                got = f"{type(buf).__name__} {getattr(buf, 'shape', '')} {getattr(buf, 'dtype', '')}"
                raise ValueError(f"{self.name}: buffers[{key!r}] must be a numpy array {shape} {dtype}, got {got}")
            if not buf.flags.writeable:
                raise ValueError(f"{self.name}: buffers[{key!r}] is read-only")
        self.observations = buffers["observations"]
        self.rewards = buffers["rewards"]
        self.terminals = buffers["terminals"]
        self.truncations = buffers["truncations"]
        self.masks = buffers["masks"]

    # ---- actions ----------------------------------------------------------------------------
    def _setup_action_check(self) -> None:
        from puffer.spaces import Box, Discrete

        space = self.single_action_space
        if isinstance(space, Discrete):
            self._check_actions = self._check_discrete
        elif isinstance(space, Box):
            self._check_actions = self._check_box
            self._box_low = np.asarray(space.low, dtype=space.dtype)
            self._box_high = np.asarray(space.high, dtype=space.dtype)
            self._clipped = np.zeros((self.num_agents, *space.shape), space.dtype)
        elif type(self)._check_actions is NativeEnv._check_actions:
            raise TypeError(f"{self.name}: action space {space!r} needs its own _check_actions")

    def _check_actions(self, actions: Any) -> Any:
        """Validate a batch of actions and return it in the form `_step` expects (set per space in __init__)."""
        raise TypeError(f"{self.name}: action space {self.single_action_space!r} needs its own _check_actions")

    def _bad_action(self, actions: Any, reason: str) -> SpaceError:
        if isinstance(actions, dict):
            desc = f"a dict with keys {sorted(map(str, actions))}"
        else:
            a = np.asarray(actions)
            desc = f"shape {a.shape} dtype {a.dtype}"
            if a.size and a.dtype.kind in "iufb":
                desc += f" with values in [{a.min()}, {a.max()}]"
        return SpaceError(
            f"{self.name}: actions must be {self._expected_actions()}; got {desc} ({reason})"
        )

    def _expected_actions(self) -> str:
        space = self.single_action_space
        return f"a batch of {self.num_agents} actions from {space!r}, shape {(self.num_agents, *space.shape)}"

    def _check_discrete(self, actions: Any) -> np.ndarray:
        a = actions if type(actions) is np.ndarray else np.asarray(actions)
        if a.shape != (self.num_agents,):
            if a.shape == (self.num_agents, 1):
                a = a.reshape(self.num_agents)
            else:
                raise self._bad_action(a, "wrong shape")
        kind = a.dtype.kind
        if kind == "i":
            # Viewed as unsigned, negative actions become huge: one reduction checks both bounds.
            if a.size and a.view(f"u{a.dtype.itemsize}").max() >= self.single_action_space.n:
                raise self._bad_action(a, "out of range")
        elif kind == "u":
            if a.size and a.max() >= self.single_action_space.n:
                raise self._bad_action(a, "out of range")
        else:
            raise self._bad_action(a, "not an integer dtype")
        return a

    def _check_box(self, actions: Any) -> np.ndarray:
        a = actions if type(actions) is np.ndarray else np.asarray(actions)
        if a.shape != self._clipped.shape:
            raise self._bad_action(a, "wrong shape")
        if a.dtype.kind != "f":
            raise self._bad_action(a, "not a floating dtype")
        # One reduction in the common case: the sum is finite unless some entry is NaN/inf or it overflows.
        if not np.isfinite(a.sum()) and not np.isfinite(a).all():
            raise self._bad_action(a, "not finite")
        return np.clip(a, self._box_low, self._box_high, out=self._clipped, casting="unsafe")

    # ---- the loop ---------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Start a new episode in every env; a seed makes everything after it deterministic."""
        if seed is not None:
            self._rng = np.random.Generator(np.random.PCG64(seed))
            self._reseed()
        self._reset_called = True
        self._episode_return[:] = 0
        self._episode_length[:] = 0
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        self.masks[:] = True
        self._reset_rows(np.arange(self.num_agents))
        infos: Infos = {"episodes": []}
        self._add_infos(infos)
        return self.observations, infos

    def reset_group(self, envs: Any, seed: int) -> Infos:
        """Restart `envs` (env indices) from the one initial state `seed` gives; returns reset infos."""
        if not self.supports_group_reset:
            raise PufferError(f"{self.name} cannot restart a group of envs from one seed (supports_group_reset "
                              "is False)")
        envs = np.asarray(envs, np.int64).reshape(-1)
        if envs.size and (envs.min() < 0 or envs.max() >= self.num_envs):
            raise PufferError(f"{self.name}: reset_group env indices must be in [0, {self.num_envs}), got "
                              f"{envs.tolist()}")
        n = self.agents_per_env
        env_rows = [np.arange(e * n, (e + 1) * n) for e in envs.tolist()]
        if env_rows:
            rows = np.concatenate(env_rows)
            self._reset_group_rows(env_rows, int(seed))
            self._episode_return[rows] = 0
            self._episode_length[rows] = 0
            self.rewards[rows] = 0
            self.terminals[rows] = False
            self.truncations[rows] = False
            self.masks[rows] = True
        infos: Infos = {"episodes": []}
        self._add_infos(infos)
        return infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Advance every env one step; ended rows restart at once (see the module docstring)."""
        if not self._reset_called:
            raise RuntimeError(f"{self.name}: call reset() before step()")
        actions = self._check_actions(actions)
        self._step(actions)
        self._episode_return += self.rewards
        self._episode_length += 1
        done = np.logical_or(self.terminals, self.truncations, out=self._done)
        infos: Infos = {}
        if done.any():
            rows = np.flatnonzero(done)
            self._before_reset(infos, rows)
            infos["episodes"] = self._finish_episodes(rows)
            self._reset_rows(rows)
        else:
            infos["episodes"] = []
        self._add_infos(infos)
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def oracle_actions(self) -> Any:
        """The scripted policy that `optimal_return` was measured with, for the current state.

        It may read hidden state (Memory's cue, Bandit's best arm): it exists to check the
        documented optimum and to give learners a reference, not as a learnable baseline.
        """
        raise PufferError(f"{self.name} has no scripted policy")

    # ---- state (checkpoints) ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything that determines what this env does next: its numpy arrays, generators and scalars.

        Generic over the instance's attributes, so subclasses that keep their state in numpy arrays,
        `np.random.Generator`s and plain scalars need nothing more. Arrays are copies; a generator is
        stored as its bit-generator state (a JSON-serializable dict).
        """
        state: dict[str, Any] = {}
        for key, value in vars(self).items():
            if isinstance(value, np.ndarray):
                state[key] = value.copy()
            elif isinstance(value, np.random.Generator):
                state[key] = value.bit_generator.state
            elif isinstance(value, (bool, int, float, str, np.generic)):
                state[key] = value.item() if isinstance(value, np.generic) else value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output in place (buffers stay the same arrays); all checks come first."""
        mine = self.state_dict()
        if set(state) != set(mine):
            missing, extra = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
            raise CheckpointError(f"{self.name}: saved env state does not fit this env (missing {missing}, "
                                  f"unexpected {extra})")
        for key, value in state.items():
            current = getattr(self, key)
            if isinstance(current, np.ndarray):
                value = np.asarray(value)
                if value.shape != current.shape or value.dtype != current.dtype:
                    raise CheckpointError(
                        f"{self.name}: saved env state {key!r} is {value.shape} {value.dtype}, this env has "
                        f"{current.shape} {current.dtype} (was it made with other num_envs or kwargs?)")
            elif isinstance(current, np.random.Generator):
                kind = current.bit_generator.state["bit_generator"]
                if not isinstance(value, dict) or value.get("bit_generator") != kind:
                    raise CheckpointError(f"{self.name}: saved env state {key!r} is not a {kind} generator state")
        for key, value in state.items():
            current = getattr(self, key)
            if isinstance(current, np.ndarray):
                np.copyto(current, value)
            elif isinstance(current, np.random.Generator):
                current.bit_generator.state = value
            else:
                setattr(self, key, type(mine[key])(value))

    def close(self) -> None:
        """Release resources (nothing to release for numpy envs; kept for the common interface)."""

    def _finish_episodes(self, rows: np.ndarray) -> list[dict[str, Any]]:
        returns = self._episode_return[rows].tolist()
        lengths = self._episode_length[rows].tolist()
        episodes = [{"episode_return": r, "episode_length": n} for r, n in zip(returns, lengths)]
        for key, values in self._episode_extras(rows).items():
            for episode, value in zip(episodes, values.tolist()):
                episode[key] = value
        self._episode_return[rows] = 0
        self._episode_length[rows] = 0
        return episodes

    # ---- what subclasses implement ----------------------------------------------------------
    def _reseed(self) -> None:
        """Hook: rebuild anything drawn from the old generator (called when `reset` gets a seed)."""

    @abc.abstractmethod
    def _reset_rows(self, rows: np.ndarray) -> None:
        """Start new episodes for `rows` (whole envs) and write their first observations."""

    @abc.abstractmethod
    def _step(self, actions: np.ndarray) -> None:
        """Advance all envs; write the true next observations, rewards, terminals, truncations."""

    def _reset_group_rows(self, env_rows: list[np.ndarray], seed: int) -> None:
        """Hook: start each env's `rows` from the initial state `seed` gives (same for every env)."""
        saved = self._rng
        try:
            for rows in env_rows:
                # A fresh generator per env: each draws the same numbers; the env's own stream is left as is.
                self._rng = np.random.Generator(np.random.PCG64(seed))
                self._reset_rows(rows)
        finally:
            self._rng = saved

    def _before_reset(self, infos: Infos, rows: np.ndarray) -> None:
        """Save what the ended `rows` looked like before they restart (the last observation)."""
        infos["final_observation"] = self.observations.copy()

    def _episode_extras(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per-episode values beyond return and length (`success`, `episode_cost`, ...)."""
        return {}

    def _add_infos(self, infos: Infos) -> None:
        """Hook: add per-row arrays (`cost`, `global_state`) to `infos` after every reset/step."""

    def __repr__(self) -> str:
        return f"<{self.name} num_envs={self.num_envs} agents_per_env={self.agents_per_env}>"
