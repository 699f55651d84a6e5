"""Minimal pytrees: nested dicts, lists and tuples of arrays, flattened in a fixed order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Leaf = Any


def flatten(tree: Any) -> tuple[list[Leaf], Any]:
    """Return the leaves of `tree` in a deterministic order and a spec to rebuild it."""
    leaves: list[Leaf] = []

    def go(t):
        if isinstance(t, dict):
            keys = sorted(t)
            return ("d", tuple(keys), tuple(go(t[k]) for k in keys))
        if isinstance(t, (list, tuple)):
            return ("l" if isinstance(t, list) else "t", len(t), tuple(go(x) for x in t))
        if t is None:
            return ("n",)
        leaves.append(t)
        return ("*",)

    spec = go(tree)
    return leaves, spec


def unflatten(spec: Any, leaves: list[Leaf]) -> Any:
    """Rebuild the tree described by `spec` from `leaves` (the inverse of `flatten`)."""
    it = iter(leaves)

    def go(s):
        kind = s[0]
        if kind == "*":
            return next(it)
        if kind == "n":
            return None
        if kind == "d":
            return {k: go(c) for k, c in zip(s[1], s[2])}
        children = [go(c) for c in s[2]]
        return children if kind == "l" else tuple(children)

    return go(spec)


def tree_map(fn: Callable[[Leaf], Leaf], tree: Any) -> Any:
    """Apply `fn` to every leaf of `tree`."""
    leaves, spec = flatten(tree)
    return unflatten(spec, [fn(x) for x in leaves])
