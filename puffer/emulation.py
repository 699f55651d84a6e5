"""Emulation: any gymnasium or PettingZoo env, or a native env with nested spaces, as fixed-size flat rows.

Every class here has the `puffer.envs.base.NativeEnv` interface (`num_envs`, `agents_per_env`,
`num_agents`, `observations/rewards/terminals/truncations/masks`, `reset`, `step`, `close`, optional
`buffers=` to write into someone else's arrays) with flat spaces, so `puffer.vector` drives all of
them the same way, in-process or inside a worker:

* **Observations** are rows of `flatdim(space)` scalars in `flat_dtype(space)` (the leaves' common
  dtype, float32 when they differ; see `puffer.spaces`), except that float64 becomes float32 (learners
  compute in float32; MuJoCo-style float64 envs would otherwise double every buffer). Each leaf is
  written straight into its slice of the row (one cast, no intermediate copy). The nested space stays available as
  `structured_observation_space`; `puffer.spaces.unflatten(space, obs)` rebuilds the nest.
* **Actions** (`emulate_action_space`): Discrete stays `Discrete(n)` (indices from 0; a `start` is
  added back for the env); every discrete leaf of a Dict/Tuple, MultiDiscrete and MultiBinary becomes
  one column of a `MultiDiscrete(nvec)`; Box leaves become one float32 `Box(low, high, (d,))` and are
  clipped to their bounds before the env sees them (as SB3 and gymnasium's ClipAction do). A space
  with both kinds becomes `Tuple((MultiDiscrete(nvec), Box(low, high, (d,))))`, and its actions arrive
  as ONE float32 array `[rows, k + d]`: the k discrete indices first (integral values), then the d
  continuous values, each leaf taking its columns in the space's depth-first leaf order.
* **Auto-reset** in the same step: an ended row's observation is the first of its next episode, and
  `infos["final_observation"]` (present only when a row ended) is a fresh `[rows, D]` array whose
  ended rows hold the true last observation (other rows: the returned observation).
* **Infos**: `infos["episodes"]` lists the episodes finished this step, each `{"episode_return",
  "episode_length"}` plus numeric scalars of the env's final `info` (e.g. `is_success`) and
  `episode_cost` when the env reports a cost. A cost comes from `info["cost"]` or from
  safety-gymnasium's 6-tuple `step` (obs, reward, cost, terminated, truncated, info); it becomes
  `infos["cost"]` float32 [rows] in every step from the first one that reported it (0 for envs
  that did not report one that step). A cost that is not one number is a `SpaceError` naming the env.
* **Global state**: `single_state_space` is a 1-D float32 Box or None. Native envs declare it
  themselves; PettingZoo envs with `state()` and `state_space` get `infos["global_state"]`
  float32 [rows, S] on every reset and step (each agent's row holds its env's state) and, when
  some row ended, `infos["final_global_state"]`, whose ended rows hold the state of the true
  last step (before the auto-reset) and other rows `global_state`, like `final_observation`.
* **Grouped reset**: `reset_group(env_ids, seed) -> infos` restarts the given envs so that each
  starts from the initial state `seed` gives (gymnasium and PettingZoo: `env.reset(seed=seed)` per
  env; native: `NativeEnv.reset_group`), writes their rows and restarts their episode bookkeeping,
  leaving other envs untouched. `group_reset_error` is None, or why this env cannot.
* **Multi-agent** (PettingZoo parallel API, `PettingZooEnvs`): one fixed row per agent of
  `possible_agents`, rows of env e at `e * agents_per_env + slot`. Absent or dead agents get
  `masks` False, zero observation and reward, terminal and truncation False, and their actions are
  not sent. Rewards, terminations and truncations stay per agent. An env whose agents are all done
  resets in the same step. Agents with different spaces share one padded layout: each agent's own
  flat observation starts at column 0 of its row (zeros after it); discrete action columns take the
  largest `n` over agents and an index beyond an agent's own `n - 1` is clipped to it; continuous
  columns an agent lacks are ignored. Envs with `state()` publish `infos["global_state"] [rows, S]`
  (each agent's row holds its env's state).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from puffer import spaces as S
from puffer.errors import PufferError, SpaceError

Infos = dict[str, Any]

BUFFER_KEYS = ("observations", "rewards", "terminals", "truncations", "masks")

__all__ = [
    "ActionEmulator", "emulate_action_space", "FlatNative", "GymnasiumEnvs", "PettingZooEnvs",
    "is_pettingzoo_parallel", "allocate_buffers", "flat_observation_space",
]


def allocate_buffers(rows: int, obs_dim: int, obs_dtype: Any) -> dict[str, np.ndarray]:
    """Fresh zeroed buffers for `rows` rows of flat observations."""
    return {
        "observations": np.zeros((rows, obs_dim), obs_dtype),
        "rewards": np.zeros(rows, np.float32),
        "terminals": np.zeros(rows, bool),
        "truncations": np.zeros(rows, bool),
        "masks": np.zeros(rows, bool),
    }


def _check_buffers(buffers: dict[str, np.ndarray], rows: int, dim: int, dtype: np.dtype, name: str) -> None:
    want = {"observations": ((rows, dim), dtype), "rewards": ((rows,), np.dtype(np.float32)),
            "terminals": ((rows,), np.dtype(bool)), "truncations": ((rows,), np.dtype(bool)),
            "masks": ((rows,), np.dtype(bool))}
    if set(buffers) != set(want):
        raise PufferError(f"{name}: buffers must have exactly the keys {sorted(want)}, got {sorted(buffers)}")
    for key, (shape, dt) in want.items():
        b = buffers[key]
        if b.shape != shape or b.dtype != dt:
            raise PufferError(f"{name}: buffers[{key!r}] must be {shape} {dt}, got {b.shape} {b.dtype}")


def bind_buffers(target: Any, buffers: dict[str, np.ndarray] | None, name: str) -> dict[str, np.ndarray]:
    """Allocate (when None) or check `buffers` for `target`'s rows and flat observation space, and bind them."""
    dim, dtype = target.single_observation_space.shape[0], target.single_observation_space.dtype
    if buffers is None:
        buffers = allocate_buffers(target.num_agents, dim, dtype)
    _check_buffers(buffers, target.num_agents, dim, dtype, name)
    for key in BUFFER_KEYS:
        setattr(target, key, buffers[key])
    return buffers


