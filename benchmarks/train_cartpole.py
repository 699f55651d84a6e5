"""Wall-clock to solve CartPole (mean return >= 475 over the last 20 episodes), puffer vs Stable-Baselines3.

Every contender runs in its own fresh process, timed by this script from process start (imports,
start-up and compilation included) to the moment the threshold is reached. Also reports training
throughput with 1024 envs. Prints one line per contender and the ratios to SB3.

    python benchmarks/train_cartpole.py                  # all installed backends + SB3
    python benchmarks/train_cartpole.py --backends jax --seeds 0 1 2

SB3 (an optional benchmark dependency: pip install stable-baselines3) runs PPO with its default
CartPole hyperparameters (rl-zoo's are tuned; the issue asks for defaults) on 8 envs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

THRESHOLD = 475.0


def child_puffer(backend: str, seed: int, budget: int, num_envs: int | None, steps_only: bool) -> dict:
    import puffer
    from puffer.algos import PPO

    # with 1024 envs: short rollouts and a higher learning rate, a config that still solves CartPole
    kw = ({"num_envs": num_envs, "rollout_len": 16, "minibatch_size": num_envs * 4, "learning_rate": 5e-3}
          if num_envs else {})
    trainer = PPO("cartpole", backend=backend, seed=seed, total_steps=budget, **kw)
    t0 = time.perf_counter()
    trainer.train(budget, stop_at_return=None if steps_only else THRESHOLD)
    elapsed = time.perf_counter() - t0
    out = {"steps": trainer.global_step, "solved": bool(trainer.mean_return(20) >= THRESHOLD),
           "sps": trainer.global_step / elapsed, "version": puffer.__version__}
    trainer.close()
    return out


def child_sb3(seed: int, budget: int) -> dict:
    import numpy as np
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopAt(BaseCallback):
        def _on_step(self) -> bool:
            eps = list(self.model.ep_info_buffer)[-20:]
            return not (len(eps) >= 20 and np.mean([e["r"] for e in eps]) >= THRESHOLD)

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(budget, callback=StopAt())
    elapsed = time.perf_counter() - t0
    eps = list(model.ep_info_buffer)[-20:]
    return {"steps": model.num_timesteps, "solved": bool(eps) and bool(np.mean([e["r"] for e in eps]) >= THRESHOLD),
            "sps": model.num_timesteps / elapsed}


def run_child(args: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed", "wall": wall}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="*", default=None)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=500_000)
    p.add_argument("--throughput-steps", type=int, default=1_000_000)
    p.add_argument("--no-sb3", action="store_true")
    p.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child is not None:
        kind, *rest = a.child
        if kind == "sb3":
            res = child_sb3(int(rest[0]), int(rest[1]))
        else:
            backend, seed, budget, envs, steps_only = rest
            res = child_puffer(backend, int(seed), int(budget), int(envs) or None, steps_only == "1")
        print(json.dumps(res))
        return

    import puffer

    backends = a.backends or [b for b in puffer.backends.TRAINING if b in puffer.backends.available()]
    rows = {}
    if not a.no_sb3:
        rows["sb3"] = [run_child(["sb3", str(s), str(a.budget)], 900) for s in a.seeds]
    for b in backends:
        rows[f"puffer-{b}"] = [run_child(["puffer", b, str(s), str(a.budget), "0", "0"], 900) for s in a.seeds]
    print(f"CartPole to mean return {THRESHOLD:g} (last 20 episodes), wall-clock from process start; seeds {a.seeds}")
    medians = {}
    for name, runs in rows.items():
        ok = [r for r in runs if "error" not in r and r["solved"]]
        walls = [r["wall"] for r in ok]
        medians[name] = statistics.median(walls) if walls else float("nan")
        detail = ", ".join(f"{r['wall']:.1f}s/{r['steps'] // 1000}k" if "error" not in r else f"error: {r['error']}"
                           for r in runs)
        sps = statistics.median([r["sps"] for r in runs if "error" not in r] or [float("nan")])
        print(f"{name:16s} solved {len(ok)}/{len(runs)}  median wall {medians[name]:7.2f} s  train sps {sps:9.0f}"
              f"  runs: {detail}")
    for b in backends:
        r = run_child(["puffer", b, "0", str(a.throughput_steps), "1024", "0"], 900)
        sps = r.get("sps", float("nan"))
        note = f" ({r['error']})" if "error" in r else f", reached {THRESHOLD:g}: {r['solved']}"
        print(f"throughput puffer-{b} 1024 envs: {sps:,.0f} env steps/s over {r.get('steps', 0):,} steps{note}")
    if "sb3" in medians:
        for name, m in medians.items():
            if name != "sb3":
                print(f"ratio wall {name} / sb3: {m / medians['sb3']:.3f}")


if __name__ == "__main__":
    main()
