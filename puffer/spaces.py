"""Observation and action spaces, and their flattening into fixed-size numpy buffers.

Six space types mirror gymnasium's: `Box`, `Discrete`, `MultiDiscrete`, `MultiBinary` (leaves) and
`Dict`, `Tuple` (composites; `Dict` keeps insertion order, unlike gymnasium which sorts plain dicts).

Two flat layouts exist for any nested space, both visiting the leaves in the same depth-first order:

* the **flat vector** (`flatten`/`unflatten`, `flatdim`, `flat_dtype`, `flatten_space`): every leaf
  raveled and concatenated along the last axis. Its dtype is the leaves' common dtype, or float32 when
  they differ (float32 holds integers exactly only up to 2**24 in magnitude). Discrete values are kept
  as indices, never one-hot encoded. Batched values (leading axes) are supported on both sides.
* the **structured dtype** (`structured_dtype`, `to_structured`, `from_structured`, `bytes_view`):
  one numpy record per value with one field per leaf in its own dtype, so mixed dtypes are stored
  exactly in a single byte buffer and `from_structured` returns views into it, not copies.

Paths name leaves in error messages as indexing expressions, e.g. `['image'][0]`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from puffer.errors import SpaceError

__all__ = [
    "Space", "Box", "Discrete", "MultiDiscrete", "MultiBinary", "Dict", "Tuple",
    "leaves", "path_str", "flatdim", "flat_dtype", "flatten_space", "flatten", "unflatten",
    "structured_dtype", "to_structured", "from_structured", "bytes_view",
    "from_json", "from_gymnasium", "to_gymnasium",
]

Path = tuple[Any, ...]
RngLike = np.random.Generator | int | None


def _rng(rng: RngLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def path_str(path: Path) -> str:
    """Format a leaf path as an indexing expression, e.g. `['image'][0]` (the root is `<root>`)."""
    return "".join(f"[{k!r}]" for k in path) or "<root>"


def _json_number(v: Any) -> Any:
    # JSON has no inf/nan; spell them as strings so json.dumps(strict) and other languages accept them.
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _json_array(a: np.ndarray) -> Any:
    # Uniform arrays (the usual case: Box(-1, 1, (84, 84, 3))) collapse to one number.
    flat = a.ravel()
    if flat.size and np.all(flat == flat[0]):
        return _json_number(flat[0].item())
    return _json_nested(a.tolist())


def _json_nested(x: Any) -> Any:
    if isinstance(x, list):
        return [_json_nested(v) for v in x]
    return _json_number(x)


def _from_json_nested(x: Any) -> Any:
    if isinstance(x, list):
        return [_from_json_nested(v) for v in x]
    if isinstance(x, str):
        return float(x)
    return x


class Space(abc.ABC):
    """Base class of all spaces: `shape` and `dtype` are None for the composites Dict and Tuple."""

    shape: tuple[int, ...] | None = None
    dtype: np.dtype | None = None

    @abc.abstractmethod
    def sample(self, rng: RngLike = None) -> Any:
        """Draw a random element; `rng` is a numpy Generator, an int seed, or None."""

    @abc.abstractmethod
    def contains(self, x: Any) -> bool:
        """Whether `x` is an element of this space (recursively for Dict and Tuple)."""

    def __contains__(self, x: Any) -> bool:
        return self.contains(x)

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable description; `from_json` rebuilds an equal space."""

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Space:
        """Rebuild a space from `to_json`'s output."""
        return from_json(d)

    def to_gymnasium(self) -> Any:
        """The equivalent gymnasium space (imports gymnasium)."""
        return to_gymnasium(self)

    @staticmethod
    def from_gymnasium(space: Any) -> Space:
        """Convert a gymnasium space (recursively) to a puffer space."""
        return from_gymnasium(space)

    @property
    def is_leaf(self) -> bool:
        """True for Box, Discrete, MultiDiscrete and MultiBinary."""
        return not isinstance(self, (Dict, Tuple))


