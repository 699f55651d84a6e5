"""Elementwise functions, operators and type promotion against numpy.

The reference is numpy evaluated in float64 and cast to the input dtype, i.e. the correctly rounded
value, so a backend passes when it is within a few ulp of it (rtol 1e-5 in float32).
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance._helpers import assert_matches, data, sid

# name -> (numpy reference, data range); every one is in the array API standard
UNARY = {
    "exp": (np.exp, (-3, 3)),
    "log": (np.log, (0.1, 4)),
    "log1p": (np.log1p, (-0.9, 3)),
    "expm1": (np.expm1, (-3, 3)),
    "tanh": (np.tanh, (-3, 3)),
    "sqrt": (np.sqrt, (0, 4)),
    "abs": (np.abs, (-3, 3)),
    "sign": (np.sign, (-3, 3)),
    "square": (np.square, (-3, 3)),
    "negative": (np.negative, (-3, 3)),
    "floor": (np.floor, (-3, 3)),
    "round": (np.round, (-3, 3)),
}
UNARY_SHAPES = [(), (1, 5), (3, 4), (0, 4)]


def _unary_cases():
    for name in UNARY:
        for shape in UNARY_SHAPES:
            yield pytest.param(name, shape, "float32", id=f"{name}-{sid(shape)}")
        yield pytest.param(name, (3, 4), "float64", id=f"{name}-f64")


@pytest.mark.parametrize("name,shape,dtype", list(_unary_cases()))
def test_unary_float(be, name, shape, dtype):
    ref_fn, (lo, hi) = UNARY[name]
    x = data(shape, dtype, lo, hi, seed=1)
    if name in ("sign", "abs") and x.size:
        x.reshape(-1)[0] = 0.0  # sign(0) == 0
    ref = ref_fn(x.astype(np.float64)).astype(dtype)
    assert_matches(be, getattr(be.xp, name)(be.asarray(x)), ref, what=name)


def test_round_half_to_even(be):
    """round() rounds halves to even, as the standard and numpy do."""
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999997, -0.7], np.float32)
    assert_matches(be, be.xp.round(be.asarray(x)), np.round(x))


@pytest.mark.parametrize("name", ["abs", "sign", "square", "negative"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_unary_int(be, name, dtype):
    x = data((3, 4), dtype, -5, 5, seed=2)
    x[0, 0] = 0
    assert_matches(be, getattr(be.xp, name)(be.asarray(x)), UNARY[name][0](x), what=name)


# name -> (numpy reference, range of first operand, range of second, dtypes)
BINARY = {
    "add": (np.add, (-3, 3), (-3, 3), ("float32", "int32", "int64")),
    "subtract": (np.subtract, (-3, 3), (-3, 3), ("float32", "int32", "int64")),
    "multiply": (np.multiply, (-3, 3), (-3, 3), ("float32", "int32", "int64")),
    "divide": (np.divide, (-3, 3), (0.5, 3), ("float32",)),
    "pow": (np.power, (0.2, 3), (-2, 2), ("float32",)),
    "maximum": (np.maximum, (-3, 3), (-3, 3), ("float32", "int64")),
    "minimum": (np.minimum, (-3, 3), (-3, 3), ("float32", "int64")),
    "logaddexp": (np.logaddexp, (-3, 3), (-3, 3), ("float32",)),
    "equal": (np.equal, (-2, 2), (-2, 2), ("float32", "int64")),
    "not_equal": (np.not_equal, (-2, 2), (-2, 2), ("float32", "int64")),
    "less": (np.less, (-2, 2), (-2, 2), ("float32", "int64")),
    "less_equal": (np.less_equal, (-2, 2), (-2, 2), ("float32", "int64")),
    "greater": (np.greater, (-2, 2), (-2, 2), ("float32", "int64")),
    "greater_equal": (np.greater_equal, (-2, 2), (-2, 2), ("float32", "int64")),
    "logical_and": (np.logical_and, (0, 2), (0, 2), ("bool",)),
    "logical_or": (np.logical_or, (0, 2), (0, 2), ("bool",)),
    "logical_xor": (np.logical_xor, (0, 2), (0, 2), ("bool",)),
}
# pairs of shapes: same, trailing broadcast, both-sided broadcast, 0-d with 2-d, size 0
BINARY_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((1, 4), (3, 1)), ((), (2, 3)), ((0, 4), (4,))]


def _binary_cases():
    for name, (_, _, _, dtypes) in BINARY.items():
        # broadcasting is one mechanism for every function: the arithmetic ones get every shape pair,
        # comparisons and logical ones the plain and the broadcast pair (this keeps kernel counts down)
        arithmetic = dtypes[0] == "float32" and not name.endswith(("equal", "less", "greater"))
        for sa, sb in BINARY_SHAPES if arithmetic else BINARY_SHAPES[:2]:
            yield pytest.param(name, sa, sb, dtypes[0], id=f"{name}-{sid(sa)}-{sid(sb)}")
        for dt in dtypes[1:]:
            yield pytest.param(name, (3, 4), (3, 4), dt, id=f"{name}-{dt}")


def _operands(name, sa, sb, dtype):
    _, ra, rb, _ = BINARY[name]
    if np.dtype(dtype).kind in "iu":
        ra, rb = (int(np.floor(ra[0])), int(np.ceil(ra[1]))), (int(np.floor(rb[0])), int(np.ceil(rb[1])))
        if name.startswith(("equal", "not_equal", "less", "greater")):
            ra = rb = (-2, 2)  # small ranges so that ties occur
    a = data(sa, dtype, *ra, seed=3)
    b = data(sb, dtype, *rb, seed=4)
    if dtype == "float32" and name in ("equal", "not_equal", "less_equal", "greater_equal"):
        a, b = np.round(a), np.round(b)  # exact ties, so that == and <= are exercised
    return a, b


@pytest.mark.parametrize("name,sa,sb,dtype", list(_binary_cases()))
def test_binary(be, name, sa, sb, dtype):
    ref_fn = BINARY[name][0]
    a, b = _operands(name, sa, sb, dtype)
    with np.errstate(all="ignore"):
        ref = ref_fn(a.astype(np.float64), b.astype(np.float64)) if dtype == "float32" else ref_fn(a, b)
    if ref.dtype == np.float64 and dtype == "float32":
        ref = ref.astype(np.float32)
    out = getattr(be.xp, name)(be.asarray(a), be.asarray(b))
    assert_matches(be, out, ref, what=name)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_pow_int(be, dtype):
    a, b = data((3, 4), dtype, -3, 4, seed=5), data((3, 4), dtype, 0, 4, seed=6)
    assert_matches(be, be.xp.pow(be.asarray(a), be.asarray(b)), np.power(a, b))


def test_logical_not(be):
    x = data((3, 4), "bool", seed=7)
    assert_matches(be, be.xp.logical_not(be.asarray(x)), np.logical_not(x))


# operator -> numpy; algorithm code uses these far more than the named functions
OPERATORS = {
    "add": lambda a, b: a + b,
    "radd": lambda a, b: b + a,
    "sub": lambda a, b: a - b,
    "rsub": lambda a, b: b - a,
    "mul": lambda a, b: a * b,
    "rmul": lambda a, b: b * a,
    "truediv": lambda a, b: a / b,
    "rtruediv": lambda a, b: b / a,
    "pow": lambda a, b: a**b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
}


# reflected operators with two arrays are the plain ones with swapped operands: only with Python scalars
OPERATOR_CASES = [(op, other) for op in OPERATORS for other in ("array", "scalar")
                  if not (op.startswith("r") and other == "array")]


@pytest.mark.parametrize("op,other", OPERATOR_CASES, ids=[f"{o}-{t}" for o, t in OPERATOR_CASES])
def test_operators_float(be, op, other):
    """Operators between float32 arrays, and with Python floats (which must not promote to float64)."""
    fn = OPERATORS[op]
    a = np.round(data((2, 3), "float32", 0.5, 3, seed=8), 1)
    b = np.round(data((2, 3), "float32", 0.5, 3, seed=9), 1) if other == "array" else 1.5
    ref = fn(a.astype(np.float64), b.astype(np.float64) if other == "array" else b)
    ref = ref.astype(np.float32) if ref.dtype == np.float64 else ref
    bb = be.asarray(b) if other == "array" else b
    assert_matches(be, fn(be.asarray(a), bb), ref, what=op)


@pytest.mark.parametrize("op", ["add", "sub", "rsub", "mul", "lt", "eq"])
def test_operators_int_scalar(be, op):
    """int32 arrays with Python ints stay int32."""
    fn = OPERATORS[op]
    a = data((2, 3), "int32", -3, 3, seed=10)
    assert_matches(be, fn(be.asarray(a), 2), fn(a, np.int32(2)), what=op)


UNARY_OPERATORS = {
    "neg": (lambda x: -x, "float32"),
    "pos": (lambda x: +x, "float32"),
    "abs": (lambda x: abs(x), "float32"),
    "invert": (lambda x: ~x, "bool"),
    "and": (lambda x: x & ~x, "bool"),
    "or": (lambda x: x | ~x, "bool"),
    "xor": (lambda x: x ^ (x & x), "bool"),
}


@pytest.mark.parametrize("op", list(UNARY_OPERATORS))
def test_array_operators(be, op):
    """Python operators of the array object (the standard's __neg__, __abs__, __invert__, __and__, ...)."""
    fn, dtype = UNARY_OPERATORS[op]
    x = data((2, 3), dtype, seed=11)
    assert_matches(be, fn(be.asarray(x)), fn(x), what=op)


@pytest.mark.parametrize(
    "da,db,expected",
    [("float32", "float64", "float64"), ("int32", "int64", "int64"), ("float32", "float32", "float32"),
     ("bool", "bool", "bool")],
    ids=["f32+f64", "i32+i64", "f32+f32", "bool"],
)
def test_promotion(be, da, db, expected):
    """Array-array promotion within a kind follows the standard's lattice."""
    a, b = data((2, 2), da, 0, 3, seed=13), data((2, 2), db, 0, 3, seed=14)
    out = be.xp.logical_or(be.asarray(a), be.asarray(b)) if da == "bool" else be.xp.add(be.asarray(a), be.asarray(b))
    assert np.dtype(be.to_numpy(out).dtype) == np.dtype(expected)


@pytest.mark.parametrize(
    "kwargs",
    [{"min": -1.0, "max": 1.0}, {"min": -0.5}, {"max": 0.25}],
    ids=["both", "min", "max"],
)
@pytest.mark.parametrize("shape", [(3, 4), (1,), (0, 2)], ids=sid)
def test_clip(be, kwargs, shape):
    x = data(shape, "float32", seed=15)
    ref = np.clip(x, kwargs.get("min"), kwargs.get("max"))
    assert_matches(be, be.xp.clip(be.asarray(x), **kwargs), ref)


def test_clip_int(be):
    x = data((3, 4), "int64", -5, 5, seed=16)
    assert_matches(be, be.xp.clip(be.asarray(x), min=-2, max=3), np.clip(x, -2, 3))


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((3, 4), (3, 4), (4,)), ((3, 1), (1, 4), ()),
                                    ((0, 4), (0, 4), (4,))],
                         ids=["same", "bcast_y", "bcast_all", "empty"])
def test_where(be, dtype, shapes):
    sc, sx, sy = shapes
    c = data(sc, "bool", seed=17)
    x, y = data(sx, dtype, -3, 3, seed=18), data(sy, dtype, -3, 3, seed=19)
    out = be.xp.where(be.asarray(c), be.asarray(x), be.asarray(y))
    assert_matches(be, out, np.where(c, x, y))
