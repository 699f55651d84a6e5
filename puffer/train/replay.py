"""Sequence replay: a data source for algorithms that learn from stored experience (world models, off-policy).

Each env row is its own stream of steps in a ring of `capacity` steps, so a writer may append to
some rows and not others (e.g. an extra entry for an ended episode's true last observation).
`sample` draws sequences of `length` consecutive steps of one row, uniformly over every stored
sequence; a sequence may run across an episode boundary, which the stream marks with the fields the
algorithm declares (`is_first`, for instance) so its model resets there. `state()` /
`load_state()` give plain arrays for checkpoints, so a resumed run keeps its data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from puffer.errors import PufferError


class SequenceReplay:
    """Per-row rings of steps with declared `fields` {name: (shape, dtype)}; uniform sequence sampling."""

    def __init__(self, fields: dict[str, tuple[Sequence[int], Any]], rows: int, capacity: int):
        if rows < 1 or capacity < 1:
            raise PufferError(f"replay needs rows >= 1 and capacity >= 1, got rows={rows}, capacity={capacity}")
        self.rows, self.capacity = int(rows), int(capacity)
        self.data = {k: np.zeros((self.capacity, self.rows, *shape), np.dtype(dt)) for k, (shape, dt) in fields.items()}
        self.pos = np.zeros(self.rows, np.int64)  # next write index of each row
        self.count = np.zeros(self.rows, np.int64)  # stored steps of each row (<= capacity)

    def add(self, step: dict[str, np.ndarray], rows: np.ndarray | None = None) -> None:
        """Append one step to `rows` (all rows when None); `step[k]` is `[len(rows), ...]`."""
        idx = np.arange(self.rows) if rows is None else np.asarray(rows, np.int64)
        if set(step) != set(self.data):
            raise PufferError(f"replay step has fields {sorted(step)}, the replay stores {sorted(self.data)}")
        at = self.pos[idx]
        for k, v in step.items():
            self.data[k][at, idx] = v
        self.pos[idx] = (at + 1) % self.capacity
        self.count[idx] = np.minimum(self.count[idx] + 1, self.capacity)

    def sequences(self, length: int) -> int:
        """How many distinct sequences of `length` steps are stored (0: not enough data yet)."""
        return int(np.maximum(self.count - length + 1, 0).sum())

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
        """`batch` sequences `[length, batch, ...]`, uniform over all stored sequences of `length` steps."""
        per_row = np.maximum(self.count - length + 1, 0)
        total = int(per_row.sum())
        if total == 0:
            raise PufferError(f"replay holds no sequence of {length} steps yet (most per row: {int(self.count.max())})")
        pick = rng.integers(0, total, batch)
        bounds = np.cumsum(per_row)
        row = np.searchsorted(bounds, pick, side="right")
        offset = pick - (bounds[row] - per_row[row])
        oldest = (self.pos[row] - self.count[row]) % self.capacity
        t = (oldest[None, :] + offset[None, :] + np.arange(length)[:, None]) % self.capacity
        return {k: v[t, row[None, :]] for k, v in self.data.items()}

    def state(self) -> dict[str, np.ndarray]:
        """Everything stored, as arrays (for checkpoints)."""
        return {**{f"data/{k}": v for k, v in self.data.items()}, "pos": self.pos.copy(), "count": self.count.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state()` returned; shapes must match this replay's."""
        for k, v in self.data.items():
            got = np.asarray(state[f"data/{k}"])
            if got.shape != v.shape:
                raise PufferError(f"replay checkpoint field {k!r} has shape {got.shape}, this replay {v.shape}")
            v[...] = got
        self.pos[...] = state["pos"]
        self.count[...] = state["count"]
