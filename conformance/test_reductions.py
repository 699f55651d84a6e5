"""Reductions and cumulative_sum against numpy: axes (None, int, negative, tuple), keepdims, size 0, dtypes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conformance._helpers import assert_matches, data, sid

# name -> (namespace call, numpy reference, data range)
FLOAT_REDUCTIONS = {
    "sum": (lambda xp, x, **kw: xp.sum(x, **kw), lambda x, **kw: np.sum(x, **kw), (-2, 2)),
    "mean": (lambda xp, x, **kw: xp.mean(x, **kw), lambda x, **kw: np.mean(x, **kw), (-2, 2)),
    "max": (lambda xp, x, **kw: xp.max(x, **kw), lambda x, **kw: np.max(x, **kw), (-2, 2)),
    "min": (lambda xp, x, **kw: xp.min(x, **kw), lambda x, **kw: np.min(x, **kw), (-2, 2)),
    # factors near 1 keep the product of 24 numbers well inside float32's range
    "prod": (lambda xp, x, **kw: xp.prod(x, **kw), lambda x, **kw: np.prod(x, **kw), (0.6, 1.4)),
    "std0": (lambda xp, x, **kw: xp.std(x, correction=0, **kw), lambda x, **kw: np.std(x, ddof=0, **kw), (-2, 2)),
    "std1": (lambda xp, x, **kw: xp.std(x, correction=1, **kw), lambda x, **kw: np.std(x, ddof=1, **kw), (-2, 2)),
    "var0": (lambda xp, x, **kw: xp.var(x, correction=0, **kw), lambda x, **kw: np.var(x, ddof=0, **kw), (-2, 2)),
    "var1": (lambda xp, x, **kw: xp.var(x, correction=1, **kw), lambda x, **kw: np.var(x, ddof=1, **kw), (-2, 2)),
}
# (shape, axis, keepdims): whole array, each axis, negative axes, a tuple of axes, a batch of 1; keepdims
# only reshapes a reduction's result, so half the cases use it
AXES = [((3, 4), None, False), ((3, 4), 0, True), ((3, 4), -1, False), ((1, 4), 0, False), ((2, 3, 4), (0, 2), True),
        ((2, 3, 4), -2, True), ((3, 4), None, True), ((3, 4), -1, True)]


def _axis_id(axis):
    return "all" if axis is None else ("ax" + "_".join(map(str, axis)) if isinstance(axis, tuple) else f"ax{axis}")


def _cases(names):
    for name in names:
        for shape, axis, keepdims in AXES:
            kid = "-keep" if keepdims else ""
            yield pytest.param(name, shape, axis, keepdims, id=f"{name}-{sid(shape)}-{_axis_id(axis)}{kid}")


@pytest.mark.parametrize("name,shape,axis,keepdims", list(_cases(FLOAT_REDUCTIONS)))
def test_float_reduction(be, name, shape, axis, keepdims):
    call, ref_fn, (lo, hi) = FLOAT_REDUCTIONS[name]
    x = data(shape, "float32", lo, hi, seed=20)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # var/std with correction=1 over a single element is nan (0/0), as the standard says
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.asarray(ref_fn(x.astype(np.float64), axis=axis, keepdims=keepdims)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch and numpy warn about that nan; it is the defined result
        out = call(be.xp, be.asarray(x), axis=axis, keepdims=keepdims)
    assert_matches(be, out, ref, what=name)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "std1", "var0"])
def test_float64_reduction(be, name):
    call, ref_fn, (lo, hi) = FLOAT_REDUCTIONS[name]
    x = data((3, 4), "float64", lo, hi, seed=21)
    assert_matches(be, call(be.xp, be.asarray(x), axis=-1), ref_fn(x, axis=-1), what=name)


@pytest.mark.parametrize("name", ["sum", "prod"])
@pytest.mark.parametrize("axis", [0, -1, None], ids=["ax0", "ax-1", "all"])
def test_empty_reduction(be, name, axis):
    """Sum and product over size-0 axes are the identity elements."""
    x = np.zeros((0, 4), np.float32)
    ref = getattr(np, name)(x, axis=axis)
    assert_matches(be, getattr(be.xp, name)(be.asarray(x), axis=axis), ref, what=name)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("name", ["sum", "prod", "max", "min"])
def test_int_reduction(be, name, dtype):
    """Integer sum/prod return the default integer dtype (int64); max/min keep the input dtype."""
    x = data((3, 4), dtype, -3, 4, seed=22)
    ref = getattr(np, name)(x, axis=0)
    if name in ("sum", "prod"):
        ref = ref.astype(np.int64)
    assert_matches(be, getattr(be.xp, name)(be.asarray(x), axis=0), ref, what=name)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize(
    "shape,axis,keepdims",
    [((3, 4), None, False), ((3, 4), 0, False), ((3, 4), -1, False), ((3, 4), -1, True), ((1, 5), 1, False),
     ((2, 3, 4), 1, False)],
    ids=["all", "ax0", "ax-1", "ax-1-keep", "s1x5", "3d"],
)
def test_arg_reduction(be, name, shape, axis, keepdims):
    """argmax/argmin return int64 indices, the first one on ties."""
    x = np.round(data(shape, "float32", -2, 2, seed=23))  # rounding creates ties
    ref = getattr(np, name)(x, axis=axis, keepdims=keepdims).astype(np.int64)
    assert_matches(be, getattr(be.xp, name)(be.asarray(x), axis=axis, keepdims=keepdims), ref, what=name)


def test_argmax_int(be):
    x = data((3, 4), "int32", -2, 2, seed=24)
    assert_matches(be, be.xp.argmax(be.asarray(x), axis=-1), np.argmax(x, axis=-1).astype(np.int64))


@pytest.mark.parametrize("name", ["any", "all"])
@pytest.mark.parametrize(
    "shape,axis,keepdims",
    [((3, 4), None, False), ((3, 4), 0, False), ((3, 4), -1, True), ((0, 4), 0, False), ((0, 4), None, False)],
    ids=["all", "ax0", "ax-1-keep", "empty_ax0", "empty_all"],
)
def test_any_all(be, name, shape, axis, keepdims):
    x = data(shape, "float32", 0, 1, seed=25) < 0.3
    ref = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert_matches(be, getattr(be.xp, name)(be.asarray(x), axis=axis, keepdims=keepdims), ref, what=name)


@pytest.mark.parametrize(
    "shape,axis,dtype,include_initial",
    [((5,), None, "float32", False), ((3, 4), 0, "float32", False), ((3, 4), -1, "float32", False),
     ((1, 4), -1, "float32", False), ((0,), 0, "float32", False), ((3, 4), 1, "float64", False),
     ((3, 4), -1, "int64", False), ((3, 4), 0, "int32", False), ((3, 4), -1, "float32", True)],
    ids=["1d", "ax0", "ax-1", "s1x4", "empty", "f64", "int64", "int32", "initial"],
)
def test_cumulative_sum(be, shape, axis, dtype, include_initial):
    """cumulative_sum: int32 input accumulates in the default integer dtype, as sum does."""
    x = data(shape, dtype, -3, 3, seed=26)
    ref_axis = 0 if axis is None else axis
    ref = np.cumsum(x.astype(np.float64) if dtype == "float32" else x, axis=ref_axis)
    if include_initial:
        ref = np.concatenate([np.zeros_like(np.take(ref, [0], axis=ref_axis)), ref], axis=ref_axis)
    ref = ref.astype({"float32": "float32", "float64": "float64", "int32": "int64", "int64": "int64"}[dtype])
    kwargs = {"include_initial": True} if include_initial else {}
    out = be.xp.cumulative_sum(be.asarray(x), **({} if axis is None else {"axis": axis}), **kwargs)
    assert_matches(be, out, ref, what="cumulative_sum")
