"""matmul, matrix_transpose, tensordot and vecdot against numpy (float64 reference, float32 results)."""

from __future__ import annotations

import numpy as np
import pytest

from conformance._helpers import assert_matches, data


def _ref32(fn, *xs):
    return np.asarray(fn(*(x.astype(np.float64) for x in xs))).astype(np.float32)


@pytest.mark.parametrize(
    "sa,sb",
    [((3, 4), (4, 5)), ((1, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
     ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((0, 4), (4, 5)), ((3, 0), (0, 5))],
    ids=["2d", "batch1", "3d@2d", "batched", "bcast_batch", "vec@mat", "mat@vec", "vec@vec", "empty_rows",
         "empty_inner"],
)
def test_matmul(be, sa, sb):
    a, b = data(sa, seed=30), data(sb, seed=31)
    assert_matches(be, be.xp.matmul(be.asarray(a), be.asarray(b)), _ref32(np.matmul, a, b), what="matmul")


def test_matmul_operator(be):
    a, b = data((3, 4), seed=32), data((4, 2), seed=33)
    assert_matches(be, be.asarray(a) @ be.asarray(b), _ref32(np.matmul, a, b))


@pytest.mark.parametrize("dtype", ["float64", "int32", "int64"])
def test_matmul_dtypes(be, dtype):
    a, b = data((3, 4), dtype, -3, 3, seed=34), data((4, 2), dtype, -3, 3, seed=35)
    assert_matches(be, be.xp.matmul(be.asarray(a), be.asarray(b)), a @ b)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (1, 4), (0, 3)], ids=["2d", "3d", "row", "empty"])
def test_matrix_transpose(be, shape):
    x = data(shape, seed=36)
    assert_matches(be, be.xp.matrix_transpose(be.asarray(x)), np.swapaxes(x, -1, -2))


@pytest.mark.parametrize("attr", ["T", "mT"])
def test_transpose_attributes(be, attr):
    """The array object's .T (2-d) and .mT (batched matrix transpose) attributes."""
    x = data((3, 4), seed=36)
    assert_matches(be, getattr(be.asarray(x), attr), x.T)


@pytest.mark.parametrize(
    "sa,sb,axes",
    [((3, 4), (4, 5), 1), ((2, 3, 4), (3, 4, 5), 2), ((3, 4), (5, 3), ([0], [1])),
     ((2, 3, 4), (4, 3), ((1, 2), (1, 0))), ((3,), (4,), 0)],
    ids=["ax1", "ax2", "pairs", "two_pairs", "outer"],
)
def test_tensordot(be, sa, sb, axes):
    a, b = data(sa, seed=37), data(sb, seed=38)
    ref = _ref32(lambda x, y: np.tensordot(x, y, axes=axes), a, b)
    assert_matches(be, be.xp.tensordot(be.asarray(a), be.asarray(b), axes=axes), ref, what="tensordot")


@pytest.mark.parametrize(
    "sa,sb,axis",
    [((3, 4), (3, 4), -1), ((2, 3, 4), (4,), -1), ((3, 4), (3, 4), 0), ((1, 4), (1, 4), -1), ((0, 4), (0, 4), -1)],
    ids=["last", "bcast", "ax0", "batch1", "empty"],
)
def test_vecdot(be, sa, sb, axis):
    a, b = data(sa, seed=39), data(sb, seed=40)
    ref = _ref32(lambda x, y: np.sum(x * y, axis=axis), a, b)
    assert_matches(be, be.xp.vecdot(be.asarray(a), be.asarray(b), axis=axis), ref, what="vecdot")
