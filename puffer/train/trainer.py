"""The algorithm-neutral trainer: env + backend + declared plan, rollouts, minibatch updates, the loop, state.

    trainer = Trainer("cartpole", backend="torch", algorithm=registry.get("ppo"), total_steps=200_000)
    trainer.train(stop_at_return=475)

An algorithm class such as `puffer.algos.PPO` is this class with its `Algorithm` bound. Everything
the algorithm needs arrives through its `Plan` (see `puffer.train.plan`); nothing here names one.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import puffer
from puffer import checkpoint
from puffer.errors import PufferError
from puffer.normalize import RunningNorm
from puffer.train.buffers import episode_stats, unpack
from puffer.train.episodes import EpisodeCollector
from puffer.train.offline import OfflineCollector
from puffer.train.plan import Algorithm, Episodes, Offline, OnPolicy, Plan, Progress, Replay, RunContext, UpdateInfo
from puffer.train.replay_collector import ReplayCollector
from puffer.train.rollout import RolloutCollector, whole_update
from puffer.tree import tree_map

# the statistics every algorithm's progress line and logs start with
LEADING = ("global_step", "sps", "episode_return", "episode_length")
# the collector of each data source (a new source is one entry here, never an `if` in the loop)
COLLECTORS: dict[type, type] = {OnPolicy: RolloutCollector, Episodes: EpisodeCollector, Offline: OfflineCollector,
                                 Replay: ReplayCollector}


def hyper_arrays(be: Any, values: dict[str, float]) -> dict[str, Any]:
    """0-d float32 backend arrays for per-call values (compiled steps never freeze them)."""
    return {k: be.asarray(np.asarray(v, dtype=np.float32)) for k, v in values.items()}


def minibatch_step(be: Any, update: Callable, layout: Any, stat_keys: tuple[str, ...],
                   bootstrapped: tuple[str, ...]) -> Callable:
    """An algorithm's pure `update` as the machinery calls it: a packed minibatch in, its statistics out.

    `step(params, opt_state, packed, nexts, state, consts, hyper) -> (params, opt_state, stats)`:
    `stats` holds the `stat_keys` (summed by `Trainer.accumulate` outside the compiled call: tinygrad
    0.14's codegen fails on Dreamer's update when its statistics are stacked inside). `packed` is unpacked by
    `layout` (a collector without a layout sends a dict of named arrays), `nexts[:, i]` becomes
    `mb["next_<bootstrapped[i]>"]` and `state` `mb["state"]`.
    """

    def step(params, opt_state, packed, nexts, state, consts, hyper):
        mb = unpack(be, layout, packed) if layout is not None else dict(packed)
        for i, name in enumerate(bootstrapped):
            mb[f"next_{name}"] = nexts[:, i]
        mb["state"] = state
        params, opt_state, stats = update(params, opt_state, mb, consts, hyper)
        return params, opt_state, {k: stats[k] for k in stat_keys}

    return step


def episode_limit(env: Any) -> int | None:
    """The env's longest episode (`max_episode_steps` of it or of the env it wraps), or None."""
    inner = env
    while inner is not None:
        limit = getattr(inner, "max_episode_steps", None)
        if limit:
            return int(limit)
        inner = getattr(inner, "env", None)
    return None