# ------------------------------------------------------------------------------------------- actions

class _Codec:
    """Maps one (possibly nested) action space to k discrete columns and d continuous columns."""

    def __init__(self, space: S.Space):
        self.space = space
        self.layout = []  # (leaf, kind, start column, count)
        nvec, dstart, low, high = [], [], [], []
        for path, leaf in S.leaves(space):
            if isinstance(leaf, S.Discrete):
                self.layout.append((leaf, "d", len(nvec), 1))
                nvec.append(leaf.n)
                dstart.append(leaf.start)
            elif isinstance(leaf, (S.MultiDiscrete, S.MultiBinary)):
                n = np.ravel(leaf.nvec) if isinstance(leaf, S.MultiDiscrete) else np.full(leaf.low.size, 2)
                st = np.ravel(leaf.start) if isinstance(leaf, S.MultiDiscrete) else np.zeros(n.size, int)
                self.layout.append((leaf, "d", len(nvec), n.size))
                nvec.extend(n.tolist())
                dstart.extend(st.tolist())
            elif isinstance(leaf, S.Box):
                size = leaf.low.size
                self.layout.append((leaf, "c", len(low), size))
                lo, hi = leaf.low.ravel().astype(np.float64), leaf.high.ravel().astype(np.float64)
                low.extend(lo.tolist())
                high.extend(hi.tolist())
            else:
                raise SpaceError(f"action space leaf at {S.path_str(path)} is a {type(leaf).__name__}, "
                                 "which puffer cannot emulate")
        self.nvec = np.array(nvec, np.int64)
        self.dstart = np.array(dstart, np.int64)
        self.low = np.array(low, np.float32)
        self.high = np.array(high, np.float32)
        self.k, self.d = len(nvec), len(low)
        self.root_discrete = isinstance(space, S.Discrete)
        self.root_box = isinstance(space, S.Box)

    def decode(self, disc: np.ndarray | None, cont: np.ndarray | None) -> list[Any]:
        """Env actions for a batch: `disc` int [n, >=k] indices from 0, `cont` float [n, >=d]."""
        if self.root_discrete:
            return (disc[:, 0] + self.dstart[0]).tolist()
        values = []
        for leaf, kind, col, count in self.layout:
            if kind == "d":
                v = disc[:, col:col + count] + self.dstart[col:col + count]
                if isinstance(leaf, S.Discrete):
                    v = v[:, 0]
                else:
                    v = v.reshape((-1,) + leaf.shape).astype(leaf.dtype)
            else:
                v = np.clip(cont[:, col:col + count], self.low[col:col + count], self.high[col:col + count])
                if leaf.dtype.kind != "f":
                    v = np.rint(v)
                v = v.reshape((-1,) + leaf.shape).astype(leaf.dtype)
            values.append(v)
        if self.root_box or isinstance(self.space, (S.MultiDiscrete, S.MultiBinary)):
            return list(values[0])
        n = len(values[0]) if values else 0
        return [S._build(self.space, iter([v[i] for v in values])) for i in range(n)]


