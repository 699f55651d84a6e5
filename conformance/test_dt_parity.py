"""The Decision Transformer is the same network on every backend: attention, forward, loss and gradients, ONNX.

As in test_ppo_parity: the reference is a float64 run of the same single-source code on torch (or
jax), each backend runs float32 and must agree to 1e-5 relative to each array's largest magnitude.
The exported ONNX graph must give the same action-head outputs as every backend (1e-5).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import puffer
from puffer import spaces
from puffer.algos.decision_transformer import dt_loss
from puffer.nn import attention
from puffer.sequence import DecisionTransformer

HEADS = {
    "discrete": spaces.Discrete(3),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "continuous": spaces.Box(-1.0, 1.0, (2,), np.float32),
}
OBS_DIM, B, K, E = 4, 3, 5, 16


def _reference_name() -> str:
    installed = puffer.backends.available()
    return next(n for n in ("torch", "jax") if n in installed)


def _model(head: str, returns: bool = True) -> DecisionTransformer:
    return DecisionTransformer(spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32), HEADS[head], context=K, embed=E,
                               layers=2, heads=2, max_timestep=50, returns=returns)


def _batch(model: DecisionTransformer, seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    head = model.head
    if head.discrete is not None:
        acts = np.stack([g.integers(0, n, (B, K)) for n in model.nvec], axis=-1).astype(np.float32)
    else:
        acts = g.uniform(-1, 1, (B, K, head.action_dim)).astype(np.float32)
    mask = np.ones((B, K), np.float32)
    mask[0, 3:] = 0.0  # a right-padded window
    return {"states": g.normal(size=(B, K, OBS_DIM)).astype(np.float32), "actions": acts,
            "rtg": g.normal(size=(B, K)).astype(np.float32),
            "timesteps": g.integers(0, 60, (B, K)).astype(np.float32), "mask": mask,
            "dropout": g.random((B, K, model.tokens_per_step * E), dtype=np.float32)}


def _run(be_name: str, head: str, dtype: str, returns: bool = True):
    be = puffer.backend(be_name)
    model = _model(head, returns)
    params = {k: be.asarray(v.astype(dtype)) for k, v in model.init(None, 1).items()}
    mb = {k: be.asarray(v.astype(dtype)) for k, v in _batch(model).items()}
    hyper = {"dropout": be.asarray(np.asarray(0.1, dtype))}
    (loss, _), grads = be.value_and_grad(lambda p: dt_loss(be, model, p, mb, hyper), has_aux=True)(params)
    b = _batch(model)
    out = model.forward(be, params, mb["states"], mb["actions"], be.xp.expand_dims(mb["rtg"], axis=-1),
                        be.asarray(b["timesteps"].astype(np.int64)))
    return (float(be.to_numpy(loss)), {k: np.asarray(be.to_numpy(g), np.float64) for k, g in grads.items()},
            np.asarray(be.to_numpy(out), np.float64))


@functools.cache
def _reference(head: str, returns: bool = True):
    return _run(_reference_name(), head, "float64", returns)


def _close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


def test_causal_attention_agrees(be) -> None:
    g = np.random.default_rng(0)
    x = g.normal(size=(2, 7, 8)).astype(np.float32)
    params64 = attention.init(None, 3, 8, 2)
    ref = attention.apply(puffer.backend("numpy"), {k: v.astype(np.float64) for k, v in params64.items()},
                          x.astype(np.float64))
    params = {k: be.asarray(v) for k, v in params64.items()}
    got = np.asarray(be.to_numpy(attention.apply(be, params, be.asarray(x))), np.float64)
    _close(got, np.asarray(ref), "attention block output")


@pytest.mark.parametrize("head", list(HEADS))
def test_dt_forward_loss_and_gradients_agree(tbe, head) -> None:
    loss, grads, out = _run(tbe.name, head, "float32")
    ref_loss, ref_grads, ref_out = _reference(head)
    _close(out, ref_out, "forward")
    _close(np.asarray(loss), np.asarray(ref_loss), "loss")
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        _close(grads[k], ref_grads[k], f"gradient of {k}")


def test_bc_loss_and_gradients_agree(tbe) -> None:
    loss, grads, _ = _run(tbe.name, "discrete", "float32", returns=False)
    ref_loss, ref_grads, _ = _reference("discrete", False)
    _close(np.asarray(loss), np.asarray(ref_loss), "loss")
    for k in ref_grads:
        _close(grads[k], ref_grads[k], f"gradient of {k}")


@functools.cache
def _onnx_session(head: str):
    pytest.importorskip("onnxruntime", reason="pip install 'puffer-rl[onnx]' for the ONNX parity cases")
    import onnxruntime as ort

    from puffer.export.sequence import build_model

    model = _model(head)
    graph = build_model(model, model.init(None, 1))
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("head", list(HEADS))
def test_onnx_matches_every_backend(tbe, head) -> None:
    model = _model(head)
    b = _batch(model, seed=2)
    feeds = {"states": b["states"], "actions": b["actions"], "returns_to_go": b["rtg"][..., None],
             "timesteps": b["timesteps"].astype(np.int64), "mask": b["mask"]}
    sess = _onnx_session(head)
    names = [o.name for o in sess.get_outputs()]
    onnx_out = dict(zip(names, sess.run(None, feeds)))
    be = tbe
    params = {k: be.asarray(v) for k, v in model.init(None, 1).items()}
    args = [be.asarray(feeds[n]) for n in ("states", "actions", "returns_to_go", "timesteps", "mask")]
    out = np.asarray(be.to_numpy(model.last(be, model.forward(be, params, *args[:4]), args[4])))
    logits, mean, _ = model.dist(out)
    if logits is not None:
        np.testing.assert_allclose(onnx_out["logits"], logits, rtol=1e-5, atol=1e-5)
    if mean is not None:
        np.testing.assert_allclose(onnx_out["mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(onnx_out["action"], np.asarray(be.to_numpy(model.act(be, params, *args))),
                               rtol=1e-5, atol=1e-5)
