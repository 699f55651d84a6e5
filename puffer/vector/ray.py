"""The ray backend: env workers as Ray actors, each stepping its block of envs in one call, on one machine or many.

Layout as in multiprocessing: worker w owns envs `[w * E, (w + 1) * E)` (E = num_envs / num_workers) and the
matching contiguous rows; workers are grouped into batches of `batch_size` rows. A step is one remote call
per worker carrying its numpy block of actions; the actor steps its envs through the same emulation as the
serial backend (`EnvFactory`: native, gymnasium or PettingZoo) and answers with its block of observations,
rewards, terminals, truncations and masks plus its packed infos. The driver copies the blocks into its own
buffers, so results are views as with the other backends. Seeds match multiprocessing: gymnasium and
PettingZoo env i gets `seed + i`, exactly as in serial; a native env gets one generator per worker.

EnvPool-style async: `send` starts a batch's calls and returns at once; `recv` returns whichever batch in
flight finishes first (`ray.wait`), the oldest when several have.

Ray itself: `address=` or `RAY_ADDRESS` (e.g. "auto" or "ray://head:10001") joins that cluster; an
already initialised Ray is used as it is; otherwise a local Ray sized to this machine is started.
Actors are spread over the cluster's nodes. The env creator reaches the actors by Ray's own
serialization (cloudpickle), so lambdas and closures work. `close()` kills the actors and, once the last
env using it is closed, shuts down a Ray this module started.

Faults: an env that raises is reported by its actor with the traceback; an actor whose process or node
dies fails its call (Ray notices within about a second locally). Either way the driver kills every actor
and raises `WorkerError` naming the env, the worker and the cause, unless `max_restarts` allows a restart:
then the dead worker is recreated (new seed), its envs reset, its rows come back truncated (the final
observation is the last one seen; no reward), and `infos["worker_restarts"]` counts the restarts so far.
Every wait for a step or reset is bounded by `timeout` seconds (starting an actor by max(timeout, 60 s)), so
a hung env or an unreachable node is an error, never a hang.
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
import weakref
from typing import Any

import numpy as np

from puffer.errors import PufferError
from puffer.vector.base import EnvFactory, Infos, WorkerError, WorkerPool, check_num_envs, pick_batch, pick_workers
from puffer.vector.multiprocessing import _pack, _worker_seed, merge_reports

# Results are a few KB per worker; /dev/shm is often small (containers), so a small object store suffices.
_OBJECT_STORE_BYTES = 200 * 1024**2
_START_TIMEOUT = 60.0  # seconds to start an actor and build or reset its envs, at least
_started = {"users": 0}  # envs relying on a local Ray this module started; the last to close shuts it down


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise PufferError("the ray vector backend needs Ray: pip install 'puffer-rl[ray]' "
                          "(or pip install 'ray>=2.40')") from e
    return ray


class _Worker:
    """The body of one Ray actor: a block of envs built by the factory, stepped in one call."""

    def __init__(self, factory: EnvFactory, num_envs: int, seed: int | None):
        self.env, self.error = None, None
        try:
            self.env = factory(num_envs, seed)
            self.rows = num_envs * self.env.agents_per_env
            shape, dtype = self.env.actions.buffer_layout(self.rows)
            self.actions = np.zeros(shape, dtype)
        except BaseException as e:  # noqa: B036 - reported to the driver by ready()
            self.error = _describe(e)

    def ready(self) -> tuple[int, str, tuple[str, str] | None]:
        """(pid, node address, the construction error or None)."""
        import ray

        return os.getpid(), ray.util.get_node_ip_address(), self.error

    def reset(self, seed: int | None) -> tuple:
        """Reset the block: its arrays and packed infos, or ("error", summary, traceback)."""
        try:
            _, infos = self.env.reset(seed)
            return self._out(infos)
        except BaseException as e:  # noqa: B036 - report anything, including SystemExit from an env
            return ("error", *_describe(e))

    def step(self, actions: bytes) -> tuple:
        """Step the block with its actions (raw bytes): its arrays and infos, or ("error", summary, traceback)."""
        try:
            self.actions[...] = np.frombuffer(actions, self.actions.dtype).reshape(self.actions.shape)
            _, _, _, _, infos = self.env.step(self.actions)
            return self._out(infos)
        except BaseException as e:  # noqa: B036 - report anything, including SystemExit from an env
            return ("error", *_describe(e))

    def _out(self, infos: Infos) -> tuple:
        e = self.env
        return ("ok", _blob(e.observations, e.rewards, e.terminals, e.truncations, e.masks),
                _pack(infos, e.terminals, e.truncations, self.rows))

    def close(self) -> None:
        """Close the envs."""
        if self.env is not None:
            self.env.close()


def _blob(*arrays: np.ndarray) -> bytes:
    # Ray moves bytes markedly faster than numpy arrays (measured: ~1.0 vs ~1.4 ms a round trip here).
    return b"".join(a.tobytes() for a in arrays)


def _describe(e: BaseException) -> tuple[str, str]:
    return f"{type(e).__name__}: {e}", traceback.format_exc()


_actor_class: Any = None


def _actor(ray: Any) -> Any:
    global _actor_class
    if _actor_class is None:
        _actor_class = ray.remote(_Worker)
    return _actor_class


def _connect(ray: Any, address: str | None) -> bool:
    """Make sure Ray is initialised; True when this call started (or joined) it and so must release it."""
    if ray.is_initialized():
        if _started["users"]:
            _started["users"] += 1
            return True
        return False  # the user's own Ray: leave it running
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=_OBJECT_STORE_BYTES, ignore_reinit_error=True,
                     include_dashboard=False, log_to_driver=False)
    except Exception as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise PufferError(f"could not start or join {where}: {type(e).__name__}: {e}") from e
    _started["users"] = 1
    return True


def _release(ray: Any) -> None:
    _started["users"] -= 1
    if _started["users"] <= 0:
        _started["users"] = 0
        if ray.is_initialized():
            ray.shutdown()


def _shutdown(ray: Any, actors: list[Any], owns: list[bool]) -> None:
    """Close the envs (1 s at most), kill the actors, release Ray if we started it. Safe twice and at exit."""
    try:
        # Envs may own processes or files of their own: give them a second to close before the kill.
        refs = [a.close.remote() for a in actors]
        ray.wait(refs, num_returns=len(refs), timeout=1.0)
    except Exception:  # noqa: S110 - Ray is shutting down; the kill below is all that is left
        pass
    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except Exception:  # noqa: S110 - already dead, or Ray is shutting down
            pass
    actors.clear()
    if owns and owns[0]:
        owns[0] = False
        try:
            _release(ray)
        except Exception:  # noqa: S110 - at interpreter exit Ray may already be gone
            pass


class Ray(WorkerPool):
    """Envs in `num_workers` Ray actors; sync `step` or async `send`/`recv` of batches; see the module docstring."""

    def __init__(self, factory: EnvFactory, num_envs: int = 1, num_workers: int | None = None,
                 batch_size: int | None = None, seed: int | None = None, check_finite: bool = True,
                 probe: Any = None, address: str | None = None, max_restarts: int = 0, timeout: float | None = 120.0):
        ray = self._ray = _import_ray()
        self.name = factory.name
        self.num_envs = check_num_envs(num_envs)
        self.check_finite = check_finite
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise PufferError(f"{self.name}: max_restarts must be a non-negative integer, got {max_restarts!r}")
        if timeout is not None and not timeout > 0:
            raise PufferError(f"{self.name}: timeout must be a positive number of seconds or None, got {timeout!r}")
        self.timeout, self.max_restarts, self.restarts = timeout, max_restarts, 0
        self._factory, self._seed = factory, seed
        self._closed = True  # until the actors exist
        spec_env = factory(1, envs=(probe,) if probe is not None else ())
        try:
            self._init_spaces(spec_env)
        finally:
            spec_env.close()
        self._owns = [_connect(ray, address)]
        self._actors: list[Any] = []
        self._finalizer = weakref.finalize(self, _shutdown, ray, self._actors, self._owns)
        self._closed = False
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.num_workers = pick_workers(self.name, self.num_envs, num_workers, cpus)
            self.envs_per_worker = self.num_envs // self.num_workers
            self.rows_per_worker = self.envs_per_worker * self.agents_per_env
            self.batch_size = pick_batch(self.name, self.num_envs, self.num_workers, self.agents_per_env, batch_size)
        except BaseException:
            self.close()
            raise
        per_batch = self.batch_size // self.rows_per_worker
        self.groups = [list(range(g, g + per_batch)) for g in range(0, self.num_workers, per_batch)]
        self._env_ids = [np.arange(ws[0] * self.rows_per_worker, (ws[-1] + 1) * self.rows_per_worker)
                         for ws in self.groups]
        act_shape, act_dtype = self.action_emulator.buffer_layout(self.num_agents)
        self._act_shape, self._act_dtype = act_shape, np.dtype(act_dtype)
        space, rows = self.single_observation_space, self.rows_per_worker
        self._blob_layout = [(np.dtype(space.dtype), (rows, space.shape[0])), (np.dtype(np.float32), (rows,))] + \
            [(np.dtype(bool), (rows,))] * 3
        self.observations = np.zeros((self.num_agents, space.shape[0]), space.dtype)
        self.rewards = np.zeros(self.num_agents, np.float32)
        self.terminals = np.zeros(self.num_agents, bool)
        self.truncations = np.zeros(self.num_agents, bool)
        self.masks = np.zeros(self.num_agents, bool)

        self._where: list[tuple[int, str]] = [(0, "?")] * self.num_workers  # pid and node of each actor
        self._refs: dict[int, Any] = {}  # worker -> its call in flight
        self._calls: dict[int, str] = {}  # worker -> the method of that call
        self._results: dict[int, tuple] = {}
        self._restarted: set[int] = set()  # workers restarted since their rows were last handed out
        self._busy: dict[int, int] = {}  # group -> send sequence number
        self._seq = 0
        self._received: int | None = None  # group handed out by recv, waiting for send
        self._actors.extend(self._spawn(w, _worker_seed(factory, seed, w, w * self.envs_per_worker))
                            for w in range(self.num_workers))
        self._await_ready(list(range(self.num_workers)))

    # ---- actors -------------------------------------------------------------------------------
    def _spawn(self, w: int, seed: int | None) -> Any:
        # SPREAD puts the actors on different nodes of a cluster; Ray's own restarts stay off, since a
        # restarted actor would come back with fresh envs the driver does not know about.
        return _actor(self._ray).options(scheduling_strategy="SPREAD", max_restarts=0, max_task_retries=0).remote(
            self._factory, self.envs_per_worker, seed)

    def _await_ready(self, workers: list[int]) -> None:
        refs = {self._actors[w].ready.remote(): w for w in workers}
        for w, out in self._get_all(refs, "start").items():
            pid, node, error = out
            self._where[w] = (pid, node)
            if error is not None:
                raise self._fail(f"{self.name}: {self._worker_desc(w)} raised {error[0]} while building its envs"
                                 f"\n--- worker traceback ---\n{error[1]}")

    def _get_all(self, refs: dict[Any, int], what: str) -> dict[int, Any]:
        """The values of `refs` (ref -> worker), waiting at most `timeout`; a dead actor is a WorkerError."""
        ray = self._ray
        # Starting a process (on a cluster: maybe installing its runtime env) may take longer than a step.
        timeout = None if self.timeout is None else max(self.timeout, _START_TIMEOUT)
        ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        if waiting:
            raise self._fail(f"{self.name}: {', '.join(self._worker_desc(refs[r]) for r in waiting)} did not "
                             f"{what} within {timeout}s")
        out = {}
        for r in ready:
            try:
                out[refs[r]] = ray.get(r)
            except ray.exceptions.RayError as e:
                raise self._fail(f"{self.name}: {self._worker_desc(refs[r])} died before it could {what} "
                                 f"({_first_line(e)})") from None
        return out

    def _restart(self, w: int, cause: str) -> None:
        """Replace dead worker w by a new actor with fresh envs; its rows come back truncated."""
        ray = self._ray
        self.restarts += 1
        try:
            ray.kill(self._actors[w], no_restart=True)
        except Exception:  # noqa: S110 - it is dead already
            pass
        seed = None if self._seed is None else \
            int(np.random.SeedSequence([self._seed, w, self.restarts]).generate_state(1, np.uint64)[0] >> 1)
        self._actors[w] = self._spawn(w, _worker_seed(self._factory, seed, w, w * self.envs_per_worker))
        self._await_ready([w])
        out = self._get_all({self._actors[w].reset.remote(None): w}, "reset after a restart")[w]
        if out[0] == "error":
            raise self._fail(f"{self.name}: {self._worker_desc(w)} raised {out[1]} resetting after a restart "
                             f"({cause})\n--- worker traceback ---\n{out[2]}")
        self._restarted.add(w)
        if self._calls.get(w) == "reset":
            self._results[w] = out
            return
        _, blob, report = out
        obs, _, _, _, masks = self._split(blob)
        lo, hi = w * self.rows_per_worker, (w + 1) * self.rows_per_worker
        row_infos = pickle.loads(report)[2] if report else {}
        # The cut episodes end as truncations whose final observation is the last one the driver saw.
        report = pickle.dumps(([], (np.arange(hi - lo), self.observations[lo:hi].copy()), row_infos, {}))
        blob = _blob(obs, np.zeros(hi - lo, np.float32), np.zeros(hi - lo, bool), np.ones(hi - lo, bool), masks)
        self._results[w] = ("ok", blob, report)

    # ---- waiting ------------------------------------------------------------------------------
    def _fail(self, message: str) -> WorkerError:
        self.close()
        return WorkerError(message)

    def _worker_desc(self, w: int) -> str:
        pid, node = self._where[w]
        e = self.envs_per_worker
        return f"worker {w} (envs {w * e}..{(w + 1) * e - 1}, pid {pid} on {node})"

    def _take(self, w: int) -> None:
        """Store worker w's finished call in self._results, restarting it if it died and restarts are left."""
        ray = self._ray
        try:
            out = ray.get(self._refs.pop(w))
        except ray.exceptions.RayActorError as e:
            cause = _first_line(e)
            if self.restarts < self.max_restarts:
                self._restart(w, cause)
                return
            limit = f"; max_restarts={self.max_restarts} used up" if self.max_restarts else ""
            raise self._fail(f"{self.name}: {self._worker_desc(w)} died ({cause}){limit}") from None
        except ray.exceptions.RayError as e:
            raise self._fail(f"{self.name}: {self._worker_desc(w)} failed: {type(e).__name__}: "
                             f"{_first_line(e)}") from None
        if out[0] == "error":
            raise self._fail(f"{self.name}: {self._worker_desc(w)} raised {out[1]}\n--- worker traceback ---\n{out[2]}")
        self._results[w] = out

    def _wait(self, workers: set[int], any_group: bool = False) -> None:
        """Collect the calls of `workers` into self._results; with any_group, stop once a busy group is complete."""
        ray = self._ray
        pending = {w for w in workers if w not in self._results}
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while pending:
            if any_group and any(all(w in self._results for w in self.groups[g]) for g in self._busy):
                return
            refs = {self._refs[w]: w for w in pending}
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(refs), num_returns=1 if any_group else len(refs), timeout=left)
            if not ready or (not any_group and len(ready) < len(refs)):
                late = sorted(pending - {refs[r] for r in ready})
                raise self._fail(f"{self.name}: {', '.join(self._worker_desc(w) for w in late)} did not answer "
                                 f"within timeout={self.timeout}s")
            for r in ready:
                self._take(refs[r])
                pending.discard(refs[r])

    def _call(self, workers: list[int], method: str, arg: Any = None, actions: np.ndarray | None = None) -> None:
        for w in workers:
            if actions is not None:
                lo = (w - workers[0]) * self.rows_per_worker
                arg = actions[lo: lo + self.rows_per_worker].tobytes()
            self._refs[w] = getattr(self._actors[w], method).remote(arg)
            self._calls[w] = method

    # ---- results ------------------------------------------------------------------------------
    def _split(self, blob: bytes) -> list[np.ndarray]:
        """A worker's (observations, rewards, terminals, truncations, masks) from its `_blob`."""
        out, at = [], 0
        for dtype, shape in self._blob_layout:
            count = int(np.prod(shape))
            out.append(np.frombuffer(blob, dtype, count, at).reshape(shape))
            at += count * dtype.itemsize
        return out

    def _collect(self, group_ids: list[int]) -> tuple[slice, Infos]:
        workers = [w for g in group_ids for w in self.groups[g]]
        lo, hi = workers[0] * self.rows_per_worker, (workers[-1] + 1) * self.rows_per_worker
        reports = []
        for w in workers:
            _, blob, report = self._results.pop(w)
            obs, rew, term, trunc, masks = self._split(blob)
            a, b = w * self.rows_per_worker, (w + 1) * self.rows_per_worker
            self.observations[a:b] = obs
            self.rewards[a:b] = rew
            self.terminals[a:b] = term
            self.truncations[a:b] = trunc
            self.masks[a:b] = masks
            reports.append((a - lo, report))
        obs = self.observations[lo:hi]
        self._check_obs(obs, lo)
        infos = merge_reports(reports, obs)
        if self._restarted.intersection(workers):
            self._restarted.difference_update(workers)
            infos["worker_restarts"] = self.restarts
        return slice(lo, hi), infos

    def _drain(self) -> None:
        """Wait out every batch in flight and discard it (before a synchronous reset)."""
        self._wait({w for g in self._busy for w in self.groups[g]})
        self._results.clear()
        self._busy.clear()
        self._received = None

    def _check_open(self) -> None:
        if self._closed:
            raise PufferError(f"{self.name}: this vector env is closed")

    def _reset_all(self, seed: int | None) -> None:
        for w in range(self.num_workers):
            self._call([w], "reset", _worker_seed(self._factory, seed, w, w * self.envs_per_worker))

    # ---- public API ---------------------------------------------------------------------------
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        """Step every env at once; returns (obs, rewards, terminals, truncations, infos) for all rows."""
        self._check_open()
        if self._busy or self._received is not None:
            raise PufferError(f"{self.name}: step() while async batches are in flight; finish the "
                              "recv()/send() cycle or call reset()")
        a = np.asarray(self.action_emulator.check(actions, self.num_agents, self.name), self._act_dtype)
        a = a.reshape(self._act_shape)
        self._call(list(range(self.num_workers)), "step", actions=a)
        self._wait(set(range(self.num_workers)))
        _, infos = self._collect(list(range(len(self.groups))))
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def send(self, actions: Any) -> None:
        """Actions for the batch of the last `recv`; its workers start stepping at once."""
        self._check_open()
        g = self._received
        if g is None:
            raise PufferError(f"{self.name}: send() needs a recv() first")
        a = np.asarray(self.action_emulator.check(actions, self.batch_size, self.name), self._act_dtype)
        self._call(self.groups[g], "step", actions=a.reshape((self.batch_size,) + self._act_shape[1:]))
        self._received = None
        self._busy[g] = self._seq
        self._seq += 1

    def worker_pids(self) -> list[tuple[int, str]]:
        """(pid, node address) of every worker actor, in worker order."""
        return list(self._where)

    def close(self) -> None:
        """Kill the actors (and shut down a Ray this module started, once no env uses it); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
