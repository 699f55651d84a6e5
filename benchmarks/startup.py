"""Start-up cost per backend: framework import, then a short run's wall-clock cold and with warm caches.

Each measurement is a fresh process timed from its start. The first run of a config starts with an
empty compilation cache (a temporary JAX cache directory; a temporary tinygrad cache database), the
second reuses what the first wrote, so the ratio is what the persistent caches save.

    python benchmarks/startup.py                       # torch, jax, tinygrad
    python benchmarks/startup.py --backends jax --steps 4096
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

IMPORTS = {"torch": "import torch", "jax": "import jax, jax.numpy", "tinygrad": "import tinygrad"}
RUN = ("from puffer.algos import PPO\n"
       "t = PPO('cartpole', backend={backend!r}, total_steps={steps})\n"
       "t.train(); t.close()\n")


def timed(code: str, env: dict[str, str]) -> float:
    """Seconds from process start to exit of `python -c code`."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["torch", "jax", "tinygrad"])
    parser.add_argument("--steps", type=int, default=4096)
    args = parser.parse_args()
    bare = timed("pass", dict(os.environ))
    print(f"python start-up: {bare:.2f} s")
    print(f"{'backend':10s} {'import s':>9s} {'first run s':>12s} {'second run s':>13s} {'second/first':>13s}")
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix="puffer-startup-") as cache:
            env = {**os.environ, "PUFFER_JAX_CACHE": os.path.join(cache, "jax"),
                   "CACHEDB": os.path.join(cache, "tinygrad.db")}
            imp = timed(IMPORTS[backend], env) - bare
            first = timed(RUN.format(backend=backend, steps=args.steps), env)
            second = timed(RUN.format(backend=backend, steps=args.steps), env)
        print(f"{backend:10s} {imp:9.2f} {first:12.2f} {second:13.2f} {second / first:13.2f}")


if __name__ == "__main__":
    main()
