"""Array-API behaviour the standard's own suite (data-apis/array-api-tests) checks, kept fixed here.

Each case is a failure that suite found in a backend's `xp` (see BENCHMARKS.md, "Array API standard
suite"), checked on every backend against numpy. Inputs reuse a few small shapes: tinygrad compiles a
kernel per new shape and dtype, which dominates its time.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import pytest

from conformance._helpers import assert_matches, np_of

SPECIAL = np.array([-0.0, 0.0, -0.5, 2.0, np.inf, -np.inf, np.nan], dtype=np.float32)


def _signbits(be, out) -> np.ndarray:
    return np.signbit(np_of(be, out))


def test_python_scalars_of_arrays(be):
    """bool()/int()/float()/__index__ of one-element arrays work eagerly (e.g. `if xp.any(mask):`)."""
    xp = be.xp
    x = be.asarray(np.array([1.5, -2.0, 3.0], np.float32))
    assert bool(xp.any(x > 2.0)) is True
    assert bool(xp.all(x > 2.0)) is False
    i = be.asarray(np.array(2, np.int64))
    assert int(i) == 2 and float(i) == 2.0 and operator.index(i) == 2
    assert ["a", "b", "c"][i] == "c"
    assert float(xp.sum(x)) == pytest.approx(2.5)
    assert int(be.asarray(np.array(3.7, np.float32))) == 3
    # 0-d arrays as slice bounds
    assert_matches(be, x[:i], np.array([1.5, -2.0], np.float32), what="x[:0-d array]")
    with pytest.raises(TypeError):
        operator.index(be.asarray(np.array(2.0, np.float32)))


def test_boolean_mask_indexing(be):
    """x[mask] for a full-shape and a leading-axes mask, an all-False mask, and 0-d masks."""
    x_np = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = be.asarray(x_np)
    mask = x_np > 2.5
    assert_matches(be, x[be.asarray(mask)], x_np[mask], what="x[mask]")
    rows = np.array([False, True])
    assert_matches(be, x[be.asarray(rows)], x_np[rows], what="x[row mask]")
    none = np.zeros((2, 3), bool)
    assert_matches(be, x[be.asarray(none)], x_np[none], what="x[all-False mask]")
    assert tuple(x[be.asarray(np.array(True))].shape) == (1, 2, 3)
    assert tuple(x[be.asarray(np.array(False))].shape) == (0, 2, 3)


def test_setitem(be):
    """Item, slice and mask assignment; values are cast to the array's dtype; earlier results keep theirs."""
    if be.name == "jax":
        pytest.skip("JAX arrays are immutable: the standard allows that (it uses x.at[].set instead)")
    x_np = np.arange(6, dtype=np.float32).reshape(2, 3)
    big = x_np > 4.5
    x = be.asarray(x_np.copy())  # the numpy reference's asarray shares memory
    before = x + 1.0  # a result computed before the assignments
    x[0, 1] = 10.0
    x[1] = be.asarray(np.array([7.0, 8.0, 9.0], np.float32))
    x[be.asarray(big)] = -1.0
    ref = x_np.copy()
    ref[0, 1] = 10.0
    ref[1] = [7.0, 8.0, 9.0]
    ref[big] = -1.0
    assert_matches(be, x, ref, what="after setitem")
    assert_matches(be, before, x_np + 1.0, what="a result computed before setitem")
    mask = np.array([[True, False, True], [False, False, False]])
    x[be.asarray(mask)] = be.asarray(np.array([-5.0, -6.0], np.float32))
    ref[mask] = [-5.0, -6.0]
    assert_matches(be, x, ref, what="x[mask] = array")
    i = be.asarray(np.array([1, 2, 3], np.int32))
    i[0] = 7
    assert_matches(be, i, np.array([7, 2, 3], np.int32), what="int setitem")


def test_creation_functions(be):
    """arange (float and negative steps), asarray of scalars and of a list of arrays, eye, linspace, *_like."""
    xp = be.xp
    assert_matches(be, xp.arange(0.5, 3.1, 0.7, dtype=be.float32),
                   np.arange(0.5, 3.1, 0.7, dtype=np.float32), what="arange float")
    assert_matches(be, xp.arange(5, 0, -2, dtype=be.int64), np.arange(5, 0, -2, dtype=np.int64),
                   what="arange negative step")
    assert tuple(xp.arange(3, 3, dtype=be.int64).shape) == (0,)
    assert_matches(be, xp.asarray(3, dtype=be.int32), np.array(3, np.int32), what="asarray(int)")
    assert_matches(be, xp.asarray(True), np.array(True), what="asarray(bool)")
    parts = [be.asarray(np.array(1.5, np.float32)), be.asarray(np.array(-2.0, np.float32))]
    assert_matches(be, xp.asarray(parts), np.array([1.5, -2.0], np.float32), what="asarray(list of arrays)")
    assert_matches(be, xp.eye(3, 4, k=1, dtype=be.float32), np.eye(3, 4, k=1, dtype=np.float32), what="eye")
    assert_matches(be, xp.linspace(0.0, 1.0, 4, endpoint=False, dtype=be.float32),
                   np.linspace(0.0, 1.0, 4, endpoint=False, dtype=np.float32), what="linspace")
    x = be.asarray(np.zeros((2, 3), np.float32))
    assert_matches(be, xp.full_like(x, 7, dtype=be.int32), np.full((2, 3), 7, np.int32), what="full_like")
    assert_matches(be, xp.ones_like(x, dtype=be.bool), np.ones((2, 3), bool), what="ones_like")