class ActionEmulator:
    """The flat action space exposed for one or more (per-agent) original action spaces, and its codec.

    `space` is Discrete, MultiDiscrete, Box, or the mixed `Tuple((MultiDiscrete, Box))` (actions then
    float32 `[rows, k + d]`, discrete first). `check` validates a batch; `decode_rows` turns a validated
    batch into the env's own actions.
    """

    def __init__(self, spaces: Sequence[S.Space]):
        self.codecs = [_Codec(s) for s in spaces]
        self.k = max(c.k for c in self.codecs)
        self.d = max(c.d for c in self.codecs)
        nvec = np.ones(self.k, np.int64)
        low = np.full(self.d, np.inf, np.float64)
        high = np.full(self.d, -np.inf, np.float64)
        for c in self.codecs:
            nvec[:c.k] = np.maximum(nvec[:c.k], c.nvec)
            low[:c.d] = np.minimum(low[:c.d], c.low)
            high[:c.d] = np.maximum(high[:c.d], c.high)
        self.nvec = nvec
        if self.k == 0 and self.d == 0:
            raise SpaceError("the action space has no leaves")
        if all(c.root_discrete for c in self.codecs):
            self.kind, self.space = "discrete", S.Discrete(int(nvec[0]))
        elif self.d == 0:
            self.kind, self.space = "multidiscrete", S.MultiDiscrete(nvec)
        elif self.k == 0:
            self.kind, self.space = "box", S.Box(low, high, (self.d,), np.float32)
        else:
            self.kind = "mixed"
            self.space = S.Tuple((S.MultiDiscrete(nvec), S.Box(low, high, (self.d,), np.float32)))
        self._nvec_u = nvec.astype(np.uint64)

    def buffer_layout(self, rows: int) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of an action buffer for `rows` rows."""
        return {"discrete": ((rows,), np.dtype(np.int64)),
                "multidiscrete": ((rows, self.k), np.dtype(np.int64)),
                "box": ((rows, self.d), np.dtype(np.float32)),
                "mixed": ((rows, self.k + self.d), np.dtype(np.float32))}[self.kind]

    def describe(self, rows: int) -> str:
        """What a valid batch looks like, for error messages."""
        shape, dtype = self.buffer_layout(rows)
        kind = {"discrete": "integers", "multidiscrete": "integers",
                "box": "floats", "mixed": "floats (integral discrete columns first)"}[self.kind]
        return f"{self.space!r} as {kind} of shape {shape}"

    def check(self, actions: Any, rows: int, name: str) -> np.ndarray:
        """Return `actions` as an array of the right shape, or raise SpaceError naming env and space."""
        a = actions if type(actions) is np.ndarray else np.asarray(actions)
        shape, _ = self.buffer_layout(rows)
        if a.shape != shape:
            if self.kind == "discrete" and a.shape == (rows, 1):
                a = a.reshape(rows)
            else:
                raise self._bad(a, rows, name, "wrong shape")
        kind = a.dtype.kind
        if self.kind in ("discrete", "multidiscrete"):
            if kind == "i":
                # Viewed as unsigned, negatives become huge: one comparison checks both bounds.
                if a.size and (a.view(f"u{a.dtype.itemsize}") >= self._nvec_u).any():
                    raise self._bad(a, rows, name, "out of range")
            elif kind == "u":
                if a.size and (a >= self._nvec_u).any():
                    raise self._bad(a, rows, name, "out of range")
            else:
                raise self._bad(a, rows, name, "not an integer dtype")
            return a
        if kind not in "fiu":
            raise self._bad(a, rows, name, "not a numeric dtype")
        # A sum is finite exactly when every entry is (overflow aside, which is out of range anyway).
        if kind == "f" and a.size and not np.isfinite(a.sum()):
            raise self._bad(a, rows, name, "not finite")
        if self.kind == "mixed":
            disc = a[:, :self.k]
            if disc.size and ((disc != np.floor(disc)).any() or (disc < 0).any() or (disc >= self.nvec).any()):
                raise self._bad(a, rows, name, f"the first {self.k} columns must be integral indices < {self.nvec}")
        return a

    def _bad(self, a: np.ndarray, rows: int, name: str, reason: str) -> SpaceError:
        desc = f"shape {a.shape} dtype {a.dtype}"
        if a.size and a.dtype.kind in "biuf":
            desc += f" with values in [{a.min()}, {a.max()}]"
        return SpaceError(f"{name}: actions must be {self.describe(rows)}; got {desc} ({reason})")

    def sample(self, rows: int, rng: S.RngLike = None) -> np.ndarray:
        """A random valid batch of `rows` actions in the buffer layout."""
        rng = S._rng(rng)
        disc = rng.integers(0, self.nvec, size=(rows, self.k))
        if self.kind == "discrete":
            return disc[:, 0]
        if self.kind == "multidiscrete":
            return disc
        box = self.space if self.kind == "box" else self.space[1]
        cont = S.Box(np.broadcast_to(box.low, (rows, self.d)), np.broadcast_to(box.high, (rows, self.d)),
                     (rows, self.d)).sample(rng)
        return cont if self.kind == "box" else np.concatenate([disc.astype(np.float32), cont], axis=1)

    def split(self, a: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(discrete int64 [n, k], continuous float32 [n, d]) parts of a validated batch."""
        if self.kind == "discrete":
            return a.reshape(-1, 1), None
        if self.kind == "multidiscrete":
            return a, None
        if self.kind == "box":
            return None, a
        return a[:, :self.k].astype(np.int64), a[:, self.k:]

    def decode_rows(self, a: np.ndarray, codec: int = 0) -> list[Any]:
        """Env actions for the rows of `a`, using the codec of agent `codec` (padded columns clipped)."""
        c = self.codecs[codec]
        disc, cont = self.split(a)
        if disc is not None and c.k and (c.k < self.k or (c.nvec < self.nvec[:c.k]).any()):
            disc = np.minimum(disc[:, :c.k], c.nvec - 1)
        return c.decode(disc, cont)


