"""The extras the array API lacks, against float64 numpy formulas written independently of puffer.

The numpy backend is checked too: its generic implementations (base.Backend) are what a new backend
inherits, so they must be right on their own.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance._helpers import assert_matches, data, sid

_erf64 = np.vectorize(math.erf, otypes=[np.float64])


def _logsumexp(x, axis, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _log_softmax(x, axis):
    return x - _logsumexp(x, axis, keepdims=True)


# name -> (backend call, float64 reference, data range)
UNARY_EXTRAS = {
    "sigmoid": (lambda be, x: be.sigmoid(x), lambda x: 1.0 / (1.0 + np.exp(-x)), (-6, 6)),
    "softplus": (lambda be, x: be.softplus(x), lambda x: np.logaddexp(0.0, x), (-6, 6)),
    "relu": (lambda be, x: be.relu(x), lambda x: np.maximum(x, 0.0), (-3, 3)),
    "gelu": (lambda be, x: be.gelu(x), lambda x: 0.5 * x * (1.0 + _erf64(x / math.sqrt(2.0))), (-4, 4)),
    "erf": (lambda be, x: be.erf(x), _erf64, (-3, 3)),
    "stop_gradient": (lambda be, x: be.stop_gradient(x), lambda x: x, (-3, 3)),
}
# (rtol, atol) per case where float32 transcendental implementations justify more than rtol 1e-5/atol 1e-6:
# erf: the generic erf is Abramowitz & Stegun 7.1.26, whose own error is 1.5e-7 absolute, and tinygrad
# composes it from exp; gelu inherits that error times |x| <= 4.
EXTRA_TOL = {"erf": (1e-5, 2e-6), "gelu": (1e-5, 4e-6)}


def _unary_extra_cases():
    for name in UNARY_EXTRAS:
        for shape in [(), (1, 5), (3, 4), (0, 4)]:
            yield pytest.param(name, shape, "float32", id=f"{name}-{sid(shape)}")
        yield pytest.param(name, (3, 4), "float64", id=f"{name}-f64")


@pytest.mark.parametrize("name,shape,dtype", list(_unary_extra_cases()))
def test_unary_extra(be, name, shape, dtype):
    call, ref_fn, (lo, hi) = UNARY_EXTRAS[name]
    x = data(shape, dtype, lo, hi, seed=70)
    ref = ref_fn(x.astype(np.float64)).astype(dtype)
    rtol, atol = EXTRA_TOL.get(name, (None, None)) if dtype == "float32" else (None, None)
    if dtype == "float64" and name in ("erf", "gelu"):
        # the generic erf approximation is good to 1.5e-7 whatever the dtype; native erfs are exact
        rtol, atol = 1e-6, 2e-7
    assert_matches(be, call(be, be.asarray(x)), ref, rtol=rtol, atol=atol, what=name)


@pytest.mark.parametrize("name", ["sigmoid", "softplus"])
def test_extreme_inputs(be, name):
    """No overflow to nan/inf at large |x| (softplus(100) = 100, sigmoid(-100) ~ 3.7e-44)."""
    call, ref_fn, _ = UNARY_EXTRAS[name]
    x = np.array([-100.0, -30.0, 0.0, 30.0, 100.0], np.float32)
    out = be.to_numpy(call(be, be.asarray(x)))
    assert np.all(np.isfinite(out)), f"{name} overflowed: {out}"
    assert_matches(be, call(be, be.asarray(x)), ref_fn(x.astype(np.float64)).astype(np.float32), atol=1e-30)


# (shape, axis) of softmax-like extras
SOFTMAX_CASES = [((3, 5), -1), ((1, 5), -1), ((3, 5), 0), ((2, 3, 4), 1), ((0, 5), -1)]


@pytest.mark.parametrize("name", ["log_softmax", "softmax", "logsumexp"])
@pytest.mark.parametrize("shape,axis", SOFTMAX_CASES, ids=["last", "batch1", "ax0", "3d_mid", "empty"])
def test_softmax_family(be, name, shape, axis):
    x = data(shape, "float32", -5, 5, seed=71)
    x64 = x.astype(np.float64)
    ref = {
        "log_softmax": lambda: _log_softmax(x64, axis),
        "softmax": lambda: np.exp(_log_softmax(x64, axis)),
        "logsumexp": lambda: _logsumexp(x64, axis),
    }[name]().astype(np.float32)
    assert_matches(be, getattr(be, name)(be.asarray(x), axis=axis), ref, what=name)


def test_logsumexp_keepdims(be):
    x = data((3, 4), "float32", -5, 5, seed=72)
    ref = _logsumexp(x.astype(np.float64), -1, keepdims=True).astype(np.float32)
    assert_matches(be, be.logsumexp(be.asarray(x), axis=-1, keepdims=True), ref)


def _softmax_family_ref(name, x):
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        return {
            "log_softmax": lambda: _log_softmax(x64, -1),
            "softmax": lambda: np.exp(_log_softmax(x64, -1)),
            "logsumexp": lambda: _logsumexp(x64, -1),
        }[name]().astype(np.float32)


@pytest.mark.parametrize("name", ["log_softmax", "softmax", "logsumexp"])
def test_softmax_family_masked(be, name):
    """-inf and -1e9 masks (how invalid actions are masked) give exact zeros, not nan."""
    x = np.array([[0.0, -np.inf, 1.0], [-1e9, 2.0, 3.0]], np.float32)
    out = be.to_numpy(getattr(be, name)(be.asarray(x), axis=-1))
    assert not np.any(np.isnan(out)), f"{name} produced nan: {out}"
    assert_matches(be, getattr(be, name)(be.asarray(x), axis=-1), _softmax_family_ref(name, x), what=name)


@pytest.mark.parametrize("name", ["log_softmax", "softmax", "logsumexp"])
def test_softmax_family_large_logits(be, name):
    """Logits of 1e4 keep full float32 precision: x - max must be formed before subtracting log-sum-exp."""
    x = np.array([[1e4, 1e4 - 1.0, -1e4], [3e3, 3e3 + 2.0, 0.0]], np.float32)
    assert_matches(be, getattr(be, name)(be.asarray(x), axis=-1), _softmax_family_ref(name, x), what=name)


@pytest.mark.parametrize("idx_dtype", ["int32", "int64"])
@pytest.mark.parametrize("shape", [(4,), (2, 3), (1,), (0,)], ids=sid)
def test_one_hot(be, shape, idx_dtype):
    """one_hot defaults to float32, and takes another dtype when asked."""
    idx = data(shape, idx_dtype, 0, 5, seed=73)
    ref = (idx[..., None] == np.arange(5)).astype(np.float32)
    assert_matches(be, be.one_hot(be.asarray(idx), 5), ref, what="one_hot")
    assert_matches(be, be.one_hot(be.asarray(idx), 5, dtype=be.float64), ref.astype(np.float64), what="one_hot f64")


def _scan_ref(carry, xs):
    ys = []
    for t in range(xs["a"].shape[0]):
        h = np.tanh(carry * 0.5 + xs["a"][t] * xs["b"][t])
        ys.append((h, h.sum()))
        carry = h
    return carry, (np.stack([y[0] for y in ys]), np.stack([y[1] for y in ys]))


@pytest.mark.parametrize("length", [1, 4])
def test_scan(be, length):
    """scan over a dict of sequences, carrying an array, returning a tuple of stacked outputs."""
    xp = be.xp
    carry = data((2, 3), seed=74)
    xs = {"a": data((length, 2, 3), seed=75), "b": data((length, 3), seed=76)}

    def step(h, x):
        h = xp.tanh(h * 0.5 + x["a"] * x["b"])
        return h, (h, xp.sum(h))

    out_carry, (ys_h, ys_s) = be.scan(step, be.asarray(carry), {k: be.asarray(v) for k, v in xs.items()})
    ref_carry, (ref_h, ref_s) = _scan_ref(carry.astype(np.float64), {k: v.astype(np.float64) for k, v in xs.items()})
    assert_matches(be, out_carry, ref_carry.astype(np.float32), what="carry")
    assert_matches(be, ys_h, ref_h.astype(np.float32), what="stacked h")
    assert_matches(be, ys_s, ref_s.astype(np.float32), what="stacked sums")


@pytest.mark.parametrize("length", [1, 4])
def test_scan_reverse(be, length):
    """reverse=True visits the last element first and stacks the outputs in the original order."""
    xp = be.xp
    carry = data((2, 3), seed=74)
    xs = {"a": data((length, 2, 3), seed=75), "b": data((length, 3), seed=76)}

    def step(h, x):
        h = xp.tanh(h * 0.5 + x["a"] * x["b"])
        return h, (h, xp.sum(h))

    out_carry, (ys_h, ys_s) = be.scan(step, be.asarray(carry), {k: be.asarray(v) for k, v in xs.items()},
                                      reverse=True)
    flipped = {k: v[::-1].astype(np.float64) for k, v in xs.items()}
    ref_carry, (ref_h, ref_s) = _scan_ref(carry.astype(np.float64), flipped)
    assert_matches(be, out_carry, ref_carry.astype(np.float32), what="carry")
    assert_matches(be, ys_h, ref_h[::-1].astype(np.float32), what="stacked h")
    assert_matches(be, ys_s, ref_s[::-1].astype(np.float32), what="stacked sums")


def test_scan_reverse_suffix_sum(be):
    """A reverse cumulative sum: ys[t] = sum(xs[t:]), the shape of GAE's recursion."""
    xs = data((5, 2), seed=78)
    total, ys = be.scan(lambda c, x: (c + x, c + x), be.asarray(np.zeros(2, np.float32)), be.asarray(xs),
                        reverse=True)
    assert_matches(be, ys, np.cumsum(xs[::-1], 0)[::-1].copy(), what="suffix sums")
    assert_matches(be, total, xs.sum(0), what="total")


