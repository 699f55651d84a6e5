"""Minimal pytrees: nested dicts, lists and tuples of arrays, flattened in a fixed order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Leaf = Any


def _flatten_into(t: Any, leaves: list[Leaf]) -> Any:
    if isinstance(t, dict):
        keys = sorted(t)
        return ("d", tuple(keys), tuple(_flatten_into(t[k], leaves) for k in keys))
    if isinstance(t, (list, tuple)):
        return ("l" if isinstance(t, list) else "t", len(t), tuple(_flatten_into(x, leaves) for x in t))
    if t is None:
        return ("n",)
    leaves.append(t)
    return ("*",)


def flatten(tree: Any) -> tuple[list[Leaf], Any]:
    """Return the leaves of `tree` in a deterministic order and a spec to rebuild it."""
    # module-level recursion, not a closure: a closure would form a reference cycle that keeps the
    # leaves alive until the garbage collector runs (TinyJit's buffer protection then sees them as kept)
    leaves: list[Leaf] = []
    spec = _flatten_into(tree, leaves)
    return leaves, spec


def _build(s: Any, it: Any) -> Any:
    kind = s[0]
    if kind == "*":
        return next(it)
    if kind == "n":
        return None
    if kind == "d":
        return {k: _build(c, it) for k, c in zip(s[1], s[2])}
    children = [_build(c, it) for c in s[2]]
    return children if kind == "l" else tuple(children)


def unflatten(spec: Any, leaves: list[Leaf]) -> Any:
    """Rebuild the tree described by `spec` from `leaves` (the inverse of `flatten`)."""
    return _build(spec, iter(leaves))


def tree_map(fn: Callable[[Leaf], Leaf], tree: Any) -> Any:
    """Apply `fn` to every leaf of `tree`."""
    leaves, spec = flatten(tree)
    return unflatten(spec, [fn(x) for x in leaves])