def emulate_action_space(space: S.Space) -> S.Space:
    """The flat action space puffer exposes for `space` (see the module docstring)."""
    return ActionEmulator([space]).space


# ------------------------------------------------------------------------------------------- observations

def flat_observation_space(space: S.Space) -> S.Box:
    """The 1-D Box of emulated observation rows: `flatten_space`, with float64 narrowed to float32."""
    flat = S.flatten_space(space)
    if flat.dtype == np.float64:
        return S.Box(flat.low, flat.high, flat.shape, np.float32)
    return flat


class _ObsWriter:
    """Writes one nested observation into a flat row: single 1-D leaves take a fast path."""

    def __init__(self, space: S.Space, name: str):
        self.space, self.name = space, name
        leaves = S._layout(space)
        self.simple = len(leaves) == 1 and len(leaves[0].shape) <= 1
        self.size = S.flatdim(space)

    def __call__(self, row: np.ndarray, obs: Any) -> None:
        try:
            if self.simple:
                row[:self.size] = obs
            else:
                S.flatten(self.space, obs, out=row[:self.size])
        except (ValueError, TypeError) as e:
            raise SpaceError(f"{self.name}: observation does not fit {self.space!r}: {e}") from None


def _info_numbers(info: Any) -> dict[str, float]:
    """Numeric scalars of an info dict (what an episode summary can carry)."""
    if not isinstance(info, dict):
        return {}
    out = {}
    for k, v in info.items():
        if isinstance(k, str) and not k.startswith("_") and isinstance(v, (int, float, np.number, np.bool_)):
            out[k] = v.item() if isinstance(v, (np.number, np.bool_)) else v
    return out


def _seeds(seed: int | None, count: int) -> list[int | None]:
    return [None] * count if seed is None else [seed + i for i in range(count)]


def _cost(value: Any, name: str, where: str) -> float:
    """One env's per-step cost as a float, or a SpaceError naming the env."""
    c = np.asarray(value)
    if c.size != 1 or c.ndim > 1 or c.dtype.kind not in "biuf":
        raise SpaceError(f"{name}: {where} must be one number per step, got {type(value).__name__} of shape "
                         f"{c.shape} dtype {c.dtype}")
    return float(c.reshape(()))


def _seed_error(env: Any, name: str) -> str | None:
    """Why `env.reset(seed=...)` cannot restart it from a seed, or None when it can."""
    import inspect

    try:
        params = inspect.signature(env.reset).parameters
    except (TypeError, ValueError):
        return None  # a builtin or C reset: assume the standard signature
    if "seed" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return f"{name}: its reset() takes no seed, so reset_group cannot start envs from one seed"


def check_channels(infos: Infos, rows: int, name: str, state_dim: int | None) -> None:
    """Check (and make float32) the per-row channels `cost` and `global_state` a native env reported."""
    if "cost" in infos:
        c = np.asarray(infos["cost"])
        if c.shape != (rows,) or c.dtype.kind not in "biuf":
            raise SpaceError(f"{name}: infos['cost'] must be float32 [{rows}] (one cost per row), got shape "
                             f"{c.shape} dtype {c.dtype}")
        infos["cost"] = c.astype(np.float32, copy=False)
    for key in ("global_state", "final_global_state"):
        if key in infos:
            g = np.asarray(infos[key])
            if state_dim is None or g.shape != (rows, state_dim) or g.dtype.kind not in "biuf":
                want = "no global state (single_state_space is None)" if state_dim is None else \
                    f"float32 [{rows}, {state_dim}]"
                raise SpaceError(f"{name}: infos[{key!r}] must be {want}, got shape {g.shape} dtype {g.dtype}")
            infos[key] = g.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------- gymnasium

