"""Env steps and wall-clock to CartPole 400 and to `sequence` 90% success, GRPO vs PPO, in the same run.

Each (task, algorithm, seed) trains in this process with the algorithm's defaults until the target
holds over the last 50 finished episodes (CartPole: mean return >= 400; sequence: mean `success`
>= 0.9) or the budget runs out. Wall-clock runs from building the trainer (compilation included)
to the target. GRPO counts every env step it takes, including the steps rows take after their
episode ended, which it discards. Also prints the update time per 1k env steps (the learner's
compute: GRPO has no critic) and the medians' ratios GRPO / PPO.

    python benchmarks/grpo_vs_ppo.py                       # torch, seeds 0 1 2
    python benchmarks/grpo_vs_ppo.py --backend jax --seeds 0
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

TASKS = {"cartpole": ("episode_return", 400.0, 300_000), "sequence": ("success", 0.9, 100_000)}


def run(task: str, algo: str, backend: str, seed: int) -> dict:
    """Train one run to the task's target; its steps, wall-clock and compute."""
    import puffer
    import puffer.algos  # noqa: F401  (registers the algorithms)

    key, target, budget = TASKS[task]
    t0 = time.perf_counter()
    trainer = puffer.make_trainer(task, algo=algo, backend=backend, seed=seed, total_steps=budget)
    reached = {}

    def done(t, stats) -> bool:
        eps = list(t.episodes)[-50:]
        if len(eps) >= 50 and np.mean([e[key] for e in eps]) >= target:
            reached.update(steps=t.global_step, wall=time.perf_counter() - t0)
            return True
        return False

    try:
        trainer.train(budget, callback=done)
        update = sum(s["update_time"] for s in trainer.history)
        return {"reached": bool(reached), "steps": reached.get("steps", trainer.global_step),
                "wall": reached.get("wall", time.perf_counter() - t0),
                "update_ms_per_1k": 1000 * update / max(trainer.global_step, 1) * 1000}
    finally:
        trainer.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="torch")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--tasks", nargs="*", default=list(TASKS))
    a = p.parse_args()
    print(f"backend {a.backend}, seeds {a.seeds}; target over the last 50 episodes")
    for task in a.tasks:
        key, target, budget = TASKS[task]
        medians = {}
        for algo in ("grpo", "ppo"):
            runs = [run(task, algo, a.backend, s) for s in a.seeds]
            ok = [r for r in runs if r["reached"]]
            med = {k: statistics.median([r[k] for r in ok]) if ok else float("nan") for k in ("steps", "wall")}
            med["update"] = statistics.median([r["update_ms_per_1k"] for r in runs])
            medians[algo] = med
            detail = ", ".join(f"{r['steps'] // 1000}k/{r['wall']:.1f}s" + ("" if r["reached"] else " (not reached)")
                               for r in runs)
            print(f"{task:9s} {key} >= {target:g}  {algo:5s} reached {len(ok)}/{len(runs)}  median "
                  f"{med['steps'] / 1000:6.1f}k steps  {med['wall']:6.1f} s  update {med['update']:6.1f} ms per 1k "
                  f"steps  runs: {detail}")
        g, q = medians["grpo"], medians["ppo"]
        print(f"{task:9s} GRPO / PPO: env steps x{g['steps'] / q['steps']:.2f}, wall-clock x{g['wall'] / q['wall']:.2f}"
              f", update compute per env step x{g['update'] / q['update']:.2f}")


if __name__ == "__main__":
    main()
