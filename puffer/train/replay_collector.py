"""The collector of the `Replay` source: act in the env, keep every step in a sequence replay, update at a ratio.

Each collection steps the env `collect_steps` times with the acting policy (its recurrent state
carried across collections) and appends each step to a `puffer.train.replay.SequenceReplay`:
the observation, the policy-format action that led to it (zero at an episode's first step), the
reward, `is_first` and `is_terminal`. An ended episode stores its true last observation, then
the next episode's first. Updates run at `train_ratio` replayed steps per env step, counted from
the first env step at which the replay can serve a sequence (no burst of owed updates after the
warm-up); each samples `batch_size` sequences of `seq_len` steps `[T, B]` plus host noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.policies import to_env_actions
from puffer.train.collector import Collector
from puffer.train.plan import Replay
from puffer.train.replay import SequenceReplay


class ReplayCollector(Collector):
    """Acting into a sequence replay, and the replayed updates the train ratio owes."""

    def __init__(self, run: Any, source: Replay):
        self.run, self.source, self.be, self.env, self.policy = run, source, run.be, run.env, run.policy
        self.rows, d, a = run.ctx.rows, run.ctx.obs_dim, self.policy.head.action_dim
        self.replay = SequenceReplay({"obs": ((d,), np.float32), "prev_actions": ((a,), np.float32),
                                      "rewards": ((), np.float32), "is_first": ((), np.float32),
                                      "is_terminal": ((), np.float32)},
                                     self.rows, max(source.capacity // self.rows, source.seq_len))
        # the replayed fields go as named arrays (`layout` None), not one packed array: an update costs far
        # more than its eight transfers, and whole fields keep the world-model graph plain for tinygrad
        be, act = self.be, source.act

        def act_fn(params, consts, obs, starts, noise, state):
            actions, _, state = act(be, params, consts, obs, state, starts, noise, {})
            return actions, state

        self._act = be.compile(act_fn)
        self._state = self.policy.initial_state(be, self.rows)
        self._obs: np.ndarray | None = None
        self._starts = np.ones(self.rows, np.float32)
        self._nexts = be.asarray(np.zeros((1, 1), np.float32))
        self.updates_done = 0
        self.serving_since = -1  # env step from which the train ratio counts (-1: the replay cannot serve yet)

    def _first_steps(self, obs: np.ndarray, rows: np.ndarray | None) -> None:
        n = len(obs)
        self.replay.add({"obs": np.asarray(obs, np.float32),
                         "prev_actions": np.zeros((n, self.policy.head.action_dim), np.float32),
                         "rewards": np.zeros(n, np.float32), "is_first": np.ones(n, np.float32),
                         "is_terminal": np.zeros(n, np.float32)}, rows)

    def collect(self) -> SequenceReplay:
        """`collect_steps` env steps of every row into the replay; returns the replay."""
        run, be, env = self.run, self.be, self.env
        if self._obs is None:
            self._obs, _ = env.reset(seed=run.config.seed)
            self._first_steps(self._obs, None)
        for _ in range(self.source.collect_steps):
            noise = self.source.act_noise(run.rng, self.rows)
            actions, self._state = self._act(run.params, run.consts, be.asarray(np.asarray(self._obs, np.float32)),
                                             be.asarray(self._starts), be.asarray(noise), self._state)
            actions = np.asarray(be.to_numpy(actions), np.float32)
            obs, rewards, term, trunc, infos = env.step(to_env_actions(env.single_action_space, actions))
            done = term | trunc
            last = infos["final_observation"] if done.any() else obs
            self.replay.add({"obs": np.asarray(last, np.float32), "prev_actions": actions,
                             "rewards": np.asarray(rewards, np.float32), "is_first": np.zeros(self.rows, np.float32),
                             "is_terminal": np.asarray(term, np.float32)})
            if done.any():
                ended = np.flatnonzero(done)
                self._first_steps(obs[ended], ended)
            self._obs, self._starts = obs, done.astype(np.float32)
            run.record_episodes(infos.get("episodes", ()))
            run.global_step += self.rows
        if self.serving_since < 0 and self.replay.sequences(self.source.seq_len):
            self.serving_since = run.global_step - self.rows * self.source.collect_steps
        return self.replay

    def owed(self) -> int:
        """Updates the train ratio owes at the current env step."""
        if self.serving_since < 0:
            return 0
        src = self.source
        done = (self.run.global_step - self.serving_since) * src.train_ratio / (src.batch_size * src.seq_len)
        return max(int(done) - self.updates_done, 0)

    def update(self, hyper: dict[str, Any]) -> dict[str, float]:
        """The owed replayed updates (none while the replay cannot serve a sequence); mean statistics."""
        run, be, src, keys = self.run, self.be, self.source, self.run.plan.stat_keys
        n = self.owed()
        if n == 0:
            return {"replay_updates": 0.0}
        acc = be.asarray(np.zeros(len(keys), np.float32))
        for _ in range(n):
            batch = self.replay.sample(run.rng, src.batch_size, src.seq_len)
            if src.noise is not None:
                batch.update(src.noise(run.rng, (src.seq_len, src.batch_size)))
            arrays = {k: be.asarray(np.asarray(v, np.float32)) for k, v in batch.items()}
            run.params, run.opt_state, stats = run.step(run.params, run.opt_state, arrays, self._nexts, (),
                                                        run.consts, hyper)
            acc = run.accumulate(acc, stats)
        self.updates_done += n
        return {**dict(zip(keys, (float(x) for x in be.to_numpy(acc) / n))), "replay_updates": float(n)}

    # ---- checkpoints --------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The replay's contents and the update count (saved whatever the env can save)."""
        return {**{f"replay.{k}": v for k, v in self.replay.state().items()},
                "updates_done": np.asarray(self.updates_done), "serving_since": np.asarray(self.serving_since)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what `state_arrays` saved (the replay's shapes are checked)."""
        self.replay.load_state({k[7:]: v for k, v in arrays.items() if k.startswith("replay.")})
        self.updates_done, self.serving_since = int(arrays["updates_done"]), int(arrays["serving_since"])

    def resume_arrays(self) -> dict[str, np.ndarray]:
        """What the next collection continues from: observations, episode-start flags, recurrent state."""
        out = {"trainer.obs": np.array(self._obs, copy=True), "trainer.starts": self._starts.copy()}
        for i, s in enumerate(self._state):
            out[f"trainer.state.{i}"] = np.asarray(self.be.to_numpy(s))
        return out

    def fits(self, resume: dict[str, np.ndarray], path: Any) -> bool:
        """Whether saved arrays fit this collector (same rows)."""
        return resume["trainer.starts"].shape == self._starts.shape

    def load_resume_arrays(self, resume: dict[str, np.ndarray], path: Any) -> None:
        """Continue from arrays saved by `resume_arrays`."""
        self._obs, self._starts = resume["trainer.obs"], resume["trainer.starts"].copy()
        self._state = tuple(self.be.asarray(resume[f"trainer.state.{i}"]) for i in range(len(self._state)))

    def started(self) -> bool:
        """True once the env has been reset."""
        return self._obs is not None