def test_astype_and_broadcasting(be):
    """astype truncates floats toward zero and makes bools; broadcast_to / broadcast_arrays shapes."""
    xp = be.xp
    x_np = np.array([-1.7, 0.0, 2.5], np.float32)
    x = be.asarray(x_np)
    assert_matches(be, xp.astype(x, be.int32), x_np.astype(np.int32), what="astype int32")
    assert_matches(be, xp.astype(x, be.bool), x_np.astype(bool), what="astype bool")
    assert_matches(be, xp.broadcast_to(x, (2, 3)), np.broadcast_to(x_np, (2, 3)), what="broadcast_to")
    a, b = xp.broadcast_arrays(x, be.asarray(np.ones((2, 1), np.float32)))
    assert tuple(a.shape) == tuple(b.shape) == (2, 3)
    with pytest.raises((ValueError, RuntimeError)):
        xp.broadcast_to(x, (2, 4))


def test_special_values_unary(be):
    """The standard's special cases: signed zeros, infinities and NaNs of unary functions."""
    xp = be.xp
    x = be.asarray(SPECIAL)
    with np.errstate(all="ignore"):
        for name in ("abs", "sign", "tanh", "sinh", "asinh", "atan", "atanh", "asin", "acosh",
                     "round", "ceil", "floor", "trunc"):
            out = getattr(xp, name)(x)
            ref = getattr(np, {"asinh": "arcsinh", "atan": "arctan", "atanh": "arctanh", "asin": "arcsin",
                               "acosh": "arccosh"}.get(name, name))(SPECIAL)
            assert_matches(be, out, ref, what=name, rtol=1e-6, atol=1e-6)
            zeros = (ref == 0) if name != "sign" else np.zeros_like(ref, bool)  # sign(-0) may be either zero
            np.testing.assert_array_equal(_signbits(be, out)[zeros], np.signbit(ref)[zeros],
                                          err_msg=f"{name}: sign of zero")
    assert not _signbits(be, abs(x))[0], "abs(-0.0) must be +0.0"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy warns about the very cases tested
def test_special_values_pow(be):
    """pow and `**`: 1 ** anything, (-1) ** +-inf and -0 ** odd integers, as the standard says."""
    xp = be.xp
    base = np.array([1.0, -1.0, -1.0, -0.0, -0.0, 2.0], np.float32)
    expo = np.array([np.nan, np.inf, -np.inf, 3.0, -3.0, 0.5], np.float32)
    ref = np.power(base, expo)
    b, e = be.asarray(base), be.asarray(expo)
    for what, out in (("pow", xp.pow(b, e)), ("**", b ** e)):
        assert_matches(be, out, ref, what=what)
        np.testing.assert_array_equal(_signbits(be, out), np.signbit(ref), err_msg=f"{what}: signs")
    assert_matches(be, 2.0 ** be.asarray(np.array([3.0], np.float32)), np.array([8.0], np.float32),
                   what="scalar ** array")


def test_comparisons_with_nan(be):
    """<=, >=, less_equal and greater_equal are False where either side is NaN."""
    xp = be.xp
    a_np = np.array([np.nan, 1.0, 2.0], np.float32)
    b_np = np.array([1.0, np.nan, 2.0], np.float32)
    a, b = be.asarray(a_np), be.asarray(b_np)
    with np.errstate(invalid="ignore"):
        for what, out, ref in (("<=", a <= b, a_np <= b_np), (">=", a >= b, a_np >= b_np),
                               ("less_equal", xp.less_equal(a, b), a_np <= b_np),
                               ("greater_equal", xp.greater_equal(a, 1.0), a_np >= 1.0),
                               ("maximum", xp.maximum(a, b), np.maximum(a_np, b_np)),
                               ("minimum", xp.minimum(a, b), np.minimum(a_np, b_np))):
            assert_matches(be, out, ref, what=what)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:.*degrees of freedom:UserWarning")
def test_reductions_nan_and_empty(be):
    """max/min/var/std propagate NaN; mean/var/std of no elements are NaN."""
    xp = be.xp
    x = be.asarray(np.array([1.0, np.nan, 3.0], np.float32))
    for name in ("max", "min", "var", "std", "mean"):
        assert math.isnan(float(getattr(xp, name)(x))), f"{name} must propagate NaN"
    empty = be.asarray(np.zeros((0,), np.float32))
    for name in ("mean", "var", "std"):
        assert math.isnan(float(getattr(xp, name)(empty))), f"{name} of no elements must be NaN"
    one = be.asarray(np.array([[np.nan], [2.0]], np.float32))  # one-element axes: x - mean(x) is x - x
    assert_matches(be, xp.var(one, axis=1), np.array([np.nan, 0.0], np.float32), what="var over one element")
    y_np = np.array([[1.0, 2.0, 4.0], [0.5, 0.5, 3.0]], np.float32)
    y = be.asarray(y_np)
    assert_matches(be, xp.var(y, axis=1, correction=1), y_np.var(axis=1, ddof=1), what="var(correction=1)")
    assert_matches(be, xp.std(y, axis=0, keepdims=True), y_np.std(axis=0, keepdims=True), what="std keepdims")


