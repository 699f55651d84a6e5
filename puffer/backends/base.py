"""The backend interface every algorithm is written against.

A backend gives:
- `xp`: an array-API namespace (creation, elementwise math, reductions, linear algebra,
  manipulation, indexing, dtypes);
- the extras the standard lacks (`log_softmax`, `softplus`, `stop_gradient`, `one_hot`, `scan`, ...);
- `value_and_grad(f, has_aux)` over a flat `dict[str, array]` of parameters;
- `compile(f)` with TinyJit's contract: arrays (or dicts/lists/tuples of arrays) in, arrays out,
  fixed shapes, no Python branching on array values; returned arrays are safe to keep;
- explicit randomness (`key`, `split`, `uniform`, `normal`);
- numpy in/out (`asarray`, `to_numpy`).

Generic extras below are written once against `xp`; a backend overrides one only where its
framework has a faster or more accurate native version.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from puffer.errors import GradientError

Array = Any
Params = dict[str, Array]


class Backend:
    """Base class: generic extras over `self.xp`; subclasses bind a framework."""

    name: str = "base"
    can_train: bool = False
    xp: Any = None

    def __init__(self, device: str = "cpu"):
        self.device = device

    def __repr__(self) -> str:
        return f"<puffer backend {self.name} on {self.device}>"

    # ---- dtypes -----------------------------------------------------------------------------
    @property
    def float32(self):
        return self.xp.float32

    @property
    def float64(self):
        return self.xp.float64

    @property
    def int32(self):
        return self.xp.int32

    @property
    def int64(self):
        return self.xp.int64

    @property
    def bool(self):
        return self.xp.bool

    def dtype(self, name: str):
        """The namespace dtype called `name` ("float32", "int64", "bool", ...)."""
        return getattr(self.xp, name)

    # ---- numpy in/out -----------------------------------------------------------------------
    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """A backend array from numpy data or Python scalars; `dtype` may be a numpy dtype."""
        if isinstance(dtype, (str, np.dtype, type)) and not self._is_native_dtype(dtype):
            dtype = self.dtype(np.dtype(dtype).name)
        return self.xp.asarray(x, dtype=dtype)

    def _is_native_dtype(self, dtype: Any) -> bool:
        return False

    def to_numpy(self, x: Array) -> np.ndarray:
        """A numpy copy (or view, where the framework shares memory) of a backend array."""
        return np.asarray(x)

    array_type: type = np.ndarray

    def is_array(self, x: Any) -> bool:
        """True if `x` is an array of this backend."""
        return isinstance(x, self.array_type)

    # ---- extras the array API lacks ---------------------------------------------------------
    def logsumexp(self, x: Array, axis: int = -1, keepdims: bool = False) -> Array:
        xp = self.xp
        m = self.stop_gradient(xp.max(x, axis=axis, keepdims=True))
        out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
        return out if keepdims else xp.squeeze(out, axis=axis)

    def log_softmax(self, x: Array, axis: int = -1) -> Array:
        xp = self.xp
        # shift first: x - logsumexp(x) would subtract two large, nearly equal numbers
        z = x - self.stop_gradient(xp.max(x, axis=axis, keepdims=True))
        return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))

    def softmax(self, x: Array, axis: int = -1) -> Array:
        return self.xp.exp(self.log_softmax(x, axis=axis))

    def softplus(self, x: Array) -> Array:
        xp = self.xp
        return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))

    def sigmoid(self, x: Array) -> Array:
        return 1.0 / (1.0 + self.xp.exp(-x))

    def relu(self, x: Array) -> Array:
        return self.xp.maximum(x, self.xp.zeros_like(x))

    def gelu(self, x: Array) -> Array:
        """Exact (erf-based) GELU, as torch.nn.functional.gelu's default."""
        return 0.5 * x * (1.0 + self.erf(x / math.sqrt(2.0)))

    def erf(self, x: Array) -> Array:
        """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7); backends with a native erf override."""
        xp = self.xp
        s, a = xp.sign(x), xp.abs(x)
        t = 1.0 / (1.0 + 0.3275911 * a)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        return s * (1.0 - poly * xp.exp(-a * a))

    def stop_gradient(self, x: Array) -> Array:
        return x

    def one_hot(self, idx: Array, n: int, dtype: Any = None) -> Array:
        xp = self.xp
        dtype = self.float32 if dtype is None else dtype
        return xp.astype(xp.expand_dims(idx, axis=-1) == xp.arange(n, dtype=idx.dtype), dtype)

    def take_along_axis(self, x: Array, idx: Array, axis: int = -1) -> Array:
        return self.xp.take_along_axis(x, idx, axis=axis)

    def scan(self, f: Callable, carry: Any, xs: Any, reverse: bool = False) -> tuple[Any, Any]:
        """lax.scan semantics: loop `carry, y = f(carry, x)` over the leading axis of `xs`.

        `reverse=True` visits the elements from last to first; the outputs stay stacked in the
        original order (`ys[t]` is the output of step `t`), as with `lax.scan(..., reverse=True)`.
        """
        from puffer.tree import flatten, unflatten

        leaves, spec = flatten(xs)
        length = leaves[0].shape[0]
        order = range(length - 1, -1, -1) if reverse else range(length)
        ys = []
        for t in order:
            carry, y = f(carry, unflatten(spec, [leaf[t] for leaf in leaves]))
            ys.append(y)
        if reverse:
            ys.reverse()
        y_leaves = [flatten(y)[0] for y in ys]
        if not y_leaves or not y_leaves[0]:
            return carry, None
        y_spec = flatten(ys[0])[1]
        stacked = [self.xp.stack([yl[i] for yl in y_leaves]) for i in range(len(y_leaves[0]))]
        return carry, unflatten(y_spec, stacked)

    # ---- gradients and compilation ----------------------------------------------------------
    def value_and_grad(self, f: Callable, has_aux: bool = False) -> Callable:
        """`g(params, *args) -> (value | (value, aux)), grads` with grads keyed like params."""
        raise GradientError(
            f"the {self.name} backend cannot differentiate; train with torch, jax or tinygrad"
        )

    def compile(self, f: Callable, donate: Sequence[int] = ()) -> Callable:
        """Compile `f` under TinyJit's contract; `donate` names arguments the caller gives up."""
        return f

    # ---- randomness -------------------------------------------------------------------------
    def key(self, seed: int) -> Any:
        """A random key for `uniform`/`normal`; the same seed gives the same numbers."""
        return np.random.SeedSequence(int(seed))

    def split(self, key: Any, num: int = 2) -> list[Any]:
        """`num` independent keys derived from `key`."""
        return key.spawn(num)

    def uniform(self, key: Any, shape: Sequence[int], dtype: Any = None) -> Array:
        """Uniform [0, 1) samples drawn from `key`."""
        rng = np.random.Generator(np.random.Philox(key))
        return self.asarray(rng.random(tuple(shape), dtype=np.float32), dtype=dtype or self.float32)

    def normal(self, key: Any, shape: Sequence[int], dtype: Any = None) -> Array:
        """Standard normal samples drawn from `key`."""
        rng = np.random.Generator(np.random.Philox(key))
        return self.asarray(
            rng.standard_normal(tuple(shape), dtype=np.float32), dtype=dtype or self.float32
        )


def check_grad_inputs(name: str, params: Params, is_floating: Callable[[Any], bool] | None = None) -> None:
    """Raise GradientError unless `params` is a dict of floating arrays (`is_floating(dtype)` if given)."""
    if not isinstance(params, dict):
        raise GradientError(
            f"{name}: value_and_grad differentiates a dict[str, array] of parameters as the "
            f"first argument, got {type(params).__name__}"
        )
    for k, v in params.items():
        dt = str(getattr(v, "dtype", type(v).__name__))
        floating = is_floating(v.dtype) if is_floating is not None and hasattr(v, "dtype") else "float" in dt
        if not floating:
            raise GradientError(
                f"{name}: cannot take a gradient with respect to parameter {k!r} of dtype {dt}; "
                "only floating-point arrays have gradients"
            )


def check_scalar_loss(name: str, value: Any) -> None:
    """Raise GradientError unless the differentiated value is a 0-d array."""
    shape = tuple(getattr(value, "shape", ()))
    if shape != ():
        raise GradientError(
            f"{name}: value_and_grad needs a scalar loss, got an array of shape {shape}; "
            "reduce it (e.g. xp.mean) first"
        )