class GymnasiumEnvs:
    """`num_envs` single-agent gymnasium envs stepped in a loop, presented as one flat NativeEnv-like batch."""

    agents_per_env = 1

    def __init__(self, creator: Callable[[], Any], num_envs: int, seed: int | None = None,
                 buffers: dict[str, np.ndarray] | None = None, name: str = "env",
                 envs: Sequence[Any] = ()):
        self.name = name
        self.num_envs = self.num_agents = int(num_envs)
        # `envs` lets the caller hand over instances it already made (e.g. the one probed for spaces).
        self.envs = list(envs)[:num_envs]
        while len(self.envs) < num_envs:
            self.envs.append(creator())
        first = self.envs[0]
        self.structured_observation_space = S.from_gymnasium(first.observation_space)
        self.single_observation_space = flat_observation_space(self.structured_observation_space)
        self.actions = ActionEmulator([S.from_gymnasium(first.action_space)])
        self.single_action_space = self.actions.space
        buffers = bind_buffers(self, buffers, name)
        self._write = _ObsWriter(self.structured_observation_space, name)
        self.single_state_space = None
        self.group_reset_error = _seed_error(first, name)
        self._seed = seed
        self._returns = [0.0] * self.num_envs
        self._lengths = [0] * self.num_envs
        self._costs: list[float] | None = None

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Reset every env; env i gets seed `seed + i` (the construction seed on the first reset)."""
        if seed is None:
            seed, self._seed = self._seed, None
        for i, (env, s) in enumerate(zip(self.envs, _seeds(seed, self.num_envs))):
            obs, _ = env.reset(seed=s)
            self._write(self.observations[i], obs)
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        self.masks[:] = True
        self._returns = [0.0] * self.num_envs
        self._lengths = [0] * self.num_envs
        self._costs = None
        return self.observations, {"episodes": []}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step every env once; finished envs reset in the same step (see the module docstring)."""
        a = self.actions.check(actions, self.num_agents, self.name)
        env_actions = self.actions.decode_rows(a)
        obs_buf, write = self.observations, self._write
        rewards, terms, truncs = [], [], []
        episodes: list[dict[str, Any]] = []
        final: dict[int, np.ndarray] = {}
        costs = None
        if self._costs is not None:
            costs = [0.0] * self.num_envs
        for i, env in enumerate(self.envs):
            out = env.step(env_actions[i])
            if len(out) == 6:  # safety-gymnasium: (obs, reward, cost, terminated, truncated, info)
                obs, r, c, term, trunc, info = out
                c = _cost(c, self.name, "the cost returned by step()")
            else:
                obs, r, term, trunc, info = out
                c = _cost(info["cost"], self.name, "info['cost']") if info and "cost" in info else None
            r = float(r)
            rewards.append(r)
            terms.append(term)
            truncs.append(trunc)
            self._returns[i] += r
            self._lengths[i] += 1
            if c is not None:
                if costs is None:
                    costs = [0.0] * self.num_envs
                    self._costs = [0.0] * self.num_envs
                costs[i] = c
                self._costs[i] += c
            if term or trunc:
                write(obs_buf[i], obs)
                final[i] = obs_buf[i].copy()
                ep = {**_info_numbers(info), "episode_return": self._returns[i], "episode_length": self._lengths[i]}
                if self._costs is not None:
                    ep["episode_cost"] = self._costs[i]
                    self._costs[i] = 0.0
                episodes.append(ep)
                self._returns[i], self._lengths[i] = 0.0, 0
                obs, _ = env.reset()
            write(obs_buf[i], obs)
        self.rewards[:] = rewards
        self.terminals[:] = terms
        self.truncations[:] = truncs
        infos: Infos = {"episodes": episodes}
        if final:
            fo = obs_buf.copy()
            for i, row in final.items():
                fo[i] = row
            infos["final_observation"] = fo
        if costs is not None:
            infos["cost"] = np.asarray(costs, np.float32)
        return obs_buf, self.rewards, self.terminals, self.truncations, infos

    def reset_group(self, env_ids: Sequence[int], seed: int) -> Infos:
        """Restart the envs `env_ids` with `env.reset(seed=seed)` each; returns reset infos."""
        if self.group_reset_error:
            raise PufferError(self.group_reset_error)
        for i in env_ids:
            obs, _ = self.envs[i].reset(seed=int(seed))
            self._write(self.observations[i], obs)
            self.rewards[i] = 0
            self.terminals[i] = self.truncations[i] = False
            self.masks[i] = True
            self._returns[i], self._lengths[i] = 0.0, 0
            if self._costs is not None:
                self._costs[i] = 0.0
        return {"episodes": []}

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


# ------------------------------------------------------------------------------------------- pettingzoo

def is_pettingzoo_parallel(env: Any) -> bool:
    """Whether `env` follows PettingZoo's parallel API (duck-typed, so pettingzoo need not be installed)."""
    return (hasattr(env, "possible_agents") and callable(getattr(env, "observation_space", None))
            and not hasattr(env, "agent_selection"))


