"""Vectorized environments: `make` builds one from a name or a creator, in-process, in worker processes or on Ray.

    env = puffer.make(name_or_creator, num_envs=1, backend="serial" | "multiprocessing" | "ray",
                      num_workers=None, batch_size=None, seed=None, check_finite=True,
                      backend_options=None, **env_kwargs)

`name_or_creator` is a built-in name (`puffer.envs.registry()`, e.g. "cartpole"), "gym:ID" (one
`gymnasium.make(ID, **env_kwargs)` per env), a NativeEnv class, or a callable returning one gymnasium Env
or one PettingZoo ParallelEnv (called with `**env_kwargs`; the kind is detected from the first instance).

The contract every backend keeps (the trainer relies on it):

* Spaces: `single_observation_space` is a 1-D `Box` of the flat per-agent observation; the original
  (nested) space is `structured_observation_space` (`puffer.spaces.unflatten(space, obs)` rebuilds
  the nest; for PettingZoo agents with different spaces it is a Dict keyed by agent).
  `single_action_space` is `Discrete`, `MultiDiscrete`, `Box`, or for mixed discrete and continuous
  actions `Tuple((MultiDiscrete(nvec), Box(low, high, (d,))))`, whose actions are ONE float32 array
  `[rows, k + d]` with the k discrete indices first (integral values). Dict/Tuple of discrete
  actions become MultiDiscrete; discrete indices always start at 0. See `puffer.emulation`.
* Sizes: `num_envs`, `agents_per_env`, `num_agents = num_envs * agents_per_env` (rows of a synchronous
  step; the agents of env e are rows `e * agents_per_env ...`), `batch_size` (rows per `recv`).
* Calls: `reset(seed=None) -> (obs, infos)`; `step(actions) -> (obs, rewards, terminals, truncations,
  infos)`; `async_reset(seed=None)`, then alternate `recv() -> (obs, rewards, terminals, truncations,
  infos, env_ids, masks)` and `send(actions)` (actions for the rows just received); `close()`;
  usable as a context manager. Seeding: `reset(seed)` makes what follows deterministic; without a
  seed the first reset uses make's `seed`.
* Arrays: obs `[rows, D]` (float32 unless every leaf shares one other dtype, e.g. uint8 images stay
  uint8), rewards float32 `[rows]`, terminals/truncations bool `[rows]`, masks bool `[rows]` (False
  for padded or absent agent slots, whose rewards are 0), env_ids int64 `[rows]` (row indices into
  the `num_agents` slots). Actions: Discrete int `[rows]` (or `[rows, 1]`), MultiDiscrete int
  `[rows, k]`, Box float `[rows, d]` (clipped to the bounds), mixed float32 `[rows, k + d]`.
  Returned arrays are VIEWS of buffers the next `step`/`recv` overwrites: copy what you keep.
* Auto-reset in the same step: when a row ends (terminal or truncated), its returned observation is
  the first of its next episode and `infos["final_observation"]` (present only when some row ended)
  is a fresh `[rows, D]` array whose ended rows hold the true last observation (other rows hold the
  returned observation). Bootstrap from it on truncation. Termination and truncation stay distinct.
* `infos` is a dict: `infos["episodes"]` always, a list with one dict per episode finished (per agent
  for multi-agent envs) holding at least `episode_return` (float) and `episode_length` (int), plus
  env extras (`episode_cost`, `success`, `agent`, ...); optional per-row arrays (rows follow
  `env_ids` in `recv`): `cost` float32 `[rows]` (constrained envs: Hazard, gymnasium envs with
  `info["cost"]` or safety-gymnasium's 6-tuple `step`; episodes then carry `episode_cost`; a cost
  that is not one number per env step is a `SpaceError` naming the env), `global_state` and
  `final_global_state` (below) and `final_observation` as above. Other values an env puts in
  infos pass through (from the first worker that reports them).
* Global state: `single_state_space` is a 1-D float32 `Box` of size S, or None when the env has no
  state (single-agent gymnasium envs, most native envs). When it is a Box, `infos["global_state"]`
  float32 `[rows, S]` is in the infos of every reset and step (each agent's row holds its env's
  state: native envs that declare it, e.g. Landmarks, and PettingZoo parallel envs through
  `state()` and `state_space`), and whenever `final_observation` is, `infos["final_global_state"]`
  holds the state of the true final step for ended rows (other rows: `global_state`).
* Grouped reset: `reset_group(env_ids, seed) -> (obs, infos)` restarts the envs `env_ids` (env
  indices in [0, num_envs), not agent rows; sync use only, not with async batches in flight) so
  that every one of them starts from the initial state that `seed` gives; other envs are untouched.
  It returns the new observations of those envs' rows `[len(env_ids) * agents_per_env, D]` (env by
  env, a copy) and reset-time infos for those rows (`episodes` empty, `global_state` if any); the
  observation buffer that `step` returns holds them too. Their rewards, terminals and truncations
  are cleared, their episode returns and lengths restart, and the interrupted episodes are not
  reported. Gymnasium and PettingZoo envs call `env.reset(seed=seed)` per env, so G envs with
  identical actions replay identical trajectories, later episodes included; native envs replay
  their first episode (see `NativeEnv.reset_group`: later starts and stochastic transitions come
  from the env's own generator). An env that cannot (a reset without `seed`, a native env with
  `supports_group_reset = False`) is a `PufferError` naming it.
* Bad input raises a `puffer.errors.PufferError`: wrong action shape, dtype or range -> `SpaceError`
  naming the env, the expected space and what was given; a NaN/inf observation -> `SpaceError`
  unless `check_finite=False`; a space with a leaf puffer cannot flatten -> `SpaceError` naming the
  leaf's path; bad num_envs/num_workers/batch_size -> an error listing the values that work. An env
  that raises in a worker, or a worker that dies -> `WorkerError` naming the env, the worker and the
  exception (with its traceback), at once; every worker is then shut down (ray: unless `max_restarts`
  allows recreating it). `close()` frees processes and shared memory, and also runs at interpreter exit.

Backends: "serial" (`Serial`: a native env is used directly, other envs are stepped in a loop),
"multiprocessing" (`Multiprocessing`: `num_workers` processes, default the largest divisor of num_envs
not above the CPU count; `batch_size` a multiple of one worker's rows dividing num_agents, default all
rows; with batch_size < num_agents, `recv` returns whichever batch finishes first) and "ray" (`Ray`,
`puffer.vector.ray`: the same worker layout and batches, each worker a Ray actor on any node of a Ray
cluster; needs `pip install 'puffer-rl[ray]'` and imports ray only when used). `backend_options` are
extra arguments of the backend's constructor: ray's `address` (default `RAY_ADDRESS`, else a local Ray),
`max_restarts` (recreate a dead worker; counted in `infos["worker_restarts"]`) and `timeout` (seconds,
default 120); multiprocessing's `timeout` and `start_method`. `autotune` measures which configuration of
serial and multiprocessing is fastest on this machine.
"""

