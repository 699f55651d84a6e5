"""tinygrad-specific behaviour the cross-backend conformance suite does not cover.

compile: run/capture/replay equal the eager result while outputs are fed back; kept outputs (and lazy
results computed from them) survive later calls; inputs that are constants, views, lazy or repeated;
shape changes re-capture; static leaves. numpy in/out copy semantics. value_and_grad errors and leaves.
"""

from __future__ import annotations

import numpy as np
import pytest

import puffer
from puffer.errors import CompileError, GradientError

pytest.importorskip("tinygrad")

be = puffer.backend("tinygrad")
xp = be.xp
RNG = np.random.default_rng(0)
W0 = RNG.standard_normal((3, 2)).astype(np.float32)
B0 = RNG.standard_normal(2).astype(np.float32)
XS = [RNG.standard_normal((4, 3)).astype(np.float32) for _ in range(6)]


def np_of(x):
    return be.to_numpy(x)


def loss_fn(p, x):
    y = xp.tanh(x @ p["w"] + p["b"])
    return xp.mean(y * y), {"y_sum": xp.sum(y)}


def sgd_step(p, state, x, lr):
    """A training step whose outputs (params, a running counter) are the next call's inputs."""
    (loss, aux), g = be.value_and_grad(loss_fn, has_aux=True)(p, x)
    new_p = {k: p[k] - lr * g[k] for k in p}
    return new_p, {"n": state["n"] + 1.0}, loss, aux


def fresh_params():
    return {"w": be.asarray(W0), "b": be.asarray(B0)}


def eager_trajectory(n, lrs):
    p, s, out = fresh_params(), {"n": be.asarray(np.float32(0))}, []
    for i in range(n):
        p, s, loss, aux = sgd_step(p, s, be.asarray(XS[i]), be.asarray(np.float32(lrs[i])))
        out.append(({k: np_of(v) for k, v in p.items()}, np_of(s["n"]), np_of(loss), np_of(aux["y_sum"])))
    return out


LRS = [0.1, 0.05, 0.2, 0.1, 0.3, 0.01]
REF = eager_trajectory(6, LRS)


def check(i, p, s, loss, aux):
    rp, rn, rl, ra = REF[i]
    for k in rp:
        np.testing.assert_allclose(np_of(p[k]), rp[k], rtol=1e-5, atol=1e-6, err_msg=f"call {i + 1} {k}")
    np.testing.assert_allclose(np_of(s["n"]), rn, err_msg=f"call {i + 1} counter")
    np.testing.assert_allclose(np_of(loss), rl, rtol=1e-5, atol=1e-6, err_msg=f"call {i + 1} loss")
    np.testing.assert_allclose(np_of(aux["y_sum"]), ra, rtol=1e-5, atol=1e-5, err_msg=f"call {i + 1} aux")


def test_compile_feeds_outputs_back_and_keeps_every_output():
    step = be.compile(sgd_step)
    p, s = fresh_params(), {"n": be.asarray(np.float32(0))}
    kept = []
    for i in range(6):  # call 1 eager, 2 and 3 capture, 4+ replay the two ping-pong programs
        p, s, loss, aux = step(p, s, be.asarray(XS[i]), be.asarray(np.float32(LRS[i])))
        check(i, p, s, loss, aux)
        kept.append((p, s, loss, aux, loss * 2.0))  # the last one is a lazy result of an output
    for i, (p, s, loss, aux, twice) in enumerate(kept):  # later replays overwrote none of them
        check(i, p, s, loss, aux)
        np.testing.assert_allclose(np_of(twice), 2 * REF[i][2], rtol=1e-5)


def test_compile_inputs_that_are_constants_views_lazy_or_repeated():
    def f(a, b, c):
        return a * 2.0 + b, c - a

    g = be.compile(f)
    base = be.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    for i in range(5):
        a = base[i % 3]  # a view
        b = xp.full((4,), float(i))  # a constant, a new value each call
        c = be.asarray(np.ones(4, np.float32) * i) + 1.0  # unrealized
        out1, out2 = g(a, b, a if i % 2 else c)  # the same buffer twice on odd calls
        ra = np.arange(12, dtype=np.float32).reshape(3, 4)[i % 3]
        np.testing.assert_allclose(np_of(out1), ra * 2 + i)
        np.testing.assert_allclose(np_of(out2), (ra if i % 2 else np.ones(4) * i + 1) - ra)


def test_compile_outputs_that_alias_inputs_or_are_constants():
    def f(x, y):
        return {"same": x, "view": y[1:], "const": xp.zeros((2,)), "sum": x + y[0]}

    g = be.compile(f)
    for i in range(5):
        x = be.asarray(np.full(2, i, np.float32))
        y = be.asarray(np.arange(3, dtype=np.float32) + 10 * i)
        out = g(x, y)
        np.testing.assert_allclose(np_of(out["same"]), np.full(2, i))
        np.testing.assert_allclose(np_of(out["view"]), np.arange(1, 3) + 10 * i)
        np.testing.assert_allclose(np_of(out["const"]), np.zeros(2))
        np.testing.assert_allclose(np_of(out["sum"]), np.full(2, i) + 10 * i)


def test_compile_output_fed_to_the_program_that_wrote_it():
    g = be.compile(lambda x: x * 2.0 + 1.0)
    x0 = be.asarray(np.ones(3, np.float32))
    outs = [g(x0)]
    for _ in range(6):  # every call reads the output of two calls back, not the previous one
        outs.append(g(outs[-2] if len(outs) > 1 else outs[-1]))
    vals = [np_of(o)[0] for o in outs]
    expect = [3.0]
    for i in range(1, 7):
        expect.append((expect[i - 2] if i > 1 else expect[0]) * 2 + 1)
    np.testing.assert_allclose(vals, expect)


