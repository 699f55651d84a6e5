"""Algorithms, one module each, on the shared machinery of `puffer.train`: PPO (with GAE or live V-trace), MAPPO."""

from puffer.algos.mappo import MAPPO, MAPPOConfig
from puffer.algos.ppo import PPO, PPOConfig

__all__ = ["PPO", "PPOConfig", "MAPPO", "MAPPOConfig"]