def test_scan_reverse_traces_to_onnx():
    """GAE's reverse scan, traced to ONNX and run by onnxruntime, equals the numpy reference exactly."""
    import puffer
    from puffer.algos.advantage import gae

    ort_be, ref_be = puffer.backend("onnxruntime"), puffer.backend("numpy")
    rewards, values, nxt = data((3, 5), seed=101), data((3, 5), seed=102), data((3,), seed=103)
    dones = data((3, 5), seed=104) > 0.5
    got = ort_be.compile(lambda r, v, n, d: gae(ort_be, r, v, n, d, 0.99, 0.95))(rewards, values, nxt, dones)
    np.testing.assert_array_equal(np.asarray(got), gae(ref_be, rewards, values, nxt, dones, 0.99, 0.95))


def test_scan_tuple_carry(be):
    """A tuple carry (as an LSTM's (h, c)) and a single array as xs."""
    xp = be.xp
    xs = data((3, 2), seed=77)

    def step(carry, x):
        s, n = carry
        return (s + x, n + 1.0), s * x

    (s, n), ys = be.scan(step, (be.asarray(np.zeros(2, np.float32)), be.asarray(np.float32(0.0))), be.asarray(xs))
    cum = np.concatenate([np.zeros((1, 2), np.float32), np.cumsum(xs, 0)[:-1]])
    assert_matches(be, s, xs.sum(0))
    assert_matches(be, n, np.float32(3.0))
    assert_matches(be, ys, cum * xs)
    assert xp is be.xp
