"""Algorithms, one module each, on the shared machinery of `puffer.train`: PPO (with GAE or live V-trace),
PPO-Lagrangian (safe RL under a per-episode cost limit) and MAPPO (decentralized actors, centralized critic)."""

from puffer.algos.mappo import MAPPO, MAPPOConfig
from puffer.algos.ppo import PPO, PPOConfig
from puffer.algos.ppo_lagrangian import PPOLagrangian, PPOLagrangianConfig

__all__ = ["MAPPO", "MAPPOConfig", "PPO", "PPOConfig", "PPOLagrangian", "PPOLagrangianConfig"]
