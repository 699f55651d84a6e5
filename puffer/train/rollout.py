"""The collectors of the sources that act in the env: `OnPolicy` rollouts, sync and async, and their update.

A synchronous rollout steps every row once per column `t`; an asynchronous one (EnvPool style)
receives whichever rows finish first and scatters them to their own `(row, step)` slots. Both go
through the same two bookkeeping steps: `_store_step` (what the policy saw and did) and
`_store_result` (what the env answered, with truncated episodes bootstrapped from the value of
their true final observation), so the two paths differ only in how rows and columns are indexed.
`ActingCollector` holds what rollouts and whole episodes (`puffer.train.episodes`) share: the
compiled act function, the buffer, the recurrent state and the shuffled-minibatch update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.errors import PufferError
from puffer.policies import to_env_actions
from puffer.train.buffers import Layout, RolloutBuffer, pack, unpack
from puffer.train.collector import Collector
from puffer.train.plan import Acting, OnPolicy
from puffer.vector.base import divisors_hint

# above this many bytes of rollout, updates go minibatch by minibatch instead of as one program
WHOLE_UPDATE_BYTES = 1 << 30


def whole_update(be: Any, step: Any, stat_keys: tuple[str, ...]) -> Any:
    """Every epoch and minibatch of an update as one function: `step` scanned over host-drawn shuffles.

    `order` `[epochs * minibatches, per_minibatch]` holds the segment indices of each minibatch;
    minibatches are gathered from the whole rollout inside, so one compiled call does the update.
    """
    xp = be.xp

    def update(params, opt_state, acc, packed, nexts, states, consts, order, hyper):
        def one_minibatch(carry, idx):
            params, opt_state, acc = carry
            mb = xp.take(packed, idx, axis=0)
            state = tuple(xp.take(s, idx, axis=0) for s in states)
            params, opt_state, stats = step(params, opt_state, mb, xp.take(nexts, idx, axis=0), state, consts, hyper)
            return (params, opt_state, acc + xp.stack([stats[k] for k in stat_keys])), None

        return be.scan(one_minibatch, (params, opt_state, acc), order)[0]

    return update


class ActingCollector(Collector):
    """What collecting with the acting policy needs: packed inputs, compiled act, the buffer, minibatch updates."""

    def __init__(self, run: Any, source: Acting, rollout_len: int, bootstrap: dict[str, tuple[str, float]],
                 values: Any = None):
        self.run, self.source = run, source
        self.be, self.env, self.policy = run.be, run.env, run.policy
        self.rows, self.sync, self.obs_dim = run.ctx.rows, run.ctx.sync, run.ctx.obs_dim
        self.rollout_len, self.bootstrap, self.segment = rollout_len, bootstrap, source.segment
        self.bootstrapped = tuple(v for v, _ in bootstrap.values())
        total = self.rows * rollout_len
        if total % source.minibatch_size or source.minibatch_size % self.segment:
            raise PufferError(
                f"minibatch_size={source.minibatch_size} must divide num_agents * rollout_len = {total} and be a "
                f"multiple of the sequence length {self.segment}; values that work: "
                f"{divisors_hint(total, source.minibatch_size)}")
        self.num_minibatches = total // source.minibatch_size
        be, xp, head = self.be, self.be.xp, self.policy.head

        # per-step input: obs, episode-start flag, noise, declared input channels (one transfer per step)
        self.in_layout = in_layout = Layout()
        in_layout.add("obs", self.obs_dim)
        in_layout.add("starts", 1, squeeze=True)
        in_layout.add("noise", head.noise_dim)
        self.input_layout = input_layout = Layout()
        for name, width in source.inputs.items():
            in_layout.add(name, width)
            input_layout.add(name, width)
        act, inputs = source.act, tuple(source.inputs)

        def act_fn(params, consts, packed, state):
            f = unpack(be, in_layout, packed)
            actions, outs, state = act(be, params, consts, f["obs"], state, f["starts"], f["noise"],
                                       {name: f[name] for name in inputs})
            return xp.concat([actions, *(xp.expand_dims(o, axis=-1) for o in outs)], axis=-1), state

        if source.inputs:
            def values_fn(params, consts, obs, packed_inputs, state):
                inputs = unpack(be, input_layout, packed_inputs)
                return xp.stack(values(be, params, consts, obs, state, inputs), axis=-1)
        else:  # no empty input array: tinygrad cannot allocate a zero-size buffer
            def values_fn(params, consts, obs, state):
                return xp.stack(values(be, params, consts, obs, state, {}), axis=-1)

        self._act = be.compile(act_fn)
        self._values = be.compile(values_fn) if values is not None else None

        fields = {"obs": self.obs_dim, "actions": head.action_dim, "rewards": 0, "dones": 0, "starts": 0, "mask": 0,
                  **{name: 0 for name in source.outputs}, **source.record, **source.inputs, **source.derived}
        unknown = [name for name in source.fields if name not in fields]
        if unknown:
            raise PufferError(f"{run.algo}: minibatch fields {unknown} are neither buffer fields nor declared "
                              f"(known: {', '.join(fields)})")
        self.layout = Layout()
        for name in source.fields:
            self.layout.add(name, fields[name] or 1, squeeze=not fields[name])
        self._state = self.policy.initial_state(be, run.ctx.batch_rows)
        n, T = self.rows, rollout_len
        self._host_state = tuple(np.zeros((n, s.shape[-1]), np.float32) for s in self._state) if not self.sync else ()
        self._in = np.zeros((run.ctx.batch_rows, in_layout.width), np.float32)
        self._mb = np.zeros((source.minibatch_size // self.segment, self.segment, self.layout.width), np.float32)
        rollout_bytes = 4 * n * T * self.layout.width
        # early stopping reads the statistics between epochs, which one program cannot hand back; where
        # loops do not compile (tinygrad unrolls them into one huge graph) one call per minibatch is faster
        self.whole_update = be.compiles_loops and source.early_stop is None and rollout_bytes <= WHOLE_UPDATE_BYTES
        self._rollout_packed = np.zeros((n * T // self.segment, self.segment, self.layout.width), np.float32)
        self.buffer = RolloutBuffer(n, T, fields, self.bootstrapped)
        self._starts = np.ones(n, np.float32)
        self._obs = None
        self._inputs: dict[str, np.ndarray] = {}
        self._pending = None
        self._seg_states = (tuple(np.zeros((n, T // self.segment, s.shape[-1]), np.float32)
                                  for s in self._state) if self.policy.recurrent else ())

    # ---- host <-> backend ------------------------------------------------------------------
    def _normalize(self, obs: np.ndarray, out: np.ndarray, mask: np.ndarray | None = None,
                   update: bool = True) -> np.ndarray:
        """Float32 (and, with obs_norm, normalized) observations written into `out`."""
        norm = self.run.obs_norm
        if norm is None:
            out[...] = obs
            return out
        if update:
            norm.update(obs if mask is None else obs[mask.astype(bool)])
        return norm(obs, out)

    def _rows_state(self, rows: np.ndarray | None) -> tuple:
        """The recurrent state of `rows` (all rows of a sync rollout) as backend arrays."""
        if rows is None:
            return self._state
        return tuple(self.be.asarray(s[rows]) for s in self._host_state)

    def _inputs_of(self, infos: dict, rows: int, final: bool = False) -> dict[str, np.ndarray]:
        """The declared input channels from `infos` (`final_<name>` at episode ends), checked."""
        out = {}
        for name, width in self.source.inputs.items():
            key = f"final_{name}" if final else name
            if key not in infos:
                raise PufferError(f"{self.run.algo} needs infos[{key!r}] from every "
                                  f"{'step that ends an episode' if final else 'reset and step'}, but env "
                                  f"{self.run.env_name} reports none")
            value = np.asarray(infos[key], np.float32)
            if value.shape != (rows, width):
                raise PufferError(f"env {self.run.env_name}: infos[{key!r}] has shape {value.shape}, "
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
        self._in[:, noise[0]:noise[1]] = self.policy.head.noise(self.run.rng, len(obs))
        for name, value in (inputs or {}).items():
            a, b, _ = self.in_layout.slices[name]
            self._in[:, a:b] = value
        out, new_state = self._act(self.run.params, self.run.consts, be.asarray(self._in), self._rows_state(rows))
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
        run, state = self.run, self._rows_state(rows)
        if not self.source.inputs:
            return be.to_numpy(self._values(run.params, run.consts, be.asarray(final), state))
        packed = pack(self.input_layout, inputs, np.zeros((len(obs), self.input_layout.width), np.float32))
        return be.to_numpy(self._values(run.params, run.consts, be.asarray(final), be.asarray(packed), state))

    def _bootstrap(self, channels: dict[str, np.ndarray], trunc: np.ndarray, term: np.ndarray, infos: dict,
                   rows: np.ndarray | None) -> dict[str, np.ndarray]:
        """Each bootstrapped channel + discount * V(true final observation) on truncated, non-terminal rows."""
        cut = trunc & ~term
        if not self.bootstrap or not cut.any() or "final_observation" not in infos:
            return channels
        final = infos["final_observation"]
        values = self._bootstrap_values(final, rows, self._inputs_of(infos, len(final), final=True))
        out = dict(channels)
        for i, (channel, (_, discount)) in enumerate(self.bootstrap.items()):
            out[channel] = channels[channel] + discount * np.where(cut, values[:, i], 0.0).astype(np.float32)
        return out

    def _channels(self, rewards: np.ndarray, infos: dict) -> dict[str, np.ndarray]:
        """The step's reward and every declared env channel (`infos[name]`), checked against the rows."""
        out = {"rewards": rewards}
        for name, width in self.source.record.items():
            if name not in infos:
                hint = self.source.record_help.get(name)
                raise PufferError(f"{self.run.algo} needs infos[{name!r}] from every step, but env "
                                  f"{self.run.env_name} reports none" + (f"; {hint}" if hint else ""))
            value = np.asarray(infos[name], np.float32)
            want = (len(rewards), width) if width else (len(rewards),)
            if value.shape != want:
                raise PufferError(f"env {self.run.env_name}: infos[{name!r}] has shape {value.shape}, expected {want}")
            out[name] = value
        return out

    # ---- bookkeeping shared by both paths ---------------------------------------------------
    def _store_step(self, rows: Any, cols: Any, out: np.ndarray, starts: np.ndarray, mask: np.ndarray,
                    keep: Any = slice(None)) -> None:
        """What the policy saw and did at `(rows, cols)`: observations, actions, declared outputs, flags."""
        buf, a = self.buffer, self.policy.head.action_dim
        buf.obs[rows, cols] = self._in[keep, :self.obs_dim]
        buf.actions[rows, cols] = out[keep, :a]
        for i, name in enumerate(self.source.outputs):
            buf.data[name][rows, cols] = out[keep, a + i]
        buf.starts[rows, cols] = starts
        buf.mask[rows, cols] = mask[keep]
        for name in self.source.inputs:
            lo, hi, _ = self.in_layout.slices[name]
            buf.data[name][rows, cols] = self._in[keep, lo:hi]

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

    def _env_step(self, actions: np.ndarray) -> tuple:
        """Step every row with `actions`."""
        return self.env.step(to_env_actions(self.env.single_action_space, actions))

    # ---- the update -------------------------------------------------------------------------
    def update(self, hyper: dict[str, Any]) -> dict[str, float]:
        """Epochs of shuffled minibatch steps over the collected buffer; returns mean statistics."""
        run, be, src = self.run, self.be, self.source
        seqs = self.buffer.sequences(self.segment)
        n_seq = len(seqs["starts"])
        per_mb = src.minibatch_size // self.segment
        keys = run.plan.stat_keys
        acc = be.asarray(np.zeros(len(keys), np.float32))
        count = 0
        states = tuple(s.reshape(n_seq, -1) for s in self._seg_states)
        # a source without bootstraps still passes a (zero) column: compiled steps keep one signature
        nexts = (np.stack([seqs[f"next_{v}"] for v in self.bootstrapped], axis=-1) if self.bootstrapped
                 else np.zeros((n_seq, 1), np.float32))
        if self.whole_update:
            # the same shuffles as the minibatch path below, drawn up front
            order = np.stack([run.rng.permutation(n_seq)[:self.num_minibatches * per_mb].reshape(-1, per_mb)
                              for _ in range(src.epochs)]).reshape(-1, per_mb)
            packed = pack(self.layout, {k: seqs[k] for k in self.layout.slices}, self._rollout_packed)
            run.params, run.opt_state, acc = run.whole_step(
                run.params, run.opt_state, acc, be.asarray(packed), be.asarray(nexts),
                tuple(be.asarray(s) for s in states), run.consts, be.asarray(order.astype(np.int32)), hyper)
            count = len(order)
        for _ in range(0 if self.whole_update else src.epochs):
            order = run.rng.permutation(n_seq)
            for i in range(self.num_minibatches):
                idx = order[i * per_mb:(i + 1) * per_mb]
                pack(self.layout, {k: seqs[k][idx] for k in self.layout.slices}, self._mb)
                state = tuple(be.asarray(s[idx]) for s in states)
                run.params, run.opt_state, stats = run.step(run.params, run.opt_state, be.asarray(self._mb),
                                                            be.asarray(nexts[idx]), state, run.consts, hyper)
                acc = run.accumulate(acc, stats)
                count += 1
            if src.early_stop is not None:
                means = be.to_numpy(acc) / count
                if src.early_stop(dict(zip(keys, (float(x) for x in means)))):
                    break
        return dict(zip(keys, (float(x) for x in be.to_numpy(acc) / max(count, 1))))

    # ---- resume -----------------------------------------------------------------------------
    def resume_arrays(self) -> dict[str, np.ndarray]:
        """What the next collection continues from: observations, episode-start flags, recurrent state."""
        out = {"trainer.obs": np.array(self._obs, copy=True), "trainer.starts": self._starts.copy()}
        for name, value in self._inputs.items():
            out[f"trainer.input.{name}"] = value.copy()
        for i, s in enumerate(self._state):
            out[f"trainer.state.{i}"] = np.asarray(self.be.to_numpy(s))
        return out

    def fits(self, resume: dict[str, np.ndarray], path: Any) -> bool:
        """Whether arrays saved by `resume_arrays` fit this collector (same rows); a mismatched state is an error."""
        if resume["trainer.starts"].shape != self._starts.shape:
            return False
        for i, s in enumerate(self._state):
            saved = resume[f"trainer.state.{i}"]
            if saved.shape != tuple(s.shape):
                raise PufferError(f"checkpoint {path}: recurrent state {saved.shape} does not fit {tuple(s.shape)}")
        return True

    def load_resume_arrays(self, resume: dict[str, np.ndarray], path: Any) -> None:
        """Continue from arrays saved by `resume_arrays` (checked by `fits`)."""
        state = tuple(resume[f"trainer.state.{i}"] for i in range(len(self._state)))
        self._obs, self._starts = resume["trainer.obs"], resume["trainer.starts"].copy()
        self._inputs = {name: resume[f"trainer.input.{name}"].copy() for name in self.source.inputs
                        if f"trainer.input.{name}" in resume}
        self._state = tuple(self.be.asarray(s) for s in state)

    def started(self) -> bool:
        """True once the env has been reset (a checkpoint can then save where the next collection continues)."""
        return self._obs is not None


