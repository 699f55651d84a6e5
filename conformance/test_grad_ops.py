"""Gradients of every differentiable namespace function and extra, per training backend, via value_and_grad.

Each case is a function `op(be, p)` of a parameter dict written once against the backend; the loss is
`sum(op(be, p) * w)` with a fixed random cotangent `w`, so every element of the Jacobian is weighted
differently. The reference is float64 central differences of the same function on the numpy backend.
Inputs stay away from kinks (abs, max, clip, relu) so the finite differences are well defined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import puffer
from conformance._helpers import check_grad, data


def _away_from(x: np.ndarray, kinks: tuple[float, ...] = (0.0,), margin: float = 0.1) -> np.ndarray:
    """`x` with values closer than `margin` to a kink pushed `margin` away from it."""
    x = x.copy()
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + np.where(x[near] >= k, margin, -margin)
    return x


def _distinct(shape, seed: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Values with no ties (so max/min/argmax have a unique, differentiable choice)."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(np.linspace(low, high, n)).reshape(shape)


X34 = data((3, 4), "float64", seed=80)
Y34 = data((3, 4), "float64", seed=81)
POS34 = data((3, 4), "float64", 0.3, 2.5, seed=82)
IDX = np.array([2, 0, 3], np.int64)

# name -> (op(be, p), params as numpy float64)
Case = tuple[Callable[[Any, dict[str, Any]], Any], dict[str, np.ndarray]]
CASES: dict[str, Case] = {
    # elementwise
    "exp": (lambda be, p: be.xp.exp(p["x"]), {"x": X34}),
    "log": (lambda be, p: be.xp.log(p["x"]), {"x": POS34}),
    "log1p": (lambda be, p: be.xp.log1p(p["x"]), {"x": POS34 - 0.5}),
    "expm1": (lambda be, p: be.xp.expm1(p["x"]), {"x": X34}),
    "tanh": (lambda be, p: be.xp.tanh(p["x"]), {"x": X34}),
    "sqrt": (lambda be, p: be.xp.sqrt(p["x"]), {"x": POS34}),
    "abs": (lambda be, p: be.xp.abs(p["x"]), {"x": _away_from(X34)}),
    "square": (lambda be, p: be.xp.square(p["x"]), {"x": X34}),
    "negative": (lambda be, p: be.xp.negative(p["x"]), {"x": X34}),
    # piecewise constant: zero gradient away from the jumps (what a straight-through trick builds on)
    "floor": (lambda be, p: be.xp.floor(p["x"]) * p["x"], {"x": _away_from(X34, (-2.0, -1.0, 0.0, 1.0, 2.0))}),
    "round": (lambda be, p: be.xp.round(p["x"]) * p["x"], {"x": _away_from(X34, (-1.5, -0.5, 0.5, 1.5))}),
    "sign": (lambda be, p: be.xp.sign(p["x"]) * p["x"], {"x": _away_from(X34)}),
    "add_bcast": (lambda be, p: be.xp.add(p["x"], p["y"]), {"x": X34, "y": Y34[0]}),
    "subtract": (lambda be, p: be.xp.subtract(p["x"], p["y"]), {"x": X34, "y": Y34[:, :1]}),
    "multiply": (lambda be, p: be.xp.multiply(p["x"], p["y"]), {"x": X34, "y": Y34}),
    "divide": (lambda be, p: be.xp.divide(p["x"], p["y"]), {"x": X34, "y": POS34}),
    "pow": (lambda be, p: be.xp.pow(p["x"], p["y"]), {"x": POS34, "y": Y34}),
    "maximum": (lambda be, p: be.xp.maximum(p["x"], p["y"]), {"x": X34, "y": _away_from(Y34 - X34) + X34}),
    "minimum": (lambda be, p: be.xp.minimum(p["x"], p["y"]), {"x": X34, "y": _away_from(Y34 - X34) + X34}),
    "logaddexp": (lambda be, p: be.xp.logaddexp(p["x"], p["y"]), {"x": X34, "y": Y34}),
    "clip": (lambda be, p: be.xp.clip(p["x"], min=-1.0, max=1.0), {"x": _away_from(X34, (-1.0, 1.0))}),
    "where": (lambda be, p: be.xp.where(p["x"] > 0.0, p["x"], p["y"] * 2.0), {"x": _away_from(X34), "y": Y34}),
    "operators": (lambda be, p: (p["x"] * 2.0 - 1.0) / (p["y"] + 3.0) + 0.5 * p["x"] ** 2 - -p["y"],
                  {"x": X34, "y": POS34}),
    # reductions
    # one case per function (tinygrad spends ~0.3 s compiling each); axes and corrections vary across cases
    "sum": (lambda be, p: be.xp.sum(p["x"], axis=0), {"x": X34}),
    "mean": (lambda be, p: be.xp.mean(p["x"], axis=-1, keepdims=True), {"x": X34}),
    "max": (lambda be, p: be.xp.max(p["x"], axis=-1), {"x": _distinct((3, 4), 83)}),
    "min": (lambda be, p: be.xp.min(p["x"], axis=0), {"x": _distinct((3, 4), 85)}),
    "prod": (lambda be, p: be.xp.prod(p["x"], axis=-1), {"x": _away_from(X34)}),
    "std1": (lambda be, p: be.xp.std(p["x"], axis=0, correction=1), {"x": X34}),
    "var0": (lambda be, p: be.xp.var(p["x"]), {"x": X34}),  # over all axes
    "cumulative_sum": (lambda be, p: be.xp.cumulative_sum(p["x"], axis=0), {"x": X34}),
    # linear algebra
    "matmul": (lambda be, p: p["x"] @ p["y"], {"x": X34, "y": Y34.T}),
    "matmul_batched": (lambda be, p: be.xp.matmul(p["x"], p["y"]), {"x": data((2, 3, 4), "float64", seed=86),
                                                                   "y": data((4, 2), "float64", seed=87)}),
    "matmul_vec": (lambda be, p: be.xp.matmul(p["x"], p["y"]), {"x": X34, "y": Y34[0]}),
    "matrix_transpose": (lambda be, p: be.xp.matrix_transpose(p["x"]), {"x": X34}),
    "tensordot": (lambda be, p: be.xp.tensordot(p["x"], p["y"], axes=([1], [1])), {"x": X34, "y": Y34[:2]}),
    "vecdot": (lambda be, p: be.xp.vecdot(p["x"], p["y"], axis=-1), {"x": X34, "y": Y34}),
    # manipulation and indexing
    "reshape": (lambda be, p: be.xp.reshape(p["x"], (2, 6)), {"x": X34}),
    "concat": (lambda be, p: be.xp.concat([p["x"], p["y"]], axis=-1), {"x": X34, "y": Y34[:, :2]}),
    "stack": (lambda be, p: be.xp.stack([p["x"], p["y"]], axis=1), {"x": X34, "y": Y34}),
    "expand_dims": (lambda be, p: be.xp.expand_dims(p["x"], axis=1) * p["y"], {"x": X34, "y": Y34[0]}),
    "squeeze": (lambda be, p: be.xp.squeeze(p["x"], axis=0), {"x": X34[:1]}),
    "permute_dims": (lambda be, p: be.xp.permute_dims(p["x"], (1, 0)), {"x": X34}),
    "broadcast_to": (lambda be, p: be.xp.broadcast_to(p["x"], (2, 3, 4)), {"x": X34[:, :1]}),
    "flip": (lambda be, p: be.xp.flip(p["x"], axis=-1), {"x": X34}),
    "roll": (lambda be, p: be.xp.roll(p["x"], 1, axis=0), {"x": X34}),
    "repeat": (lambda be, p: be.xp.repeat(p["x"], 2, axis=0), {"x": X34}),
    "tile": (lambda be, p: be.xp.tile(p["x"], (2, 1)), {"x": X34}),
    "slicing": (lambda be, p: p["x"][1:, ::2] * p["x"][0, -1] + p["x"][1:, -1:], {"x": X34}),
    "take": (lambda be, p: be.xp.take(p["x"], be.asarray(IDX), axis=1), {"x": X34}),
    "take_repeated": (lambda be, p: be.xp.take(p["x"], be.asarray(np.array([1, 1, 0])), axis=0), {"x": X34}),
    "take_along_axis": (lambda be, p: be.take_along_axis(p["x"], be.asarray(IDX[:, None]), axis=-1), {"x": X34}),
    # extras
    "log_softmax": (lambda be, p: be.log_softmax(p["x"], axis=0), {"x": X34}),
    "softmax": (lambda be, p: be.softmax(p["x"], axis=-1), {"x": X34}),
    "logsumexp": (lambda be, p: be.logsumexp(p["x"], axis=-1), {"x": X34}),
    "softplus": (lambda be, p: be.softplus(p["x"]), {"x": X34 * 3}),
    "sigmoid": (lambda be, p: be.sigmoid(p["x"]), {"x": X34 * 3}),
    "relu": (lambda be, p: be.relu(p["x"]), {"x": _away_from(X34)}),
    "gelu": (lambda be, p: be.gelu(p["x"]), {"x": X34}),
    "erf": (lambda be, p: be.erf(p["x"]), {"x": X34}),
    "one_hot_weights": (lambda be, p: be.one_hot(be.asarray(IDX), 4, dtype=p["x"].dtype) * p["x"], {"x": X34}),
}

# the generic erf (Abramowitz & Stegun 7.1.26) differentiates its approximation, not erf itself: its
# derivative is off from 2/sqrt(pi) exp(-x^2) by up to ~1e-6, while the finite differences run through
# the numpy reference's exact math.erf
APPROX_ERF_TOL = {"erf": (1e-5, 2e-6), "gelu": (1e-5, 4e-6)}


def _cotangent(be_ref: Any, op: Callable, params: dict[str, np.ndarray]) -> np.ndarray:
    out = np.asarray(op(be_ref, params))
    return data(out.shape, "float64", -1.5, 1.5, seed=89)


@pytest.mark.parametrize("name", list(CASES))
def test_op_gradient(tbe, name):
    op, params = CASES[name]
    w = _cotangent(puffer.backend("numpy"), op, params)

    def loss(be, p, w):
        return be.xp.sum(op(be, p) * w)

    tol = {}
    if name in APPROX_ERF_TOL and not _native_erf(tbe):
        tol = dict(zip(("rtol", "atol"), APPROX_ERF_TOL[name]))
    check_grad(tbe, loss, params, w, **tol)


def _native_erf(be: Any) -> bool:
    return type(be).erf is not puffer.backends.base.Backend.erf


def test_stop_gradient_blocks(tbe):
    """stop_gradient passes the value and blocks the gradient: d/dx sum(sg(x) * x) = sg(x), not 2x."""
    x = data((3, 4), "float32", seed=90)
    vg = tbe.value_and_grad(lambda p: tbe.xp.sum(tbe.stop_gradient(p["x"]) * p["x"]))
    value, grads = vg({"x": tbe.asarray(x)})
    np.testing.assert_allclose(tbe.to_numpy(value), np.sum(x.astype(np.float64) ** 2), rtol=1e-5)
    np.testing.assert_allclose(tbe.to_numpy(grads["x"]), x, rtol=1e-6)


def test_stop_gradient_only_path(tbe):
    """A loss that reaches a parameter only through stop_gradient has a zero gradient for it."""
    x = data((3,), "float32", seed=91)
    _, grads = tbe.value_and_grad(lambda p: tbe.xp.sum(tbe.stop_gradient(p["x"]) ** 2))({"x": tbe.asarray(x)})
    np.testing.assert_array_equal(tbe.to_numpy(grads["x"]), np.zeros(3, np.float32))


def test_scan_gradient(tbe):
    """Gradients flow through scan into the carry's initial value, the sequence and closed-over params."""
    def loss(be, p):
        xp = be.xp

        def step(h, x):
            h = xp.tanh(h @ p["w"] + x)
            return h, xp.sum(h * h)

        h, ys = be.scan(step, p["h0"], p["xs"])
        return xp.sum(h) + xp.sum(ys * xp.asarray([1.0, 0.5, -0.25, 2.0], dtype=h.dtype))

    params = {"w": data((3, 3), "float64", -0.8, 0.8, seed=92), "h0": data((2, 3), "float64", seed=93),
              "xs": data((4, 2, 3), "float64", seed=94)}
    check_grad(tbe, loss, params)


