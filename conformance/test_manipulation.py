"""Manipulation, indexing and astype against numpy (exact: these move values, they do not compute)."""

from __future__ import annotations

import numpy as np
import pytest

from conformance._helpers import assert_matches, data

# name -> (namespace call, numpy reference, input shape)
MANIPULATION = {
    "reshape": (lambda xp, x: xp.reshape(x, (4, 3)), lambda x: x.reshape(4, 3), (3, 4)),
    "reshape_infer": (lambda xp, x: xp.reshape(x, (2, -1)), lambda x: x.reshape(2, -1), (3, 4)),
    "reshape_flat": (lambda xp, x: xp.reshape(x, (-1,)), lambda x: x.reshape(-1), (2, 3, 2)),
    "reshape_scalar": (lambda xp, x: xp.reshape(x, (1, 1)), lambda x: x.reshape(1, 1), ()),
    "reshape_empty": (lambda xp, x: xp.reshape(x, (0, 2, 2)), lambda x: x.reshape(0, 2, 2), (0, 4)),
    "expand_dims0": (lambda xp, x: xp.expand_dims(x, axis=0), lambda x: x[None], (3, 4)),
    "expand_dims_neg": (lambda xp, x: xp.expand_dims(x, axis=-1), lambda x: x[..., None], (3, 4)),
    "squeeze": (lambda xp, x: xp.squeeze(x, axis=1), lambda x: x.squeeze(1), (3, 1, 4)),
    "squeeze_neg": (lambda xp, x: xp.squeeze(x, axis=-1), lambda x: x.squeeze(-1), (3, 1)),
    "squeeze_tuple": (lambda xp, x: xp.squeeze(x, axis=(0, 2)), lambda x: x.squeeze((0, 2)), (1, 3, 1)),
    "permute_dims": (lambda xp, x: xp.permute_dims(x, (2, 0, 1)), lambda x: x.transpose(2, 0, 1), (2, 3, 4)),
    "permute_2d": (lambda xp, x: xp.permute_dims(x, (1, 0)), lambda x: x.T, (3, 4)),
    "broadcast_to": (lambda xp, x: xp.broadcast_to(x, (2, 3, 4)), lambda x: np.broadcast_to(x, (2, 3, 4)), (3, 1)),
    "broadcast_empty": (lambda xp, x: xp.broadcast_to(x, (0, 4)), lambda x: np.broadcast_to(x, (0, 4)), (4,)),
    "flip_all": (lambda xp, x: xp.flip(x), lambda x: np.flip(x), (3, 4)),
    "flip0": (lambda xp, x: xp.flip(x, axis=0), lambda x: np.flip(x, 0), (3, 4)),
    "flip_neg": (lambda xp, x: xp.flip(x, axis=-1), lambda x: np.flip(x, -1), (3, 4)),
    "flip_tuple": (lambda xp, x: xp.flip(x, axis=(0, 2)), lambda x: np.flip(x, (0, 2)), (2, 3, 4)),
    "roll_flat": (lambda xp, x: xp.roll(x, 5), lambda x: np.roll(x, 5), (3, 4)),
    "roll_ax": (lambda xp, x: xp.roll(x, 1, axis=0), lambda x: np.roll(x, 1, 0), (3, 4)),
    "roll_neg": (lambda xp, x: xp.roll(x, -2, axis=-1), lambda x: np.roll(x, -2, -1), (3, 4)),
    "roll_multi": (lambda xp, x: xp.roll(x, (1, -1), axis=(0, 1)), lambda x: np.roll(x, (1, -1), (0, 1)), (3, 4)),
    "repeat_ax": (lambda xp, x: xp.repeat(x, 2, axis=0), lambda x: np.repeat(x, 2, 0), (3, 4)),
    "repeat_neg": (lambda xp, x: xp.repeat(x, 3, axis=-1), lambda x: np.repeat(x, 3, -1), (2, 2)),
    "repeat_flat": (lambda xp, x: xp.repeat(x, 2), lambda x: np.repeat(x, 2), (2, 3)),
    "tile": (lambda xp, x: xp.tile(x, (2, 3)), lambda x: np.tile(x, (2, 3)), (2, 2)),
    "tile_more_dims": (lambda xp, x: xp.tile(x, (2, 1, 1)), lambda x: np.tile(x, (2, 1, 1)), (2, 3)),
}


@pytest.mark.parametrize("name", list(MANIPULATION))
def test_manipulation(be, name):
    call, ref_fn, shape = MANIPULATION[name]
    x = data(shape, seed=50)
    assert_matches(be, call(be.xp, be.asarray(x)), ref_fn(x), rtol=0, atol=0, what=name)


@pytest.mark.parametrize("dtype", ["int64", "bool"])
@pytest.mark.parametrize("name", ["reshape", "permute_2d", "flip0", "broadcast_to"])
def test_manipulation_dtypes(be, name, dtype):
    call, ref_fn, shape = MANIPULATION[name]
    x = data(shape, dtype, -5, 5, seed=51)
    assert_matches(be, call(be.xp, be.asarray(x)), ref_fn(x), what=name)