class Box(Space):
    """An n-dimensional array with per-element bounds, possibly infinite for float dtypes."""

    def __init__(self, low: Any, high: Any, shape: Sequence[int] | None = None,
                 dtype: Any = np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "biuf":
            raise SpaceError(f"Box dtype must be a bool, integer or float dtype, got {self.dtype}")
        if shape is not None:
            shape = tuple(int(s) for s in np.atleast_1d(shape)) if np.ndim(shape) else (int(shape),)
        elif np.ndim(low) or np.ndim(high):
            shape = np.broadcast_shapes(np.shape(low), np.shape(high))
        else:
            shape = (1,)  # gymnasium's convention for two scalar bounds
        if any(s < 0 for s in shape):
            raise SpaceError(f"Box shape must be non-negative, got {shape}")
        self.shape = tuple(shape)
        self.low = self._bound(low, "low")
        self.high = self._bound(high, "high")
        if np.any(self.low > self.high):
            raise SpaceError(f"Box low must be <= high everywhere, got low={low!r}, high={high!r}")

    def _bound(self, value: Any, name: str) -> np.ndarray:
        v = np.asarray(value, dtype=np.float64 if self.dtype.kind == "f" else None)
        try:
            v = np.broadcast_to(v, self.shape)
        except ValueError:
            raise SpaceError(f"Box {name} of shape {v.shape} does not broadcast to shape {self.shape}") from None
        if self.dtype.kind == "f":
            if np.isnan(v).any():
                raise SpaceError(f"Box {name} contains NaN")
            return v.astype(self.dtype)
        if self.dtype.kind == "b":
            return v.astype(bool)
        # Integer boxes: infinite bounds mean "the dtype's range".
        info = np.iinfo(self.dtype)
        vf = v.astype(np.float64)
        if np.any(np.isnan(vf)):
            raise SpaceError(f"Box {name} contains NaN")
        clipped = np.where(vf <= info.min, info.min, np.where(vf >= info.max, info.max, 0))
        exact = (vf > info.min) & (vf < info.max)
        out = clipped.astype(self.dtype)
        if exact.any():
            out[exact] = v[exact].astype(self.dtype) if v.dtype.kind in "iu" else vf[exact].astype(self.dtype)
        return out

    @property
    def bounded_below(self) -> np.ndarray:
        """Elementwise: whether the lower bound is finite."""
        return np.isfinite(self.low) if self.dtype.kind == "f" else np.ones(self.shape, bool)

    @property
    def bounded_above(self) -> np.ndarray:
        """Elementwise: whether the upper bound is finite."""
        return np.isfinite(self.high) if self.dtype.kind == "f" else np.ones(self.shape, bool)

    def sample(self, rng: RngLike = None) -> np.ndarray:
        """Uniform where bounded on both sides, exponential where half-bounded, normal where unbounded."""
        rng = _rng(rng)
        if self.dtype.kind == "b":
            lo, hi = self.low.astype(np.int8), self.high.astype(np.int8)
            return np.asarray(rng.integers(lo, hi, endpoint=True, size=self.shape), bool)
        if self.dtype.kind in "iu":
            return np.asarray(rng.integers(self.low, self.high, endpoint=True, size=self.shape, dtype=self.dtype))
        low = self.low.astype(np.float64)
        high = self.high.astype(np.float64)
        lo_ok, hi_ok = np.isfinite(low), np.isfinite(high)
        out = rng.normal(size=self.shape)
        both = lo_ok & hi_ok
        # Drawing uniform in float64 then casting can round onto high; clip keeps the sample inside.
        out = np.where(both, rng.uniform(np.where(both, low, 0), np.where(both, high, 1), self.shape), out)
        exp = rng.exponential(size=self.shape)
        out = np.where(lo_ok & ~hi_ok, low + exp, out)
        out = np.where(~lo_ok & hi_ok, high - exp, out)
        # np.asarray: numpy turns 0-d results into scalars, but a Box element is always an ndarray.
        return np.asarray(np.clip(out.astype(self.dtype), self.low, self.high))

    def contains(self, x: Any) -> bool:
        """Same rule as gymnasium: castable dtype, exact shape, within bounds (NaN is never inside)."""
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x, dtype=self.dtype)
            except (ValueError, TypeError, OverflowError):
                return False
        if x.dtype.kind not in "biuf" or not np.can_cast(x.dtype, self.dtype):
            return False
        return x.shape == self.shape and bool(np.all(x >= self.low) and np.all(x <= self.high))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Box) and self.shape == other.shape and self.dtype == other.dtype
                and np.array_equal(self.low, other.low) and np.array_equal(self.high, other.high))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        def show(a: np.ndarray) -> str:
            flat = a.ravel()
            return repr(flat[0].item()) if flat.size and np.all(flat == flat[0]) else np.array2string(a)
        return f"Box({show(self.low)}, {show(self.high)}, {self.shape}, {self.dtype})"

    def to_json(self) -> dict[str, Any]:
        """{"type": "Box", "low", "high", "shape", "dtype"}; infinities are the strings "inf"/"-inf"."""
        return {"type": "Box", "low": _json_array(self.low), "high": _json_array(self.high),
                "shape": list(self.shape), "dtype": self.dtype.name}