class PettingZooEnvs:
    """`num_envs` PettingZoo parallel envs as one flat batch with a fixed row per possible agent."""

    def __init__(self, creator: Callable[[], Any], num_envs: int, seed: int | None = None,
                 buffers: dict[str, np.ndarray] | None = None, name: str = "env",
                 envs: Sequence[Any] = ()):
        self.name = name
        self.num_envs = int(num_envs)
        self.envs = list(envs)[:num_envs]
        while len(self.envs) < num_envs:
            self.envs.append(creator())
        first = self.envs[0]
        self.possible_agents = list(first.possible_agents)
        if not self.possible_agents:
            raise SpaceError(f"{name}: possible_agents is empty")
        self.agents_per_env = len(self.possible_agents)
        self.num_agents = self.num_envs * self.agents_per_env
        self.slot = {a: j for j, a in enumerate(self.possible_agents)}
        obs_spaces = [S.from_gymnasium(first.observation_space(a)) for a in self.possible_agents]
        act_spaces = [S.from_gymnasium(first.action_space(a)) for a in self.possible_agents]
        self.agent_observation_spaces = dict(zip(self.possible_agents, obs_spaces))
        self.agent_action_spaces = dict(zip(self.possible_agents, act_spaces))
        if all(s == obs_spaces[0] for s in obs_spaces):
            self.structured_observation_space = obs_spaces[0]
            self.single_observation_space = flat_observation_space(obs_spaces[0])
        else:
            # Heterogeneous agents: rows of agent `a` unflatten with structured_observation_space[a].
            self.structured_observation_space = S.Dict(self.agent_observation_spaces)
            dim = max(S.flatdim(s) for s in obs_spaces)
            dtypes = {leaf.dtype for s in obs_spaces for leaf in S._layout(s)}
            dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
            dtype = np.dtype(np.float32) if dtype == np.float64 else dtype
            low = np.full(dim, np.inf)
            high = np.full(dim, -np.inf)
            for s in obs_spaces:
                f = S.flatten_space(s)
                n = f.shape[0]
                low[:n] = np.minimum(low[:n], f.low)
                high[:n] = np.maximum(high[:n], f.high)
                low[n:] = np.minimum(low[n:], 0)  # padding is zeros
                high[n:] = np.maximum(high[n:], 0)
            self.single_observation_space = S.Box(low, high, (dim,), dtype)
        self.actions = ActionEmulator(act_spaces)
        self.single_action_space = self.actions.space
        buffers = bind_buffers(self, buffers, name)
        self._writers = [_ObsWriter(s, f"{name} agent {a!r}") for a, s in zip(self.possible_agents, obs_spaces)]
        self._has_state = callable(getattr(first, "state", None)) and getattr(first, "state_space", None) is not None
        self.single_state_space = None
        self._state = np.zeros((self.num_agents, 0), np.float32)
        if self._has_state:
            flat = S.flatten_space(S.from_gymnasium(first.state_space))
            self.single_state_space = S.Box(flat.low, flat.high, flat.shape, np.float32)
            self._state = np.zeros((self.num_agents, flat.shape[0]), np.float32)
        self.group_reset_error = _seed_error(first, name)
        self._seed = seed
        self._returns = np.zeros(self.num_agents, np.float64)
        self._lengths = np.zeros(self.num_agents, np.int64)
        self._costs = np.zeros(self.num_agents, np.float64)

    def _write_obs(self, e: int, obs: dict[Any, Any]) -> None:
        base = e * self.agents_per_env
        rows = self.observations[base: base + self.agents_per_env]
        rows[:] = 0
        masks = self.masks[base: base + self.agents_per_env]
        masks[:] = False
        for agent, o in obs.items():
            j = self.slot[agent]
            self._writers[j](rows[j], o)
            masks[j] = True

    def _env_state(self, e: int) -> np.ndarray:
        s = np.asarray(self.envs[e].state())
        if s.size != self._state.shape[1]:
            raise SpaceError(f"{self.name}: env {e}'s state() has shape {s.shape}, but its state_space "
                             f"{self.single_state_space!r} has {self._state.shape[1]} values")
        return s.reshape(-1)

    def _write_state(self, e: int) -> None:
        if self._has_state:
            self._state[e * self.agents_per_env: (e + 1) * self.agents_per_env] = self._env_state(e)

    def _add_state(self, infos: Infos) -> None:
        if self._has_state:
            infos["global_state"] = self._state.copy()

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Reset every env; env i gets seed `seed + i` (the construction seed on the first reset)."""
        if seed is None:
            seed, self._seed = self._seed, None
        for e, (env, s) in enumerate(zip(self.envs, _seeds(seed, self.num_envs))):
            obs, _ = env.reset(seed=s)
            self._write_obs(e, obs)
            self._write_state(e)
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        self._returns[:] = 0
        self._lengths[:] = 0
        self._costs[:] = 0
        infos: Infos = {"episodes": []}
        self._add_state(infos)
        return self.observations, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step every env once with the actions of its live agents; all-done envs reset in the same step."""
        a = self.actions.check(actions, self.num_agents, self.name)
        A = self.agents_per_env
        # Decode per agent slot (each slot may have its own action space), then regroup per env.
        per_slot = [self.actions.decode_rows(a[j::A], codec=j) for j in range(A)]
        self.rewards[:] = 0
        self.terminals[:] = False
        self.truncations[:] = False
        episodes: list[dict[str, Any]] = []
        final_rows: list[int] = []
        finals: list[np.ndarray] = []
        final_states: dict[int, np.ndarray] = {}  # env -> its state before the auto-reset
        costs = None
        for e, env in enumerate(self.envs):
            base = e * A
            live = list(env.agents)
            obs, rew, term, trunc, info = env.step({ag: per_slot[self.slot[ag]][e] for ag in live})
            self._write_obs(e, obs)
            ended = []
            involved = set(live) | set(rew) | set(term) | set(trunc)
            if not involved <= self.slot.keys():
                raise SpaceError(f"{self.name}: agents {sorted(map(str, involved - self.slot.keys()))} are not in "
                                 f"possible_agents {self.possible_agents}")
            for ag in sorted(involved, key=self.slot.__getitem__):  # slot order keeps episodes deterministic
                row = base + self.slot[ag]
                r = float(rew.get(ag, 0.0))
                self.rewards[row] = r
                self.terminals[row] = te = bool(term.get(ag, False))
                self.truncations[row] = tr = bool(trunc.get(ag, False))
                self.masks[row] = True  # an agent's last step still counts, even without an observation
                self._returns[row] += r
                self._lengths[row] += 1
                agent_info = info.get(ag, {}) if isinstance(info, dict) else {}
                if isinstance(agent_info, dict) and "cost" in agent_info:
                    if costs is None:
                        costs = np.zeros(self.num_agents, np.float32)
                    costs[row] = c = _cost(agent_info["cost"], self.name, f"info[{ag!r}]['cost']")
                    self._costs[row] += c
                if te or tr:
                    ended.append((row, ag, agent_info))
            env_done = not env.agents
            for row, ag, agent_info in ended:
                final_rows.append(row)
                finals.append(self.observations[row].copy())
                ep = {**_info_numbers(agent_info), "episode_return": float(self._returns[row]),
                      "episode_length": int(self._lengths[row]), "agent": ag}
                if costs is not None or self._costs[row]:
                    ep["episode_cost"] = float(self._costs[row])
                episodes.append(ep)
                self._returns[row] = self._lengths[row] = self._costs[row] = 0
            if env_done:
                if self._has_state:
                    final_states[e] = self._env_state(e)
                obs, _ = env.reset()
                self._write_obs(e, obs)
                # Agents that ended this step keep their mask for this step's reward.
                for row, _, _ in ended:
                    self.masks[row] = True
            self._write_state(e)
        infos: Infos = {"episodes": episodes}
        if final_rows:
            fo = self.observations.copy()
            fo[final_rows] = finals
            infos["final_observation"] = fo
        if costs is not None:
            infos["cost"] = costs
        self._add_state(infos)
        if final_rows and self._has_state:
            # Rows that ended while their env went on already hold the state of their last step.
            fs = infos["global_state"].copy()
            for e, state in final_states.items():
                fs[e * A: (e + 1) * A] = state
            infos["final_global_state"] = fs
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def reset_group(self, env_ids: Sequence[int], seed: int) -> Infos:
        """Restart the envs `env_ids` with `env.reset(seed=seed)` each; returns reset infos."""
        if self.group_reset_error:
            raise PufferError(self.group_reset_error)
        A = self.agents_per_env
        for e in env_ids:
            obs, _ = self.envs[e].reset(seed=int(seed))
            self._write_obs(e, obs)
            self._write_state(e)
            rows = slice(e * A, (e + 1) * A)
            self.rewards[rows] = 0
            self.terminals[rows] = self.truncations[rows] = False
            self._returns[rows] = self._lengths[rows] = self._costs[rows] = 0
        infos: Infos = {"episodes": []}
        self._add_state(infos)
        return infos

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


