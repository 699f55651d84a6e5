"""Offline CartPole: what return conditioning adds (DT vs BC vs the dataset), and updates/s on every backend.

    python benchmarks/offline_cartpole.py [--steps 1000] [--backends torch,jax,tinygrad] [--returns-backend torch]

The dataset is made here from three scripted policies of clearly different quality (10 episodes of
a good controller, 40 of a mediocre one, 100 random: ~15k steps), as in
tests/test_decision_transformer.py. On `--returns-backend` a DT and a BC model train for `--steps`
gradient steps (context 10, embedding 32, 2 layers, batch 32); the DT is evaluated at three targets
and BC once (10 deterministic episodes each). Every backend in `--backends` then times
`--time-steps` gradient steps of the same DT after a warm-up (compilation) update.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import puffer  # noqa: E402
import puffer.algos  # noqa: E402,F401
from puffer import datasets, spaces  # noqa: E402
from puffer.algos.decision_transformer import BC, DT  # noqa: E402

# the learning test's lean config (tests/test_decision_transformer.py)
SMALL = {"context_len": 10, "embed_dim": 32, "num_layers": 1, "batch_size": 32, "learning_rate": 3e-3,
         "warmup_steps": 50, "eval_every": 0, "eval_episodes": 1}
TARGETS = (500.0, 150.0, 20.0)


def make_dataset(path: str, seed: int = 0) -> datasets.Dataset:
    """Good (10), mediocre (40) and random (100) CartPole episodes."""
    def good(o):
        return (o[:, 2] + 0.5 * o[:, 3] > 0).astype(np.int64)

    def medium(o):
        return (o[:, 3] > 0).astype(np.int64)

    rand = datasets.random_policy(spaces.Discrete(2), np.random.default_rng(seed + 7))
    parts = [datasets.collect("cartpole", f, n, seed=seed + i) for i, (f, n) in
             enumerate(zip((good, medium, rand), (10, 40, 100)))]
    ds = datasets.Dataset([e for p in parts for e in p.episodes], parts[0].observation_space,
                          parts[0].action_space, "cartpole")
    datasets.save(path, ds)
    return datasets.load(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--time-steps", type=int, default=100)
    ap.add_argument("--backends", default="torch,jax,tinygrad")
    ap.add_argument("--returns-backend", default="torch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_dataset(os.path.join(tmp, "cartpole-mixed-v0"), args.seed)
        s = ds.stats()
        print(f"dataset: {ds.describe()}")
        rows = [("dataset best", s["return_max"]), ("dataset mean", s["return_mean"])]
        for cls in (DT, BC):
            t = cls("cartpole", backend=args.returns_backend, dataset=str(ds.path), total_steps=args.steps,
                    steps_per_update=min(200, args.steps), seed=args.seed, **SMALL)
            t0 = time.perf_counter()
            t.train()
            took = time.perf_counter() - t0
            if cls is DT:
                for target in TARGETS:
                    rows.append((f"DT target {target:.0f}", t.evaluate_target(target, episodes=10)))
            else:
                rows.append(("BC", t.evaluate(10)))
            print(f"{cls.__name__} on {args.returns_backend}: {args.steps} steps in {took:.1f}s", flush=True)
            t.close()
        print("\n| policy | mean return (10 episodes) |\n|---|---|")
        for name, r in rows:
            print(f"| {name} | {r:.1f} |")
        speed = []
        for backend in args.backends.split(","):
            if backend not in puffer.backends.available():
                print(f"{backend}: not installed")
                continue
            t = DT("cartpole", backend=backend, dataset=str(ds.path), total_steps=10**9,
                   steps_per_update=args.time_steps, seed=args.seed, **SMALL)
            t.plan.epochs = 2
            t.update_offline()  # compiles
            t.plan.epochs = args.time_steps
            t0 = time.perf_counter()
            t.update_offline()
            speed.append((backend, args.time_steps / (time.perf_counter() - t0)))
            t.close()
        print("\n| backend | DT updates/s (batch 32 x 10 steps) |\n|---|---|")
        for backend, ups in speed:
            print(f"| {backend} | {ups:.1f} |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
