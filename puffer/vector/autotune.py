"""`autotune`: time the serial and multiprocessing backends on this machine and propose the fastest set-up."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from puffer.vector.base import divisors


@dataclass
class AutotuneResult:
    """The fastest configuration measured, every measurement, and a sentence explaining the choice."""

    backend: str
    num_envs: int
    num_workers: int
    batch_size: int
    steps_per_second: float
    measurements: list[dict[str, Any]] = field(default_factory=list)
    advice: str = ""

    def make_kwargs(self) -> dict[str, Any]:
        """Arguments for `puffer.make` reproducing this configuration."""
        kw: dict[str, Any] = {"num_envs": self.num_envs, "backend": self.backend}
        if self.backend == "multiprocessing":
            kw.update(num_workers=self.num_workers, batch_size=self.batch_size)
        return kw


def measure(env: Any, seconds: float = 0.5, seed: int = 0) -> float:
    """Env steps per second of `env` driven with random actions, sync when batch_size == num_agents."""
    rng = np.random.default_rng(seed)
    steps_per_call = env.batch_size // env.agents_per_env
    actions = [env.action_emulator.sample(env.batch_size, rng) for _ in range(8)]
    if env.batch_size == env.num_agents:
        env.reset(seed=seed)
        call = lambda i: env.step(actions[i % len(actions)])
    else:
        env.async_reset(seed=seed)
        env.recv()

        def call(i: int) -> None:
            env.send(actions[i % len(actions)])
            env.recv()
    for i in range(3):  # warm-up: first steps pay for page faults and lazy allocations
        call(i)
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(8):
            call(calls)
            calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * steps_per_call / elapsed


def autotune(env: Any, num_envs: int | None = None, max_workers: int | None = None, seconds: float = 0.5,
             verbose: bool = True, **env_kwargs: Any) -> AutotuneResult:
    """Measure serial and multiprocessing (sync and async batches) and return the fastest configuration.

    `env` is anything `puffer.make` accepts. `num_envs` defaults to 4 per CPU for Python envs and
    4096 for native ones. Multiprocessing is only proposed when it beats serial; the advice says why.
    """
    from puffer.vector import make
    from puffer.vector.base import resolve

    factory, probe = resolve(env, dict(env_kwargs))
    if probe is not None:
        probe.close()
    cpus = os.cpu_count() or 1
    max_workers = max_workers or cpus
    if num_envs is None:
        num_envs = 4096 if factory.kind == "native" else 4 * cpus
    results: list[dict[str, Any]] = []

    def run(backend: str, workers: int, batch: int | None) -> None:
        with make(env, num_envs=num_envs, backend=backend, num_workers=workers if backend != "serial" else None,
                  batch_size=batch, **env_kwargs) as venv:
            sps = measure(venv, seconds)
            results.append({"backend": backend, "num_workers": workers, "batch_size": venv.batch_size,
                            "steps_per_second": sps})
            if verbose:
                print(f"  {backend:15s} workers={workers:<3d} batch_size={venv.batch_size:<6d} {sps:14,.0f} steps/s")

    if verbose:
        print(f"autotune {factory.name}: num_envs={num_envs} on {cpus} CPUs")
    run("serial", 1, None)
    for w in [d for d in divisors(num_envs) if 2 <= d <= max_workers]:
        run("multiprocessing", w, None)
        if w % 2 == 0:
            agents = results[-1]["batch_size"] // num_envs
            run("multiprocessing", w, num_envs * agents // 2)
    best = max(results, key=lambda r: r["steps_per_second"])
    serial = results[0]["steps_per_second"]
    if best["backend"] == "serial":
        mp_best = max((r["steps_per_second"] for r in results[1:]), default=0.0)
        advice = (f"use backend='serial': one process steps {serial:,.0f} env steps/s, the best multiprocessing "
                  f"set-up {mp_best:,.0f}. Each of these envs is too cheap (or this machine has too few cores) "
                  "for the cost of waking workers to pay off; multiprocessing needs heavier envs or more CPUs.")
    else:
        advice = (f"use backend='multiprocessing', num_workers={best['num_workers']}, "
                  f"batch_size={best['batch_size']}: {best['steps_per_second'] / serial:.2f}x serial.")
    if verbose:
        print(advice)
    return AutotuneResult(best["backend"], num_envs, best["num_workers"], best["batch_size"],
                          best["steps_per_second"], results, advice)
