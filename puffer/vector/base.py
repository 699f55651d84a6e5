"""What every vector backend shares: env resolution, the flat-space attributes, checks and the async protocol."""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from puffer import spaces as S
from puffer.emulation import FlatNative, GymnasiumEnvs, PettingZooEnvs, is_pettingzoo_parallel
from puffer.errors import PufferError, SpaceError

Infos = dict[str, Any]


class WorkerError(PufferError, RuntimeError):
    """An environment raised, or its worker process died or stopped answering."""


@dataclass
class EnvFactory:
    """How to build a flat batch of `n` envs (a NativeEnv-like object) anywhere, main process or worker.

    `kind` is "native" (target: a NativeEnv class), "gymnasium" or "pettingzoo" (target: a zero-argument
    creator of one env). Picklable whenever `target` is, so it also works with the spawn start method.
    """

    name: str
    kind: str
    target: Any
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, num_envs: int, seed: int | None = None, buffers: dict[str, np.ndarray] | None = None,
                 envs: tuple[Any, ...] = ()) -> Any:
        if self.kind == "native":
            return FlatNative(self.target, num_envs, seed=seed, buffers=buffers, name=self.name, **self.kwargs)
        cls = GymnasiumEnvs if self.kind == "gymnasium" else PettingZooEnvs
        return cls(self.target, num_envs, seed=seed, buffers=buffers, name=self.name, envs=envs)


def _is_native_class(obj: Any) -> bool:
    return isinstance(obj, type) and hasattr(obj, "single_observation_space") and hasattr(obj, "single_action_space")


def _gym_make(env_id: str, **kwargs: Any) -> Any:
    import gymnasium

    return gymnasium.make(env_id, **kwargs)


PETTINGZOO = "pettingzoo:"


