"""The compile contract (TinyJit's, the strictest): a compiled function called again and again with new
inputs equals the eager function each time, and the arrays it returned earlier stay intact.

TinyJit runs call 1 eagerly, captures kernels on call 2 and replays them from call 3 on, so a Python
value frozen at capture (a float learning rate, a shape-derived constant computed from data) only shows
up on call 3 or later; hence at least 4 calls with every input changing, the learning rate included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from conformance._helpers import assert_matches, data, np_of
from puffer import optim
from puffer.nn import distributions, mlp

CALLS = 4
OBS, ACTIONS, BATCH = 6, 3, 8
DIST = distributions.Categorical(ACTIONS)


def _train_step(be: Any):
    """A PPO-shaped step: policy + value loss and entropy, value_and_grad, global-norm clip, Adam."""
    xp = be.xp

    def loss_fn(params, obs, actions, advantages, returns):
        out = mlp.apply(be, params, obs, activation="tanh")
        logits, value = out[:, :ACTIONS], out[:, ACTIONS]
        logp = DIST.log_prob(be, logits, actions)
        entropy = xp.mean(DIST.entropy(be, logits))
        loss = -xp.mean(logp * advantages) + 0.5 * xp.mean((value - returns) ** 2) - 0.01 * entropy
        return loss, {"entropy": entropy, "value": value}

    vg = be.value_and_grad(loss_fn, has_aux=True)

    def step(params, opt_state, obs, actions, advantages, returns, lr):
        (loss, aux), grads = vg(params, obs, actions, advantages, returns)
        grads, norm = optim.clip_by_global_norm(be, grads, 0.5)
        params, opt_state = optim.adam.update(be, params, grads, opt_state, lr)
        return params, opt_state, {"loss": loss, "norm": norm, **aux}

    return step


def _batch(be: Any, i: int) -> tuple:
    g = np.random.default_rng(200 + i)
    return (
        be.asarray(g.standard_normal((BATCH, OBS)).astype(np.float32)),
        be.asarray(g.integers(0, ACTIONS, BATCH).astype(np.int64)),
        be.asarray(g.standard_normal(BATCH).astype(np.float32)),
        be.asarray(g.standard_normal(BATCH).astype(np.float32)),
        be.asarray(np.asarray([3e-3, 1e-2, 5e-4, 2e-2][i], dtype=np.float32)),  # a 0-d array, changing every call
    )


def _snapshot(be: Any, tree: Any) -> Any:
    from puffer.tree import tree_map

    return tree_map(lambda x: np_of(be, x), tree)


def _assert_tree_close(be: Any, got: Any, ref: Any, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    from puffer.tree import flatten

    g_leaves, g_spec = flatten(got)
    r_leaves, r_spec = flatten(ref)
    assert g_spec == r_spec, f"{what}: output structure {g_spec} != {r_spec}"
    for i, (a, b) in enumerate(zip(g_leaves, r_leaves)):
        a = a if isinstance(a, np.ndarray) else np_of(be, a)
        b = b if isinstance(b, np.ndarray) else np_of(be, b)
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what} leaf {i}: {a.shape}/{a.dtype} != {b.shape}/{b.dtype}"
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{what} leaf {i}")


def test_compiled_train_step(tbe):
    """A full train step, compiled, equals the eager step on every call, and earlier results survive."""
    step = _train_step(tbe)
    compiled = tbe.compile(step)
    init = mlp.init(None, 0, [OBS, 16, ACTIONS + 1])
    p_c = {k: tbe.asarray(v) for k, v in init.items()}
    p_e = {k: tbe.asarray(v) for k, v in init.items()}
    s_c, s_e = optim.adam.init(tbe, p_c), optim.adam.init(tbe, p_e)
    kept, expected = [], []
    for i in range(CALLS):
        batch = _batch(tbe, i)
        p_c, s_c, m_c = compiled(p_c, s_c, *batch)
        p_e, s_e, m_e = step(p_e, s_e, *batch)
        ref = _snapshot(tbe, (p_e, s_e, m_e))
        _assert_tree_close(tbe, (p_c, s_c, m_c), ref, f"call {i + 1}")
        kept.append((p_c, s_c, m_c))
        expected.append(ref)
    for i, (out, ref) in enumerate(zip(kept, expected)):
        _assert_tree_close(tbe, out, ref, f"call {i + 1}'s outputs, read after {CALLS} calls")
    # the step counter advanced once per call, so the lr and bias corrections were not frozen either
    assert float(np_of(tbe, s_c["step"])) == CALLS


def test_compiled_outputs_survive_later_calls(be):
    """Returned arrays are not views of buffers that the next call overwrites."""
    xp = be.xp

    def f(x, y):
        z = x * y + 1.0
        return z, xp.sum(z, axis=0), xp.tanh(x) - y

    compiled = be.compile(f)
    outs, refs = [], []
    for i in range(CALLS):
        x, y = data((3, 4), seed=210 + i), data((3, 4), seed=220 + i)
        outs.append(compiled(be.asarray(x), be.asarray(y)))
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        refs.append(tuple(r.astype(np.float32) for r in (x64 * y64 + 1, (x64 * y64 + 1).sum(0), np.tanh(x64) - y64)))
    for i, (out, ref) in enumerate(zip(outs, refs)):
        for j, (o, r) in enumerate(zip(out, ref)):
            assert_matches(be, o, r, what=f"call {i + 1} output {j}")


def test_compiled_scalar_array_input(be):
    """A 0-d array input that changes every call (a learning rate, a clip range) is not frozen."""
    compiled = be.compile(lambda x, scale: x * scale + scale)
    x = data((5,), seed=230)
    for i, s in enumerate([0.5, 2.0, -1.0, 3.0, 0.25]):
        out = compiled(be.asarray(x), be.asarray(np.float32(s)))
        assert_matches(be, out, (x * np.float32(s) + np.float32(s)), what=f"call {i + 1}")


def test_compiled_pytree_io(be):
    """Dicts, lists and tuples of arrays in and out, with integer and boolean leaves."""
    xp = be.xp

    def f(tree):
        a, b = tree["pair"]
        return {"sum": a + b, "masked": xp.where(tree["mask"], a, b), "idx": tree["idx"] * 2, "list": [a * 3.0]}

    compiled = be.compile(f)
    for i in range(CALLS):
        a, b = data((2, 3), seed=240 + i), data((2, 3), seed=250 + i)
        mask, idx = data((2, 3), "bool", seed=260 + i), data((4,), "int64", 0, 9, seed=270 + i)
        out = compiled({"pair": (be.asarray(a), be.asarray(b)), "mask": be.asarray(mask), "idx": be.asarray(idx)})
        assert set(out) == {"sum", "masked", "idx", "list"}
        assert_matches(be, out["sum"], a + b)
        assert_matches(be, out["masked"], np.where(mask, a, b))
        assert_matches(be, out["idx"], idx * 2)
        assert_matches(be, out["list"][0], a * np.float32(3.0))


def test_compiled_value_and_grad(tbe):
    """value_and_grad inside a compiled function gives fresh gradients every call."""
    xp = tbe.xp
    vg = tbe.value_and_grad(lambda p, x: xp.sum(xp.tanh(x @ p["w"]) ** 2))
    compiled = tbe.compile(vg)
    w = data((4, 2), seed=280)
    for i in range(CALLS):
        x = data((3, 4), seed=290 + i)
        value, grads = compiled({"w": tbe.asarray(w)}, tbe.asarray(x))
        ref_value, ref_grads = vg({"w": tbe.asarray(w)}, tbe.asarray(x))
        np.testing.assert_allclose(np_of(tbe, value), np_of(tbe, ref_value), rtol=1e-5, err_msg=f"call {i + 1}")
        np.testing.assert_allclose(np_of(tbe, grads["w"]), np_of(tbe, ref_grads["w"]), rtol=1e-5, atol=1e-6,
                                   err_msg=f"call {i + 1}")
