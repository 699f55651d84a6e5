"""Algorithms, one module each, on the shared machinery of `puffer.train`: PPO (with GAE or live V-trace),
PPO-Lagrangian (safe RL under a per-episode cost limit), MAPPO (decentralized actors, centralized critic),
GRPO (group-relative policy optimization, no critic), the Decision Transformer and behaviour cloning
(offline, from Minari datasets) and DreamerV3 (a world model, behaviour learned in imagination)."""

from puffer.algos.decision_transformer import BC, DT, BCConfig, DTConfig
from puffer.algos.dreamer import Dreamer, DreamerConfig
from puffer.algos.grpo import GRPO, GRPOConfig
from puffer.algos.mappo import MAPPO, MAPPOConfig
from puffer.algos.ppo import PPO, PPOConfig
from puffer.algos.ppo_lagrangian import PPOLagrangian, PPOLagrangianConfig

__all__ = ["BC", "BCConfig", "DT", "DTConfig", "Dreamer", "DreamerConfig", "GRPO", "GRPOConfig", "MAPPO",
           "MAPPOConfig", "PPO", "PPOConfig", "PPOLagrangian", "PPOLagrangianConfig"]
