"""The algorithm-neutral training machinery; `puffer.algos` builds every algorithm on it.

Two layers: `puffer.train` (this package: run config and flags, the trainer with its rollouts,
buffers and minibatching, the loop, checkpoints, evaluation, the registry) knows no algorithm;
each module of `puffer.algos` is one algorithm's config, pure loss and update functions and a
`declare(ctx, cfg) -> Plan` saying what it needs (a small core and one typed data source:
`OnPolicy`, `Episodes`, `Offline` or `Replay`), registered by name.
"""

from puffer.normalize import RunningNorm
from puffer.train.buffers import Layout, RolloutBuffer, episode_stats, pack, unpack
from puffer.train.config import RunConfig, add_config_arguments, config_from_args, field_docs
from puffer.train.evaluate import CheckpointPolicy, PolicyActor, run_episodes
from puffer.train.plan import Algorithm, Episodes, Offline, OnPolicy, Plan, Progress, Replay, RunContext, UpdateInfo
from puffer.train.registry import algorithms, get, names, register
from puffer.train.resume import make_trainer, resume_trainer
from puffer.train.trainer import Trainer, hyper_arrays

__all__ = [
    "Algorithm", "CheckpointPolicy", "Episodes", "Layout", "Offline", "OnPolicy", "Plan", "PolicyActor", "Progress",
    "Replay", "RolloutBuffer", "RunConfig", "RunContext", "RunningNorm", "UpdateInfo",
    "Trainer", "add_config_arguments", "algorithms", "config_from_args", "episode_stats", "field_docs", "get",
    "hyper_arrays", "make_trainer", "names", "pack", "register", "resume_trainer", "run_episodes", "unpack",
]
