"""What the trainer's one loop asks of every data source's collector, with the defaults most sources keep."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Collector(abc.ABC):
    """The protocol of a collector: `collect()` a batch, `update(hyper)` on it, plus checkpoint hooks.

    A collector is made by the trainer as `Collector(run, source)`; it reads the run's backend,
    env, policy, params and rng, and advances `run.global_step` (env or gradient steps). The trainer
    compiles the algorithm's update for its `layout` (None: minibatches go as dicts of named arrays)
    and `bootstrapped` value outputs.
    """

    layout: Any = None
    """`puffer.train.buffers.Layout` of the packed minibatches the collector sends, or None."""
    bootstrapped: tuple[str, ...] = ()
    """Value outputs whose next values reach the update as `mb["next_<name>"]`."""

    return_window = 20
    """Finished episodes the progress line's mean return (and `stop_at_return`) average over."""
    whole_update = False
    """Whether an update is one compiled program (acting sources on backends that compile loops)."""

    def start(self) -> None:
        """A `train` call begins."""

    @abc.abstractmethod
    def collect(self) -> Any:
        """One collection; returns the batch the algorithm's hooks see."""

    @abc.abstractmethod
    def update(self, hyper: dict[str, Any]) -> dict[str, float]:
        """The compiled update over the collected batch; returns mean statistics."""

    def after_update(self) -> dict[str, float]:
        """Work after an update (e.g. evaluation episodes); returns statistics."""
        return {}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Arrays a checkpoint keeps whatever the env can save (e.g. a replay's contents)."""
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what `state_arrays` saved."""

    def resume_arrays(self) -> dict[str, np.ndarray]:
        """What the next collection continues from (saved with the env's state, for an exact resume)."""
        return {}

    def fits(self, resume: dict[str, np.ndarray], path: Any) -> bool:
        """Whether arrays saved by `resume_arrays` fit this collector."""
        return True

    def load_resume_arrays(self, resume: dict[str, np.ndarray], path: Any) -> None:
        """Continue from arrays saved by `resume_arrays`."""

    def started(self) -> bool:
        """True once the env has been reset (only then is there an env state to save)."""
        return False
