"""Training loggers: TensorBoard event files (no torch or TensorFlow needed) and Weights & Biases.

    logger = make_logger("tensorboard", run_dir, config=cfg.to_dict())
    trainer.train(callback=lambda t, stats: logger.log(stats, t.global_step))
    logger.close()

Every numeric statistic of a training update is logged against the env step: the episode return
and length, the losses, approximate KL, clip fraction, explained variance, steps per second and
learning rate under the tags of `TAGS`, anything else (env extras such as `success`) under
`charts/<name>`. Non-finite values (a return before the first episode ends) are skipped.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from puffer.errors import PufferError

TAGS = {
    "episode_return": "charts/episode_return",
    "episode_length": "charts/episode_length",
    "sps": "charts/sps",
    "learning_rate": "charts/learning_rate",
    "loss": "losses/loss",
    "policy_loss": "losses/policy_loss",
    "value_loss": "losses/value_loss",
    "entropy": "losses/entropy",
    "approx_kl": "losses/approx_kl",
    "clipfrac": "losses/clipfrac",
    "explained_variance": "losses/explained_variance",
    "grad_norm": "losses/grad_norm",
}
# Bookkeeping, not learning curves: the step is the x axis; timings are covered by sps.
SKIP = {"global_step", "rollout_time", "update_time", "mean_return_20"}
KINDS = ("tensorboard", "wandb", "none")


class Logger(Protocol):
    """Receives the statistics of every training update."""

    def log(self, stats: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def scalars(stats: dict[str, Any]) -> dict[str, float]:
    """The finite numeric statistics of one update, keyed by their logging tag."""
    out = {}
    for key, value in stats.items():
        if key in SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[TAGS.get(key, f"charts/{key}")] = float(value)
    return out


class NullLogger:
    """Logs nothing (`--log none`)."""

    def log(self, stats: dict[str, Any], step: int) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


class TensorBoardLogger:
    """Scalars into a TensorBoard event file in `logdir`, written with tensorboard's own writer (no torch)."""

    def __init__(self, logdir: str | Path):
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError as e:
            raise PufferError("--log tensorboard needs the tensorboard package: pip install 'puffer-rl[log]'") from e
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.logdir))

    def log(self, stats: dict[str, Any], step: int) -> None:
        """Write one event holding every scalar of `stats` at `step`."""
        values = [self._summary.Value(tag=tag, simple_value=v) for tag, v in scalars(stats).items()]
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=self._summary(value=values)))

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


class WandbLogger:
    """Scalars into a Weights & Biases run, offline unless WANDB_MODE says otherwise (`wandb sync` uploads later).

    The run id is kept in `<run_dir>/wandb_id`, so a resumed training continues the same W&B run.
    """

    def __init__(self, run_dir: str | Path, config: dict[str, Any] | None = None, project: str = "puffer",
                 name: str | None = None):
        try:
            import wandb
        except ImportError as e:
            raise PufferError("--log wandb needs the wandb package: pip install 'puffer-rl[log]'") from e
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", project), dir=str(run_dir), id=run_id,
                              name=name or run_dir.name, config=config or {}, resume="allow",
                              mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new")
        self.dir = Path(self.run.dir).parent

    def log(self, stats: dict[str, Any], step: int) -> None:
        """Log every scalar of `stats` at env step `step`."""
        self.run.log({**scalars(stats), "global_step": int(step)}, step=int(step))

    def close(self) -> None:
        """Finish the run (writes the offline run directory completely)."""
        self.run.finish()


def make_logger(kind: str, run_dir: str | Path, config: dict[str, Any] | None = None,
                name: str | None = None) -> Logger:
    """A logger by name: "tensorboard" (event files in `run_dir`), "wandb" (`run_dir/wandb`) or "none"."""
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir)
    if kind == "wandb":
        return WandbLogger(run_dir, config, name=name)
    if kind == "none":
        return NullLogger()
    raise PufferError(f"unknown logger {kind!r}; choose one of {', '.join(KINDS)}")
