"""Trainers by algorithm name: a new run (`make_trainer`) or a saved one continued (`resume_trainer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from puffer import checkpoint
from puffer.train import registry
from puffer.train.trainer import Trainer


def make_trainer(env: Any = "cartpole", algo: str = "ppo", backend: str | None = None, config: Any = None,
                 **config_overrides: Any) -> Trainer:
    """A trainer of the algorithm registered as `algo`; `config_overrides` set fields of its config."""
    return Trainer(env, backend=backend, config=config, algorithm=registry.get(algo), **config_overrides)


def resume_trainer(path: str | Path, backend: str | None = None, env: Any = None, **config_overrides: Any) -> Trainer:
    """The run saved at `path` (a run or checkpoint directory, or hf://user/name) rebuilt and restored.

    The algorithm, config and env come from the checkpoint's manifest, on `backend` (default: the one
    it was saved on); `config_overrides` replace config fields (e.g. `total_steps=1_000_000`). Any
    training backend resumes a checkpoint of any other.
    """
    from puffer.hub import locate

    manifest = checkpoint.read_manifest(locate(path))
    algorithm = registry.get(manifest["algo"])
    config = algorithm.config.from_dict({**manifest["config"], **config_overrides})
    trainer = Trainer(env if env is not None else manifest["env"], backend=backend or manifest.get("backend"),
                      config=config, algorithm=algorithm)
    try:
        trainer.restore(manifest["path"])
    except BaseException:
        trainer.close()
        raise
    return trainer
