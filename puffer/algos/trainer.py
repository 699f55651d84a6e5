"""The PPO trainer: rollout over `puffer.vector`, advantages, compiled minibatch updates, any backend."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import puffer
from puffer import checkpoint, optim
from puffer.algos import advantage
from puffer.algos.config import PPOConfig
from puffer.algos.ppo import LossStatic, hyper_arrays, make_update
from puffer.algos.rollout import Layout, RolloutBuffer, RunningNorm, episode_stats, pack, unpack
from puffer.errors import PufferError
from puffer.policies import act, make_policy, to_env_actions
from puffer.tree import tree_map

STAT_KEYS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")


def _divisors_hint(total: int, wanted: int) -> str:
    near = [d for d in range(1, total + 1) if total % d == 0]
    near.sort(key=lambda d: abs(d - wanted))
    return ", ".join(str(d) for d in sorted(near[:4]))


class PPO:
    """Proximal Policy Optimization written once: `PPO(env, backend="torch").train(200_000)`."""

    algo = "ppo"

    def __init__(self, env: Any = "cartpole", backend: str | None = None, policy: str | None = None,
                 config: PPOConfig | None = None, **config_overrides: Any):
        cfg = config or PPOConfig()
        if policy is not None:
            config_overrides["policy"] = policy
        if config_overrides:
            cfg = PPOConfig.from_dict({**cfg.to_dict(), **config_overrides})
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
        self.be = puffer.backend(backend)
        if not self.be.can_train:
            raise PufferError(f"backend {self.be.name!r} cannot train; use one of {trainers}")
        self.policy = make_policy(self.env.single_observation_space, self.env.single_action_space, cfg.policy,
                                  cfg.hidden_size, cfg.num_layers, cfg.activation)
        self.head = self.policy.head
        self.rows = self.env.num_agents
        self.batch_rows = getattr(self.env, "batch_size", None) or self.rows
        self.sync = self.batch_rows == self.rows
        self.obs_dim = int(self.env.single_observation_space.shape[0])

        self.rng = np.random.Generator(np.random.PCG64(cfg.seed))
        self.params = self.policy.init(self.be, cfg.seed)
        self.opt_state = optim.adam.init(self.be, self.params) if cfg.weight_decay == 0 else optim.adamw.init(
            self.be, self.params)
        self.obs_norm = RunningNorm(self.obs_dim) if cfg.obs_norm else None
        self.global_step = 0
        self.updates = 0
        self.episodes: collections.deque = collections.deque(maxlen=100)
        self.episodes_finished = 0
        self.history: list[dict[str, float]] = []
        self._build()

    # ---- compiled functions -----------------------------------------------------------------
    def _build(self) -> None:
        cfg, be, policy = self.config, self.be, self.policy
        self.segment = 1 if (cfg.policy == "mlp" and cfg.advantage == "gae") else cfg.bptt_horizon
        total = self.rows * cfg.rollout_len
        if total % cfg.minibatch_size or cfg.minibatch_size % self.segment:
            hint = _divisors_hint(total, cfg.minibatch_size)
            raise PufferError(
                f"minibatch_size={cfg.minibatch_size} must divide num_agents * rollout_len = {total} and be a "
                f"multiple of the sequence length {self.segment}; values that work: {hint}")
        self.num_minibatches = total // cfg.minibatch_size

        # per-step input: obs, episode-start flag, noise; output: actions, log-prob, value
        self.in_layout = Layout()
        self.in_layout.add("obs", self.obs_dim)
        self.in_layout.add("starts", 1, squeeze=True)
        self.in_layout.add("noise", self.head.noise_dim)
        self.out_layout = Layout()
        self.out_layout.add("actions", self.head.action_dim)
        self.out_layout.add("logp", 1, squeeze=True)
        self.out_layout.add("value", 1, squeeze=True)
        in_layout = self.in_layout
        xp = be.xp

        def act_fn(params, packed, state):
            f = unpack(be, in_layout, packed)
            actions, logp, value, state = act(be, policy, params, f["obs"], state, f["starts"], f["noise"])
            out = xp.concat([actions, xp.expand_dims(logp, axis=-1), xp.expand_dims(value, axis=-1)], axis=-1)
            return out, state

        def value_fn(params, obs, state):
            return policy.step(be, params, obs, state)[1]

        self._act = be.compile(act_fn)
        self._value = be.compile(value_fn)

        self.mb_layout = Layout()
        for name, width in (("obs", self.obs_dim), ("actions", self.head.action_dim)):
            self.mb_layout.add(name, width)
        names = ["logp", "values", "mask", "starts"]
        names += ["rewards", "dones"] if cfg.advantage == "vtrace" else ["adv", "returns"]
        for name in names:
            self.mb_layout.add(name, 1, squeeze=True)
        static = LossStatic(cfg.advantage, cfg.norm_adv, cfg.gamma, cfg.gae_lambda, cfg.vtrace_rho_clip,
                            cfg.vtrace_c_clip, cfg.vf_clip > 0)
        opt = optim.adam if cfg.weight_decay == 0 else optim.adamw
        opt_kwargs = {"beta1": cfg.adam_b1, "beta2": cfg.adam_b2, "eps": cfg.adam_eps}
        if cfg.weight_decay:
            opt_kwargs["weight_decay"] = cfg.weight_decay
        update = make_update(be, policy, static, opt, opt_kwargs)
        mb_layout = self.mb_layout

        def update_fn(params, opt_state, acc, packed, next_value, state, hyper):
            mb = unpack(be, mb_layout, packed)
            mb["next_value"], mb["state"] = next_value, state
            params, opt_state, stats = update(params, opt_state, mb, hyper)
            return params, opt_state, acc + xp.stack([stats[k] for k in STAT_KEYS])

        self._update = be.compile(update_fn, donate=(0, 1, 2))
        self._state = policy.initial_state(be, self.batch_rows)
        n = self.rows
        self._host_state = tuple(np.zeros((n, s.shape[-1]), np.float32) for s in self._state) if not self.sync else ()
        self._in = np.zeros((self.batch_rows, in_layout.width), np.float32)
        self._mb = np.zeros((cfg.minibatch_size // self.segment, self.segment, mb_layout.width), np.float32)
        self.buffer = RolloutBuffer(n, cfg.rollout_len, self.obs_dim, self.head.action_dim)
        self._starts = np.ones(n, np.float32)
        self._obs = None
        self._pending = None
        self._seg_states = (tuple(np.zeros((n, cfg.rollout_len // self.segment, s.shape[-1]), np.float32)
                                  for s in self._state) if policy.recurrent else ())

    # ---- host <-> backend ------------------------------------------------------------------
    def _normalize(self, obs: np.ndarray, out: np.ndarray, mask: np.ndarray | None = None,
                   update: bool = True) -> np.ndarray:
        """Float32 (and, with obs_norm, normalized) observations written into `out`."""
        if self.obs_norm is None:
            out[...] = obs
            return out
        if update:
            self.obs_norm.update(obs if mask is None else obs[mask.astype(bool)])
        return self.obs_norm(obs, out)

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        return to_env_actions(self.env.single_action_space, actions)

    def _policy_step(self, obs: np.ndarray, rows: np.ndarray | None, mask: np.ndarray | None) -> np.ndarray:
        """Normalize, act on the backend, return the packed numpy outputs `[B, A + 2]`."""
        be = self.be
        starts = self._starts if rows is None else self._starts[rows]
        self._normalize(obs, self._in[:, :self.obs_dim], mask)
        self._in[:, self.obs_dim] = starts
        self._in[:, self.obs_dim + 1:] = self.head.noise(self.rng, len(obs))
        if rows is None:
            state = self._state
        else:
            state = tuple(be.asarray(s[rows]) for s in self._host_state)
        out, new_state = self._act(self.params, be.asarray(self._in), state)
        if rows is None:
            self._state = new_state
        else:
            for s, ns in zip(self._host_state, new_state):
                s[rows] = be.to_numpy(ns)
        return be.to_numpy(out)

    def _bootstrap_truncated(self, rewards: np.ndarray, trunc: np.ndarray, term: np.ndarray, infos: dict,
                             rows: np.ndarray | None) -> np.ndarray:
        """Reward + gamma * V(true final observation) on truncated, non-terminal rows."""
        cut = trunc & ~term
        if not cut.any() or "final_observation" not in infos:
            return rewards
        final = self._normalize(infos["final_observation"], np.zeros((len(rewards), self.obs_dim), np.float32),
                                update=False)
        state = self._state if rows is None else tuple(self.be.asarray(s[rows]) for s in self._host_state)
        value = self.be.to_numpy(self._value(self.params, self.be.asarray(final), state))
        return rewards + self.config.gamma * np.where(cut, value, 0.0).astype(np.float32)

    # ---- rollout ----------------------------------------------------------------------------
    def _record_episodes(self, infos: dict) -> None:
        episodes = infos.get("episodes", ())
        self.episodes.extend(episodes)
        self.episodes_finished += len(episodes)

    def rollout(self) -> None:
        """Fill the rollout buffer with `rollout_len` steps of every agent row."""
        if self.sync:
            self._rollout_sync()
        else:
            self._rollout_async()

    def _save_segment_state(self, t: int, rows: np.ndarray | None) -> None:
        if not self.policy.recurrent or t % self.segment:
            return
        k = t // self.segment
        for dst, s in zip(self._seg_states, self._state if rows is None else
                          tuple(hs[rows] for hs in self._host_state)):
            # the state the step at t starts from: zero where an episode starts there
            starts = self._starts if rows is None else self._starts[rows]
            v = self.be.to_numpy(s) if rows is None else s
            dst[slice(None) if rows is None else rows, k] = v * (1.0 - starts)[:, None]

    def _rollout_sync(self) -> None:
        buf, T = self.buffer, self.config.rollout_len
        if self._obs is None:
            self._obs, _ = self.env.reset(seed=self.config.seed)
        mask = np.ones(self.rows, np.float32)
        for t in range(T):
            self._save_segment_state(t, None)
            masks = getattr(self.env, "masks", None)
            if masks is not None:
                mask = np.asarray(masks, np.float32)
            out = self._policy_step(self._obs, None, mask)
            buf.obs[:, t] = self._in[:, :self.obs_dim]
            buf.actions[:, t] = out[:, :self.head.action_dim]
            buf.logp[:, t], buf.values[:, t] = out[:, -2], out[:, -1]
            buf.starts[:, t] = self._starts
            buf.mask[:, t] = mask
            self._obs, rewards, term, trunc, infos = self.env.step(self._env_actions(out[:, :self.head.action_dim]))
            buf.rewards[:, t] = self._bootstrap_truncated(rewards, trunc, term, infos, None)
            done = term | trunc
            buf.dones[:, t] = done
            self._starts = done.astype(np.float32)
            self._record_episodes(infos)
        self.global_step += self.rows * T
        # after an episode end the next value is multiplied by zero, so the un-reset state is fine here
        final = self._normalize(self._obs, np.zeros((self.rows, self.obs_dim), np.float32), update=False)
        buf.next_value[:] = self.be.to_numpy(self._value(self.params, self.be.asarray(final), self._state))

    def _rollout_async(self) -> None:
        buf, T = self.buffer, self.config.rollout_len
        counts = np.zeros(self.rows, np.int64)
        if self._pending is None:
            self.env.async_reset(seed=self.config.seed)
        while True:
            if self._pending is not None:
                obs, ids, masks = self._pending
                self._pending = None
            else:
                obs, rewards, term, trunc, infos, ids, masks = self.env.recv()
                ids = np.asarray(ids)
                prev = counts[ids] - 1
                ok = (prev >= 0) & (prev < T)
                rewards = self._bootstrap_truncated(rewards, trunc, term, infos, ids)
                done = term | trunc
                buf.rewards[ids[ok], prev[ok]] = rewards[ok]
                buf.dones[ids[ok], prev[ok]] = done[ok]
                self._starts[ids] = done
                self._record_episodes(infos)
            cur = counts[ids]
            if (counts >= T).all():
                self._pending = (obs, ids, masks)
                break
            for t in np.unique(cur[cur < T]):
                self._save_segment_state(int(t), ids[cur == t])
            mask = np.asarray(masks, np.float32)
            out = self._policy_step(obs, ids, mask)
            keep = cur < T
            r, c = ids[keep], cur[keep]
            buf.obs[r, c] = self._in[keep, :self.obs_dim]
            buf.actions[r, c] = out[keep, :self.head.action_dim]
            buf.logp[r, c], buf.values[r, c] = out[keep, -2], out[keep, -1]
            buf.starts[r, c] = self._starts[r]
            buf.mask[r, c] = mask[keep]
            last = cur == T
            buf.next_value[ids[last]] = out[last, -1]
            counts[ids] += 1
            self.global_step += int(keep.sum())
            self.env.send(self._env_actions(out[:, :self.head.action_dim]))
        # rows that overshot keep their stored next value; rows exactly at T need one from this batch
        obs, ids, masks = self._pending
        fresh = counts[ids] == T
        if fresh.any():
            final = self._normalize(obs, np.zeros((len(obs), self.obs_dim), np.float32), update=False)
            state = tuple(self.be.asarray(s[ids]) for s in self._host_state)
            v = self.be.to_numpy(self._value(self.params, self.be.asarray(final), state))
            buf.next_value[ids[fresh]] = v[fresh]

    # ---- update -----------------------------------------------------------------------------
    def _hyper(self) -> dict[str, Any]:
        cfg = self.config
        frac_done = min(self.global_step / max(cfg.total_steps, 1), 1.0)
        lr = cfg.learning_rate
        if cfg.lr_schedule == "linear":
            lr = optim.linear(frac_done, 1.0, cfg.learning_rate, 0.0)
        elif cfg.lr_schedule == "cosine":
            lr = optim.cosine(frac_done, 1.0, cfg.learning_rate, 0.0)
        values = {"lr": lr, "clip_coef": cfg.clip_coef, "vf_clip": cfg.vf_clip, "vf_coef": cfg.vf_coef,
                  "ent_coef": cfg.ent_coef, "max_grad_norm": cfg.max_grad_norm}
        self.current_lr = lr
        return hyper_arrays(self.be, values)

    def compute_advantages(self) -> None:
        """GAE on the host through the numpy backend (V-trace is recomputed live inside the loss)."""
        buf, cfg = self.buffer, self.config
        if cfg.advantage == "gae":
            buf.adv[...] = advantage.gae(puffer.backend("numpy"), buf.rewards, buf.values, buf.next_value,
                                         buf.dones, cfg.gamma, cfg.gae_lambda)
            buf.returns[...] = buf.adv + buf.values

    def update(self) -> dict[str, float]:
        """Several epochs of shuffled minibatch updates over the rollout; returns mean statistics."""
        cfg, be = self.config, self.be
        seqs = self.buffer.sequences(self.segment)
        n_seq = len(seqs["logp"])
        per_mb = cfg.minibatch_size // self.segment
        hyper = self._hyper()
        acc = be.asarray(np.zeros(len(STAT_KEYS), np.float32))
        count = 0
        states = tuple(s.reshape(n_seq, -1) for s in self._seg_states)
        zero_nv = None
        for _ in range(cfg.update_epochs):
            order = self.rng.permutation(n_seq)
            for i in range(self.num_minibatches):
                idx = order[i * per_mb:(i + 1) * per_mb]
                pack(self.mb_layout, {k: v[idx] for k, v in seqs.items() if k in self.mb_layout.slices}, self._mb)
                if cfg.advantage == "vtrace":
                    next_value = be.asarray(seqs["next_value"][idx])
                else:
                    zero_nv = zero_nv if zero_nv is not None else be.asarray(np.zeros(per_mb, np.float32))
                    next_value = zero_nv
                state = tuple(be.asarray(s[idx]) for s in states)
                self.params, self.opt_state, acc = self._update(self.params, self.opt_state, acc,
                                                                be.asarray(self._mb), next_value, state, hyper)
                count += 1
            if cfg.target_kl is not None:
                kl = float(be.to_numpy(acc)[STAT_KEYS.index("approx_kl")]) / count
                if kl > cfg.target_kl:
                    break
        means = be.to_numpy(acc) / max(count, 1)
        stats = dict(zip(STAT_KEYS, (float(x) for x in means)))
        v, r = self.buffer.values.ravel(), self.buffer.returns.ravel()
        var_r = np.var(r)
        stats["explained_variance"] = float("nan") if var_r == 0 else float(1 - np.var(r - v) / var_r)
        stats["learning_rate"] = float(self.current_lr)
        self.updates += 1
        return stats

    # ---- loop -------------------------------------------------------------------------------
    def mean_return(self, last: int = 20) -> float:
        """Mean episode return over the last `last` finished episodes (nan before any)."""
        eps = list(self.episodes)[-last:]
        return float(np.mean([e["episode_return"] for e in eps])) if eps else float("nan")

    def train(self, total_steps: int | None = None, stop_at_return: float | None = None,
              callback: Callable[[PPO, dict], bool | None] | None = None, progress: Any = None) -> dict[str, float]:
        """Train until `total_steps` env steps (or `stop_at_return` over the last 20 episodes); returns last stats."""
        total = total_steps or self.config.total_steps
        start_step, t0 = self.global_step, time.perf_counter()
        stats: dict[str, float] = {}
        while self.global_step < total:
            t_roll = time.perf_counter()
            self.rollout()
            self.compute_advantages()
            t_upd = time.perf_counter()
            stats = self.update()
            now = time.perf_counter()
            stats.update(episode_stats(list(self.episodes)[-20:]))
            stats.update(global_step=self.global_step, sps=(self.global_step - start_step) / max(now - t0, 1e-9),
                         rollout_time=t_upd - t_roll, update_time=now - t_upd, mean_return_20=self.mean_return(20))
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
        from puffer.algos.evaluate import PolicyActor, run_episodes

        cfg = self.config
        actor = PolicyActor(self.be, self.policy, self.params, self.env.single_action_space, self.obs_norm,
                            deterministic, seed)
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
            "observation_space": env.single_observation_space.to_json(),
            "action_space": env.single_action_space.to_json(),
            "structured_observation_space": structured.to_json() if structured is not None else None,
            "global_step": self.global_step, "updates": self.updates, "rng": self.rng.bit_generator.state,
            "mean_return": self.mean_return(20), "episodes": list(self.episodes),
            "env_state": None if env_state is None else checkpoint.split_state(env_state)[1],
        }

    def checkpoint_groups(self) -> dict[str, dict[str, np.ndarray]]:
        """Backend-neutral tensors: parameters, optimizer state, obs-normalization statistics, env and rollout state."""
        groups = {"params": self.numpy_params(), "opt_state": self.numpy_opt_state()}
        if self.obs_norm is not None:
            groups["obs_norm"] = self.obs_norm.state_dict()
        env_state = self._env_state()
        if env_state is not None:
            # What the next rollout continues from: the env, its current observations, episode-start
            # flags and the recurrent state, so that a resumed run repeats an uninterrupted one.
            resume = {f"env.{k}": v for k, v in checkpoint.split_state(env_state)[0].items()}
            resume["trainer.obs"] = np.array(self._obs, copy=True)
            resume["trainer.starts"] = self._starts.copy()
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
        for key in ("observation_space", "action_space"):
            mine = getattr(self.env, f"single_{key}").to_json()
            if meta[key] != mine:
                raise PufferError(f"checkpoint {path} was trained with {key} {meta[key]}, but this env "
                                  f"({self.env_name}) has {mine}")
        for name, mine in (("params", self.params), ("opt_state", self.opt_state)):
            theirs = groups.get(name, {})
            want = {k: tuple(v.shape) for k, v in mine.items()}
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
            self._state = tuple(self.be.asarray(s) for s in state)
        self.resumed_exactly = exact
        self.load_numpy(groups["params"], groups["opt_state"])
        if self.obs_norm is not None and "obs_norm" in groups:
            self.obs_norm.load_state_dict(groups["obs_norm"])
        self.global_step, self.updates = int(meta["global_step"]), int(meta["updates"])
        self.rng.bit_generator.state = meta["rng"]
        self.episodes.clear()
        self.episodes.extend(meta.get("episodes", ()))

    def close(self) -> None:
        """Close the environment."""
        self.env.close()
