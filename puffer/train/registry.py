"""Algorithms by name: `register` one in-process, or declare it as a `puffer.algorithms` entry point.

puffer's own algorithms are entry points of the package too (pyproject.toml), so this layer finds
them without importing `puffer.algos`; a third-party package adds one the same way:

    [project.entry-points."puffer.algorithms"]
    my_algo = "my_package.my_algo:ALGORITHM"
"""

from __future__ import annotations

from importlib import metadata

from puffer.errors import PufferError
from puffer.train.plan import Algorithm

GROUP = "puffer.algorithms"
_registered: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Make `algorithm` known by its name (replacing one of the same name); returns it."""
    if not isinstance(algorithm, Algorithm):
        raise PufferError(f"register() takes a puffer.train.Algorithm, got {type(algorithm).__name__}")
    _registered[algorithm.name] = algorithm
    return algorithm


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def names() -> list[str]:
    """Every known algorithm name, sorted."""
    return sorted(set(_registered) | set(_entry_points()))


def get(name: str) -> Algorithm:
    """The algorithm called `name`; an unknown name is an error listing the known ones."""
    if name in _registered:
        return _registered[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise PufferError(f"unknown algorithm {name!r}; known: {', '.join(names()) or 'none'}")
    algorithm = ep.load()
    if not isinstance(algorithm, Algorithm):
        raise PufferError(f"entry point {ep.value} of algorithm {name!r} is not a puffer.train.Algorithm")
    return register(algorithm)


def algorithms() -> list[Algorithm]:
    """Every known algorithm (loading each), sorted by name."""
    return [get(n) for n in names()]
