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
from puffer.train.buffers import Layout, RolloutBuffer, RunningNorm, episode_stats, pack, unpack
from puffer.train.episodes import EpisodesMixin, check_groups
from puffer.train.plan import DATA_SOURCES, EPISODES, OFFLINE, Algorithm, Plan
from puffer.train.rollout import RolloutMixin
from puffer.tree import tree_map

# the statistics every algorithm's progress line and logs start with
LEADING = ("global_step", "sps", "episode_return", "episode_length")
# above this many bytes of rollout, updates go minibatch by minibatch instead of as one program
WHOLE_UPDATE_BYTES = 1 << 30


def whole_update(be: Any, step: Callable) -> Callable:
    """Every epoch and minibatch of an update as one function: `step` scanned over host-drawn shuffles.

    `order` `[epochs * minibatches, per_minibatch]` holds the segment indices of each minibatch;
    minibatches are gathered from the whole rollout inside, so one compiled call does the update.
    """
    xp = be.xp

    def update(params, opt_state, acc, packed, nexts, states, order, hyper):
        def one_minibatch(carry, idx):
            mb = xp.take(packed, idx, axis=0)
            state = tuple(xp.take(s, idx, axis=0) for s in states)
            return step(*carry, mb, xp.take(nexts, idx, axis=0), state, hyper), None

        return be.scan(one_minibatch, (params, opt_state, acc), order)[0]

    return update


def divisors_hint(total: int, wanted: int) -> str:
    """The few divisors of `total` nearest to `wanted`, for error messages."""
    near = [d for d in range(1, total + 1) if total % d == 0]
    near.sort(key=lambda d: abs(d - wanted))
    return ", ".join(str(d) for d in sorted(near[:4]))


def hyper_arrays(be: Any, values: dict[str, float]) -> dict[str, Any]:
    """0-d float32 backend arrays for per-call values (compiled steps never freeze them)."""
    return {k: be.asarray(np.asarray(v, dtype=np.float32)) for k, v in values.items()}


