"""PPO learns each built-in task on every training backend, within a fixed env-step budget.

Each case trains from one fixed seed (the configs were checked on three seeds locally) until the mean
return of the last 100 episodes reaches the task's bar (CartPole: the last 20, its asserted metric),
then measures the trained policy on fresh episodes, so a lucky streak during training cannot pass.
"""

from __future__ import annotations

import pytest

import puffer
from puffer.algos import PPO
from puffer.envs import registry

BACKENDS = [b for b in puffer.backends.TRAINING if b in puffer.backends.available()]

# name: (config overrides, step budget, metric, threshold, deterministic evaluation)
TASKS = {
    "cartpole": ({}, 300_000, "train_return", 475.0, True),
    "memory": ({"policy": "lstm", "num_envs": 64, "rollout_len": 32, "bptt_horizon": 16, "minibatch_size": 512},
               100_000, "success", 0.95, True),
    "continuous": ({"ent_coef": 0.0, "learning_rate": 0.01}, 100_000, "episode_return", 0.8, True),
    "spaces": ({}, 60_000, "episode_return", 0.9, True),
    "bandit": ({}, 30_000, "success", 0.98, True),
    "squared": ({}, 60_000, "episode_return", 0.95, True),
    "stochastic": ({}, 40_000, "episode_return", 0.88, False),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", list(TASKS))
def test_ppo_learns(task: str, backend: str) -> None:
    overrides, budget, metric, threshold, deterministic = TASKS[task]
    env_cls = registry()[task]
    trainer = PPO(task, backend=backend, seed=0, total_steps=budget, **overrides)
    try:
        stop = max(env_cls.solved_return, threshold if metric == "episode_return" else 0.0)
        if metric == "train_return":
            trainer.train(budget, stop_at_return=stop)
        else:
            # stop on the last 100 episodes, not 20: a lucky streak of 20 once stopped squared at 0.94 on jax
            trainer.train(budget, callback=lambda t, s: len(t.episodes) >= 100 and t.mean_return(100) >= stop)
        if metric == "train_return":
            assert len(trainer.episodes) >= 20
            assert trainer.mean_return(20) >= threshold, (
                f"{task} on {backend}: mean return {trainer.mean_return(20):.1f} after {trainer.global_step} steps")
            return
        score = trainer.evaluate(episodes=500, deterministic=deterministic, key=metric)
    finally:
        trainer.close()
    steps = trainer.global_step
    assert score >= threshold, f"{task} on {backend}: {metric} {score:.3f} < {threshold} after {steps} steps"
