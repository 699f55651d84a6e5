"""puffer.spaces: construction, sampling, membership, flat/structured layouts, JSON and gymnasium round trips."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from puffer import spaces as S
from puffer.errors import SpaceError

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16]
FLOAT_DTYPES = [np.float32, np.float64]


def box_strategy(max_abs=1000):
    @st.composite
    def make(draw):
        shape = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
        dtype = draw(st.sampled_from(INT_DTYPES + FLOAT_DTYPES))
        if np.dtype(dtype).kind == "f":
            lo = draw(st.sampled_from([-np.inf, -5.0, 0.0]))
            hi = draw(st.sampled_from([np.inf, 5.0, 10.5]))
        else:
            info = np.iinfo(dtype)
            lo = draw(st.integers(max(info.min, -max_abs), min(info.max, max_abs)))
            hi = draw(st.integers(lo, min(info.max, max_abs)))
        return S.Box(lo, hi, shape, dtype)
    return make()


def leaf_strategy():
    return st.one_of(
        box_strategy(),
        st.builds(S.Discrete, st.integers(1, 9), st.integers(-3, 3)),
        st.builds(lambda n, d: S.MultiDiscrete(n, d), st.lists(st.integers(1, 5), min_size=1, max_size=4),
                  st.sampled_from([np.int32, np.int64])),
        st.builds(S.MultiBinary, st.integers(1, 4)),
    )


def space_strategy():
    keys = st.text("abcxyz_", min_size=1, max_size=4)
    return st.recursive(
        leaf_strategy(),
        lambda children: st.one_of(
            st.builds(S.Tuple, st.lists(children, min_size=1, max_size=3)),
            st.builds(S.Dict, st.dictionaries(keys, children, min_size=1, max_size=3)),
        ),
        max_leaves=6,
    )


def assert_tree_equal(a, b):
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_tree_equal(a[k], b[k])
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_tree_equal(x, y)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (a, b)
        np.testing.assert_array_equal(a, b)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(space_strategy(), st.integers(0, 2**32 - 1))
def test_sample_contains_and_flat_roundtrip(space, seed):
    x = space.sample(seed)
    assert space.contains(x)
    assert_tree_equal(x, space.sample(seed))  # seeded sampling is deterministic
    flat = S.flatten(space, x)
    assert flat.shape == (S.flatdim(space),) and flat.dtype == S.flat_dtype(space)
    assert S.flatten_space(space).contains(flat) or S.flat_dtype(space) == np.float32
    y = S.unflatten(space, flat)
    # The float32 flat vector is exact whenever every value is representable in float32.
    if all(np.array_equal(np.asarray(v).astype(S.flat_dtype(space)), v) for v in _leaf_values(space, x)):
        assert_tree_equal(x, y)
        assert space.contains(y)


def _leaf_values(space, x):
    return [S._leaf_value(x, leaf) for leaf in S._layout(space)]


@FAST
@given(space_strategy(), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_batched_flat_and_structured_roundtrip(space, seed, batch):
    rng = np.random.default_rng(seed)
    xs = [space.sample(rng) for _ in range(batch)]
    # Build the batched nested value leaf by leaf.
    leaves_b = [np.stack([S._leaf_value(x, leaf) for x in xs]) for leaf in S._layout(space)]
    batched = S._build(space, iter(leaves_b))
    flat = S.flatten(space, batched)
    assert flat.shape == (batch, S.flatdim(space))
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(flat[i], S.flatten(space, x))
    # The structured layout is exact for every dtype, and a byte buffer view shares memory.
    dt = S.structured_dtype(space)
    buf = np.zeros((batch, dt.itemsize), np.uint8)
    records = S.bytes_view(space, buf)
    # Composites give one record per row; a bare leaf has no record, its view is the plain array.
    assert records.shape == (batch,) + (space.shape if space.is_leaf else ())
    for i, x in enumerate(xs):
        S.to_structured(space, x, out=records[i, ...])
    views = S.from_structured(space, records)
    assert_tree_equal(views, batched)
    for x in xs:
        assert_tree_equal(S.from_structured(space, S.to_structured(space, x)), x)


@FAST
@given(space_strategy())
def test_json_and_gymnasium_roundtrip(space):
    d = json.loads(json.dumps(space.to_json(), allow_nan=False))
    assert S.from_json(d) == space
    g = space.to_gymnasium()
    assert S.from_gymnasium(g) == space
    x = space.sample(0)
    assert g.contains(_to_gym_value(x))


def _to_gym_value(x):
    if isinstance(x, dict):
        return {k: _to_gym_value(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_to_gym_value(v) for v in x)
    return x


def test_box_bounds_and_contains():
    b = S.Box(-1.0, 1.0, (2, 3))
    assert b.shape == (2, 3) and b.dtype == np.float32 and b.low.shape == (2, 3)
    assert b.contains(np.zeros((2, 3), np.float32))
    assert not b.contains(np.zeros((3, 2), np.float32))
    assert not b.contains(np.full((2, 3), 2, np.float32))
    assert not b.contains(np.full((2, 3), np.nan, np.float32))
    assert not b.contains(np.zeros((2, 3), np.float64))  # not safely castable, same rule as gymnasium
    assert S.Box(0, 1, (2,)) == S.Box(np.zeros(2), np.ones(2))
    assert S.Box(0, 1, (2,)) != S.Box(0, 1, (2,), np.float64)
    assert S.Box(np.zeros((2, 2)), 1).shape == (2, 2)
    i = S.Box(-np.inf, np.inf, (3,), np.int16)
    assert i.low[0] == -(2**15) and i.high[0] == 2**15 - 1
    assert i.contains(i.sample(1))
    unb = S.Box(-np.inf, np.inf, (1000,))
    assert np.isfinite(unb.sample(0)).all()
    half = S.Box(0, np.inf, (1000,))
    assert (half.sample(0) >= 0).all()
    with pytest.raises(SpaceError, match="low must be <= high"):
        S.Box(1, 0, (2,))
    with pytest.raises(SpaceError, match="dtype"):
        S.Box(0, 1, (2,), np.complex64)
    with pytest.raises(SpaceError, match="broadcast"):
        S.Box(np.zeros(3), 1, (2,))


def test_discrete_multidiscrete_multibinary():
    d = S.Discrete(3, start=-1)
    assert d.contains(-1) and d.contains(np.int32(1)) and d.contains(np.array(0))
    assert not d.contains(2) and not d.contains(0.0) and not d.contains(True) and not d.contains(np.array([0]))
    assert {int(d.sample(s)) for s in range(50)} == {-1, 0, 1}
    md = S.MultiDiscrete([[2, 3], [4, 5]])
    assert md.shape == (2, 2) and md.contains(md.sample(0))
    assert not md.contains(np.array([[2, 0], [0, 0]])) and not md.contains(np.zeros(4, int))
    assert not md.contains(np.zeros((2, 2)))  # floats are not integers
    mb = S.MultiBinary((2, 3))
    assert mb.shape == (2, 3) and mb.dtype == np.int8 and mb.contains(mb.sample(0))
    assert not mb.contains(np.full((2, 3), 2))
    for bad in [lambda: S.Discrete(0), lambda: S.MultiDiscrete([2, 0]), lambda: S.MultiBinary(0),
                lambda: S.MultiDiscrete([2.5])]:
        with pytest.raises(SpaceError):
            bad()


def test_dict_tuple_order_and_contains():
    d = S.Dict({"z": S.Discrete(2), "a": S.Box(0, 1, (2,))})
    assert list(d.keys()) == ["z", "a"]  # insertion order, unlike gymnasium's sorted keys
    assert [p for p, _ in S.leaves(d)] == [("z",), ("a",)]
    assert S.Dict(z=S.Discrete(2), a=S.Box(0, 1, (2,))) == d
    assert S.Dict({"a": S.Box(0, 1, (2,)), "z": S.Discrete(2)}) != d  # order fixes the layout
    assert d.contains({"z": 1, "a": np.zeros(2, np.float32)})
    assert not d.contains({"z": 1})
    assert not d.contains({"z": 1, "a": np.zeros(2, np.float32), "extra": 0})
    t = S.Tuple([S.Discrete(2), d])
    assert t.contains((0, {"z": 1, "a": np.zeros(2, np.float32)}))
    assert t.contains([0, {"z": 1, "a": np.zeros(2, np.float32)}])
    assert not t.contains((0,))
    g = d.to_gymnasium()
    assert list(g.spaces) == ["z", "a"]
    assert list(S.from_gymnasium(g).keys()) == ["z", "a"]


def test_flat_dtype_rules():
    assert S.flat_dtype(S.Dict(a=S.Box(0, 255, (4,), np.uint8), b=S.Box(0, 255, (2,), np.uint8))) == np.uint8
    assert S.flat_dtype(S.Dict(a=S.Box(0, 255, (4,), np.uint8), b=S.Box(-1, 1, (2,), np.int8))) == np.float32
    assert S.flat_dtype(S.Discrete(4)) == np.int64
    fs = S.flatten_space(S.Tuple([S.Discrete(3, start=1), S.MultiBinary(2)]))
    assert fs.dtype == np.float32 and fs.shape == (3,)
    np.testing.assert_array_equal(fs.low, [1, 0, 0])
    np.testing.assert_array_equal(fs.high, [3, 1, 1])


def test_flatten_writes_into_out_without_copy():
    space = S.Dict(img=S.Box(0, 255, (2, 2), np.uint8), v=S.Box(-1, 1, (3,), np.float32))
    out = np.zeros((2, 7), np.float32)
    x = space.sample(0)
    S.flatten(space, x, out=out[1])
    np.testing.assert_array_equal(out[1], S.flatten(space, x))
    assert not out[0].any()
    same = S.Dict(a=S.Box(0, 1, (3,)), b=S.Box(0, 1, (2, 2)))
    flat = np.arange(7, dtype=np.float32)
    views = S.unflatten(same, flat)
    assert np.shares_memory(views["b"], flat) and views["b"].shape == (2, 2)


def test_unflatten_torch_tensor_keeps_leaf_dtypes():
    torch = pytest.importorskip("torch")
    space = S.Dict(img=S.Box(0, 255, (2, 2), np.uint8), d=S.Discrete(5))
    flat = torch.tensor(S.flatten(space, {"img": np.full((3, 2, 2), 7, np.uint8), "d": np.array([1, 2, 3])}))
    out = S.unflatten(space, flat)
    assert out["img"].dtype == torch.uint8 and tuple(out["img"].shape) == (3, 2, 2)
    assert out["d"].dtype == torch.int64 and out["d"].tolist() == [1, 2, 3]


def test_errors_name_the_path():
    space = S.Dict(a=S.Tuple([S.Box(0, 1, (2,)), S.Discrete(2)]))
    with pytest.raises(SpaceError, match=r"\['a'\]\[0\].*shape \(3,\)"):
        S.flatten(space, {"a": (np.zeros(3), 0)})
    with pytest.raises(SpaceError, match=r"\['a'\]"):
        S.flatten(space, {"b": 1})
    gym = pytest.importorskip("gymnasium")
    bad = gym.spaces.Dict({"ok": gym.spaces.Discrete(2), "inner": gym.spaces.Tuple([gym.spaces.Text(5)])})
    with pytest.raises(SpaceError, match=r"\['inner'\]\[0\].*Text"):
        S.from_gymnasium(bad)
    with pytest.raises(SpaceError, match="unknown space type"):
        S.from_json({"type": "Graph"})
    with pytest.raises(SpaceError):
        S.unflatten(space, np.zeros(4))


def test_json_inf_is_strict_json():
    b = S.Box(np.array([-np.inf, 0.0]), np.array([1.0, np.inf]))
    text = json.dumps(b.to_json(), allow_nan=False)
    assert S.from_json(json.loads(text)) == b
    assert S.Box(0, 255, (84, 84, 3), np.uint8).to_json()["low"] == 0  # uniform bounds stay small
