"""puffer: reinforcement learning written once, trained on torch, JAX or tinygrad, deployed with onnxruntime."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from puffer import backends
from puffer.backends import backend

_LAZY = {
    "nn", "optim", "spaces", "emulation", "vector", "envs", "algos", "policies", "export", "deploy",
    "checkpoint", "hub", "loggers", "tree", "errors", "train",
}


def make(*args: Any, **kwargs: Any):
    """Create a vectorized environment; see `puffer.vector.make`."""
    from puffer.vector import make as _make

    return _make(*args, **kwargs)


def make_trainer(*args: Any, **kwargs: Any):
    """A trainer of a registered algorithm by name; see `puffer.train.make_trainer`."""
    from puffer.train import make_trainer as _make_trainer

    return _make_trainer(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"puffer.{name}")
    raise AttributeError(f"module 'puffer' has no attribute {name!r}")


__all__ = ["__version__", "backend", "backends", "make", "make_trainer", *sorted(_LAZY)]