class Trainer:
    """Trains any registered algorithm on any env and training backend; subclasses bind `algorithm`."""

    algorithm: Algorithm | None = None

    def __init__(self, env: Any = "cartpole", backend: str | None = None, policy: str | None = None,
                 config: Any = None, algorithm: Algorithm | str | None = None, **config_overrides: Any):
        if isinstance(algorithm, str):
            from puffer.train import registry

            algorithm = registry.get(algorithm)
        self.algorithm = algorithm = algorithm or type(self).algorithm
        if algorithm is None:
            raise PufferError("Trainer needs an algorithm: Trainer(env, algorithm='ppo') or an algorithm class")
        cfg = config or algorithm.config()
        if not isinstance(cfg, algorithm.config):
            raise PufferError(f"{algorithm.name} takes a {algorithm.config.__name__}, got {type(cfg).__name__}")
        if policy is not None:
            config_overrides["policy"] = policy
        if config_overrides:
            cfg = algorithm.config.from_dict({**cfg.to_dict(), **config_overrides})
        cfg.validate()
        self.config = cfg
        trainers = ", ".join(puffer.backends.TRAINING)
        if isinstance(backend, str) and backend not in puffer.backends.TRAINING:
            puffer.backend(backend)  # an unknown or uninstalled name raises its own clear error here
            raise PufferError(f"backend {backend!r} cannot train; use one of {trainers}")
        self.env_name = env if isinstance(env, str) else getattr(env, "name", type(env).__name__)
        makes_env = isinstance(env, str) or (callable(env) and not hasattr(env, "step"))
        # workers fork before the framework starts its threads (forking a running JAX can deadlock)
        if makes_env:
            env = puffer.make(env, num_envs=cfg.num_envs, backend=cfg.vec, num_workers=cfg.num_workers,
                              batch_size=cfg.vec_batch_size, seed=cfg.seed, reward_model=cfg.reward_model,
                              **cfg.env_kwargs)
        elif cfg.reward_model:
            from puffer.vector import with_reward_model

            env = with_reward_model(env, cfg.reward_model)
        self.env = env
        try:
            self.be = puffer.backend(backend)
            if not self.be.can_train:
                raise PufferError(f"backend {self.be.name!r} cannot train; use one of {trainers}")
            self.rows = self.env.num_agents
            self.batch_rows = getattr(self.env, "batch_size", None) or self.rows
            self.sync = self.batch_rows == self.rows
            self.obs_dim = int(self.env.single_observation_space.shape[0])
            self.rng = np.random.Generator(np.random.PCG64(cfg.seed))
            self.obs_norm = RunningNorm(self.obs_dim) if cfg.obs_norm else None
            self.global_step = 0
            self.updates = 0
            self.budget = cfg.total_steps
            self.episodes: collections.deque = collections.deque(maxlen=100)
            self.episodes_finished = 0
            self._seen_episodes = 0
            self.history: list[dict[str, float]] = []
            self.ctx = RunContext(
                be=self.be, env_name=self.env_name, observation_space=self.env.single_observation_space,
                action_space=self.env.single_action_space,
                state_space=getattr(self.env, "single_state_space", None), obs_dim=self.obs_dim, rows=self.rows,
                batch_rows=self.batch_rows, num_envs=int(self.env.num_envs),
                agents_per_env=int(getattr(self.env, "agents_per_env", 1)), seed=cfg.seed,
                max_episode_steps=episode_limit(self.env))
            plan = algorithm.declare(self.ctx, cfg)
            if not isinstance(plan, Plan):
                raise PufferError(f"{algorithm.name}: declare() must return a puffer.train.Plan, got "
                                  f"{type(plan).__name__}")
            # a source from outside puffer names its own collector class (`puffer.train.collector.Collector`)
            collector = COLLECTORS.get(type(plan.data)) or getattr(type(plan.data), "collector", None)
            if collector is None:
                raise PufferError(f"{algorithm.name}: data source {type(plan.data).__name__} is not one this puffer "
                                  f"runs ({', '.join(c.__name__ for c in COLLECTORS)}) and names no `collector` class")
            self.plan = plan
            self.params, self.opt_state = plan.params, plan.opt_state
            self.algo_state = {k: np.asarray(v) for k, v in plan.state.items()}
            self._refresh_consts()
            self.collector = collector(self, plan.data)
            step = minibatch_step(self.be, plan.update, self.collector.layout, plan.stat_keys,
                                  self.collector.bootstrapped)
            self.step = self.be.compile(step, donate=(0, 1))
            self.whole_step = self.be.compile(whole_update(self.be, step, plan.stat_keys), donate=(0, 1, 2))
        except BaseException:
            self.env.close()
            raise

    @property
    def algo(self) -> str:
        """The algorithm's registered name."""
        return self.algorithm.name

    @property
    def policy(self) -> Any:
        """The acting policy of the plan."""
        return self.plan.policy

    @property
    def buffer(self) -> Any:
        """The collector's buffer of the last collection (acting sources)."""
        return self.collector.buffer

    @property
    def whole_update(self) -> bool:
        """Whether an update runs as one compiled program (acting sources on backends that compile loops)."""
        return self.collector.whole_update

    @whole_update.setter
    def whole_update(self, value: bool) -> None:
        self.collector.whole_update = value

    def _refresh_consts(self) -> None:
        consts = self.plan.consts(self.algo_state) if self.plan.consts is not None else {}
        self.consts = {k: self.be.asarray(np.asarray(v, np.float32)) for k, v in consts.items()}

    # ---- the steps of one update ------------------------------------------------------------
    def record_episodes(self, episodes: Any) -> None:
        """Keep the statistics of finished episodes (the last 100)."""
        episodes = list(episodes)
        self.episodes.extend(episodes)
        self.episodes_finished += len(episodes)

    def collect(self) -> Any:
        """One collection of the plan's data source (a rollout, a batch of episode groups, ...); returns it."""
        self.batch = self.collector.collect()
        return self.batch

    def before_update(self) -> dict[str, float]:
        """The algorithm's `before_update` hook on its state (e.g. a Lagrange multiplier step); its statistics."""
        if self.plan.before_update is None:
            return {}
        info = UpdateInfo(self.global_step, self.updates, tuple(self.episodes),
                          self.episodes_finished - self._seen_episodes, self.params)
        self._seen_episodes = self.episodes_finished
        self.algo_state, stats = self.plan.before_update(self.algo_state, info)
        self._refresh_consts()
        return stats

    def prepare(self) -> None:
        """The algorithm's host-side `prepare` over the collected batch (e.g. GAE)."""
        if self.plan.prepare is not None:
            self.algo_state = self.plan.prepare(self.batch, self.algo_state)
            self._refresh_consts()

    def accumulate(self, acc: Any, stats: dict[str, Any]) -> Any:
        """`acc` plus one step's statistics, in `stat_keys` order (a backend vector)."""
        return acc + self.be.xp.stack([stats[k] for k in self.plan.stat_keys])

    def hyper_at(self, progress: Progress) -> dict[str, Any]:
        """The per-update values at `progress` as 0-d backend arrays."""
        return hyper_arrays(self.be, self.plan.hyper(progress, self.algo_state))

    def update(self) -> dict[str, float]:
        """The compiled update over the collected batch, then the algorithm's summary; returns statistics."""
        values = self.plan.hyper(Progress(self.global_step, self.budget), self.algo_state)
        stats = self.collector.update(hyper_arrays(self.be, values))
        if self.plan.summarize is not None:
            stats.update(self.plan.summarize(self.batch, self.algo_state))
        if "lr" in values:  # the conventional name of a learning rate in `hyper`
            stats["learning_rate"] = float(values["lr"])
        self.updates += 1
        return stats

    # ---- loop -------------------------------------------------------------------------------
    def mean_return(self, last: int = 20) -> float:
        """Mean episode return over the last `last` finished episodes (nan before any)."""
        eps = list(self.episodes)[-last:]
        return float(np.mean([e["episode_return"] for e in eps])) if eps else float("nan")

    def train(self, total_steps: int | None = None, stop_at_return: float | None = None,
              callback: Callable[[Trainer, dict], bool | None] | None = None,
              progress: Any = None) -> dict[str, float]:
        """Train until `total_steps` (or `stop_at_return` over the recent episodes); returns the last statistics.

        Steps are env steps, or gradient steps for an offline source (whose returns come from
        evaluation episodes). Progress-based schedules anneal over this call's budget.
        `callback(trainer, stats)` runs after every update (True stops training); `progress` too, for display.
        """
        self.budget = total = total_steps or self.config.total_steps
        self.collector.start()
        window = self.collector.return_window
        start_step, t0 = self.global_step, time.perf_counter()
        stats: dict[str, float] = {}
        while self.global_step < total:
            t_collect = time.perf_counter()
            self.collect()
            before = self.before_update()  # e.g. a Lagrange multiplier step: before the advantages that use it
            self.prepare()
            t_update = time.perf_counter()
            stats = {**before, **self.update()}
            t_after = time.perf_counter()
            stats.update(self.collector.after_update())
            now = time.perf_counter()
            episodes = episode_stats(list(self.episodes)[-window:])
            stats = {"global_step": self.global_step, "sps": (self.global_step - start_step) / max(now - t0, 1e-9),
                     **{k: episodes.pop(k) for k in LEADING[2:] if k in episodes}, **stats, **episodes,
                     "rollout_time": t_update - t_collect, "update_time": t_after - t_update,
                     "eval_time": now - t_after, "mean_return_20": self.mean_return(20)}
            self.history.append(stats)
            if progress is not None:
                progress(self, stats)
            if callback is not None and callback(self, stats):
                break
            if (stop_at_return is not None and len(self.episodes) >= window
                    and self.mean_return(window) >= stop_at_return):
                break
        return stats

    def actor(self, deterministic: bool = True, seed: int = 0) -> Any:
        """An actor of the current parameters for evaluation episodes."""
        if self.plan.make_actor is not None:
            return self.plan.make_actor(self.params, deterministic, seed)
        from puffer.train.evaluate import PolicyActor

        return PolicyActor(self.be, self.policy, self.params, self.env.single_action_space, self.obs_norm,
                           deterministic, seed)

    def evaluation_episodes(self, episodes: int, seed: int, actor: Any = None,
                            deterministic: bool = True) -> list[dict[str, float]]:
        """`episodes` fresh episodes of `actor` (default: the current policy), as episode-statistics dicts."""
        from puffer.train.evaluate import run_episodes

        actor = actor if actor is not None else self.actor(deterministic, seed)
        env = puffer.make(self.env_name, num_envs=min(self.config.num_envs, episodes), seed=seed,
                          **self.config.env_kwargs)
        try:
            return run_episodes(env, actor, episodes, seed=seed, key=None)
        finally:
            env.close()

    def evaluate(self, episodes: int = 100, deterministic: bool = True, seed: int = 12345,
                 key: str = "episode_return") -> float:
        """Mean `key` over `episodes` fresh episodes of the current policy (a separate env, same settings)."""
        done = self.evaluation_episodes(episodes, seed, deterministic=deterministic)
        return float(np.mean([float(e.get(key, np.nan)) for e in done]))

    # ---- state ------------------------------------------------------------------------------
    def numpy_params(self) -> dict[str, np.ndarray]:
        """Parameters as numpy arrays (backend-neutral)."""
        return {k: np.asarray(self.be.to_numpy(v)) for k, v in self.params.items()}

    def numpy_opt_state(self) -> dict[str, np.ndarray]:
        """Optimizer state as numpy arrays (backend-neutral)."""
        return {k: np.asarray(self.be.to_numpy(v)) for k, v in self.opt_state.items()}

    def load_numpy(self, params: dict[str, np.ndarray], opt_state: dict[str, np.ndarray] | None = None) -> None:
        """Replace parameters (and optimizer state) with numpy arrays, e.g. from a checkpoint."""
        if set(params) != set(self.params):
            raise PufferError(f"parameter names differ: expected {sorted(self.params)}, got {sorted(params)}")
        self.params = tree_map(self.be.asarray, dict(params))
        if opt_state is not None:
            self.opt_state = tree_map(self.be.asarray, dict(opt_state))

    def _env_state(self) -> dict[str, Any] | None:
        """The env's state between updates, or None where it cannot be saved (async rollouts, gymnasium envs)."""
        if not self.collector.started() or not self.sync or not hasattr(self.env, "state_dict"):
            return None
        try:
            return self.env.state_dict()
        except PufferError:
            return None

    def checkpoint_meta(self) -> dict[str, Any]:
        """Everything but tensors that a checkpoint needs to rebuild and resume this trainer."""
        env = self.env
        structured = getattr(env, "structured_observation_space", None)
        env_state = self._env_state()
        return {
            "algo": self.algo, "env": self.env_name, "backend": self.be.name, "config": self.config.to_dict(),
            "policy": self.plan.policy_spec,
            "observation_space": env.single_observation_space.to_json(),
            "action_space": env.single_action_space.to_json(),
            "structured_observation_space": structured.to_json() if structured is not None else None,
            "global_step": self.global_step, "updates": self.updates, "rng": self.rng.bit_generator.state,
            "mean_return": self.mean_return(20), "episodes": list(self.episodes),
            "env_state": None if env_state is None else checkpoint.split_state(env_state)[1],
        }

    def checkpoint_groups(self) -> dict[str, dict[str, np.ndarray]]:
        """Backend-neutral tensors: parameters, optimizer and algorithm state, obs statistics, env and rollout state."""
        groups = {"params": self.numpy_params(), "opt_state": self.numpy_opt_state()}
        if self.algo_state:
            groups["algo_state"] = {k: np.array(v, copy=True) for k, v in self.algo_state.items()}
        collected = self.collector.state_arrays()
        if collected:  # e.g. a replay's contents: saved whether or not the env's state can be
            groups["collector"] = collected
        if self.obs_norm is not None:
            groups["obs_norm"] = self.obs_norm.state_dict()
        env_state = self._env_state()
        if env_state is not None:
            # What the next rollout continues from: the env, its current observations, episode-start
            # flags and the recurrent state, so that a resumed run repeats an uninterrupted one.
            resume = {f"env.{k}": v for k, v in checkpoint.split_state(env_state)[0].items()}
            groups["resume"] = {**resume, **self.collector.resume_arrays()}
        return groups

    def save(self, run_dir: str, keep_last: int | None = None) -> Any:
        """Write a checkpoint of the current state into `run_dir` (keeping the last `keep_last` and the best)."""
        return checkpoint.save(run_dir, self.global_step, self.checkpoint_groups(), self.checkpoint_meta(),
                               keep_last=keep_last)

    def restore(self, path: str) -> None:
        """Resume from a checkpoint saved on any backend; checks everything before changing anything.

        With the env and rollout state saved (serial native envs, same num_envs), training continues
        exactly as if never interrupted (`self.resumed_exactly`); otherwise the env starts afresh.
        """
        groups, meta = checkpoint.load(path)
        if meta.get("algo") != self.algo:
            raise PufferError(f"checkpoint {path} was trained with {meta.get('algo')!r}, not {self.algo!r}")
        for key in ("observation_space", "action_space"):
            mine = getattr(self.env, f"single_{key}").to_json()
            if meta[key] != mine:
                raise PufferError(f"checkpoint {path} was trained with {key} {meta[key]}, but this env "
                                  f"({self.env_name}) has {mine}")
        mine_groups = {"params": self.params, "opt_state": self.opt_state}
        if self.algo_state:
            mine_groups["algo_state"] = self.algo_state
        for name, mine in mine_groups.items():
            theirs = groups.get(name, {})
            want = {k: tuple(np.shape(v)) for k, v in mine.items()}
            got = {k: tuple(v.shape) for k, v in theirs.items()}
            if want != got:
                raise PufferError(f"checkpoint {path}: its {name} do not fit this trainer "
                                  f"({checkpoint.describe_mismatch(want, got)})")
        resume, env_values = groups.get("resume"), meta.get("env_state")
        exact = (resume is not None and env_values is not None and self.sync and hasattr(self.env, "load_state_dict")
                 and self.collector.fits(resume, path))
        if exact:
            # Validates the whole env state before writing any of it.
            self.env.load_state_dict(checkpoint.join_state(
                {k[4:]: v for k, v in resume.items() if k.startswith("env.")}, env_values))
            self.collector.load_resume_arrays(resume, path)
        self.resumed_exactly = exact
        if "collector" in groups:
            self.collector.load_state_arrays(groups["collector"])
        self.load_numpy(groups["params"], groups["opt_state"])
        if self.algo_state:
            self.algo_state = {k: np.asarray(groups["algo_state"][k]) for k in self.algo_state}
            self._refresh_consts()
        if self.obs_norm is not None and "obs_norm" in groups:
            self.obs_norm.load_state_dict(groups["obs_norm"])
        self.global_step, self.updates = int(meta["global_step"]), int(meta["updates"])
        self.rng.bit_generator.state = meta["rng"]
        self.episodes.clear()
        self.episodes.extend(meta.get("episodes", ()))

    def close(self) -> None:
        """Close the environment."""
        self.env.close()