def test_data_dependent_functions(be):
    """nonzero and unique_* (every NaN is distinct), run eagerly."""
    xp = be.xp
    x_np = np.array([[0, 3, 1], [3, 0, 2]], np.int64)
    x = be.asarray(x_np)
    for got, ref in zip(xp.nonzero(x), np.nonzero(x_np)):
        assert_matches(be, got, ref.astype(np.int64), what="nonzero")
    assert_matches(be, xp.unique_values(x), np.unique(x_np), what="unique_values")
    v, inv, c = np.unique(x_np.reshape(-1), return_inverse=True, return_counts=True)
    counts = xp.unique_counts(x)
    assert_matches(be, counts.counts, c.astype(np.int64), what="unique_counts.counts")
    assert_matches(be, xp.unique_inverse(x).inverse_indices, inv.reshape(x_np.shape).astype(np.int64),
                   what="unique_inverse")
    nans = be.asarray(np.array([np.nan, 1.0, np.nan], np.float32))
    assert tuple(xp.unique_values(nans).shape) == (3,), "each NaN is its own unique value"


def test_unique_all(be):
    """unique_all: values, first indices, inverse indices shaped like x, counts."""
    x_np = np.array([[0, 3, 1], [3, 0, 2]], np.int64)
    res = be.xp.unique_all(be.asarray(x_np))
    v, i, inv, c = np.unique(x_np.reshape(-1), return_index=True, return_inverse=True, return_counts=True)
    assert_matches(be, res.values, v, what="unique_all.values")
    assert_matches(be, res.indices, i.astype(np.int64), what="unique_all.indices")
    assert_matches(be, res.inverse_indices, inv.reshape(x_np.shape).astype(np.int64), what="unique_all.inverse")
    assert_matches(be, res.counts, c.astype(np.int64), what="unique_all.counts")


def test_newer_functions(be):
    """searchsorted, hypot, signbit, bitwise shifts, the inspection API, DLPack.

    (Where NaNs go in searchsorted is left to implementations by the standard, so none are searched.)
    """
    xp = be.xp
    a_np = np.array([1.0, 2.0, 2.0, 5.0], np.float32)
    v_np = np.array([2.0, 6.0, 0.0], np.float32)
    a, v = be.asarray(a_np), be.asarray(v_np)
    for side in ("left", "right"):
        assert_matches(be, xp.searchsorted(a, v, side=side), np.searchsorted(a_np, v_np, side=side),
                       what=f"searchsorted {side}", check_dtype=False)
    assert_matches(be, xp.hypot(be.asarray(SPECIAL), be.asarray(SPECIAL[::-1].copy())),
                   np.hypot(SPECIAL, SPECIAL[::-1]), what="hypot")
    assert_matches(be, xp.signbit(be.asarray(SPECIAL)), np.signbit(SPECIAL), what="signbit")
    i_np = np.array([1, -8, 5], np.int32)
    s_np = np.array([3, 1, 2], np.int32)
    i, s = be.asarray(i_np), be.asarray(s_np)
    assert_matches(be, xp.bitwise_left_shift(i, s), np.left_shift(i_np, s_np), what="left shift")
    assert_matches(be, xp.bitwise_right_shift(i, s), np.right_shift(i_np, s_np), what="right shift")
    info = xp.__array_namespace_info__()
    assert {"boolean indexing", "data-dependent shapes"} <= set(info.capabilities())
    assert "float32" in info.dtypes(kind="real floating")
    assert "integral" in info.default_dtypes()
    np.testing.assert_array_equal(np.from_dlpack(i), i_np)
    assert_matches(be, xp.from_dlpack(np.array([1.5, 2.5], np.float32)), np.array([1.5, 2.5], np.float32),
                   what="from_dlpack")


def test_compile_refuses_value_branching(tbe):
    """Inside `compile`, Python branching on an array's value is refused with a TypeError (tinygrad:
    puffer's CompileError, JAX: its tracer error); torch compiles eagerly, where it just works."""
    xp = tbe.xp

    def f(x):
        return x * 2.0 if bool(xp.any(x > 0.0)) else x

    step = tbe.compile(f)
    x = tbe.asarray(np.array([1.0, -1.0], np.float32))
    if tbe.name == "torch":
        assert_matches(tbe, step(x), np.array([2.0, -2.0], np.float32), what="eager torch compile")
        return
    with pytest.raises(TypeError, match="compile|[Tt]racer|concrete"):
        step(x)
