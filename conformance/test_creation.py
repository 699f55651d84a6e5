"""Creation functions, dtypes and numpy in/out against numpy.

Every call names its dtype: default dtypes differ between frameworks (numpy and JAX-with-x64 default
to float64, torch and tinygrad to float32), and puffer's own code never relies on them.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance._helpers import assert_matches, data, sid

DTYPES = ["float32", "float64", "int32", "int64", "bool"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_round_trip(be, dtype):
    """asarray from numpy keeps dtype and values; to_numpy gives them back."""
    x = data((2, 3), dtype, low=-5, high=5)
    out = be.asarray(x)
    assert_matches(be, out, x, rtol=0, atol=0, what=f"asarray({dtype})")
    assert np.dtype(be.to_numpy(be.asarray(x, dtype=be.dtype(dtype))).dtype) == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_attributes(be, dtype):
    """be.float32 / be.dtype("float32") / a numpy dtype all name the same namespace dtype."""
    assert be.dtype(dtype) == getattr(be, dtype)
    assert be.dtype(dtype) == getattr(be.xp, dtype)
    x = data((3,), "float64", low=-3, high=3)
    ref = x.astype(dtype)
    assert_matches(be, be.asarray(x, dtype=np.dtype(dtype)), ref, what="asarray(dtype=np.dtype)")
    assert_matches(be, be.asarray(x, dtype=be.dtype(dtype)), ref, what="asarray(dtype=namespace dtype)")


def test_asarray_python_data(be):
    """Nested lists and Python scalars with an explicit dtype."""
    assert_matches(be, be.asarray([[1.5, 2.0], [3.0, -4.0]], dtype=be.float32),
                   np.array([[1.5, 2.0], [3.0, -4.0]], np.float32))
    assert_matches(be, be.asarray([1, 2, 3], dtype=be.int64), np.array([1, 2, 3], np.int64))
    assert_matches(be, be.asarray(2.5, dtype=be.float32), np.array(2.5, np.float32))
    assert_matches(be, be.asarray([True, False], dtype=be.bool), np.array([True, False]))


def _aligned(n: int, alignment: int = 64) -> np.ndarray:
    """A float32 array whose buffer starts on an `alignment`-byte boundary (zero-copy paths need that)."""
    buf = np.zeros(4 * n + alignment, dtype=np.uint8)
    offset = (-buf.ctypes.data) % alignment
    return buf[offset:offset + 4 * n].view(np.float32)


@pytest.mark.parametrize("alignment", [64, 4], ids=["aligned64", "aligned4"])
def test_asarray_copies_numpy_buffer(be, alignment):
    """Changing the numpy source afterwards must not change the backend array: envs overwrite their
    observation buffers in place every step, so an aliased array would silently change stored data."""
    if be.name == "numpy":
        pytest.skip("the numpy reference's asarray is np.asarray, which shares the buffer by design")
    x = _aligned(16) if alignment == 64 else _aligned(17)[1:]
    x[:] = np.arange(16)
    out = be.asarray(x)
    x[:] = -1
    assert_matches(be, out, np.arange(16, dtype=np.float32))


def test_xp_asarray(be):
    """The namespace's own asarray, with a namespace dtype."""
    assert_matches(be, be.xp.asarray([1.0, 2.0], dtype=be.float32), np.array([1.0, 2.0], np.float32))


SHAPES = [(), (1,), (2, 3), (0, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=sid)
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_zeros_ones(be, shape, dtype):
    xp = be.xp
    assert_matches(be, xp.zeros(shape, dtype=be.dtype(dtype)), np.zeros(shape, dtype))
    assert_matches(be, xp.ones(shape, dtype=be.dtype(dtype)), np.ones(shape, dtype))


@pytest.mark.parametrize("shape", SHAPES, ids=sid)
def test_full(be, shape):
    xp = be.xp
    assert_matches(be, xp.full(shape, 1.5, dtype=be.float32), np.full(shape, 1.5, np.float32))
    assert_matches(be, xp.full(shape, -3, dtype=be.int32), np.full(shape, -3, np.int32))
    assert_matches(be, xp.full(shape, True, dtype=be.bool), np.full(shape, True))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "bool"])
def test_like(be, dtype):
    """zeros_like / ones_like / full_like keep shape and dtype, or take the dtype they are given."""
    xp = be.xp
    x = be.asarray(data((2, 3), dtype))
    assert_matches(be, xp.zeros_like(x), np.zeros((2, 3), dtype))
    assert_matches(be, xp.ones_like(x), np.ones((2, 3), dtype))
    fill = True if dtype == "bool" else 2
    assert_matches(be, xp.full_like(x, fill), np.full((2, 3), fill, dtype))
    assert_matches(be, xp.zeros_like(x, dtype=be.float32), np.zeros((2, 3), np.float32))


@pytest.mark.parametrize(
    "args,dtype",
    [((5,), "int64"), ((1, 7, 2), "int32"), ((3, -3, -2), "int64"), ((0,), "int64"),
     ((0.0, 1.0, 0.25), "float32"), ((-1.0, 1.0, 0.5), "float64"), ((4,), "float32")],
    ids=["stop", "step", "negstep", "empty", "float", "float64", "float_stop"],
)
def test_arange(be, args, dtype):
    assert_matches(be, be.xp.arange(*args, dtype=be.dtype(dtype)), np.arange(*args, dtype=dtype))


@pytest.mark.parametrize("num,endpoint", [(5, True), (4, False), (1, True), (0, True)],
                         ids=["end", "noend", "one", "zero"])
def test_linspace(be, num, endpoint):
    out = be.xp.linspace(-1.0, 2.0, num, dtype=be.float32, endpoint=endpoint)
    assert_matches(be, out, np.linspace(-1.0, 2.0, num, dtype=np.float32, endpoint=endpoint))


@pytest.mark.parametrize("args,kwargs", [((3,), {}), ((2, 4), {}), ((3, 4), {"k": 1}), ((4, 3), {"k": -1}), ((1,), {})],
                         ids=["square", "rect", "k1", "kneg", "one"])
def test_eye(be, args, kwargs):
    assert_matches(be, be.xp.eye(*args, **kwargs, dtype=be.float32), np.eye(*args, **kwargs, dtype=np.float32))


def test_device_and_shape_attributes(be):
    """Arrays expose .shape (a tuple of ints), .ndim and .dtype; the backend reports its device."""
    x = be.asarray(data((2, 3, 4)))
    assert tuple(x.shape) == (2, 3, 4)
    assert all(isinstance(d, int) for d in x.shape)
    assert x.ndim == 3
    assert x.dtype == be.float32
    assert be.device == "cpu"
    assert be.is_array(x)
    if be.name != "numpy":
        assert not be.is_array(np.zeros(3))