class Discrete(Space):
    """One integer in `[start, start + n)`."""

    def __init__(self, n: int, start: int = 0):
        if int(n) != n or n < 1:
            raise SpaceError(f"Discrete n must be a positive integer, got {n!r}")
        self.n = int(n)
        self.start = int(start)
        self.shape = ()
        self.dtype = np.dtype(np.int64)

    @property
    def low(self) -> np.ndarray:
        """Smallest element, as a 0-d int64 array."""
        return np.array(self.start, self.dtype)

    @property
    def high(self) -> np.ndarray:
        """Largest element, as a 0-d int64 array."""
        return np.array(self.start + self.n - 1, self.dtype)

    def sample(self, rng: RngLike = None) -> np.int64:
        """A uniformly random element."""
        return np.int64(self.start + _rng(rng).integers(self.n))

    def contains(self, x: Any) -> bool:
        """Python ints, numpy integer scalars and 0-d integer arrays in range (bools and floats are not)."""
        if isinstance(x, np.ndarray):
            if x.shape != () or x.dtype.kind not in "iu":
                return False
            x = x.item()
        elif isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            return False
        return self.start <= int(x) < self.start + self.n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Discrete) and self.n == other.n and self.start == other.start

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Discrete({self.n})" if self.start == 0 else f"Discrete({self.n}, start={self.start})"

    def to_json(self) -> dict[str, Any]:
        """{"type": "Discrete", "n", "start"}."""
        return {"type": "Discrete", "n": self.n, "start": self.start}