@pytest.mark.parametrize(
    "shapes,axis",
    [(((2, 3), (4, 3)), 0), (((2, 3), (2, 1), (2, 2)), -1), (((2, 3), (0, 3)), 0), (((1, 2, 3), (1, 2, 3)), 1),
     (((2, 3), (3,)), None)],
    ids=["ax0", "ax-1_three", "with_empty", "3d", "flat"],
)
def test_concat(be, shapes, axis):
    xs = [data(s, seed=52 + i) for i, s in enumerate(shapes)]
    ref = np.concatenate([x.reshape(-1) for x in xs]) if axis is None else np.concatenate(xs, axis=axis)
    out = be.xp.concat([be.asarray(x) for x in xs], axis=axis)
    assert_matches(be, out, ref, rtol=0, atol=0)


def test_concat_int(be):
    xs = [data((2, 2), "int32", 0, 9, seed=55), data((1, 2), "int32", 0, 9, seed=56)]
    assert_matches(be, be.xp.concat([be.asarray(x) for x in xs], axis=0), np.concatenate(xs))


@pytest.mark.parametrize(
    "shape,axis",
    [((3, 4), 0), ((3, 4), 1), ((3, 4), -1), ((1,), 0), ((1,), -1), ((), 0), ((0, 2), 1)],
    ids=["ax0", "ax1", "ax-1", "s1_ax0", "s1_ax-1", "scalar", "empty"],
)
def test_stack(be, axis, shape):
    xs = [data(shape, seed=57 + i) for i in range(3)]
    assert_matches(be, be.xp.stack([be.asarray(x) for x in xs], axis=axis), np.stack(xs, axis=axis))


SLICES = {
    "int": lambda x: x[1],
    "neg_int": lambda x: x[-1],
    "range": lambda x: x[1:3],
    "step": lambda x: x[::2],
    "col": lambda x: x[:, -1],
    "ellipsis": lambda x: x[..., 0],
    "newaxis": lambda x: x[None, :, 1:],
    "2d_range": lambda x: x[1:, :2],
    "neg_range": lambda x: x[-2:, -3:-1],
    "empty_range": lambda x: x[2:2],
    "scalar_item": lambda x: x[0, 1],
}


@pytest.mark.parametrize("name", list(SLICES))
def test_basic_slicing(be, name):
    x = data((4, 5), seed=60)
    assert_matches(be, SLICES[name](be.asarray(x)), SLICES[name](x), rtol=0, atol=0, what=name)


@pytest.mark.parametrize(
    "shape,idx,axis",
    [((5,), [4, 0, 2, 2], 0), ((4, 3), [3, 1], 0), ((4, 3), [2, 0, 0, 1], 1), ((4, 3), [1], -1), ((4, 3), [], 0),
     ((2, 3, 4), [3, 0], -1)],
    ids=["1d", "rows", "cols", "neg_axis", "empty", "3d"],
)
@pytest.mark.parametrize("idx_dtype", ["int32", "int64"])
def test_take(be, shape, idx, axis, idx_dtype):
    x = data(shape, seed=61)
    i = np.array(idx, dtype=idx_dtype)
    assert_matches(be, be.xp.take(be.asarray(x), be.asarray(i), axis=axis), np.take(x, i, axis=axis))


@pytest.mark.parametrize(
    "shape,idx_shape,axis",
    [((4, 3), (4, 1), -1), ((4, 3), (4, 2), 1), ((4, 3), (2, 3), 0), ((1, 5), (1, 1), -1), ((2, 3, 4), (2, 3, 1), 2),
     ((0, 3), (0, 1), -1)],
    ids=["gather_action", "two", "ax0", "batch1", "3d", "empty"],
)
@pytest.mark.parametrize("idx_dtype", ["int32", "int64"])
@pytest.mark.parametrize("where", ["backend", "namespace"])
def test_take_along_axis(be, shape, idx_shape, axis, idx_dtype, where):
    """take_along_axis, the backend's and the namespace's (gathering log-probs of the actions taken)."""
    x = data(shape, seed=62)
    i = data(idx_shape, idx_dtype, 0, shape[axis] if shape[axis] else 1, seed=63)
    fn = be.take_along_axis if where == "backend" else be.xp.take_along_axis
    assert_matches(be, fn(be.asarray(x), be.asarray(i), axis=axis), np.take_along_axis(x, i, axis=axis))


DTYPES = ["float32", "float64", "int32", "int64", "bool"]


@pytest.mark.parametrize("src", DTYPES)
@pytest.mark.parametrize("dst", DTYPES)
def test_astype(be, src, dst):
    """Every cast between the five dtypes; floats truncate toward zero, nonzero is True."""
    if src.startswith("float"):
        x = np.array([[-2.75, -1.5, -0.25], [0.0, 0.5, 3.25]], dtype=src)
    else:
        x = data((2, 3), src, -3, 4, seed=64)
    out = be.xp.astype(be.asarray(x), be.dtype(dst))
    assert_matches(be, out, x.astype(dst), rtol=0, atol=0, what=f"astype {src}->{dst}")


def test_astype_same_dtype(be):
    x = be.asarray(data((2, 3)))
    assert_matches(be, be.xp.astype(x, be.float32), be.to_numpy(x))