class Trainer(RolloutMixin, EpisodesMixin):
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
        self.env = puffer.make(env, num_envs=cfg.num_envs, backend=cfg.vec, num_workers=cfg.num_workers,
                               batch_size=cfg.vec_batch_size, seed=cfg.seed, **cfg.env_kwargs) if makes_env else env
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
            self.episodes: collections.deque = collections.deque(maxlen=100)
            self.episodes_finished = 0
            self.history: list[dict[str, float]] = []
            self.reward_model = None
            if cfg.reward_model:
                from puffer.preferences import load_reward_model

                self.reward_model = load_reward_model(cfg.reward_model, self.env, self.env_name)
            self._pending_rewards = np.zeros(self.rows, np.float32)
            self.plan: Plan = algorithm.declare(self, cfg)
            self._build()
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
    def params(self) -> dict:
        """The trainable parameters (backend arrays)."""
        return self.plan.params

    @params.setter
    def params(self, value: dict) -> None:
        self.plan.params = value

    @property
    def opt_state(self) -> dict:
        """The optimizer state (backend arrays)."""
        return self.plan.opt_state

    @opt_state.setter
    def opt_state(self, value: dict) -> None:
        self.plan.opt_state = value

    # ---- compiled functions and buffers ------------------------------------------------------
    def _build(self) -> None:
        plan, be, policy = self.plan, self.be, self.plan.policy
        if plan.data not in DATA_SOURCES:
            raise PufferError(f"{self.algo}: data source {plan.data!r} is not one this puffer runs "
                              f"({', '.join(DATA_SOURCES)})")
        if plan.data == OFFLINE:
            self._build_offline()
            return
        if plan.data == EPISODES:
            check_groups(self.env, self.env_name, plan.group_size, self.sync, self.config.seed)
        self.segment = plan.segment
        total = self.rows * plan.rollout_len
        if total % plan.minibatch_size or plan.minibatch_size % self.segment:
            raise PufferError(
                f"minibatch_size={plan.minibatch_size} must divide num_agents * rollout_len = {total} and be a "
                f"multiple of the sequence length {self.segment}; values that work: "
                f"{divisors_hint(total, plan.minibatch_size)}")
        self.num_minibatches = total // plan.minibatch_size
        head = policy.head
        xp = be.xp

        # per-step input: obs, episode-start flag, noise; output: actions then the declared outputs
        self.in_layout = in_layout = Layout()
        in_layout.add("obs", self.obs_dim)
        in_layout.add("starts", 1, squeeze=True)
        in_layout.add("noise", head.noise_dim)
        # declared input channels ride in the same packed array (one transfer per step)
        self.input_layout = input_layout = Layout()
        for name, width in plan.inputs.items():
            in_layout.add(name, width)
            input_layout.add(name, width)

        def act_fn(params, packed, state):
            f = unpack(be, in_layout, packed)
            extra = ({name: f[name] for name in plan.inputs},) if plan.inputs else ()
            actions, outs, state = plan.act(be, params, f["obs"], state, f["starts"], f["noise"], *extra)
            return xp.concat([actions, *(xp.expand_dims(o, axis=-1) for o in outs)], axis=-1), state

        if plan.inputs:
            def values_fn(params, obs, packed_inputs, state):
                return xp.stack(plan.values(be, params, obs, state, unpack(be, input_layout, packed_inputs)), axis=-1)
        else:
            def values_fn(params, obs, state):
                return xp.stack(plan.values(be, params, obs, state), axis=-1)

        self._act = be.compile(act_fn)
        self._values = be.compile(values_fn)

        fields = {"obs": self.obs_dim, "actions": head.action_dim, "rewards": 0, "dones": 0, "starts": 0, "mask": 0,
                  **{name: 0 for name in plan.outputs}, **plan.record, **plan.inputs, **plan.derived}
        self.mb_layout = Layout()
        for name in plan.minibatch_fields:
            width = fields[name]
            self.mb_layout.add(name, width or 1, squeeze=not width)
        step = plan.build_step(self.mb_layout)
        self._step = be.compile(step, donate=(0, 1, 2))
        self._whole = be.compile(whole_update(be, step), donate=(0, 1, 2))
        self._state = policy.initial_state(be, self.batch_rows)
        n, T = self.rows, plan.rollout_len
        self._host_state = tuple(np.zeros((n, s.shape[-1]), np.float32) for s in self._state) if not self.sync else ()
        self._in = np.zeros((self.batch_rows, in_layout.width), np.float32)
        self._mb = np.zeros((plan.minibatch_size // self.segment, self.segment, self.mb_layout.width), np.float32)
        rollout_bytes = 4 * n * T * self.mb_layout.width
        # early stopping reads the statistics between epochs, which one program cannot hand back; where
        # loops do not compile (tinygrad unrolls them into one huge graph) one call per minibatch is faster
        self.whole_update = be.compiles_loops and plan.early_stop is None and rollout_bytes <= WHOLE_UPDATE_BYTES
        self._rollout_packed = np.zeros((n * T // self.segment, self.segment, self.mb_layout.width), np.float32)
        self.buffer = RolloutBuffer(n, T, fields, tuple(v for v, _ in plan.bootstrap.values()))
        self._starts = np.ones(n, np.float32)
        self._obs = None
        self._inputs: dict[str, np.ndarray] = {}
        self._pending = None
        self._seg_states = (tuple(np.zeros((n, T // self.segment, s.shape[-1]), np.float32)
                                  for s in self._state) if policy.recurrent else ())

    def _build_offline(self) -> None:
        """Offline plans: one packed minibatch layout and the compiled step; no rollout buffers."""
        plan = self.plan
        if plan.sample is None or not plan.offline_fields:
            raise PufferError(f"{self.algo}: an offline plan needs `sample` and `offline_fields`")
        self.mb_layout = Layout()
        for name, width in plan.offline_fields.items():
            self.mb_layout.add(name, width or 1, squeeze=not width)
        self._step = plan.build_step(self.mb_layout)
        self._mb = None
        self._obs = None
        self._state = ()

    def _offline_batch(self) -> Any:
        batch = self.plan.sample(self.rng)
        if self._mb is None:
            name, width = next(iter(self.plan.offline_fields.items()))
            lead = batch[name].shape[:-1] if width else batch[name].shape
            self._mb = np.zeros((*lead, self.mb_layout.width), np.float32)
        return pack(self.mb_layout, batch, self._mb)

    def update_offline(self) -> dict[str, float]:
        """`epochs` gradient steps on minibatches drawn from the dataset; returns mean statistics."""
        plan, be = self.plan, self.be
        keys = plan.stat_keys
        acc = be.asarray(np.zeros(len(keys), np.float32))
        total = max(self.config.total_steps, 1)
        for i in range(plan.epochs):
            # per gradient step, so that schedules such as a warmup advance with every step
            hyper_values = plan.hyper(min((self.global_step + i) / total, 1.0))
            packed = be.asarray(self._offline_batch())
            self.params, self.opt_state, acc = self._step(self.params, self.opt_state, acc, packed,
                                                          hyper_arrays(be, hyper_values))
        means = be.to_numpy(acc) / max(plan.epochs, 1)
        stats = dict(zip(keys, (float(x) for x in means)))
        if "lr" in hyper_values:
            stats["learning_rate"] = float(hyper_values["lr"])
        self.updates += 1
        self.global_step += plan.epochs
        return stats

    def evaluation_episodes(self, episodes: int, seed: int) -> list[dict[str, float]]:
        """`episodes` fresh episodes of the current policy (deterministic), as episode-statistics dicts."""
        from puffer.train.evaluate import run_episodes

        env = puffer.make(self.env_name, num_envs=min(self.config.num_envs, episodes), seed=seed,
                          **self.config.env_kwargs)
        try:
            return run_episodes(env, self.actor(True, seed), episodes, seed=seed, key=None)
        finally:
            env.close()

    def actor(self, deterministic: bool = True, seed: int = 0) -> Any:
        """An actor of the current parameters for evaluation episodes."""
        if self.plan.make_actor is not None:
            return self.plan.make_actor(deterministic, seed)
        from puffer.train.evaluate import PolicyActor

        return PolicyActor(self.be, self.policy, self.params, self.env.single_action_space, self.obs_norm,
                           deterministic, seed)

    def _train_offline(self, total: int, stop_at_return: float | None, callback: Any, progress: Any) -> dict:
        plan = self.plan
        start_step, t0 = self.global_step, time.perf_counter()
        every = plan.eval_every or total
        next_eval = (self.global_step // every + 1) * every
        stats: dict[str, float] = {}
        while self.global_step < total:
            t_upd = time.perf_counter()
            stats = self.update_offline()
            t_eval = time.perf_counter()
            if self.global_step >= min(next_eval, total):
                next_eval += every
                seed = int(self.rng.integers(2**31))
                self.episodes.extend(self.evaluation_episodes(plan.eval_episodes, seed))
                self.episodes_finished += plan.eval_episodes
            now = time.perf_counter()
            episodes = episode_stats(list(self.episodes)[-plan.eval_episodes:])
            stats = {"global_step": self.global_step,
                     "sps": (self.global_step - start_step) / max(now - t0, 1e-9),
                     **{k: episodes.pop(k) for k in LEADING[2:] if k in episodes}, **stats, **episodes,
                     "update_time": t_eval - t_upd, "eval_time": now - t_eval,
                     "mean_return_20": self.mean_return(20)}
            self.history.append(stats)
            if progress is not None:
                progress(self, stats)
            if callback is not None and callback(self, stats):
                break
            if stop_at_return is not None and self.episodes and self.mean_return(plan.eval_episodes) >= stop_at_return:
                break
        return stats

    # ---- update -----------------------------------------------------------------------------
    def progress_fraction(self) -> float:
        """Fraction of `total_steps` done (drives learning-rate schedules)."""
        return min(self.global_step / max(self.config.total_steps, 1), 1.0)

    def compute_advantages(self) -> None:
        """The plan's host-side `prepare` step over the filled buffer (e.g. GAE)."""
        if self.plan.prepare is not None:
            self.plan.prepare(self.buffer)

    def update(self) -> dict[str, float]:
        """Epochs of shuffled minibatch steps over the prepared rollout; returns mean statistics."""
        plan, be = self.plan, self.be
        stats: dict[str, float] = {}
        seqs = self.buffer.sequences(self.segment)
        n_seq = len(seqs["starts"])
        per_mb = plan.minibatch_size // self.segment
        hyper_values = plan.hyper(self.progress_fraction())
        hyper = hyper_arrays(be, hyper_values)
        keys = plan.stat_keys
        acc = be.asarray(np.zeros(len(keys), np.float32))
        count = 0
        states = tuple(s.reshape(n_seq, -1) for s in self._seg_states)
        # a plan without bootstraps still passes a (zero) column: compiled steps keep one signature
        nexts = (np.stack([seqs[f"next_{v}"] for v, _ in plan.bootstrap.values()], axis=-1) if plan.bootstrap
                 else np.zeros((n_seq, 1), np.float32))
        if self.whole_update:
            # the same shuffles as the minibatch path below, drawn up front
            order = np.stack([self.rng.permutation(n_seq)[:self.num_minibatches * per_mb].reshape(-1, per_mb)
                              for _ in range(plan.epochs)]).reshape(-1, per_mb)
            packed = pack(self.mb_layout, {k: seqs[k] for k in self.mb_layout.slices}, self._rollout_packed)
            self.params, self.opt_state, acc = self._whole(
                self.params, self.opt_state, acc, be.asarray(packed), be.asarray(nexts),
                tuple(be.asarray(s) for s in states), be.asarray(order.astype(np.int32)), hyper)
            count = len(order)
        for _ in range(0 if self.whole_update else plan.epochs):
            order = self.rng.permutation(n_seq)
            for i in range(self.num_minibatches):
                idx = order[i * per_mb:(i + 1) * per_mb]
                pack(self.mb_layout, {k: seqs[k][idx] for k in self.mb_layout.slices}, self._mb)
                state = tuple(be.asarray(s[idx]) for s in states)
                self.params, self.opt_state, acc = self._step(self.params, self.opt_state, acc, be.asarray(self._mb),
                                                              be.asarray(nexts[idx]), state, hyper)
                count += 1
            if plan.early_stop is not None:
                means = be.to_numpy(acc) / count
                if plan.early_stop(dict(zip(keys, (float(x) for x in means)))):
                    break
        means = be.to_numpy(acc) / max(count, 1)
        stats.update(zip(keys, (float(x) for x in means)))
        if plan.summarize is not None:
            stats.update(plan.summarize(self.buffer))
        if "lr" in hyper_values:  # the conventional name of a learning rate in `hyper`
            stats["learning_rate"] = float(hyper_values["lr"])
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
        """Train until `total_steps` env steps (or `stop_at_return` over the last 20 episodes); returns last stats.

        Offline plans count gradient steps instead, and their returns come from evaluation episodes.

        `callback(trainer, stats)` runs after every update (True stops training); `progress` too, for display.
        """
        total = total_steps or self.config.total_steps
        if self.plan.data == OFFLINE:
            return self._train_offline(total, stop_at_return, callback, progress)
        start_step, t0 = self.global_step, time.perf_counter()
        stats: dict[str, float] = {}
        while self.global_step < total:
            t_roll = time.perf_counter()
            if self.plan.data == EPISODES:
                self.collect_episodes()
            else:
                self.rollout()
            # e.g. a Lagrange multiplier step: before the advantages that use it
            before = self.plan.before_update(self) if self.plan.before_update else {}
            self.compute_advantages()
            t_upd = time.perf_counter()
            stats = {**before, **self.update()}
            now = time.perf_counter()
            episodes = episode_stats(list(self.episodes)[-20:])
            stats = {"global_step": self.global_step, "sps": (self.global_step - start_step) / max(now - t0, 1e-9),
                     **{k: episodes.pop(k) for k in LEADING[2:] if k in episodes}, **stats, **episodes,
                     "rollout_time": t_upd - t_roll, "update_time": now - t_upd,
                     "mean_return_20": self.mean_return(20)}
            self.history.append(stats)
            if progress is not None:
                progress(self, stats)
            if callback is not None and callback(self, stats):
                break
            if stop_at_return is not None and len(self.episodes) >= 20 and self.mean_return(20) >= stop_at_return:
                break
        return stats

    def evaluate(self, episodes: int = 100, deterministic: bool = True, seed: int = 12345,
                 key: str = "episode_return") -> float:
        """Mean `key` over `episodes` fresh episodes of the current policy (a separate env, same settings)."""
        from puffer.train.evaluate import run_episodes

        cfg = self.config
        actor = self.actor(deterministic, seed)
        env = puffer.make(self.env_name, num_envs=min(cfg.num_envs, episodes), seed=seed, **cfg.env_kwargs)
        try:
            return float(np.mean(run_episodes(env, actor, episodes, seed=seed, key=key)))
        finally:
            env.close()

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
        if self._obs is None or not self.sync or not hasattr(self.env, "state_dict"):
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
        if self.plan.extra_state is not None:
            groups["algo_state"] = self.plan.extra_state[0]()
        if self.obs_norm is not None:
            groups["obs_norm"] = self.obs_norm.state_dict()
        env_state = self._env_state()
        if env_state is not None:
            # What the next rollout continues from: the env, its current observations, episode-start
            # flags and the recurrent state, so that a resumed run repeats an uninterrupted one.
            resume = {f"env.{k}": v for k, v in checkpoint.split_state(env_state)[0].items()}
            resume["trainer.obs"] = np.array(self._obs, copy=True)
            resume["trainer.starts"] = self._starts.copy()
            for name, value in self._inputs.items():
                resume[f"trainer.input.{name}"] = value.copy()
            for i, s in enumerate(self._state):
                resume[f"trainer.state.{i}"] = np.asarray(self.be.to_numpy(s))
            groups["resume"] = resume
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
        if self.plan.extra_state is not None:
            mine_groups["algo_state"] = self.plan.extra_state[0]()
        for name, mine in mine_groups.items():
            theirs = groups.get(name, {})
            want = {k: tuple(np.shape(v)) for k, v in mine.items()}
            got = {k: tuple(v.shape) for k, v in theirs.items()}
            if want != got:
                raise PufferError(f"checkpoint {path}: its {name} do not fit this trainer "
                                  f"({checkpoint.describe_mismatch(want, got)})")
        resume, env_values = groups.get("resume"), meta.get("env_state")
        exact = (resume is not None and env_values is not None and self.sync and hasattr(self.env, "load_state_dict")
                 and resume["trainer.starts"].shape == self._starts.shape)
        if exact:
            state = tuple(resume[f"trainer.state.{i}"] for i in range(len(self._state)))
            for saved, s in zip(state, self._state):
                if saved.shape != tuple(s.shape):
                    raise PufferError(f"checkpoint {path}: recurrent state {saved.shape} does not fit {tuple(s.shape)}")
            # Validates the whole env state before writing any of it.
            self.env.load_state_dict(checkpoint.join_state(
                {k[4:]: v for k, v in resume.items() if k.startswith("env.")}, env_values))
            self._obs, self._starts = resume["trainer.obs"], resume["trainer.starts"].copy()
            self._inputs = {name: resume[f"trainer.input.{name}"].copy() for name in self.plan.inputs
                            if f"trainer.input.{name}" in resume}
            self._state = tuple(self.be.asarray(s) for s in state)
        self.resumed_exactly = exact
        self.load_numpy(groups["params"], groups["opt_state"])
        if self.plan.extra_state is not None:
            self.plan.extra_state[1](groups["algo_state"])
        if self.obs_norm is not None and "obs_norm" in groups:
            self.obs_norm.load_state_dict(groups["obs_norm"])
        self.global_step, self.updates = int(meta["global_step"]), int(meta["updates"])
        self.rng.bit_generator.state = meta["rng"]
        self.episodes.clear()
        self.episodes.extend(meta.get("episodes", ()))

    def close(self) -> None:
        """Close the environment."""
        self.env.close()
