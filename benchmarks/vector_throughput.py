"""Env steps per second of puffer's vector backends against gymnasium's, counting every env step.

    .venv/bin/python benchmarks/vector_throughput.py [--seconds 2] [--quick]

1. puffer's native CartPole (serial) at 1024 and 4096 envs vs gymnasium's numpy-vectorized CartPole
   (`gymnasium.make_vec("CartPole-v1", vectorization_mode="vector_entry_point")`).
2. gymnasium's CartPole-v1 at 8 and 64 envs: puffer serial and multiprocessing (sync, and async with
   half the envs per batch) vs gymnasium's SyncVectorEnv and AsyncVectorEnv.
3. A heavy env (CartPole-v1 plus 200 us of CPU time per step, like a physics simulator) at 16 envs,
   where processes pay off; then `puffer.vector.autotune` on plain CartPole-v1 at 64 envs, which says
   whether multiprocessing is worth it for an env that cheap.
4. Ray (`--vec ray`, needs `pip install 'puffer-rl[ray]'`): ray vs multiprocessing vs serial on
   gymnasium's CartPole-v1 and on a slow env (CartPole-v1 plus 1 ms of CPU per step), 2 and 4 workers,
   sync and async, and the cost of one Ray round trip (driver -> actor -> driver) in microseconds.
   `--ray-only` runs just this part.

Actions are random and precomputed, so only the env and the vectorization are timed. Ratios are printed.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import gymnasium
import numpy as np

import puffer
from puffer.vector.autotune import autotune, measure


def timed(step: Callable[[int], object], steps_per_call: int, seconds: float) -> float:
    """Env steps per second of calling `step(i)` repeatedly for about `seconds`."""
    for i in range(3):
        step(i)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(8):
            step(calls)
            calls += 1
    return calls * steps_per_call / (time.perf_counter() - start)


class Busy(gymnasium.Wrapper):
    """Adds `micros` microseconds of CPU time to every step, like a physics simulator would.

    Measured on the thread's CPU clock, not the wall clock, so the work stays the same when the machine
    is shared and the process gets preempted.
    """

    def __init__(self, env: gymnasium.Env, micros: float):
        super().__init__(env)
        self.seconds = micros * 1e-6

    def step(self, action):
        end = time.thread_time() + self.seconds
        while time.thread_time() < end:
            pass
        return self.env.step(action)


def heavy_cartpole() -> gymnasium.Env:
    """CartPole-v1 costing about 200 us per step."""
    return Busy(gymnasium.make("CartPole-v1"), 200)


def slow_cartpole() -> gymnasium.Env:
    """CartPole-v1 costing about 1 ms of CPU per step."""
    return Busy(gymnasium.make("CartPole-v1"), 1000)


def gym_vec(env: gymnasium.vector.VectorEnv, n: int, seconds: float) -> float:
    """Steps/s of a gymnasium vector env with random discrete actions."""
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 2, n) for _ in range(8)]
    env.reset(seed=0)
    try:
        return timed(lambda i: env.step(actions[i % 8]), n, seconds)
    finally:
        env.close()


def puffer_vec(seconds: float, *args, **kwargs) -> float:
    """Steps/s of a puffer vector env."""
    with puffer.make(*args, **kwargs) as env:
        return measure(env, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per configuration")
    parser.add_argument("--quick", action="store_true", help="0.3 s per configuration (a smoke run)")
    parser.add_argument("--ray-only", action="store_true", help="only the ray rows")
    args = parser.parse_args()
    sec = 0.3 if args.quick else args.seconds
    workers = min(2, os.cpu_count() or 1)
    print(f"CPUs: {os.cpu_count()}, numpy {np.__version__}, gymnasium {gymnasium.__version__}, {sec}s per row")
    rows: list[tuple[str, float]] = []

    def report(label: str, sps: float, base: float | None = None, base_label: str = "") -> None:
        ratio = f"  {sps / base:6.2f}x {base_label}" if base else ""
        print(f"{label:62s} {sps:14,.0f} steps/s{ratio}", flush=True)
        rows.append((label, sps))

    if args.ray_only:
        ray_rows(sec, report)
        return

    print("\n## native CartPole vs gymnasium's numpy-vectorized CartPole")
    for n in (1024, 4096):
        gym_sps = gym_vec(gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point"),
                          n, sec)
        report(f"gymnasium make_vec vector_entry_point  n={n}", gym_sps)
        report(f"puffer cartpole serial                 n={n}", puffer_vec(sec, "cartpole", num_envs=n),
               gym_sps, "gymnasium")

    print(f"\n## gymnasium CartPole-v1 envs: puffer vs gymnasium Sync/AsyncVectorEnv ({workers} workers)")
    for n in (8, 64):
        fns = [lambda: gymnasium.make("CartPole-v1")] * n
        sync = gym_vec(gymnasium.vector.SyncVectorEnv(fns), n, sec)
        report(f"gymnasium SyncVectorEnv                n={n}", sync)
        asyn = gym_vec(gymnasium.vector.AsyncVectorEnv(fns), n, sec)
        report(f"gymnasium AsyncVectorEnv               n={n}", asyn)
        serial = puffer_vec(sec, "gym:CartPole-v1", num_envs=n)
        report(f"puffer serial                          n={n}", serial, sync, "gym Sync")
        mp_sync = puffer_vec(sec, "gym:CartPole-v1", num_envs=n, backend="multiprocessing", num_workers=workers)
        report(f"puffer multiprocessing sync            n={n} w={workers}", mp_sync, asyn, "gym Async")
        mp_async = puffer_vec(sec, "gym:CartPole-v1", num_envs=n, backend="multiprocessing", num_workers=workers,
                              batch_size=n // 2)
        report(f"puffer multiprocessing async b={n // 2:<3d}     n={n} w={workers}", mp_async, asyn, "gym Async")
        print(f"{'':62s} multiprocessing/serial: sync {mp_sync / serial:.2f}x, async {mp_async / serial:.2f}x")

    n = 16
    print(f"\n## heavy env (CartPole-v1 + 200 us of CPU per step), n={n}, {workers} workers")
    asyn = gym_vec(gymnasium.vector.AsyncVectorEnv([heavy_cartpole] * n), n, sec)
    report(f"gymnasium AsyncVectorEnv               n={n}", asyn)
    serial = puffer_vec(sec, heavy_cartpole, num_envs=n)
    report(f"puffer serial                          n={n}", serial)
    mp_sync = puffer_vec(sec, heavy_cartpole, num_envs=n, backend="multiprocessing", num_workers=workers)
    report(f"puffer multiprocessing sync            n={n} w={workers}", mp_sync, serial, "serial")
    mp_async = puffer_vec(sec, heavy_cartpole, num_envs=n, backend="multiprocessing", num_workers=workers,
                          batch_size=n // 2)
    report(f"puffer multiprocessing async b={n // 2:<3d}     n={n} w={workers}", mp_async, serial, "serial")

    print("\n## puffer.vector.autotune('gym:CartPole-v1', num_envs=64)")
    autotune("gym:CartPole-v1", num_envs=64, seconds=sec)
    ray_rows(sec, report)


def step_micros(env: puffer.vector.VecEnv, seconds: float) -> tuple[float, float]:
    """Wall-clock and driver-CPU microseconds per synchronous `step` of `env`."""
    cpu = time.process_time()
    wall = time.perf_counter()
    sps = measure(env, seconds)
    steps = sps * (time.perf_counter() - wall) / env.num_envs  # measure's steps, warm-up aside
    return 1e6 * env.num_envs / sps, 1e6 * (time.process_time() - cpu) / steps


def ray_rows(sec: float, report: Callable[..., None]) -> None:
    """Ray vs multiprocessing vs serial, and the cost of a Ray round trip."""
    try:
        import ray
    except ImportError:
        print("\n## ray: not installed (pip install 'puffer-rl[ray]'), skipping the ray rows")
        return
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), object_store_memory=200 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    print(f"\n## ray {ray.__version__} (local, {os.cpu_count()} CPUs, started in {time.perf_counter() - start:.1f} s)")
    try:
        for label, env, n in (("gym CartPole-v1", "gym:CartPole-v1", 64), ("slow env (CartPole-v1 + 1 ms CPU)",
                                                                         slow_cartpole, 16)):
            print(f"\n### {label}, n={n}")
            serial = puffer_vec(sec, env, num_envs=n)
            report(f"serial                                 n={n}", serial)
            for w in (2, 4):
                for batch in (None, n // 2):
                    mode = "sync " if batch is None else f"async b={batch}"
                    mp = puffer_vec(sec, env, num_envs=n, backend="multiprocessing", num_workers=w, batch_size=batch)
                    report(f"multiprocessing {mode:13s}          n={n} w={w}", mp, serial, "serial")
                    rs = puffer_vec(sec, env, num_envs=n, backend="ray", num_workers=w, batch_size=batch)
                    report(f"ray             {mode:13s}          n={n} w={w}", rs, mp, "multiprocessing")

        print("\n### round trip: microseconds per sync step of 1 CartPole-v1 env per worker")
        print("(driver CPU: the CPU time of this process, all its threads, per worker call; the rest of a round")
        print(" trip is spent in the actors, Ray's node daemons and the OS, which on a cluster are other machines)")
        with puffer.make("gym:CartPole-v1", num_envs=1) as env:
            base, base_cpu = step_micros(env, sec)
        print(f"{'serial, 1 env (the env itself)':62s} {base:10,.0f} us/step")
        for w in (1, 2, 4):
            for backend in ("multiprocessing", "ray"):
                with puffer.make("gym:CartPole-v1", num_envs=w, backend=backend, num_workers=w) as env:
                    us, cpu = step_micros(env, sec)
                print(f"{f'{backend} w={w}':62s} {us:10,.0f} us/step  ({us - base:,.0f} us over serial; "
                      f"driver CPU {(cpu - base_cpu) / w:,.0f} us per worker call)")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
