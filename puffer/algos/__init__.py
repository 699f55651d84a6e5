"""Algorithms, one module each, on the shared machinery of `puffer.train`: PPO (with GAE or live V-trace), the
Decision Transformer and behaviour cloning (offline, from Minari datasets)."""

from puffer.algos.decision_transformer import BC, DT, BCConfig, DTConfig
from puffer.algos.ppo import PPO, PPOConfig

__all__ = ["PPO", "PPOConfig", "DT", "DTConfig", "BC", "BCConfig"]