class RolloutCollector(ActingCollector):
    """The `OnPolicy` source: fills the buffer with `rollout_len` steps of every agent row."""

    def __init__(self, run: Any, source: OnPolicy):
        if source.bootstrap and source.values is None:
            raise PufferError(f"{run.algo}: an OnPolicy source that bootstraps needs `values`")
        super().__init__(run, source, source.rollout_len, source.bootstrap, source.values)

    def collect(self) -> RolloutBuffer:
        """One rollout of `rollout_len` steps of every row, sync or async; returns the buffer."""
        if self.sync:
            self._rollout_sync()
        else:
            self._rollout_async()
        return self.buffer

    def _rollout_sync(self) -> None:
        run, T, a = self.run, self.rollout_len, self.policy.head.action_dim
        if self._obs is None:
            self._obs, infos = self.env.reset(seed=run.config.seed)
            self._inputs = self._inputs_of(infos, self.rows)
        mask = np.ones(self.rows, np.float32)
        for t in range(T):
            self._save_segment_state(t, None)
            masks = getattr(self.env, "masks", None)
            if masks is not None:
                mask = np.asarray(masks, np.float32)
            out = self._policy_step(self._obs, None, mask, self._inputs)
            self._store_step(slice(None), t, out, self._starts, mask)
            self._obs, rewards, term, trunc, infos = self._env_step(out[:, :a])
            self._inputs = self._inputs_of(infos, self.rows)
            channels = self._bootstrap(self._channels(rewards, infos), trunc, term, infos, None)
            done = term | trunc
            self._store_result(slice(None), t, channels, done, masks=getattr(self.env, "masks", None))
            self._starts = done.astype(np.float32)
            run.record_episodes(infos.get("episodes", ()))
        run.global_step += self.rows * T
        if self.bootstrap:
            # after an episode end the next value is multiplied by zero, so the un-reset state is fine here
            self._store_next_values(self._bootstrap_values(self._obs, None, self._inputs), slice(None))

    def _store_next_values(self, values: np.ndarray, rows: Any) -> None:
        for i, value_output in enumerate(self.bootstrapped):
            self.buffer.next[value_output][rows] = values[:, i]

    def _rollout_async(self) -> None:
        run, T, a = self.run, self.rollout_len, self.policy.head.action_dim
        counts = np.zeros(self.rows, np.int64)  # actions sent per row this rollout
        answered = np.zeros(self.rows, np.int64)  # of those, how many the env has answered
        value_cols = [a + self.source.outputs.index(v) for v in self.bootstrapped]
        if self._pending is None:
            self.env.async_reset(seed=run.config.seed)
        while True:
            if self._pending is not None:
                obs, ids, masks, inputs = self._pending
                self._pending = None
            else:
                obs, rewards, term, trunc, infos, ids, masks = self.env.recv()
                ids = np.asarray(ids)
                inputs = self._inputs_of(infos, len(ids))
                prev = counts[ids] - 1
                ok = (prev >= 0) & (prev < T)
                channels = self._bootstrap(self._channels(rewards, infos), trunc, term, infos, ids)
                done = term | trunc
                self._store_result(ids[ok], prev[ok], channels, done, ok, masks)
                answered[ids] = counts[ids]
                self._starts[ids] = done
                run.record_episodes(infos.get("episodes", ()))
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
            run.global_step += int(keep.sum())
            self.env.send(to_env_actions(self.env.single_action_space, out[:, :a]))
        # rows that overshot keep their stored next value; rows exactly at T need one from this batch
        obs, ids, masks, inputs = self._pending
        fresh = counts[ids] == T
        if fresh.any() and self.bootstrap:
            self._store_next_values(self._bootstrap_values(obs, ids, inputs)[fresh], ids[fresh])