from __future__ import annotations

from typing import Any

from puffer.errors import PufferError
from puffer.vector.autotune import autotune
from puffer.vector.base import EnvFactory, VecEnv, WorkerError, resolve
from puffer.vector.multiprocessing import Multiprocessing
from puffer.vector.serial import Serial

__all__ = ["make", "autotune", "VecEnv", "Serial", "Multiprocessing", "WorkerError", "EnvFactory", "BACKENDS"]



def _ray_backend(*args: Any, **kwargs: Any) -> VecEnv:
    """The ray backend (`puffer.vector.ray.Ray`), imported on first use so that `import puffer` never imports ray."""
    from puffer.vector.ray import Ray

    return Ray(*args, **kwargs)


# name -> constructor taking (factory, num_envs, num_workers=, batch_size=, seed=, check_finite=, probe=, **options)
BACKENDS = {"serial": Serial, "multiprocessing": Multiprocessing, "ray": _ray_backend}


def __getattr__(name: str) -> Any:
    if name == "Ray":  # lazily, like the registry entry
        from puffer.vector.ray import Ray

        return Ray
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make(env: Any, num_envs: int = 1, backend: str = "serial", num_workers: int | None = None,
         batch_size: int | None = None, seed: int | None = None, check_finite: bool = True,
         backend_options: dict[str, Any] | None = None, reward_model: str | None = None,
         **env_kwargs: Any) -> VecEnv:
    """Create a vectorized environment (see the module docstring for the full contract).

    With `reward_model` (a directory written by `puffer preferences fit`), the env's rewards are that
    model's (`puffer.vector.rewards.RewardModelEnv`); its episode statistics stay the env's own.
    """
    if backend not in BACKENDS:
        raise PufferError(f"unknown vector backend {backend!r}; choose one of {sorted(BACKENDS)}")
    factory, probe = resolve(env, env_kwargs)
    try:
        env = BACKENDS[backend](factory, num_envs, num_workers=num_workers, batch_size=batch_size, seed=seed,
                                check_finite=check_finite, probe=probe, **(backend_options or {}))
    except BaseException:
        if probe is not None:  # the backends may have closed it already; closing twice is harmless
            probe.close()
        raise
    return env if reward_model is None else with_reward_model(env, reward_model)


def with_reward_model(env: Any, path: str) -> Any:
    """`env` with its rewards replaced by the reward model saved in `path` (fitted for the env's spaces)."""
    from puffer.preferences import load_reward_model
    from puffer.vector.rewards import RewardModelEnv

    try:
        return RewardModelEnv(env, load_reward_model(path, env, getattr(env, "name", None)))
    except BaseException:
        env.close()
        raise
