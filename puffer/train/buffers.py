"""Host-side rollout storage and minibatch packing (numpy only).

Data crosses into the backend once per rollout step (one packed input array) and once per
minibatch (one packed `[S, L, F]` array); `unpack` slices it back into named fields inside the
compiled step, so every backend pays exactly one transfer per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from puffer.backends.base import Array, Backend


@dataclass
class Layout:
    """Column ranges of named fields inside a packed float32 array's last axis."""

    slices: dict[str, tuple[int, int, bool]] = field(default_factory=dict)  # name -> (start, stop, squeeze)
    width: int = 0

    def add(self, name: str, width: int, squeeze: bool = False) -> None:
        """Append a field of `width` columns; `squeeze` drops the axis when unpacked (width 1)."""
        self.slices[name] = (self.width, self.width + width, squeeze)
        self.width += width


def pack(layout: Layout, fields: dict[str, np.ndarray], out: np.ndarray) -> np.ndarray:
    """Write `fields` (each `[..., width]` or `[...]` for squeezed ones) into `out` `[..., layout.width]`."""
    for name, (a, b, squeeze) in layout.slices.items():
        v = fields[name]
        out[..., a:b] = v[..., None] if squeeze else v
    return out


def unpack(be: Backend, layout: Layout, packed: Array) -> dict[str, Array]:
    """Named views of a packed backend array (inside compiled code: static slices only)."""
    return {name: packed[..., a] if squeeze else packed[..., a:b] for name, (a, b, squeeze) in layout.slices.items()}


class RolloutBuffer:
    """One rollout: `[N, T]` per-row sequences, one array per declared field, written as the envs step.

    `fields` maps a name to its trailing width (0: one number per step). Every buffer has the step
    fields the machinery writes (`obs`, `actions`, `rewards`, `dones`, `starts`, `mask`); an
    algorithm adds the outputs its act function records (`logp`, `values`, ...), env channels
    (`cost`, ...) and the fields its advantage step fills (`adv`, `returns`, ...). `next[name]`
    holds, per row, the bootstrap value of each value output after the rollout's last step.
    """

    def __init__(self, num_rows: int, horizon: int, fields: dict[str, int], bootstrapped: tuple[str, ...] = ()):
        self.shape = (num_rows, horizon)
        self.fields = dict(fields)
        self.data = {name: np.zeros((num_rows, horizon, w) if w else (num_rows, horizon), np.float32)
                     for name, w in self.fields.items()}
        self.data["mask"][...] = 1.0
        self.next = {name: np.zeros(num_rows, np.float32) for name in bootstrapped}

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["data"][name]
        except KeyError:
            raise AttributeError(f"rollout buffer has no field {name!r}") from None

    def sequences(self, length: int) -> dict[str, np.ndarray]:
        """Every field reshaped to `[N * T / length, length, ...]` segments (views), plus `next_<v>` per segment."""
        n, t = self.shape
        s = n * t // length
        out = {name: v.reshape(s, length, *v.shape[2:]) for name, v in self.data.items()}
        # each segment bootstraps from the stored value after it, or the rollout's next value at the end
        for name, last in self.next.items():
            nxt = np.concatenate([self.data[name][:, 1:], last[:, None]], axis=1)
            out[f"next_{name}"] = nxt[:, length - 1::length].reshape(s)
        return out


def episode_stats(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of every numeric key over finished episodes."""
    if not episodes:
        return {}
    keys = {k for e in episodes for k, v in e.items() if isinstance(v, (int, float, np.number)) and k != "agent"}
    return {k: float(np.mean([e[k] for e in episodes if k in e])) for k in sorted(keys)}