class MultiDiscrete(Space):
    """An array of integers, element i in `[start[i], start[i] + nvec[i])`."""

    def __init__(self, nvec: Any, dtype: Any = np.int64, start: Any = None):
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "iu":
            raise SpaceError(f"MultiDiscrete dtype must be an integer dtype, got {self.dtype}")
        nvec = np.asarray(nvec)
        if nvec.dtype.kind not in "iu" and not (nvec.size and np.all(nvec == np.round(nvec))):
            raise SpaceError(f"MultiDiscrete nvec must hold integers, got {nvec!r}")
        if nvec.size == 0 or np.any(nvec < 1):
            raise SpaceError(f"MultiDiscrete nvec must be non-empty with every entry >= 1, got {nvec.tolist()}")
        self.nvec = nvec.astype(self.dtype)
        self.start = np.zeros_like(self.nvec) if start is None else np.broadcast_to(
            np.asarray(start, self.dtype), self.nvec.shape).copy()
        self.shape = self.nvec.shape

    @property
    def low(self) -> np.ndarray:
        """Smallest element value, elementwise."""
        return self.start

    @property
    def high(self) -> np.ndarray:
        """Largest element value, elementwise."""
        return self.start + self.nvec - 1

    def sample(self, rng: RngLike = None) -> np.ndarray:
        """A uniformly random element."""
        return (self.start + _rng(rng).integers(0, self.nvec, size=self.shape)).astype(self.dtype)

    def contains(self, x: Any) -> bool:
        """Integer array of the exact shape with every entry in range."""
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except (ValueError, TypeError):
                return False
        if x.dtype.kind not in "iu" or x.shape != self.shape:
            return False
        return bool(np.all(x >= self.start) and np.all(x - self.start < self.nvec))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MultiDiscrete) and self.dtype == other.dtype
                and np.array_equal(self.nvec, other.nvec) and np.array_equal(self.start, other.start))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = "" if not self.start.any() else f", start={self.start.tolist()}"
        return f"MultiDiscrete({self.nvec.tolist()}{extra})"

    def to_json(self) -> dict[str, Any]:
        """{"type": "MultiDiscrete", "nvec", "start", "dtype"}."""
        return {"type": "MultiDiscrete", "nvec": self.nvec.tolist(), "start": self.start.tolist(),
                "dtype": self.dtype.name}