def test_scan_reverse_gradient(tbe):
    """Gradients flow through a reverse scan (carry, sequence, closed-over params) in step order."""
    def loss(be, p):
        xp = be.xp

        def step(h, x):
            h = xp.tanh(h @ p["w"] + x)
            return h, xp.sum(h * h)

        h, ys = be.scan(step, p["h0"], p["xs"], reverse=True)
        return xp.sum(h) + xp.sum(ys * xp.asarray([1.0, 0.5, -0.25], dtype=h.dtype))

    params = {"w": data((2, 2), "float64", -0.8, 0.8, seed=98), "h0": data((1, 2), "float64", seed=99),
              "xs": data((3, 1, 2), "float64", seed=100)}
    check_grad(tbe, loss, params)


def test_value_and_grad_contract(tbe):
    """has_aux returns ((loss, aux), grads); extra args pass through; unused params get zero gradients."""
    xp = tbe.xp
    x = data((4, 3), "float32", seed=95)
    params = {"w": tbe.asarray(data((3,), "float32", seed=96)), "unused": tbe.asarray(np.ones((2, 2), np.float32))}

    def f(p, batch, scale):
        y = batch @ p["w"]
        return xp.sum(y * y) * scale, {"y": y, "n": xp.sum(batch)}

    (value, aux), grads = tbe.value_and_grad(f, has_aux=True)(params, tbe.asarray(x), 0.5)
    w = data((3,), "float32", seed=96).astype(np.float64)
    y = x.astype(np.float64) @ w
    np.testing.assert_allclose(tbe.to_numpy(value), 0.5 * np.sum(y * y), rtol=1e-5)
    np.testing.assert_allclose(tbe.to_numpy(aux["y"]), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tbe.to_numpy(aux["n"]), x.sum(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tbe.to_numpy(grads["w"]), x.T.astype(np.float64) @ y, rtol=1e-5, atol=1e-5)
    assert set(grads) == {"w", "unused"}
    np.testing.assert_array_equal(tbe.to_numpy(grads["unused"]), np.zeros((2, 2), np.float32))
    assert tbe.to_numpy(grads["w"]).dtype == np.float32
    assert tbe.to_numpy(value).shape == ()


def test_value_and_grad_float32(tbe):
    """float32 parameters get float32 gradients that match float64 finite differences to float32 precision."""
    x = data((3, 4), "float32", seed=97)

    def loss(be, p):
        return be.xp.sum(be.log_softmax(p["x"] @ be.xp.matrix_transpose(p["x"]), axis=-1) * be.xp.tanh(p["x"][:, :3]))

    ref_be = puffer.backend("numpy")
    from conformance._helpers import numeric_grad

    ref = numeric_grad(lambda p: float(loss(ref_be, p)), {"x": x.astype(np.float64)})
    _, grads = tbe.value_and_grad(lambda p: loss(tbe, p))({"x": tbe.asarray(x)})
    g = tbe.to_numpy(grads["x"])
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, ref["x"], rtol=1e-4, atol=1e-5)
