"""Algorithms, one module each, on the shared machinery of `puffer.train`: PPO (with GAE or live V-trace) and
PPO-Lagrangian (safe RL under a per-episode cost limit)."""

from puffer.algos.ppo import PPO, PPOConfig
from puffer.algos.ppo_lagrangian import PPOLagrangian, PPOLagrangianConfig

__all__ = ["PPO", "PPOConfig", "PPOLagrangian", "PPOLagrangianConfig"]