def _pettingzoo_creator(spec: str) -> Any:
    """The callable a `pettingzoo:MODULE.ENV` (its `parallel_env`) or `pettingzoo:MODULE:FUNCTION` spec names."""
    import importlib

    target = spec[len(PETTINGZOO):]
    module_name, _, function = target.partition(":")
    if not module_name or (":" in target and not function):
        raise PufferError(f"{spec}: expected pettingzoo:MODULE.ENV (e.g. pettingzoo:mpe2.simple_spread_v3) or "
                          "pettingzoo:MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise PufferError(f"{spec}: cannot import module {module_name!r}: {type(e).__name__}: {e}") from e
    name = function or "parallel_env"
    creator = getattr(module, name, None)
    if not callable(creator):
        found = "nothing" if creator is None else f"a {type(creator).__name__}"
        hint = "" if function else "; name a creator function with pettingzoo:MODULE:FUNCTION"
        raise PufferError(f"{spec}: module {module_name} has no callable {name!r} (found {found}){hint}")
    return creator


def _pettingzoo_make(spec: str, **kwargs: Any) -> Any:
    """One env from a `pettingzoo:` spec (module level, so factories pickle for worker processes)."""
    return _pettingzoo_creator(spec)(**kwargs)


def resolve(env: Any, env_kwargs: dict[str, Any]) -> tuple[EnvFactory, Any]:
    """An EnvFactory for a registered name, "gym:ID", "pettingzoo:SPEC", a NativeEnv class or a creator; plus a
    probe env or None.

    Creators are called once here to learn their kind and spaces; that instance (the probe) can be reused.
    """
    if isinstance(env, str) and env.startswith(PETTINGZOO):
        _pettingzoo_creator(env)  # import errors name the spec before anything is built
        creator = functools.partial(_pettingzoo_make, env, **env_kwargs)
        try:
            probe = creator()
        except PufferError:
            raise
        except Exception as e:
            raise PufferError(f"{env}: creating the env with {env_kwargs} failed: {type(e).__name__}: {e}") from e
        if not is_pettingzoo_parallel(probe):
            kind = "an AEC env (use its parallel_env, or pettingzoo.utils.conversions.aec_to_parallel)" \
                if hasattr(probe, "agent_selection") else f"{type(probe).__module__}.{type(probe).__name__}"
            if callable(getattr(probe, "close", None)):
                probe.close()
            raise PufferError(f"{env} is not a PettingZoo parallel env: it returned {kind}")
        return EnvFactory(env, "pettingzoo", creator), probe
    if isinstance(env, str):
        if env.startswith("gym:"):
            env_id = env[4:]
            creator = functools.partial(_gym_make, env_id, **env_kwargs)
            try:
                probe = creator()
            except Exception as e:
                raise PufferError(f"{env}: gymnasium.make({env_id!r}) failed: {type(e).__name__}: {e}") from e
            return EnvFactory(env, "gymnasium", creator), probe
        from puffer import envs as native_envs

        registry = native_envs.registry()
        if env not in registry:
            names = ", ".join(sorted(registry)) or "none"
            raise PufferError(f"unknown environment {env!r}; built-in: {names}; or use 'gym:ID' for a gymnasium "
                              "env, or pass a creator function returning a gymnasium or PettingZoo env")
        return EnvFactory(env, "native", registry[env], dict(env_kwargs)), None
    if _is_native_class(env):
        return EnvFactory(env.__name__, "native", env, dict(env_kwargs)), None
    if not callable(env):
        raise PufferError(f"make() needs an env name, a NativeEnv class or a creator function, got {env!r}")
    fn = env.func if isinstance(env, functools.partial) else env
    name = getattr(fn, "__name__", None) or type(fn).__name__
    creator = functools.partial(env, **env_kwargs) if env_kwargs else env
    probe = creator()
    if is_pettingzoo_parallel(probe):
        return EnvFactory(name, "pettingzoo", creator), probe
    if hasattr(probe, "agent_selection"):
        probe.close()
        raise PufferError(f"{name} returned a PettingZoo AEC env; puffer drives the parallel API: wrap it with "
                          "pettingzoo.utils.conversions.aec_to_parallel")
    if hasattr(probe, "observation_space") and hasattr(probe, "action_space") and hasattr(probe, "step"):
        if hasattr(probe, "num_envs"):
            probe.close()
            raise PufferError(f"{name} returned a vector env; pass a creator of ONE env and set num_envs")
        return EnvFactory(name, "gymnasium", creator), probe
    raise PufferError(f"{name} returned {type(probe).__name__}, which is neither a gymnasium Env nor a PettingZoo "
                      "ParallelEnv")


class VecEnv(abc.ABC):
    """Base of the vector backends; see `puffer.vector` for the contract."""

    name: str
    num_envs: int
    agents_per_env: int
    num_agents: int
    batch_size: int
    single_observation_space: S.Box
    single_action_space: S.Space
    structured_observation_space: S.Space
    single_state_space: S.Box | None
    check_finite: bool

    def _init_spaces(self, flat_env: Any) -> None:
        self.single_observation_space = flat_env.single_observation_space
        self.single_action_space = flat_env.single_action_space
        self.structured_observation_space = flat_env.structured_observation_space
        self.single_state_space = getattr(flat_env, "single_state_space", None)
        self._group_reset_error = getattr(flat_env, "group_reset_error", None)
        self.action_emulator = flat_env.actions
        self.agents_per_env = int(flat_env.agents_per_env)
        self.num_agents = self.num_envs * self.agents_per_env
        self._float_obs = self.single_observation_space.dtype.kind == "f"

    def _check_obs(self, obs: np.ndarray, first_row: int = 0) -> None:
        # The sum is finite exactly when every entry is, barring overflow, which the full check rules out.
        if self.check_finite and self._float_obs and not np.isfinite(obs.sum()):
            bad = ~np.isfinite(obs)
            if bad.any():
                rows, cols = np.nonzero(bad)
                raise SpaceError(
                    f"{self.name}: observation rows {sorted(set((rows + first_row).tolist()))[:8]} hold NaN or inf "
                    f"(first: row {rows[0] + first_row}, column {cols[0]}, value {obs[rows[0], cols[0]]}); "
                    "fix the env or pass check_finite=False to allow it")

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Reset every env; returns (obs [num_agents, D], infos)."""

    @abc.abstractmethod
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step every env; returns (obs, rewards, terminals, truncations, infos), all rows."""

    @abc.abstractmethod
    def async_reset(self, seed: int | None = None) -> None:
        """Start resetting every env; collect the results with `recv`."""

    @abc.abstractmethod
    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray, np.ndarray]:
        """The next ready batch: (obs, rewards, terminals, truncations, infos, env_ids, masks)."""

    @abc.abstractmethod
    def send(self, actions: Any) -> None:
        """Actions for the rows of the last `recv`; they start stepping at once."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release envs, processes and shared memory (idempotent)."""

    def reset_group(self, env_ids: Any, seed: int) -> tuple[np.ndarray, Infos]:
        """Restart envs `env_ids` from the one initial state `seed` gives; returns (their obs rows, infos)."""
        raise PufferError(f"{self.name}: the {type(self).__name__} vector backend has no grouped reset")

    def _group(self, env_ids: Any, seed: Any) -> np.ndarray:
        """Checked env indices of a `reset_group` call (unique, in range), or a PufferError."""
        if self._group_reset_error:
            raise PufferError(self._group_reset_error)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise PufferError(f"{self.name}: reset_group needs an integer seed (the one all the envs start "
                              f"from), got {seed!r}")
        ids = np.asarray(env_ids).reshape(-1)
        if ids.size and ids.dtype.kind not in "iu":
            raise PufferError(f"{self.name}: reset_group env_ids must be integer env indices, got {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs or len(np.unique(ids)) != ids.size):
            raise PufferError(f"{self.name}: reset_group env_ids must be distinct env indices (not agent rows) in "
                              f"[0, {self.num_envs}), got {ids.tolist()}")
        return ids

    def _group_rows(self, ids: np.ndarray) -> np.ndarray:
        """The agent rows of envs `ids`, env by env."""
        return (ids[:, None] * self.agents_per_env + np.arange(self.agents_per_env)).reshape(-1)

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name} num_envs={self.num_envs} agents_per_env={self.agents_per_env} "
                f"batch_size={self.batch_size} obs={self.single_observation_space} act={self.single_action_space}>")


