"""Algorithms, one module each, on the shared machinery of `puffer.train`: PPO (with GAE or live V-trace) and GRPO."""

from puffer.algos.grpo import GRPO, GRPOConfig
from puffer.algos.ppo import PPO, PPOConfig

__all__ = ["GRPO", "GRPOConfig", "PPO", "PPOConfig"]
