"""Return and episode cost over training on Hazard: PPO vs PPO-Lagrangian (gradient and PID), same seeds.

Every run trains from the same seed on the same backend with its defaults (16 envs), the two
PPO-Lagrangian runs under one cost limit; per update it records the mean return and episode cost
of the last 20 finished episodes. Prints a table (final return and cost, and the overshoot: the
largest excess of that cost over the limit after it first came down to the limit), writes the
curves as JSON and plots them (matplotlib, `pip install puffer-rl[bench]`).

    python benchmarks/safe_hazard.py                       # torch, seeds 0 1 2, 150k steps, limit 2
    python benchmarks/safe_hazard.py --backend jax --seeds 0 --steps 100000 --out /tmp/safe
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import puffer.algos  # noqa: F401  (registers ppo_lagrangian)
from puffer.algos import PPO, PPOLagrangian

RUNS = {"PPO": (PPO, {}), "PPO-Lag gradient": (PPOLagrangian, {"lagrangian": "gradient"}),
        "PPO-Lag PID": (PPOLagrangian, {"lagrangian": "pid"})}


def train(name: str, backend: str, seed: int, steps: int, limit: float, envs: int) -> dict:
    """One run: per-update global step, return, episode cost and multiplier."""
    cls, kw = RUNS[name]
    if cls is PPOLagrangian:
        kw = {**kw, "cost_limit": limit}
    trainer = cls("hazard", backend=backend, seed=seed, num_envs=envs, total_steps=steps, **kw)
    t0 = time.perf_counter()
    try:
        trainer.train(steps)
    finally:
        trainer.close()
    rows = [h for h in trainer.history if "episode_cost" in h]
    return {"step": [h["global_step"] for h in rows], "return": [h["episode_return"] for h in rows],
            "cost": [h["episode_cost"] for h in rows], "lagrangian": [h.get("lagrangian", 0.0) for h in rows],
            "seconds": time.perf_counter() - t0}


def crossing(cost: list[float], limit: float) -> int | None:
    """Index of the first update whose episode cost is at or under the limit (None if none is)."""
    return next((i for i, c in enumerate(cost) if c <= limit), None)


def overshoot(cost: list[float], limit: float, smooth: int = 1) -> float:
    """Largest excess over the limit after the first crossing, of the cost averaged over `smooth` updates.

    With smooth = 1 this is the excess of a 20-episode mean, whose noise alone is ~1 on Hazard at a
    limit of 2; smooth = 5 (about 100 episodes) measures the oscillation rather than that noise.
    """
    c = np.convolve(np.asarray(cost, np.float64), np.ones(smooth) / smooth, mode="valid")
    i = crossing(list(c), limit)
    return float("nan") if i is None else max(0.0, float((c[i:] - limit).max()))


def tracking_error(cost: list[float], limit: float) -> float:
    """Mean |episode cost - limit| after the first crossing."""
    i = crossing(cost, limit)
    return float("nan") if i is None else float(np.mean(np.abs(np.asarray(cost[i:]) - limit)))


def plot(results: dict, limit: float, path: Path) -> None:
    """Mean (line) and range over seeds (band) of return and episode cost against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in results.items():
        n = min(len(r["step"]) for r in runs)
        step = np.asarray(runs[0]["step"][:n])
        for ax, key in zip(axes, ("return", "cost")):
            ys = np.asarray([r[key][:n] for r in runs])
            ax.plot(step, ys.mean(axis=0), label=name)
            ax.fill_between(step, ys.min(axis=0), ys.max(axis=0), alpha=0.2)
    axes[1].axhline(limit, color="k", linestyle="--", label=f"cost limit {limit:g}")
    axes[0].set(xlabel="env steps", ylabel="episode return (last 20 episodes)", title="Hazard: return")
    axes[1].set(xlabel="env steps", ylabel="episode cost (last 20 episodes)", title="Hazard: episode cost")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main() -> None:
    """Run every contender on every seed, print the table, write JSON and the plot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=150_000)
    ap.add_argument("--limit", type=float, default=2.0)
    ap.add_argument("--envs", type=int, default=16)
    ap.add_argument("--out", default="benchmarks/safe_hazard", help="path prefix of the .json and .png written")
    args = ap.parse_args()
    results = {name: [train(name, args.backend, s, args.steps, args.limit, args.envs) for s in args.seeds]
               for name in RUNS}
    print(f"Hazard, {args.backend}, {args.envs} envs, {args.steps} steps, seeds {args.seeds}, limit {args.limit:g}")
    print("| run | final return | final episode cost | first at limit (step) | overshoot | overshoot, 5-update mean "
          "| mean abs(cost - limit) after | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for name, runs in results.items():
        first = [crossing(r["cost"], args.limit) for r in runs]
        cols = {"ret": [r["return"][-1] for r in runs], "cost": [r["cost"][-1] for r in runs],
                "first": [float("nan") if i is None else r["step"][i] for i, r in zip(first, runs)],
                "over": [overshoot(r["cost"], args.limit) for r in runs],
                "over5": [overshoot(r["cost"], args.limit, 5) for r in runs],
                "track": [tracking_error(r["cost"], args.limit) for r in runs]}
        summary[name] = {k: float(np.mean(v)) for k, v in cols.items()}
        cells = " | ".join(f"{np.mean(v):.2f} ({', '.join(f'{x:.2f}' for x in v)})" if k != "first" else
                           f"{np.mean(v):.0f}" for k, v in cols.items())
        print(f"| {name} | {cells} | {sum(r['seconds'] for r in runs):.0f} |")
    pid, grad = summary["PPO-Lag PID"], summary["PPO-Lag gradient"]
    for key, what in (("over", "overshoot"), ("over5", "overshoot (5-update mean)")):
        verdict = "met" if pid[key] < grad[key] else "NOT met"
        print(f"target PID {what} < gradient's: {pid[key]:.2f} vs {grad[key]:.2f}: {verdict}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".json.tmp")
    tmp.write_text(json.dumps({"args": vars(args), "results": results}))
    tmp.replace(out.with_suffix(".json"))
    plot(results, args.limit, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