class MultiBinary(Space):
    """An int8 array of zeros and ones; `n` is an int or a shape."""

    def __init__(self, n: int | Sequence[int]):
        self.n = int(n) if np.ndim(n) == 0 else tuple(int(s) for s in n)
        self.shape = (self.n,) if isinstance(self.n, int) else self.n
        if any(s < 1 for s in self.shape):
            raise SpaceError(f"MultiBinary n must be positive, got {n!r}")
        self.dtype = np.dtype(np.int8)

    @property
    def low(self) -> np.ndarray:
        """Zeros."""
        return np.zeros(self.shape, self.dtype)

    @property
    def high(self) -> np.ndarray:
        """Ones."""
        return np.ones(self.shape, self.dtype)

    def sample(self, rng: RngLike = None) -> np.ndarray:
        """A uniformly random element."""
        return _rng(rng).integers(0, 2, size=self.shape, dtype=self.dtype)

    def contains(self, x: Any) -> bool:
        """Array of the exact shape holding only 0 and 1."""
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except (ValueError, TypeError):
                return False
        if x.dtype.kind not in "biu" or x.shape != self.shape:
            return False
        return bool(np.all((x == 0) | (x == 1)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MultiBinary) and self.shape == other.shape

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MultiBinary({self.n})"

    def to_json(self) -> dict[str, Any]:
        """{"type": "MultiBinary", "n"} with `n` an int or a list (a shape)."""
        return {"type": "MultiBinary", "n": self.n if isinstance(self.n, int) else list(self.n)}


class Dict(Space):
    """A mapping of keys to spaces, kept in insertion order."""

    def __init__(self, spaces: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None,
                 **kwargs: Any):
        items = list(spaces.items()) if isinstance(spaces, Mapping) else list(spaces or [])
        items += list(kwargs.items())
        self.spaces: dict[Any, Space] = {}
        for key, sub in items:
            if key in self.spaces:
                raise SpaceError(f"Dict space has the key {key!r} twice")
            self.spaces[key] = _as_space(sub, (key,))

    def __getitem__(self, key: Any) -> Space:
        return self.spaces[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.spaces)

    def __len__(self) -> int:
        return len(self.spaces)

    def keys(self):
        """The keys, in order."""
        return self.spaces.keys()

    def values(self):
        """The subspaces, in order."""
        return self.spaces.values()

    def items(self):
        """(key, subspace) pairs, in order."""
        return self.spaces.items()

    def sample(self, rng: RngLike = None) -> dict[Any, Any]:
        """A dict of samples, one per key, drawn in order from the same generator."""
        rng = _rng(rng)
        return {k: s.sample(rng) for k, s in self.spaces.items()}

    def contains(self, x: Any) -> bool:
        """A mapping with exactly these keys whose values are in their subspaces."""
        return (isinstance(x, Mapping) and x.keys() == self.spaces.keys()
                and all(s.contains(x[k]) for k, s in self.spaces.items()))

    def __eq__(self, other: object) -> bool:
        # Order matters: it fixes the flat layout.
        return isinstance(other, Dict) and list(self.spaces.items()) == list(other.spaces.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Dict(" + ", ".join(f"{k!r}: {s!r}" for k, s in self.spaces.items()) + ")"

    def to_json(self) -> dict[str, Any]:
        """{"type": "Dict", "spaces": [[key, subspace_json], ...]} (a list, so order survives)."""
        return {"type": "Dict", "spaces": [[k, s.to_json()] for k, s in self.spaces.items()]}


class Tuple(Space):
    """A fixed-length sequence of spaces."""

    def __init__(self, spaces: Iterable[Any]):
        self.spaces: tuple[Space, ...] = tuple(_as_space(s, (i,)) for i, s in enumerate(spaces))

    def __getitem__(self, i: int) -> Space:
        return self.spaces[i]

    def __iter__(self) -> Iterator[Space]:
        return iter(self.spaces)

    def __len__(self) -> int:
        return len(self.spaces)

    def sample(self, rng: RngLike = None) -> tuple[Any, ...]:
        """A tuple of samples drawn in order from the same generator."""
        rng = _rng(rng)
        return tuple(s.sample(rng) for s in self.spaces)

    def contains(self, x: Any) -> bool:
        """A tuple or list of the same length whose items are in their subspaces."""
        if isinstance(x, np.ndarray) and x.dtype == object:
            x = tuple(x)
        return (isinstance(x, (tuple, list)) and len(x) == len(self.spaces)
                and all(s.contains(v) for s, v in zip(self.spaces, x)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tuple) and self.spaces == other.spaces

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Tuple({', '.join(map(repr, self.spaces))})"

    def to_json(self) -> dict[str, Any]:
        """{"type": "Tuple", "spaces": [subspace_json, ...]}."""
        return {"type": "Tuple", "spaces": [s.to_json() for s in self.spaces]}


def _as_space(s: Any, path: Path) -> Space:
    if isinstance(s, Space):
        return s
    if type(s).__module__.startswith("gymnasium"):
        return _from_gym(s, path)
    raise SpaceError(f"{path_str(path)}: expected a puffer or gymnasium space, got {type(s).__name__}")


# ----------------------------------------------------------------------------------------- serialization

def from_json(d: Mapping[str, Any]) -> Space:
    """Rebuild a space from the output of `Space.to_json` (also after a json.dumps/loads round trip)."""
    try:
        kind = d["type"]
        if kind == "Box":
            return Box(np.array(_from_json_nested(d["low"]), dtype=np.float64 if np.dtype(d["dtype"]).kind == "f"
                                else None),
                       np.array(_from_json_nested(d["high"]), dtype=np.float64 if np.dtype(d["dtype"]).kind == "f"
                                else None),
                       tuple(d["shape"]), np.dtype(d["dtype"]))
        if kind == "Discrete":
            return Discrete(d["n"], d.get("start", 0))
        if kind == "MultiDiscrete":
            return MultiDiscrete(d["nvec"], d.get("dtype", "int64"), d.get("start"))
        if kind == "MultiBinary":
            return MultiBinary(d["n"])
        if kind == "Dict":
            return Dict([(k, from_json(s)) for k, s in d["spaces"]])
        if kind == "Tuple":
            return Tuple([from_json(s) for s in d["spaces"]])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, SpaceError):
            raise
        raise SpaceError(f"not a valid space description: {dict(d)!r} ({e})") from None
    raise SpaceError(f"unknown space type {kind!r} in {dict(d)!r}; known: Box, Discrete, MultiDiscrete, "
                     "MultiBinary, Dict, Tuple")


def from_gymnasium(space: Any) -> Space:
    """Convert a gymnasium space to a puffer space; unsupported leaves raise SpaceError naming their path."""
    return _from_gym(space, ())


def _from_gym(space: Any, path: Path) -> Space:
    if isinstance(space, Space):
        return space
    import gymnasium.spaces as gs

    if isinstance(space, gs.Box):
        return Box(space.low, space.high, space.shape, space.dtype)
    if isinstance(space, gs.Discrete):
        return Discrete(int(space.n), int(space.start))
    if isinstance(space, gs.MultiDiscrete):
        return MultiDiscrete(space.nvec, space.dtype, space.start)
    if isinstance(space, gs.MultiBinary):
        return MultiBinary(space.n)
    if isinstance(space, gs.Dict):
        return Dict([(k, _from_gym(s, path + (k,))) for k, s in space.spaces.items()])
    if isinstance(space, gs.Tuple):
        return Tuple([_from_gym(s, path + (i,)) for i, s in enumerate(space.spaces)])
    raise SpaceError(
        f"observation/action space leaf at {path_str(path)} is a {type(space).__name__}, which has no fixed-size "
        "flat layout; puffer supports Box, Discrete, MultiDiscrete, MultiBinary, Dict and Tuple")


def to_gymnasium(space: Space) -> Any:
    """Convert a puffer space to the equivalent gymnasium space (Dict order is preserved)."""
    import gymnasium.spaces as gs

    if isinstance(space, Box):
        return gs.Box(space.low, space.high, space.shape, space.dtype)
    if isinstance(space, Discrete):
        return gs.Discrete(space.n, start=space.start)
    if isinstance(space, MultiDiscrete):
        return gs.MultiDiscrete(space.nvec, dtype=space.dtype, start=space.start)
    if isinstance(space, MultiBinary):
        return gs.MultiBinary(space.n)
    if isinstance(space, Dict):
        # A list of pairs, because gymnasium sorts the keys of a plain dict.
        return gs.Dict([(k, to_gymnasium(s)) for k, s in space.items()])
    if isinstance(space, Tuple):
        return gs.Tuple([to_gymnasium(s) for s in space.spaces])
    raise SpaceError(f"not a puffer space: {space!r}")


# ----------------------------------------------------------------------------------------- flat layouts

def leaves(space: Space) -> list[tuple[Path, Space]]:
    """The (path, leaf space) pairs of `space` in layout order (depth-first, Dict insertion order)."""
    out: list[tuple[Path, Space]] = []

    def go(s: Space, path: Path) -> None:
        if isinstance(s, Dict):
            for k, sub in s.items():
                go(sub, path + (k,))
        elif isinstance(s, Tuple):
            for i, sub in enumerate(s.spaces):
                go(sub, path + (i,))
        elif isinstance(s, Space):
            out.append((path, s))
        else:
            raise SpaceError(f"{path_str(path)}: {type(s).__name__} is not a puffer space")

    go(space, ())
    return out


class _Leaf:
    __slots__ = ("path", "space", "shape", "size", "offset", "dtype")

    def __init__(self, path: Path, space: Space, offset: int):
        self.path, self.space, self.offset = path, space, offset
        self.shape = space.shape
        self.size = math.prod(space.shape)
        self.dtype = space.dtype


def _layout(space: Space) -> list[_Leaf]:
    cached = space.__dict__.get("_puffer_layout")
    if cached is None:
        cached, offset = [], 0
        for path, leaf in leaves(space):
            cached.append(_Leaf(path, leaf, offset))
            offset += cached[-1].size
        space.__dict__["_puffer_layout"] = cached
    return cached


def flatdim(space: Space) -> int:
    """Number of scalars in the flat vector of `space`."""
    return sum(leaf.size for leaf in _layout(space))


def flat_dtype(space: Space) -> np.dtype:
    """The leaves' common dtype, or float32 when they differ."""
    dtypes = {leaf.dtype for leaf in _layout(space)}
    return dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)


def flatten_space(space: Space) -> Box:
    """The 1-D Box of the flat vector: per-element bounds of each leaf, in `flat_dtype`."""
    dtype = flat_dtype(space)
    # Concatenate in float64 only when dtypes differ, so uniform int64 bounds stay exact.
    common = dtype if len({leaf.dtype for leaf in _layout(space)}) == 1 else np.float64
    low = np.concatenate([np.ravel(leaf.space.low).astype(common) for leaf in _layout(space)] or [[]])
    high = np.concatenate([np.ravel(leaf.space.high).astype(common) for leaf in _layout(space)] or [[]])
    return Box(low, high, (low.size,), dtype)


def _get(x: Any, key: Any, path: Path) -> Any:
    try:
        return x[key]
    except (KeyError, IndexError, TypeError):
        raise SpaceError(f"value has nothing at {path_str(path)} (got {type(x).__name__})") from None


def _leaf_value(x: Any, leaf: _Leaf) -> Any:
    for i, key in enumerate(leaf.path):
        x = _get(x, key, leaf.path[: i + 1])
    return x


def flatten(space: Space, x: Any, out: np.ndarray | None = None, dtype: Any = None) -> np.ndarray:
    """Write nested value `x` into a flat vector of shape `batch + (flatdim,)` and return it.

    Leading axes of every leaf beyond its space's shape are batch axes. With `out`, values are cast
    into it in place (no intermediate copy); otherwise a new array of `dtype` (default `flat_dtype`).
    """
    layout = _layout(space)
    arrays = []
    batch: tuple[int, ...] | None = None
    for leaf in layout:
        a = np.asarray(_leaf_value(x, leaf))
        nb = a.ndim - len(leaf.shape)
        if nb < 0 or a.shape[nb:] != leaf.shape:
            raise SpaceError(f"value at {path_str(leaf.path)} has shape {a.shape}, expected {leaf.shape} "
                             f"(with optional leading batch axes) for {leaf.space!r}")
        if batch is None:
            batch = a.shape[:nb]
        elif a.shape[:nb] != batch:
            raise SpaceError(f"value at {path_str(leaf.path)} has batch shape {a.shape[:nb]}, other leaves {batch}")
        arrays.append(a)
    batch = batch or ()
    if out is None:
        out = np.empty(batch + (flatdim(space),), dtype or flat_dtype(space))
    for leaf, a in zip(layout, arrays):
        out[..., leaf.offset: leaf.offset + leaf.size] = a.reshape(batch + (leaf.size,))
    return out


def unflatten(space: Space, flat: Any) -> Any:
    """Split a flat vector (`batch + (flatdim,)`) back into the nested structure of `space`.

    Each leaf gets its own dtype and shape; for numpy input whose dtype already matches a leaf, that leaf
    is a view. Works on any array-API array (torch, jax...) through array_api_compat.
    """
    if isinstance(flat, np.ndarray):
        def cast(a: Any, dt: np.dtype) -> Any:
            return a.astype(dt, copy=False)
        reshape = np.reshape
    else:
        from array_api_compat import array_namespace

        xp = array_namespace(flat)

        def cast(a: Any, dt: np.dtype) -> Any:
            return xp.astype(a, getattr(xp, dt.name))

        def reshape(a: Any, shape: tuple[int, ...]) -> Any:
            return xp.reshape(a, shape)

    batch = tuple(flat.shape[:-1])
    if flat.shape[-1] != flatdim(space):
        raise SpaceError(f"flat array has {flat.shape[-1]} columns, {space!r} needs {flatdim(space)}")
    values = [cast(reshape(flat[..., leaf.offset: leaf.offset + leaf.size], batch + leaf.shape), leaf.dtype)
              for leaf in _layout(space)]
    return _build(space, iter(values))


def _build(space: Space, values: Iterator[Any]) -> Any:
    if isinstance(space, Dict):
        return {k: _build(s, values) for k, s in space.items()}
    if isinstance(space, Tuple):
        return tuple(_build(s, values) for s in space.spaces)
    return next(values)


def structured_dtype(space: Space) -> np.dtype:
    """A packed numpy dtype holding one value of `space` exactly: records for Dict/Tuple, subarrays for leaves.

    Dict fields are named `str(key)`, Tuple fields `"0"`, `"1"`, ...; names must be unique after `str`.
    """
    if isinstance(space, (Dict, Tuple)):
        pairs = space.items() if isinstance(space, Dict) else enumerate(space.spaces)
        fields = [(str(k), structured_dtype(s)) for k, s in pairs]
        if len({n for n, _ in fields}) != len(fields):
            raise SpaceError(f"Dict keys {list(space.keys())!r} collide once converted to field names")
        return np.dtype(fields)
    leaves(space)  # raises SpaceError for non-spaces
    return np.dtype((space.dtype, space.shape)) if space.shape else space.dtype


def to_structured(space: Space, x: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Store nested value `x` (optionally batched) into an array of `structured_dtype(space)` and return it."""
    if out is None:
        sample_leaf = _layout(space)[0] if _layout(space) else None
        batch: tuple[int, ...] = ()
        if sample_leaf is not None:
            a = np.asarray(_leaf_value(x, sample_leaf))
            batch = a.shape[: a.ndim - len(sample_leaf.shape)]
        out = np.zeros(batch, structured_dtype(space))

    def put(dst: Any, name: Any, s: Space, v: Any, path: Path) -> None:
        # Assigning through the parent (`dst[name] = v`) also works when dst is a np.void record view.
        try:
            dst[name] = v
        except (ValueError, TypeError) as e:
            raise SpaceError(f"value at {path_str(path)} does not fit {s!r}: {e}") from None

    def go(s: Space, dst: Any, v: Any, path: Path) -> None:
        pairs = s.items() if isinstance(s, Dict) else enumerate(s.spaces)
        for k, sub in pairs:
            value = _get(v, k, path + (k,))
            if sub.is_leaf:
                put(dst, str(k), sub, value, path + (k,))
            else:
                go(sub, dst[str(k)], value, path + (k,))

    if space.is_leaf:
        put(out, Ellipsis, space, x, ())
        return out
    go(space, out, x, ())
    return out


def from_structured(space: Space, arr: np.ndarray) -> Any:
    """Nested views (no copies) into a structured array made by `to_structured` or `bytes_view`."""
    if space.is_leaf:
        return arr
    if isinstance(space, Dict):
        return {k: from_structured(s, arr[str(k)]) for k, s in space.items()}
    return tuple(from_structured(s, arr[str(i)]) for i, s in enumerate(space.spaces))


def bytes_view(space: Space, buf: np.ndarray) -> np.ndarray:
    """View a C-contiguous uint8 buffer `[..., itemsize]` as structured records `[...]` (no copy)."""
    dt = structured_dtype(space)
    if buf.dtype != np.uint8 or buf.shape[-1:] != (dt.itemsize,):
        raise SpaceError(f"need a uint8 buffer whose last axis is {dt.itemsize} bytes, got {buf.dtype} {buf.shape}")
    if not space.is_leaf:
        return buf.view(dt)[..., 0]
    # A leaf's structured dtype is a subarray dtype, which numpy expands on view; build a record instead.
    return buf.view(np.dtype([("v", dt)]))[..., 0]["v"]
