"""Built-in native environments: numpy-vectorized batches of envs (see `puffer.envs.base.NativeEnv`).

`registry()` maps names to classes, `describe()` gives one line per env, `make(name, num_envs)`
builds one. `puffer.envs.adapters` wraps a native env as a gymnasium `Env` or PettingZoo
`ParallelEnv`.
"""

from __future__ import annotations

from typing import Any

from puffer.envs.base import NativeEnv
from puffer.envs.cartpole import CartPole
from puffer.envs.hazard import Hazard
from puffer.envs.landmarks import Landmarks
from puffer.envs.ocean import Bandit, Continuous, Memory, Password, Spaces, Squared, Stochastic
from puffer.envs.sequence import Sequence

__all__ = [
    "NativeEnv", "CartPole", "Bandit", "Memory", "Password", "Squared", "Stochastic", "Spaces", "Continuous",
    "Landmarks", "Hazard", "Sequence", "registry", "describe", "make",
]

_REGISTRY: dict[str, type[NativeEnv]] = {
    "cartpole": CartPole,
    "bandit": Bandit,
    "memory": Memory,
    "password": Password,
    "squared": Squared,
    "stochastic": Stochastic,
    "spaces": Spaces,
    "continuous": Continuous,
    "landmarks": Landmarks,
    "hazard": Hazard,
    "sequence": Sequence,
}


def registry() -> dict[str, type[NativeEnv]]:
    """Names of the built-in native envs mapped to their classes (a fresh dict, safe to modify)."""
    return dict(_REGISTRY)


def describe() -> list[str]:
    """One line per built-in env: name, summary, agents, spaces and the solved return."""
    lines = []
    for name, cls in _REGISTRY.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0].rstrip(".")
        agents = f", {cls.agents_per_env} agents" if cls.agents_per_env > 1 else ""
        lines.append(
            f"{name:<11} {summary}{agents}. obs {_short(cls.single_observation_space)}, "
            f"action {_short(cls.single_action_space)}, solved at {cls.solved_return:g}"
        )
    return lines


def _short(space: Any) -> str:
    """A compact space description for listings: `Box(4,) float32`, `Discrete(2)`, `Dict(image: ...)`."""
    from puffer.spaces import Box, Dict

    if isinstance(space, Box):
        return f"Box{space.shape} {space.dtype}"
    if isinstance(space, Dict):
        return "Dict(" + ", ".join(f"{k}: {_short(s)}" for k, s in space.items()) + ")"
    return repr(space)


def make(name: str, num_envs: int = 1, seed: int | None = None, **kwargs: Any) -> NativeEnv:
    """Build the built-in env called `name` with `num_envs` envs."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown built-in env {name!r}; known: {', '.join(_REGISTRY)}") from None
    return cls(num_envs, seed=seed, **kwargs)