# ------------------------------------------------------------------------------------------- native

def native_observation_layout(cls: type, kwargs: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype]:
    """Per-row shape and dtype of a native env class's `observations` buffer (asks a 1-env instance)."""
    if hasattr(cls, "observation_layout"):
        probe = cls(1, **kwargs)
        try:
            shape, dtype = probe.observation_layout()
        finally:
            probe.close()
        return tuple(shape[1:]), np.dtype(dtype)
    space = cls.single_observation_space
    if isinstance(space, S.Box):
        return space.shape, np.dtype(space.dtype)
    return (), S.structured_dtype(space)


class FlatNative:
    """A `puffer.envs` NativeEnv with flat observation rows, whatever its observation layout.

    When the env's observation buffer already is `[rows, flatdim]` in `flat_dtype` (or any C-contiguous
    shape of that size, e.g. an image Box), it writes straight into `buffers` (no copy). Otherwise (a
    structured record per row, e.g. `Spaces`) it keeps its own buffer and each reset/step flattens it
    into ours leaf by leaf.
    """

    def __init__(self, cls: type, num_envs: int, seed: int | None = None,
                 buffers: dict[str, np.ndarray] | None = None, name: str | None = None, **kwargs: Any):
        self.name = name or cls.__name__
        self.structured_observation_space = cls.single_observation_space
        self.single_observation_space = flat_observation_space(self.structured_observation_space)
        self.actions = ActionEmulator([cls.single_action_space])
        self.single_action_space = self.actions.space
        self.agents_per_env = int(getattr(cls, "agents_per_env", 1))
        self.num_envs = int(num_envs)
        self.num_agents = self.num_envs * self.agents_per_env
        buffers = bind_buffers(self, buffers, self.name)
        row_shape, native_dtype = native_observation_layout(cls, kwargs)
        native_buffers = dict(buffers)
        obs = buffers["observations"]
        self._direct = native_dtype == obs.dtype and int(np.prod(row_shape)) == obs.shape[1]
        if self._direct:
            native_buffers["observations"] = buffers["observations"].reshape((self.num_agents,) + row_shape)
        else:
            # A layout we cannot alias (structured records): the env writes its own array, we flatten it.
            native_buffers["observations"] = np.zeros((self.num_agents,) + row_shape, native_dtype)
        self.env = cls(num_envs, seed=seed, buffers=native_buffers, **kwargs)
        self.single_state_space = getattr(cls, "single_state_space", None)
        self._state_dim = None if self.single_state_space is None else S.flatdim(self.single_state_space)
        if not callable(getattr(self.env, "reset_group", None)):
            self.group_reset_error = f"{self.name}: this native env has no reset_group method"
        elif not getattr(cls, "supports_group_reset", True):
            self.group_reset_error = f"{self.name} cannot restart a group of envs from one seed"
        else:
            self.group_reset_error = None
        box_shape = cls.single_action_space.shape if isinstance(cls.single_action_space, S.Box) else None
        self._action_shape = (self.num_agents,) + box_shape if box_shape and len(box_shape) != 1 else None

    def _flatten(self, native_obs: np.ndarray) -> np.ndarray:
        return self._flatten_into(native_obs, self.observations)

    def _flatten_into(self, native_obs: np.ndarray, out: np.ndarray) -> np.ndarray:
        space = self.structured_observation_space
        if native_obs.dtype.names is not None:
            native_obs = S.from_structured(space, native_obs)
        return S.flatten(space, native_obs, out=out)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Reset the native env."""
        obs, infos = self.env.reset(seed)
        if not self._direct:
            self._flatten(obs)
        infos.setdefault("episodes", [])
        check_channels(infos, self.num_agents, self.name, self._state_dim)
        return self.observations, infos

    def reset_group(self, env_ids: Sequence[int], seed: int) -> Infos:
        """Restart the native envs `env_ids` from the initial state `seed` gives (`NativeEnv.reset_group`)."""
        if self.group_reset_error:
            raise PufferError(self.group_reset_error)
        infos = self.env.reset_group(list(env_ids), seed)
        if not self._direct:
            self._flatten(self.env.observations)
        infos.setdefault("episodes", [])
        check_channels(infos, self.num_agents, self.name, self._state_dim)
        return infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step the native env (it validates its own actions)."""
        if self._action_shape is not None:
            actions = np.asarray(actions).reshape(self._action_shape)
        obs, _, _, _, infos = self.env.step(actions)
        fo = infos.get("final_observation")
        if not self._direct:
            self._flatten(obs)
            if fo is not None:
                infos["final_observation"] = self._flatten_into(fo, np.empty_like(self.observations))
        elif fo is not None and fo.ndim != 2:
            infos["final_observation"] = fo.reshape(self.num_agents, -1)
        check_channels(infos, self.num_agents, self.name, self._state_dim)
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def state_dict(self) -> dict[str, Any]:
        """The native env's state (see `NativeEnv.state_dict`)."""
        return self.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the native env's state; our flat observations follow from its own."""
        self.env.load_state_dict(state)
        if not self._direct:
            self._flatten(self.env.observations)

    def close(self) -> None:
        """Close the native env."""
        self.env.close()