def divisors(n: int) -> list[int]:
    """The positive divisors of n, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def divisors_hint(total: int, wanted: int) -> str:
    """The few divisors of `total` nearest to `wanted`, for error messages."""
    near = sorted(divisors(total), key=lambda d: abs(d - wanted))
    return ", ".join(str(d) for d in sorted(near[:4]))


def check_num_envs(num_envs: Any) -> int:
    """num_envs as an int, or a PufferError."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise PufferError(f"num_envs must be a positive integer, got {num_envs!r}")
    return int(num_envs)


def pick_workers(name: str, num_envs: int, num_workers: Any, cpus: int) -> int:
    """num_workers as an int dividing num_envs (default: the largest divisor not above `cpus`), or a PufferError."""
    if num_workers is None:
        return max(d for d in divisors(num_envs) if d <= max(1, cpus))
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1 \
            or num_envs % num_workers:
        raise PufferError(f"{name}: num_workers must divide num_envs={num_envs} so every worker gets the same "
                          f"number of envs; got {num_workers!r}; valid: {divisors(num_envs)}")
    return int(num_workers)


def pick_batch(name: str, num_envs: int, num_workers: int, agents_per_env: int, batch_size: Any) -> int:
    """batch_size as a whole number of workers' rows dividing num_agents (default: all rows), or a PufferError."""
    rows_per_worker = num_envs // num_workers * agents_per_env
    valid = [rows_per_worker * d for d in divisors(num_workers)]
    if batch_size is None:
        return num_envs * agents_per_env
    if batch_size not in valid:
        raise PufferError(
            f"{name}: batch_size counts agent rows and must be a whole number of workers' rows "
            f"({rows_per_worker} per worker: num_envs={num_envs} / num_workers={num_workers} "
            f"* agents_per_env={agents_per_env}) that divides num_agents={num_envs * agents_per_env}; "
            f"got {batch_size!r}; valid: {valid}")
    return int(batch_size)


class WorkerPool(VecEnv):
    """Reset and EnvPool-style receive, shared by the backends whose workers step groups of envs.

    A subclass provides `_reset_all(seed)` (start resetting every worker), `_wait(workers, any_group)`,
    `_collect(groups) -> (rows, infos)`, `_drain()`, `_check_open()`, and the bookkeeping `groups`,
    `_busy` (group -> sequence number), `_seq`, `_results`, `_received` and `_env_ids`.
    """

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Reset every env (waiting out any batch in flight); returns (obs, infos)."""
        self._check_open()
        self._drain()
        self._reset_all(seed)
        self._wait(set(range(self.num_workers)))
        _, infos = self._collect(list(range(len(self.groups))))
        return self.observations, infos

    def async_reset(self, seed: int | None = None) -> None:
        """Start resetting every env; each batch then comes back through `recv`."""
        self._check_open()
        self._drain()
        self._reset_all(seed)
        for g in range(len(self.groups)):
            self._busy[g] = self._seq
            self._seq += 1

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos, np.ndarray, np.ndarray]:
        """The first batch in flight to finish: (obs, rewards, terminals, truncations, infos, env_ids, masks)."""
        self._check_open()
        if self._received is not None:
            raise PufferError(f"{self.name}: recv() called twice; send() actions for the batch you have first")
        if not self._busy:
            raise PufferError(f"{self.name}: recv() with nothing in flight; call async_reset() or send() first")
        self._wait({w for g in self._busy for w in self.groups[g]}, any_group=True)
        done = [g for g in self._busy if all(w in self._results for w in self.groups[g])]
        g = min(done, key=self._busy.__getitem__)
        del self._busy[g]
        self._received = g
        rows, infos = self._collect([g])
        return (self.observations[rows], self.rewards[rows], self.terminals[rows], self.truncations[rows],
                infos, self._env_ids[g], self.masks[rows])
