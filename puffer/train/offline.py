"""The collector of the `Offline` source: host-drawn dataset minibatches; the env only evaluates.

Each update is `steps_per_update` compiled steps on minibatches `sample(rng)` draws on the host;
the budget counts gradient steps, and every `eval_every` of them `eval_episodes` fresh episodes
of the current policy give the progress line's returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from puffer.train.buffers import Layout, pack
from puffer.train.collector import Collector
from puffer.train.plan import Offline, Progress


class OfflineCollector(Collector):
    """Minibatches from a dataset, the gradient steps that consume them, and the evaluation runs."""

    def __init__(self, run: Any, source: Offline):
        self.run, self.source, self.be = run, source, run.be
        self.layout = Layout()
        for name, width in source.fields.items():
            self.layout.add(name, width or 1, squeeze=not width)
        self._mb: np.ndarray | None = None
        self._nexts = self.be.asarray(np.zeros((1, 1), np.float32))
        self.return_window = source.eval_episodes
        self._next_eval = 0

    def start(self) -> None:
        """A `train` call begins: the next evaluation is at the next multiple of `eval_every` (or the budget's end)."""
        every = self.source.eval_every or self.run.budget
        self._next_eval = (self.run.global_step // every + 1) * every

    def collect(self) -> Any:
        """Nothing to collect from the env: the dataset is the batch."""
        return self.source

    def _minibatch(self) -> np.ndarray:
        batch = self.source.sample(self.run.rng)
        if self._mb is None:
            name, width = next(iter(self.source.fields.items()))
            lead = batch[name].shape[:-1] if width else batch[name].shape
            self._mb = np.zeros((*lead, self.layout.width), np.float32)
        return pack(self.layout, batch, self._mb)

    def update(self, hyper: dict[str, Any]) -> dict[str, float]:
        """`steps_per_update` gradient steps (fewer at the budget's end); returns mean statistics.

        The per-update `hyper` is recomputed per gradient step, so a warmup advances with every step.
        """
        run, be, keys = self.run, self.be, self.run.plan.stat_keys
        acc = be.asarray(np.zeros(len(keys), np.float32))
        steps = max(min(self.source.steps_per_update, run.budget - run.global_step), 1)
        for i in range(steps):
            if i:
                hyper = run.hyper_at(Progress(run.global_step + i, run.budget))
            run.params, run.opt_state, stats = run.step(run.params, run.opt_state, be.asarray(self._minibatch()),
                                                        self._nexts, (), run.consts, hyper)
            acc = run.accumulate(acc, stats)
        run.global_step += steps
        return dict(zip(keys, (float(x) for x in be.to_numpy(acc) / steps)))

    def after_update(self) -> dict[str, float]:
        """Evaluation episodes when `eval_every` gradient steps have passed (and at the end of the budget)."""
        run, src = self.run, self.source
        if run.global_step >= min(self._next_eval, run.budget):
            self._next_eval += src.eval_every or run.budget
            seed = int(run.rng.integers(2**31))
            run.record_episodes(run.evaluation_episodes(src.eval_episodes, seed))
        return {}
