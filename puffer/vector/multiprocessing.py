"""The multiprocessing backend: worker processes step slices of envs in place in shared memory.

Layout: worker w owns envs `[w * E, (w + 1) * E)` (E = num_envs / num_workers), i.e. one contiguous block
of rows in every shared buffer (observations, rewards, terminals, truncations, masks, actions). Workers
are grouped into batches of `batch_size` rows; since a batch's rows are contiguous, `recv` returns
views of shared memory, never copies.

Synchronisation costs no CPU while waiting: each worker blocks on its end of a pipe, the main process
blocks in `multiprocessing.connection.wait` on the pipes and the workers' exit sentinels. A step
command is one byte; a worker answers with an empty message unless it has something to report
(finished episodes, final observations of ended rows, per-row info arrays), which it pickles.

EnvPool-style async: `send` starts a batch and returns at once, `recv` returns whichever batch in
flight finishes first (the oldest when several have), so the policy runs on one batch while others step.

Failure handling: a worker whose env raises sends the traceback and exits; a worker that dies is
seen through its sentinel; either way the main process closes every worker and raises `WorkerError`
naming the env, the worker and the cause. Workers ignore SIGINT (the main process shuts them down)
and exit when the main process's pipe end closes, so none outlive it; `close()` (also run at
interpreter exit or garbage collection) stops them, terminating any that do not stop within a second.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import pickle
import signal
import time
import traceback
import weakref
from typing import Any

import numpy as np

from puffer.errors import PufferError
from puffer.vector.base import EnvFactory, Infos, VecEnv, WorkerError, check_num_envs, divisors

_STEP, _RESET, _GROUP, _CLOSE = b"s", b"r", b"g", b"c"
_ALIGN = 64


def _layout(rows: int, obs_dim: int, obs_dtype: np.dtype, act_shape: tuple[int, ...],
            act_dtype: np.dtype) -> tuple[dict[str, tuple[int, tuple[int, ...], np.dtype]], int]:
    """Byte offset, shape and dtype of each shared array, each aligned to a cache line."""
    specs = {
        "observations": ((rows, obs_dim), np.dtype(obs_dtype)),
        "rewards": ((rows,), np.dtype(np.float32)),
        "terminals": ((rows,), np.dtype(bool)),
        "truncations": ((rows,), np.dtype(bool)),
        "masks": ((rows,), np.dtype(bool)),
        "actions": (act_shape, np.dtype(act_dtype)),
    }
    out, offset = {}, 0
    for key, (shape, dtype) in specs.items():
        out[key] = (offset, shape, dtype)
        offset += -(-int(np.prod(shape)) * dtype.itemsize // _ALIGN) * _ALIGN
    return out, max(offset, 1)


def _views(raw: Any, layout: dict[str, tuple[int, tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
    buf = np.frombuffer(raw, dtype=np.uint8)
    return {key: buf[off: off + int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
            for key, (off, shape, dtype) in layout.items()}


def _pack(infos: Infos, terminals: np.ndarray, truncations: np.ndarray, rows: int) -> bytes:
    """Everything of `infos` the main process needs, pickled; empty bytes when there is nothing."""
    episodes = infos.get("episodes") or []
    final = None
    fo = infos.get("final_observation")
    if fo is not None:
        idx = np.flatnonzero(terminals | truncations)
        final = (idx, fo.reshape(rows, -1)[idx])
    row_infos, extra = {}, {}
    for key, value in infos.items():
        if key in ("episodes", "final_observation"):
            continue
        if isinstance(value, np.ndarray) and value.shape[:1] == (rows,):
            row_infos[key] = value
        else:
            extra[key] = value
    if not episodes and final is None and not row_infos and not extra:
        return b""
    return pickle.dumps((episodes, final, row_infos, extra), protocol=pickle.HIGHEST_PROTOCOL)


def _worker(index: int, conn: Any, inherited: list[Any], raw: Any, layout: dict, factory: EnvFactory,
            num_envs: int, env_offset: int, row_slice: tuple[int, int], seed: int | None) -> None:
    # Ctrl-C reaches the whole process group; the main process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Close the pipe ends inherited through fork (the main process's and other workers'), so that the death
    # of the main process shows up here as EOF, and ours over there.
    for c in inherited:
        c.close()
    lo, hi = row_slice
    env = None
    try:
        views = _views(raw, layout)
        buffers = {k: v[lo:hi] for k, v in views.items() if k != "actions"}
        actions = views["actions"][lo:hi]
        env = factory(num_envs, _worker_seed(factory, seed, index, env_offset), buffers)
        rows = hi - lo
        conn.send_bytes(b"")
        while True:
            msg = conn.recv_bytes()
            if msg == _STEP:
                _, _, term, trunc, infos = env.step(actions)
                conn.send_bytes(_pack(infos, term, trunc, rows))
            elif msg[:1] == _RESET:
                s = pickle.loads(msg[1:])
                _, infos = env.reset(_worker_seed(factory, s, index, env_offset))
                conn.send_bytes(_pack(infos, env.terminals, env.truncations, rows))
            elif msg[:1] == _GROUP:
                local_ids, s = pickle.loads(msg[1:])
                # The same seed in every worker: the group starts from one state wherever its envs live.
                infos = env.reset_group(local_ids, s)
                conn.send_bytes(_pack(infos, env.terminals, env.truncations, rows))
            else:
                break
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the main process went away or is shutting us down
    except BaseException as e:  # noqa: B036 - report anything, including SystemExit from an env
        try:
            conn.send_bytes(b"E" + pickle.dumps((f"{type(e).__name__}: {e}", traceback.format_exc())))
        except Exception:  # noqa: S110 - the main process is gone; nothing left to tell
            pass
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: S110 - closing after a failure must not mask it
                pass
        conn.close()


def _worker_seed(factory: EnvFactory, seed: int | None, index: int, env_offset: int) -> int | None:
    if seed is None:
        return None
    if factory.kind == "native":
        # One generator per worker: derive independent streams, keeping `seed` for worker 0.
        return seed if index == 0 else int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)
    return seed + env_offset  # gym/PettingZoo: env i gets seed + i, exactly as in the serial backend


def _shutdown(procs: list[Any], conns: list[Any]) -> None:
    """Stop workers politely, then forcefully; close pipes. Safe to call twice and at interpreter exit."""
    for c in conns:
        try:
            c.send_bytes(_CLOSE)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 1.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(0.5)
        if p.is_alive():
            p.kill()
            p.join(0.5)
    for c in conns:
        c.close()


def _signal_name(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


class Multiprocessing(VecEnv):
    """Envs in `num_workers` processes over shared memory; sync `step` or async `send`/`recv` of batches."""

    def __init__(self, factory: EnvFactory, num_envs: int = 1, num_workers: int | None = None,
                 batch_size: int | None = None, seed: int | None = None, check_finite: bool = True,
                 probe: Any = None, start_method: str | None = None, timeout: float | None = None):
        self.name = factory.name
        self.num_envs = check_num_envs(num_envs)
        self.check_finite = check_finite
        self.timeout = timeout
        self._closed = True  # until the workers exist
        # Learn the spaces from a 1-env instance in this process, then drop it before forking.
        spec_env = factory(1, envs=(probe,) if probe is not None else ())
        try:
            self._init_spaces(spec_env)
        finally:
            spec_env.close()
        self.num_workers = self._pick_workers(num_workers)
        envs_per_worker = self.num_envs // self.num_workers
        self.rows_per_worker = envs_per_worker * self.agents_per_env
        self.batch_size = self._pick_batch(batch_size)
        workers_per_batch = self.batch_size // self.rows_per_worker
        self.groups = [list(range(g, g + workers_per_batch)) for g in range(0, self.num_workers, workers_per_batch)]

        act_shape, act_dtype = self.action_emulator.buffer_layout(self.num_agents)
        layout, nbytes = _layout(self.num_agents, self.single_observation_space.shape[0],
                                 self.single_observation_space.dtype, act_shape, act_dtype)
        if start_method is None:
            # fork: creators may be lambdas or closures, which spawn would have to pickle.
            start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(start_method)
        self._raw = ctx.RawArray("b", nbytes)
        views = _views(self._raw, layout)
        self.observations, self.rewards = views["observations"], views["rewards"]
        self.terminals, self.truncations = views["terminals"], views["truncations"]
        self.masks, self._actions = views["masks"], views["actions"]

        pipes = [ctx.Pipe() for _ in range(self.num_workers)]
        self._conns = [parent for parent, _ in pipes]
        self._procs = []
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns)
        self._closed = False
        for w, (_, child) in enumerate(pipes):
            # Under fork a worker inherits every pipe end made so far; it closes all but its own, so that a
            # dead process reads as EOF at the other end of each pipe it used.
            inherited = [c for i, pair in enumerate(pipes) for c in pair if c is not child] \
                if start_method == "fork" else []
            p = ctx.Process(
                target=_worker, name=f"puffer-{self.name}-{w}", daemon=True,
                args=(w, child, inherited, self._raw, layout, factory, envs_per_worker, w * envs_per_worker,
                      (w * self.rows_per_worker, (w + 1) * self.rows_per_worker), seed))
            p.start()
            self._procs.append(p)
        for _, child in pipes:
            child.close()
        self._conn_index = {c: w for w, c in enumerate(self._conns)}
        self._sentinel_index = {p.sentinel: w for w, p in enumerate(self._procs)}

        self._results: dict[int, bytes] = {}
        self._busy: dict[int, int] = {}  # group -> send sequence number
        self._seq = 0
        self._received: int | None = None  # group handed out by recv, waiting for send
        self._wait(set(range(self.num_workers)))  # workers report once their envs are built
        self._results.clear()
        self._env_ids = [np.arange(ws[0] * self.rows_per_worker, (ws[-1] + 1) * self.rows_per_worker)
                         for ws in self.groups]

    # ---- configuration --------------------------------------------------------------------------
    def _pick_workers(self, num_workers: int | None) -> int:
        n = self.num_envs
        if num_workers is None:
            cpus = os.cpu_count() or 1
            return max(d for d in divisors(n) if d <= cpus)
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1 \
                or n % num_workers:
            raise PufferError(f"{self.name}: num_workers must divide num_envs={n} so every worker gets the same "
                              f"number of envs; got {num_workers!r}; valid: {divisors(n)}")
        return int(num_workers)

    def _pick_batch(self, batch_size: int | None) -> int:
        valid = [self.rows_per_worker * d for d in divisors(self.num_workers)]
        if batch_size is None:
            return self.num_agents
        if batch_size not in valid:
            raise PufferError(
                f"{self.name}: batch_size counts agent rows and must be a whole number of workers' rows "
                f"({self.rows_per_worker} per worker: num_envs={self.num_envs} / num_workers={self.num_workers} "
                f"* agents_per_env={self.agents_per_env}) that divides num_agents={self.num_agents}; "
                f"got {batch_size!r}; valid: {valid}")
        return int(batch_size)

    # ---- waiting ------------------------------------------------------------------------------
    def _fail(self, message: str) -> WorkerError:
        self.close()
        return WorkerError(message)

    def _worker_desc(self, w: int) -> str:
        e = self.num_envs // self.num_workers
        return f"worker {w} (envs {w * e}..{(w + 1) * e - 1}, pid {self._procs[w].pid})"

    def _died(self, w: int, detail: str = "") -> WorkerError:
        self._procs[w].join(0.1)
        return self._fail(f"{self.name}: {self._worker_desc(w)} died ({_signal_name(self._procs[w].exitcode)}){detail}")

    def _store(self, w: int, data: bytes) -> None:
        if data[:1] == b"E":
            summary, tb = pickle.loads(data[1:])
            raise self._fail(f"{self.name}: {self._worker_desc(w)} raised {summary}\n--- worker traceback ---\n{tb}")
        self._results[w] = data

    def _wait(self, workers: set[int], any_group: bool = False) -> None:
        """Collect replies of `workers` into self._results; with any_group, stop once a busy group is complete."""
        pending = {w for w in workers if w not in self._results}
        if self.timeout is None and not any_group:
            # Fast path: plain blocking reads. A dead worker's pipe reads as EOF, since only it held the far end.
            for w in sorted(pending):
                try:
                    data = self._conns[w].recv_bytes()
                except (EOFError, OSError):
                    raise self._died(w) from None
                self._store(w, data)
            return
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while pending:
            if any_group and any(all(w in self._results for w in self.groups[g]) for g in self._busy):
                return
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            waitables = [self._conns[w] for w in pending] + [self._procs[w].sentinel for w in pending]
            ready = mpc.wait(waitables, left)
            if not ready:
                raise self._fail(f"{self.name}: {', '.join(self._worker_desc(w) for w in sorted(pending))} did "
                                 f"not answer within timeout={self.timeout}s")
            # Pipes first: a worker that reported an error and exited is both readable and dead.
            for obj in sorted(ready, key=lambda o: o not in self._conn_index):
                w = self._conn_index.get(obj)
                if w is None:
                    w = self._sentinel_index[obj]
                    if w in pending and not self._conns[w].poll():
                        raise self._died(w, " without reporting an error")
                    continue
                if w not in pending:
                    continue
                try:
                    data = obj.recv_bytes()
                except (EOFError, OSError):
                    raise self._died(w) from None
                self._store(w, data)
                pending.discard(w)

    # ---- results ------------------------------------------------------------------------------
    def _collect(self, group_ids: list[int]) -> tuple[slice, Infos]:
        workers = [w for g in group_ids for w in self.groups[g]]
        lo, hi = workers[0] * self.rows_per_worker, (workers[-1] + 1) * self.rows_per_worker
        infos: Infos = {"episodes": []}
        finals: list[tuple[np.ndarray, np.ndarray]] = []
        row_parts: dict[str, list[tuple[int, np.ndarray]]] = {}
        for w in workers:
            data = self._results.pop(w)
            if not data:
                continue
            episodes, final, row_infos, extra = pickle.loads(data)
            infos["episodes"].extend(episodes)
            offset = w * self.rows_per_worker - lo
            if final is not None and len(final[0]):
                finals.append((final[0] + offset, final[1]))
            for key, value in row_infos.items():
                row_parts.setdefault(key, []).append((offset, value))
            for key, value in extra.items():
                infos.setdefault(key, value)
        for key in sorted(row_parts, key=lambda k: k.startswith("final_")):
            parts = row_parts[key]
            sample = parts[0][1]
            base = infos.get(key[len("final_"):]) if key.startswith("final_") else None
            # A final_X array (final_global_state) holds X for the rows of workers where nothing ended.
            arr = base.copy() if base is not None else np.zeros((hi - lo,) + sample.shape[1:], sample.dtype)
            for offset, value in parts:
                arr[offset: offset + len(value)] = value
            infos[key] = arr
        obs = self.observations[lo:hi]
        self._check_obs(obs, lo)
        if finals:
            fo = obs.copy()
            for idx, rows in finals:
                fo[idx] = rows
            infos["final_observation"] = fo
        return slice(lo, hi), infos

    def _send(self, workers: list[int], message: bytes) -> None:
        for w in workers:
            try:
                self._conns[w].send_bytes(message)
            except (OSError, ValueError):
                raise self._died(w) from None

    def _drain(self) -> None:
        """Wait out every batch in flight and discard it (before a synchronous reset)."""
        self._wait({w for g in self._busy for w in self.groups[g]})
        self._results.clear()
        self._busy.clear()
        self._received = None

    def _check_open(self) -> None:
        if self._closed:
            raise PufferError(f"{self.name}: this vector env is closed")

    # ---- public API ---------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, Infos]:
        """Reset every env (waiting out any batch in flight); returns (obs, infos)."""
        self._check_open()
        self._drain()
        everyone = list(range(self.num_workers))
        self._send(everyone, _RESET + pickle.dumps(seed))
        self._wait(set(everyone))
        _, infos = self._collect(list(range(len(self.groups))))
        return self.observations, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step every env at once; returns (obs, rewards, terminals, truncations, infos) for all rows."""
        self._check_open()
        if self._busy or self._received is not None:
            raise PufferError(f"{self.name}: step() while async batches are in flight; finish the "
                              "recv()/send() cycle or call reset()")
        a = self.action_emulator.check(actions, self.num_agents, self.name)
        self._actions[...] = a.reshape(self._actions.shape)
        everyone = list(range(self.num_workers))
        self._send(everyone, _STEP)
        self._wait(set(everyone))
        _, infos = self._collect(list(range(len(self.groups))))
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def async_reset(self, seed: int | None = None) -> None:
        """Start resetting every env; each batch then comes back through `recv`."""
        self._check_open()
        self._drain()
        self._send(list(range(self.num_workers)), _RESET + pickle.dumps(seed))
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

    def send(self, actions: Any) -> None:
        """Actions for the batch of the last `recv`; its workers start stepping at once."""
        self._check_open()
        g = self._received
        if g is None:
            raise PufferError(f"{self.name}: send() needs a recv() first")
        a = self.action_emulator.check(actions, self.batch_size, self.name)
        ids = self._env_ids[g]
        self._actions[ids[0]: ids[-1] + 1] = a.reshape((len(ids),) + self._actions.shape[1:])
        self._send(self.groups[g], _STEP)
        self._received = None
        self._busy[g] = self._seq
        self._seq += 1

    def reset_group(self, env_ids: Any, seed: int) -> tuple[np.ndarray, Infos]:
        """Restart envs `env_ids` from the one initial state `seed` gives; returns (their obs rows, infos).

        Only the workers holding those envs take part; it needs no async batch in flight.
        """
        self._check_open()
        if self._busy or self._received is not None:
            raise PufferError(f"{self.name}: reset_group() while async batches are in flight; finish the "
                              "recv()/send() cycle or call reset() first")
        ids = self._group(env_ids, seed)
        per_worker = self.num_envs // self.num_workers
        local: dict[int, list[int]] = {}
        for e in ids.tolist():
            local.setdefault(e // per_worker, []).append(e % per_worker)
        for w, envs in local.items():
            self._send([w], _GROUP + pickle.dumps((envs, int(seed))))
        self._wait(set(local))
        worker_rows: dict[int, dict[str, np.ndarray]] = {}
        for w in local:
            data = self._results.pop(w)
            worker_rows[w] = pickle.loads(data)[2] if data else {}
        rows = self._group_rows(ids)
        infos: Infos = {"episodes": []}
        keys = set.intersection(*(set(r) for r in worker_rows.values())) if worker_rows else set()
        rpw = self.rows_per_worker
        for key in sorted(keys):  # per-row arrays (global_state, cost) of the group's rows, in their order
            infos[key] = np.stack([worker_rows[r // rpw][key][r % rpw] for r in rows.tolist()])
        obs = self.observations[rows]
        self._check_obs(obs)
        return obs, infos

    def close(self) -> None:
        """Stop the workers (terminating any that hang) and release the shared memory; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()
