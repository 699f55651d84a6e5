"""Shared helpers of the conformance suite: data, comparison against numpy, finite-difference gradients."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import puffer

ARRAY_BACKENDS: tuple[str, ...] = ("numpy", "torch", "jax", "tinygrad")
TRAINING_BACKENDS: tuple[str, ...] = ("torch", "jax", "tinygrad")

# Default tolerances of float32 results against the numpy reference (the brief's ~1e-5 / ~1e-6).
RTOL32, ATOL32 = 1e-5, 1e-6
RTOL64, ATOL64 = 1e-12, 1e-13


def sid(shape: Sequence[int]) -> str:
    """A test id for a shape: `scalar`, `s3`, `s0x4`, ..."""
    return "s" + "x".join(map(str, shape)) if len(shape) else "scalar"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def data(shape: Sequence[int], dtype: str = "float32", low: float = -2.0, high: float = 2.0,
         seed: int = 0) -> np.ndarray:
    """Deterministic test data of `shape`: uniform in [low, high) for floats, integers in [low, high) else."""
    g = rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return g.random(tuple(shape)) < 0.5
    if dt.kind in "iu":
        return g.integers(int(low), int(high), size=tuple(shape)).astype(dt)
    return g.uniform(low, high, size=tuple(shape)).astype(dt)


def np_of(be: Any, x: Any) -> np.ndarray:
    """A numpy copy of a backend array (or of a Python scalar)."""
    if be.is_array(x) or isinstance(x, np.generic):
        return np.array(be.to_numpy(x))
    return np.asarray(x)


def tolerances(dtype: Any) -> tuple[float, float]:
    """Default (rtol, atol) for a result of this numpy dtype."""
    return (RTOL64, ATOL64) if np.dtype(dtype) == np.float64 else (RTOL32, ATOL32)


def assert_matches(be: Any, out: Any, ref: Any, rtol: float | None = None, atol: float | None = None,
                   check_dtype: bool = True, what: str = "") -> None:
    """Assert a backend result equals the numpy reference in shape, dtype and value."""
    # numpy itself returns numpy scalars, not 0-d arrays, from operations on 0-d arrays
    numpy_scalar = be.name == "numpy" and isinstance(out, np.generic)
    assert be.is_array(out) or numpy_scalar, f"{what}: expected a {be.name} array, got {type(out).__name__}"
    got = np_of(be, out)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    if check_dtype:
        assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != reference {ref.dtype}"
    if ref.dtype.kind in "biu" and got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    d_rtol, d_atol = tolerances(ref.dtype)
    np.testing.assert_allclose(
        got.astype(np.float64), ref.astype(np.float64),
        rtol=d_rtol if rtol is None else rtol, atol=d_atol if atol is None else atol,
        equal_nan=True, err_msg=what,
    )


@functools.cache
def supports_float64(name: str) -> bool:
    """Whether the backend computes in float64 on this machine (tinygrad devices may not)."""
    be = puffer.backend(name)
    try:
        x = be.asarray(np.array([1.0, 2.0]), dtype=be.float64)
        y = be.to_numpy(be.xp.exp(x) * 1.0)
        return y.dtype == np.float64
    except Exception:  # noqa: BLE001 - any failure means "no float64 here"
        return False


def grad_dtype(be: Any) -> str:
    """The dtype gradient checks run in: float64 where the backend supports it."""
    return "float64" if supports_float64(be.name) else "float32"


def grad_tolerances(be: Any) -> tuple[float, float]:
    """(rtol, atol) of a backend gradient against float64 central differences."""
    # float64: finite differences with eps=1e-6 are good to ~1e-9 relative, so 1e-6 leaves margin.
    # float32 (only where the device lacks float64): the backend's own rounding dominates.
    return (1e-6, 1e-7) if grad_dtype(be) == "float64" else (2e-3, 2e-4)


def to_backend(be: Any, tree: Any, float_dtype: str | None = None) -> Any:
    """Convert a pytree of numpy arrays to backend arrays, optionally casting floats to `float_dtype`."""
    from puffer.tree import tree_map

    def conv(x):
        if isinstance(x, np.ndarray | np.generic):
            x = np.asarray(x)
            if float_dtype is not None and x.dtype.kind == "f":
                x = x.astype(float_dtype)
            return be.asarray(x, dtype=be.dtype(x.dtype.name))
        return x

    return tree_map(conv, tree)


def numeric_grad(f: Callable[[dict[str, np.ndarray]], float], params: dict[str, np.ndarray],
                 eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Central finite differences of a float64 scalar function of a parameter dict."""
    grads = {}
    for k, v in params.items():
        g = np.zeros(v.shape, dtype=np.float64)
        flat = g.reshape(-1)
        for i in range(v.size):
            plus = {**params, k: v.copy()}
            minus = {**params, k: v.copy()}
            plus[k].reshape(-1)[i] += eps
            minus[k].reshape(-1)[i] -= eps
            flat[i] = (float(f(plus)) - float(f(minus))) / (2 * eps)
        grads[k] = g
    return grads


def check_grad(tbe: Any, f: Callable[..., Any], params: dict[str, np.ndarray], *args: Any,
               rtol: float | None = None, atol: float | None = None, eps: float = 1e-6) -> None:
    """Check `tbe.value_and_grad` of `f(be, params, *args)` against float64 central differences.

    `f` is written once against a backend; the reference evaluates it with the numpy backend in
    float64, the backend under test runs in float64 where it can. Float args are cast alike,
    integer args keep their dtype.
    """
    ref_be = puffer.backend("numpy")
    p64 = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in params.items()}
    a64 = to_backend(ref_be, args, "float64")

    def ref_f(p):
        return float(f(ref_be, p, *a64))

    ref_value = ref_f(p64)
    ref_grads = numeric_grad(ref_f, p64, eps=eps)

    dt = grad_dtype(tbe)
    d_rtol, d_atol = grad_tolerances(tbe)
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    vg = tbe.value_and_grad(lambda p, *a: f(tbe, p, *a))
    if tbe.name == "jax":
        # JAX differentiates identically with and without jit, and compiling the whole function once is
        # several times cheaper than eagerly compiling every primitive of the forward and backward pass;
        # eager value_and_grad keeps its own tests (test_grad_ops.py's contract tests, stop_gradient)
        vg = tbe.compile(vg)
    value, grads = vg(to_backend(tbe, p64, dt), *to_backend(tbe, args, dt))
    assert set(grads) == set(params), f"gradient keys {sorted(grads)} != parameter keys {sorted(params)}"
    np.testing.assert_allclose(np_of(tbe, value), ref_value, rtol=rtol, atol=atol, err_msg="loss value")
    for k in params:
        g = np_of(tbe, grads[k])
        assert g.shape == p64[k].shape, f"grad[{k!r}] shape {g.shape} != parameter shape {p64[k].shape}"
        assert g.dtype == np.dtype(dt), f"grad[{k!r}] dtype {g.dtype} != parameter dtype {dt}"
        np.testing.assert_allclose(g, ref_grads[k], rtol=rtol, atol=atol, err_msg=f"grad[{k!r}]")
