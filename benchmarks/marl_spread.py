"""Multi-agent PPO on MPE simple_spread: agent-steps/s and return after a fixed budget.

Contenders, each in its own fresh process (imports and compilation included in the wall clock):
- puffer MAPPO on every installed training backend, on mpe2's `simple_spread_v3` (N=3,
  local_ratio 0.5, 25-step episodes) through `pettingzoo:mpe2.simple_spread_v3`;
- puffer shared-parameter PPO (no central critic) on the same env, torch;
- JaxMARL's own MAPPO (`baselines/MAPPO/mappo_rnn_mpe.py` of a JaxMARL checkout, passed with
  `--jaxmarl-mappo PATH`: the pip package `jaxmarl` holds the envs, not the baselines) on JaxMARL's
  `MPE_simple_spread_v3`, with its published hyperparameters except NUM_ENVS x NUM_STEPS, set to
  puffer's rollout shape so both make the same number of updates in the budget. Its wandb, hydra
  and omegaconf imports are stubbed; returns are read from its logging callback.

The return is the mean per-agent episode return over the last 100 finished episodes (the random
policy gets about -26.8 on mpe2, -26.5 on JaxMARL). Budgets count agent steps (env steps x 3).

    python benchmarks/marl_spread.py --steps 200000
    python benchmarks/marl_spread.py --jaxmarl-mappo ~/src/JaxMARL/baselines/MAPPO/mappo_rnn_mpe.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import types
import warnings

ENV = "pettingzoo:mpe2.simple_spread_v3"
ENV_KWARGS = {"N": 3, "local_ratio": 0.5}
NUM_ENVS, ROLLOUT = 32, 25
AGENTS = 3


def child_puffer(algo: str, backend: str, seed: int, budget: int) -> dict:
    import puffer.algos  # noqa: F401  (registers mappo)
    from puffer.train import Trainer

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    trainer = Trainer(ENV, backend=backend, algorithm=algo, seed=seed, total_steps=budget, num_envs=NUM_ENVS,
                      rollout_len=ROLLOUT, minibatch_size=NUM_ENVS * AGENTS * ROLLOUT // 4, learning_rate=2e-3,
                      env_kwargs=ENV_KWARGS)
    t1 = time.perf_counter()
    trainer.train(budget)
    t2 = time.perf_counter()
    out = {"agent_steps": trainer.global_step, "return": trainer.mean_return(100),
           "agent_sps": trainer.global_step / (t2 - t1), "wall": t2 - t0}
    trainer.close()
    return out


def child_jaxmarl(path: str, seed: int, budget: int) -> dict:
    import numpy as np

    returns: list[float] = []

    def log(metric: dict) -> None:
        # JaxMARL's MPELogWrapper logs rewards times the number of agents: back to per agent
        returns.append(float(np.asarray(metric["returns"])) / AGENTS)

    # the baseline imports these at module level; only wandb.log is used inside training
    sys.modules.setdefault("hydra", types.SimpleNamespace(main=lambda **_: (lambda f: f)))
    sys.modules.setdefault("omegaconf", types.SimpleNamespace(OmegaConf=None))
    sys.modules["wandb"] = types.SimpleNamespace(log=log)
    spec = importlib.util.spec_from_file_location("jaxmarl_mappo_rnn_mpe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import jax

    config = {"LR": 2e-3, "NUM_ENVS": NUM_ENVS, "NUM_STEPS": ROLLOUT, "TOTAL_TIMESTEPS": budget // AGENTS,
              "FC_DIM_SIZE": 128, "GRU_HIDDEN_DIM": 128, "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99,
              "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2, "SCALE_CLIP_EPS": False, "ENT_COEF": 0.01, "VF_COEF": 0.5,
              "MAX_GRAD_NORM": 0.5, "ACTIVATION": "tanh", "ENV_NAME": "MPE_simple_spread_v3",
              "ENV_KWARGS": {}, "ANNEAL_LR": True}
    t0 = time.perf_counter()
    train = jax.jit(module.make_train(config))
    compiled = train.lower(jax.random.PRNGKey(seed)).compile()
    t1 = time.perf_counter()
    out = compiled(jax.random.PRNGKey(seed))
    jax.block_until_ready(out)
    t2 = time.perf_counter()
    steps = config["NUM_UPDATES"] * NUM_ENVS * ROLLOUT * AGENTS
    # each callback logs the mean return of episodes finished in that update's last step (per agent)
    recent = [r for r in returns[-4:] if np.isfinite(r)]
    return {"agent_steps": steps, "return": float(np.mean(recent)) if recent else float("nan"),
            "agent_sps": steps / (t2 - t1), "wall": t2 - t0, "compile": t1 - t0}


def run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc={proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200_000, help="agent steps per contender")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", nargs="*", default=None, help="puffer backends for MAPPO (default: installed)")
    p.add_argument("--jaxmarl-mappo", default=None, help="path of JaxMARL's baselines/MAPPO/mappo_rnn_mpe.py")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "jaxmarl":
            out = child_jaxmarl(rest[0], int(rest[1]), int(rest[2]))
        else:
            out = child_puffer(kind, rest[0], int(rest[1]), int(rest[2]))
        print(json.dumps(out))
        return
    import puffer

    backends = args.backends or [b for b in puffer.backends.TRAINING if b in puffer.backends.available()]
    rows = {f"puffer mappo ({b})": run_child(["mappo", b, str(args.seed), str(args.steps)]) for b in backends}
    rows["puffer shared ppo (torch)"] = run_child(["ppo", "torch", str(args.seed), str(args.steps)])
    if args.jaxmarl_mappo:
        rows["JaxMARL mappo_rnn_mpe (jax)"] = run_child(["jaxmarl", args.jaxmarl_mappo, str(args.seed),
                                                         str(args.steps)])
    else:
        rows["JaxMARL mappo_rnn_mpe (jax)"] = {"error": "not run: pass --jaxmarl-mappo PATH (a JaxMARL checkout)"}
    ref = rows.get("JaxMARL mappo_rnn_mpe (jax)", {})
    print(f"simple_spread N=3, {args.steps} agent steps, seed {args.seed}")
    print(f"{'contender':34s} {'agent steps':>11s} {'return':>8s} {'agent-steps/s':>13s} {'wall s':>7s} "
          f"{'sps / JaxMARL':>13s}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:34s} {r['error']}")
            continue
        ratio = r["agent_sps"] / ref["agent_sps"] if "agent_sps" in ref else float("nan")
        print(f"{name:34s} {r['agent_steps']:11d} {r['return']:8.2f} {r['agent_sps']:13.0f} {r['wall']:7.1f} "
              f"{ratio:13.3f}")


if __name__ == "__main__":
    main()