def test_compile_shape_change_recaptures():
    g = be.compile(lambda x, w: xp.sum(x @ w, axis=0))
    w = be.asarray(W0)
    for n in (4, 4, 2, 4, 2, 4, 2, 4, 2):
        x = RNG.standard_normal((n, 3)).astype(np.float32)
        np.testing.assert_allclose(np_of(g(be.asarray(x), w)), (x @ W0).sum(0), rtol=1e-5, atol=1e-6)
    assert len(g.entries) == 2


def test_compile_static_leaves_are_part_of_the_signature():
    g = be.compile(lambda x, scale, mode: x * scale if mode == "mul" else x + scale)
    x = be.asarray(np.ones(2, np.float32))
    for scale, mode in [(2.0, "mul"), (2.0, "mul"), (3.0, "add"), (2.0, "mul"), (3.0, "add")]:
        expect = np.ones(2) * scale if mode == "mul" else np.ones(2) + scale
        np.testing.assert_allclose(np_of(g(x, scale, mode)), expect)
    with pytest.warns(UserWarning, match="signatures"):
        for s in range(10):
            g(x, float(s), "add")


def test_compile_inlines_when_nested():
    inner = be.compile(lambda x: x + 1.0)
    outer = be.compile(lambda x: inner(x) * 3.0)
    for i in range(4):
        np.testing.assert_allclose(np_of(outer(be.asarray(np.full(2, i, np.float32)))), np.full(2, (i + 1) * 3))


def test_compile_refuses_python_values_of_arrays_but_eager_code_gets_them():
    """bool()/int()/float()/index and data-dependent shapes raise CompileError inside compile (TinyJit would
    freeze the value), and work outside it; the compiled function keeps working after the refusal."""
    x = be.asarray(np.array([1.0, -2.0], np.float32))
    for body in (lambda v: v * 2.0 if xp.any(v > 0.0) else v,
                 lambda v: v * float(xp.sum(v)),
                 lambda v: v[: xp.asarray(1)],
                 lambda v: v[v > 0.0],
                 lambda v: xp.unique_values(v)):
        with pytest.raises(CompileError, match="inside be.compile"):
            be.compile(body)(x)
    assert bool(xp.any(x > 0.0)) and float(xp.sum(x)) == -1.0 and int(xp.argmax(x)) == 0
    g = be.compile(lambda v: xp.where(v > 0.0, v * 2.0, v))  # the array-valued way to branch
    for _ in range(3):
        np.testing.assert_allclose(np_of(g(x)), [2.0, -2.0])


def test_asarray_copies_numpy_and_to_numpy_copies_back():
    src = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = be.asarray(src)
    src[:] = -1  # an env overwriting its buffer must not change the array
    np.testing.assert_array_equal(np_of(t), np.arange(6).reshape(2, 3))
    out = np_of(t)
    out[:] = 7
    np.testing.assert_array_equal(np_of(t), np.arange(6).reshape(2, 3))
    strided = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]
    t2 = be.asarray(strided, dtype=np.float32)
    assert t2.dtype == xp.float32 and t2.shape == (3, 2)
    np.testing.assert_array_equal(np_of(t2), strided.astype(np.float32))
    for arr in (np.array(3.5, np.float64), np.zeros((0, 3), np.int32), np.array([True, False]), np.int64(5)):
        np.testing.assert_array_equal(np_of(be.asarray(arr)), arr)
        assert np_of(be.asarray(arr)).dtype == np.asarray(arr).dtype


def test_value_and_grad_errors():
    vg = be.value_and_grad(lambda p: xp.sum(p["w"]))
    with pytest.raises(GradientError, match="dtype"):
        vg({"w": be.asarray(np.ones(2, np.int32))})
    with pytest.raises(GradientError, match="scalar"):
        be.value_and_grad(lambda p: p["w"] * 2.0)({"w": be.asarray(np.ones(2, np.float32))})
    with pytest.raises(GradientError, match="pair"):
        be.value_and_grad(lambda p: xp.sum(p["w"]), has_aux=True)({"w": be.asarray(np.ones(2, np.float32))})
    with pytest.raises(GradientError, match="dict"):
        vg([be.asarray(np.ones(2, np.float32))])


def test_value_and_grad_leaves_float64_and_unused():
    w = be.asarray(np.array([1.0, 2.0, 3.0]))  # float64
    params = {"a": w, "b": w, "unused": be.asarray(np.ones(2, np.float32)), "c": xp.zeros((3,), dtype=xp.float64)}
    value, g = be.value_and_grad(lambda p: xp.sum(p["a"] ** 3) + xp.sum(p["b"] * 2.0) + xp.sum(p["c"] * p["a"]))(
        params)
    assert g["a"].dtype == xp.float64
    np.testing.assert_allclose(np_of(value), 36.0 + 12.0)
    np.testing.assert_allclose(np_of(g["a"]), 3 * np.array([1.0, 4.0, 9.0]), rtol=1e-14)  # c is zero
    np.testing.assert_allclose(np_of(g["b"]), [2.0, 2.0, 2.0])  # same array, its own leaf
    np.testing.assert_allclose(np_of(g["c"]), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(np_of(g["unused"]), np.zeros(2, np.float32))


def test_randomness_is_deterministic_per_key():
    k1, k2 = be.split(be.key(3))
    a, b = np_of(be.uniform(k1, (5,))), np_of(be.uniform(be.split(be.key(3))[0], (5,)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np_of(be.uniform(k2, (5,))))
    np.testing.assert_array_equal(np_of(be.normal(k1, (4,))), puffer.backend("numpy").normal(k1, (4,)))
