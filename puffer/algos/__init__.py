"""Algorithms, one module each, on the shared machinery of `puffer.train`: PPO (with GAE or live V-trace)."""

from puffer.algos.ppo import PPO, PPOConfig

__all__ = ["PPO", "PPOConfig"]
