"""Algorithms written once against the backend interface: PPO (with GAE or live V-trace)."""

from puffer.algos.config import PPOConfig
from puffer.algos.trainer import PPO

__all__ = ["PPO", "PPOConfig"]
