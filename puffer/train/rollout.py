"""On-policy rollout collection, sync and async, recording whatever fields an algorithm's plan declares.

A synchronous rollout steps every row once per column `t`; an asynchronous one (EnvPool style)
receives whichever rows finish first and scatters them to their own `(row, step)` slots. Both go
through the same two bookkeeping steps: `_store_step` (what the policy saw and did) and
`_store_result` (what the env answered, with truncated episodes bootstrapped from the value of
their true final observation), so the two paths differ only in how rows and columns are indexed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.errors import PufferError
from puffer.policies import to_env_actions
from puffer.train.buffers import pack


class RolloutMixin:
    """The rollout half of `Trainer`: fills `self.buffer` with `rollout_len` steps of every row."""

    def rollout(self) -> None:
        """Fill the rollout buffer with `rollout_len` steps of every agent row."""
        if self.sync:
            self._rollout_sync()
        else:
            self._rollout_async()

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

    def _rows_state(self, rows: np.ndarray | None) -> tuple:
        """The recurrent state of `rows` (all rows of a sync rollout) as backend arrays."""
        if rows is None:
            return self._state
        return tuple(self.be.asarray(s[rows]) for s in self._host_state)

    def _inputs_of(self, infos: dict, rows: int, final: bool = False) -> dict[str, np.ndarray]:
        """The plan's declared input channels from `infos` (`final_<name>` at episode ends), checked."""
        out = {}
        for name, width in self.plan.inputs.items():
            key = f"final_{name}" if final else name
            if key not in infos:
                raise PufferError(f"{self.algorithm.name} needs infos[{key!r}] from every "
                                  f"{'step that ends an episode' if final else 'reset and step'}, but env "
                                  f"{self.env_name} reports none")
            value = np.asarray(infos[key], np.float32)
            if value.shape != (rows, width):
                raise PufferError(f"env {self.env_name}: infos[{key!r}] has shape {value.shape}, "
                                  f"expected {(rows, width)}")
            out[name] = value
        return out

    def _policy_step(self, obs: np.ndarray, rows: np.ndarray | None, mask: np.ndarray | None,
                     inputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Normalize, act on the backend, return the packed numpy outputs `[B, action_dim + outputs]`."""
        be, d = self.be, self.obs_dim
        self._normalize(obs, self._in[:, :d], mask)
        self._in[:, d] = self._starts if rows is None else self._starts[rows]
        noise = self.in_layout.slices["noise"]
        self._in[:, noise[0]:noise[1]] = self.policy.head.noise(self.rng, len(obs))
        for name, value in (inputs or {}).items():
            a, b, _ = self.in_layout.slices[name]
            self._in[:, a:b] = value
        out, new_state = self._act(self.params, be.asarray(self._in), self._rows_state(rows))
        if rows is None:
            self._state = new_state
        else:
            for s, ns in zip(self._host_state, new_state):
                s[rows] = be.to_numpy(ns)
        return be.to_numpy(out)

    def _bootstrap_values(self, obs: np.ndarray, rows: np.ndarray | None,
                          inputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """`[B, len(bootstrap)]` values of (unnormalized) observations `obs` (and input channels) for `rows`."""
        be = self.be
        final = self._normalize(obs, np.zeros((len(obs), self.obs_dim), np.float32), update=False)
        if not self.plan.inputs:
            return be.to_numpy(self._values(self.params, be.asarray(final), self._rows_state(rows)))
        packed = np.zeros((len(obs), self.input_layout.width), np.float32)
        pack(self.input_layout, inputs, packed)
        return be.to_numpy(self._values(self.params, be.asarray(final), be.asarray(packed), self._rows_state(rows)))

    def _bootstrap(self, channels: dict[str, np.ndarray], trunc: np.ndarray, term: np.ndarray, infos: dict,
                   rows: np.ndarray | None) -> dict[str, np.ndarray]:
        """Each bootstrapped channel + discount * V(true final observation) on truncated, non-terminal rows."""
        cut = trunc & ~term
        if not cut.any() or "final_observation" not in infos:
            return channels
        final = infos["final_observation"]
        values = self._bootstrap_values(final, rows, self._inputs_of(infos, len(final), final=True))
        out = dict(channels)
        for i, (channel, (_, discount)) in enumerate(self.plan.bootstrap.items()):
            out[channel] = channels[channel] + discount * np.where(cut, values[:, i], 0.0).astype(np.float32)
        return out

    def _channels(self, rewards: np.ndarray, infos: dict) -> dict[str, np.ndarray]:
        """The step's reward and every declared env channel (`infos[name]`), checked against the rows."""
        out = {"rewards": rewards}
        for name, width in self.plan.record.items():
            if name not in infos:
                hint = self.plan.record_help.get(name)
                raise PufferError(f"{self.algorithm.name} needs infos[{name!r}] from every step, but env "
                                  f"{self.env_name} reports none" + (f"; {hint}" if hint else ""))
            value = np.asarray(infos[name], np.float32)
            want = (len(rewards), width) if width else (len(rewards),)
            if value.shape != want:
                raise PufferError(f"env {self.env_name}: infos[{name!r}] has shape {value.shape}, expected {want}")
            out[name] = value
        return out

    # ---- bookkeeping shared by both paths ---------------------------------------------------
    def _store_step(self, rows: Any, cols: Any, out: np.ndarray, starts: np.ndarray, mask: np.ndarray,
                    keep: Any = slice(None)) -> None:
        """What the policy saw and did at `(rows, cols)`: observations, actions, declared outputs, flags."""
        buf, a = self.buffer, self.policy.head.action_dim
        buf.obs[rows, cols] = self._in[keep, :self.obs_dim]
        buf.actions[rows, cols] = out[keep, :a]
        for i, name in enumerate(self.plan.outputs):
            buf.data[name][rows, cols] = out[keep, a + i]
        buf.starts[rows, cols] = starts
        buf.mask[rows, cols] = mask[keep]
        for name in self.plan.inputs:
            a, b, _ = self.in_layout.slices[name]
            buf.data[name][rows, cols] = self._in[keep, a:b]

    def _store_result(self, rows: Any, cols: Any, channels: dict[str, np.ndarray], done: np.ndarray,
                      keep: Any = slice(None), masks: np.ndarray | None = None) -> None:
        """What the env answered for the step at `(rows, cols)`: rewards, declared channels, episode ends.

        A step counts (`mask`) only when the row was present both before it and in its result: an
        agent that ended keeps its mask for its last reward, so the step after its death is masked here.
        """
        for name, value in channels.items():
            self.buffer.data[name][rows, cols] = value[keep]
        self.buffer.dones[rows, cols] = done[keep]
        if masks is not None:
            self.buffer.mask[rows, cols] *= np.asarray(masks, np.float32)[keep]

    def _record_episodes(self, infos: dict) -> None:
        episodes = infos.get("episodes", ())
        self.episodes.extend(episodes)
        self.episodes_finished += len(episodes)

    def _save_segment_state(self, t: int, rows: np.ndarray | None) -> None:
        if not self.policy.recurrent or t % self.segment:
            return
        k = t // self.segment
        starts = self._starts if rows is None else self._starts[rows]
        for dst, s in zip(self._seg_states, self._state if rows is None else
                          tuple(hs[rows] for hs in self._host_state)):
            # the state the step at t starts from: zero where an episode starts there
            v = self.be.to_numpy(s) if rows is None else s
            dst[slice(None) if rows is None else rows, k] = v * (1.0 - starts)[:, None]

    def _model_rewards(self, obs: np.ndarray, actions: np.ndarray, rows: np.ndarray | None) -> None:
        """With a reward model: its rewards for the step `rows` take now, kept until the env answers."""
        if self.reward_model is not None:
            self._pending_rewards[slice(None) if rows is None else rows] = self.reward_model.rewards(obs, actions)

    def _env_rewards(self, rewards: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """The step's rewards: the env's, or the reward model's in their place."""
        if self.reward_model is None:
            return rewards
        return self._pending_rewards.copy() if rows is None else self._pending_rewards[rows]

    def _env_step(self, actions: np.ndarray, obs: np.ndarray) -> tuple:
        """Step every row with `actions` taken in (unnormalized) `obs`."""
        self._model_rewards(obs, actions, None)
        obs, rewards, term, trunc, infos = self.env.step(to_env_actions(self.env.single_action_space, actions))
        return obs, self._env_rewards(rewards, None), term, trunc, infos

    # ---- the two paths ----------------------------------------------------------------------
    def _rollout_sync(self) -> None:
        T, a = self.plan.rollout_len, self.policy.head.action_dim
        if self._obs is None:
            self._obs, infos = self.env.reset(seed=self.config.seed)
            self._inputs = self._inputs_of(infos, self.rows)
        mask = np.ones(self.rows, np.float32)
        for t in range(T):
            self._save_segment_state(t, None)
            masks = getattr(self.env, "masks", None)
            if masks is not None:
                mask = np.asarray(masks, np.float32)
            out = self._policy_step(self._obs, None, mask, self._inputs)
            self._store_step(slice(None), t, out, self._starts, mask)
            self._obs, rewards, term, trunc, infos = self._env_step(out[:, :a], self._obs)
            self._inputs = self._inputs_of(infos, self.rows)
            channels = self._bootstrap(self._channels(rewards, infos), trunc, term, infos, None)
            done = term | trunc
            self._store_result(slice(None), t, channels, done, masks=getattr(self.env, "masks", None))
            self._starts = done.astype(np.float32)
            self._record_episodes(infos)
        self.global_step += self.rows * T
        # after an episode end the next value is multiplied by zero, so the un-reset state is fine here
        self._store_next_values(self._bootstrap_values(self._obs, None, self._inputs), slice(None))

    def _store_next_values(self, values: np.ndarray, rows: Any) -> None:
        for i, (value_output, _) in enumerate(self.plan.bootstrap.values()):
            self.buffer.next[value_output][rows] = values[:, i]

    def _rollout_async(self) -> None:
        T, a = self.plan.rollout_len, self.policy.head.action_dim
        counts = np.zeros(self.rows, np.int64)  # actions sent per row this rollout
        answered = np.zeros(self.rows, np.int64)  # of those, how many the env has answered
        value_cols = [a + self.plan.outputs.index(v) for v, _ in self.plan.bootstrap.values()]
        if self._pending is None:
            self.env.async_reset(seed=self.config.seed)
        while True:
            if self._pending is not None:
                obs, ids, masks, inputs = self._pending
                self._pending = None
            else:
                obs, rewards, term, trunc, infos, ids, masks = self.env.recv()
                ids = np.asarray(ids)
                inputs = self._inputs_of(infos, len(ids))
                rewards = self._env_rewards(rewards, ids)
                prev = counts[ids] - 1
                ok = (prev >= 0) & (prev < T)
                channels = self._bootstrap(self._channels(rewards, infos), trunc, term, infos, ids)
                done = term | trunc
                self._store_result(ids[ok], prev[ok], channels, done, ok, masks)
                answered[ids] = counts[ids]
                self._starts[ids] = done
                self._record_episodes(infos)
            cur = counts[ids]
            # done once every row's step T-1 is answered: a batch still in flight would leave its rewards unstored
            if (answered >= T).all():
                self._pending = (obs, ids, masks, inputs)
                break
            for t in np.unique(cur[cur < T]):
                self._save_segment_state(int(t), ids[cur == t])
            mask = np.asarray(masks, np.float32)
            out = self._policy_step(obs, ids, mask, inputs)
            keep = cur < T
            r = ids[keep]
            self._store_step(r, cur[keep], out, self._starts[r], mask, keep)
            last = cur == T
            self._store_next_values(out[last][:, value_cols], ids[last])
            counts[ids] += 1
            self.global_step += int(keep.sum())
            self._model_rewards(obs, out[:, :a], ids)
            self.env.send(to_env_actions(self.env.single_action_space, out[:, :a]))
        # rows that overshot keep their stored next value; rows exactly at T need one from this batch
        obs, ids, masks, inputs = self._pending
        fresh = counts[ids] == T
        if fresh.any():
            self._store_next_values(self._bootstrap_values(obs, ids, inputs)[fresh], ids[fresh])
