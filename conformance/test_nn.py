"""puffer.nn layers and distributions: forward values against the numpy backend, gradients against
float64 central differences, and identical samples from identical injected noise on every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import puffer
from conformance._helpers import assert_matches, check_grad, data, to_backend
from puffer.nn import attention, distributions, embedding, gru, layer_norm, linear, lstm, mlp


def _randomized(params: dict[str, np.ndarray], seed: int, scale: float = 0.5) -> dict[str, np.ndarray]:
    """Init params plus noise: layer norms start at exactly 1/0 and biases at 0, which hides mistakes."""
    g = np.random.default_rng(seed)
    return {k: (v + scale * g.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()}


# T = 2, B = 2: batch entry 1 starts an episode at t = 0 (its given state is dropped), entry 0 at t = 1
RESETS = np.array([[False, True], [True, False]])
EMB_IDX = np.array([[1, 4, 1], [0, 2, 4]], np.int64)

# name -> (forward(be, p, *args) -> array, params (numpy float32, inputs included), args)
Layer = tuple[Callable[..., Any], dict[str, np.ndarray], tuple]
LAYERS: dict[str, Layer] = {
    "linear": (lambda be, p: linear.apply(be, p, p["x"], prefix="l/"),
               {**linear.init(None, 0, 4, 3, prefix="l/"), "x": data((5, 4), seed=100)}, ()),
    "linear_batch1": (lambda be, p: linear.apply(be, p, p["x"]),
                      {**_randomized(linear.init(None, 1, 4, 3), 1), "x": data((1, 4), seed=101)}, ()),
    "mlp_tanh": (lambda be, p: mlp.apply(be, p, p["x"], activation="tanh"),
                 {**_randomized(mlp.init(None, 2, [4, 8, 8, 3]), 2), "x": data((5, 4), seed=102)}, ()),
    # relu: its kinks are measure-zero for these random pre-activations (gelu is covered by attention)
    "mlp_relu": (lambda be, p: mlp.apply(be, p, p["x"], activation="relu", prefix="pi/"),
                 {**_randomized(mlp.init(None, 3, [4, 6, 2], prefix="pi/"), 3), "x": data((3, 4), seed=103)}, ()),
    "layer_norm": (lambda be, p: layer_norm.apply(be, p, p["x"], prefix="ln/"),
                   {**_randomized(layer_norm.init(None, 0, 5, prefix="ln/"), 4), "x": data((2, 3, 5), seed=104)},
                   ()),
    "embedding": (lambda be, p, idx: embedding.apply(be, p, idx) * 1.5,
                  embedding.init(None, 5, 6, 3), (EMB_IDX,)),
    "lstm_cell": (lambda be, p: xp_concat(be, lstm.cell(be, p, p["x"], (p["h"], p["c"]))),
                  {**_randomized(lstm.init(None, 6, 3, 4, forget_bias=1.0), 6, 0.3), "x": data((2, 3), seed=105),
                   "h": data((2, 4), seed=106), "c": data((2, 4), seed=107)}, ()),
    "lstm_unroll": (lambda be, p, resets: _unrolled(be, lstm.unroll(be, p, p["xs"], (p["h"], p["c"]), resets)),
                    {**_randomized(lstm.init(None, 7, 3, 4), 7, 0.3), "xs": data((2, 2, 3), seed=108),
                     "h": data((2, 4), seed=109), "c": data((2, 4), seed=110)}, (RESETS,)),
    "gru_cell": (lambda be, p: gru.cell(be, p, p["x"], p["h"]),
                 {**_randomized(gru.init(None, 8, 3, 4), 8, 0.3), "x": data((2, 3), seed=111),
                  "h": data((2, 4), seed=112)}, ()),
    "gru_unroll": (lambda be, p, resets: _unrolled(be, gru.unroll(be, p, p["xs"], p["h"], resets)),
                   {**_randomized(gru.init(None, 9, 3, 4), 9, 0.3), "xs": data((2, 2, 3), seed=113),
                    "h": data((2, 4), seed=114)}, (RESETS,)),
    "attention": (lambda be, p: attention.apply(be, p, p["x"], prefix="b0/"),
                  {**_randomized(attention.init(None, 10, 8, 2, mlp_ratio=2, prefix="b0/"), 10, 0.3),
                   "x": data((2, 3, 8), seed=115)}, ()),
}


def xp_concat(be: Any, arrays: tuple) -> Any:
    return be.xp.concat(list(arrays), axis=-1)


def _unrolled(be: Any, out: tuple) -> Any:
    """hs [T, B, H] with the final state appended along T, so one array carries every output."""
    hs, final = out
    final = final if isinstance(final, tuple) else (final,)
    return be.xp.concat([hs, *[be.xp.expand_dims(f, axis=0) for f in final]], axis=0)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_forward(be, name):
    """Float32 forward values equal the numpy backend's (which is what an exported policy reproduces)."""
    fn, params, args = LAYERS[name]
    ref_be = puffer.backend("numpy")
    ref = np.asarray(fn(ref_be, params, *args))
    out = fn(be, to_backend(be, params), *to_backend(be, args))
    # rtol/atol 1e-5: several float32 layers deep, exp/tanh/erf rounding differences compound
    assert_matches(be, out, ref, rtol=1e-5, atol=1e-5, what=name)


# the unrolled GRU shares its cell and scan with gru_cell and lstm_unroll, which are differentiated; its
# forward value is still checked (tinygrad spends seconds compiling each unrolled gradient kernel)
FORWARD_ONLY = {"gru_unroll"}


@pytest.mark.parametrize("name", [n for n in LAYERS if n not in FORWARD_ONLY])
def test_layer_gradient(tbe, name):
    fn, params, args = LAYERS[name]
    out_shape = np.asarray(fn(puffer.backend("numpy"), params, *args)).shape
    w = data(out_shape, "float64", -1.0, 1.0, seed=116)

    def loss(be, p, w, *args):
        return be.xp.sum(fn(be, p, *args) * w)

    check_grad(tbe, loss, params, w, *args, **_erf_tol(tbe, name))


def _erf_tol(be: Any, name: str) -> dict[str, float]:
    # GELU through the generic A&S erf approximation differs from exact-erf finite differences by ~1e-6
    if name == "attention" and type(be).erf is puffer.backends.base.Backend.erf:
        return {"rtol": 1e-5, "atol": 4e-6}
    return {}


# ---- distributions -------------------------------------------------------------------------------
CAT = distributions.Categorical(5)
MULTI = distributions.MultiCategorical((3, 2, 4))
GAUSS = distributions.DiagGaussian(3)
SQUASHED = distributions.DiagGaussian(3, squash=True)
SQUASHED_BOX = distributions.DiagGaussian(3, squash=True, low=(-2.0, -1.0, 0.0), high=(2.0, 1.0, 3.0))

B = 4
CAT_ACTIONS = np.array([0, 4, 2, 2], np.int64)
MULTI_ACTIONS = np.array([[0, 1, 3], [2, 0, 0], [1, 1, 2], [2, 0, 1]], np.int64)
G_ACTIONS = data((B, 3), seed=120)
SQ_ACTIONS = np.tanh(data((B, 3), seed=121) * 1.5).astype(np.float32)
BOX_ACTIONS = (np.array([0.0, 0.0, 1.5]) + np.array([2.0, 1.0, 1.5]) * SQ_ACTIONS).astype(np.float32)
NOISE = data((B, 3), seed=122)


def _gauss_params(p):
    return p["mean"], p["log_std"]


# name -> (loss(be, p, actions, noise) scalar, params, actions)
DIST_CASES: dict[str, tuple[Callable[..., Any], dict[str, np.ndarray], np.ndarray]] = {
    "categorical": (
        lambda be, p, a, n, w: be.xp.sum(CAT.log_prob(be, p["logits"], a) * w)
        + be.xp.sum(CAT.entropy(be, p["logits"])),
        {"logits": data((B, 5), seed=123)}, CAT_ACTIONS),
    "multicategorical": (
        lambda be, p, a, n, w: be.xp.sum(MULTI.log_prob(be, p["logits"], a) * w)
        + be.xp.sum(MULTI.entropy(be, p["logits"]) * w),
        {"logits": data((B, 9), seed=124)}, MULTI_ACTIONS),
    "gaussian": (
        lambda be, p, a, n, w: be.xp.sum(GAUSS.log_prob(be, _gauss_params(p), a) * w)
        + be.xp.sum(GAUSS.entropy(be, _gauss_params(p))),
        {"mean": data((B, 3), seed=125), "log_std": data((3,), "float32", -1, 0.5, seed=126)}, G_ACTIONS),
    "gaussian_tanh": (
        lambda be, p, a, n, w: be.xp.sum(SQUASHED.log_prob(be, _gauss_params(p), a) * w)
        + be.xp.sum(SQUASHED.entropy(be, _gauss_params(p)) * w),
        {"mean": data((B, 3), seed=127), "log_std": data((B, 3), "float32", -1, 0.5, seed=128)}, SQ_ACTIONS),
    "gaussian_tanh_box": (
        lambda be, p, a, n, w: be.xp.sum(SQUASHED_BOX.log_prob(be, _gauss_params(p), a) * w)
        + be.xp.sum(SQUASHED_BOX.entropy(be, _gauss_params(p))),
        {"mean": data((B, 3), seed=129), "log_std": data((3,), "float32", -1, 0.5, seed=130)}, BOX_ACTIONS),
    "gaussian_tanh_rsample": (
        # the reparameterized path (SAC's actor loss): gradients through the sample and its log-prob
        lambda be, p, a, n, w: _rsample_loss(be, SQUASHED_BOX, p, n, w),
        {"mean": data((B, 3), seed=131), "log_std": data((3,), "float32", -1, 0.5, seed=132)}, BOX_ACTIONS),
}


def _rsample_loss(be, dist, p, noise, w):
    action, logp = dist.sample_and_log_prob(be, _gauss_params(p), noise)
    return be.xp.sum(action * action) + be.xp.sum(logp * w)


# the uniform-bounds squashed Gaussian is the box one with center 0 and scale 1: its values are checked,
# its gradient adds nothing over gaussian_tanh_box's but another set of tinygrad kernels to compile
GRAD_SKIPS = {"gaussian_tanh"}


@pytest.mark.parametrize("name", [n for n in DIST_CASES if n not in GRAD_SKIPS])
def test_distribution_gradient(tbe, name):
    """log_prob and entropy of every distribution differentiate correctly w.r.t. their parameters."""
    loss, params, actions = DIST_CASES[name]
    w = data((B,), "float64", 0.5, 1.5, seed=133)
    check_grad(tbe, loss, params, actions, NOISE, w)


@pytest.mark.parametrize("name", list(DIST_CASES))
def test_distribution_values(be, name):
    """Float32 loss values (log_prob + entropy) equal the numpy backend's."""
    loss, params, actions = DIST_CASES[name]
    w = data((B,), "float32", 0.5, 1.5, seed=133)
    ref = np.asarray(loss(puffer.backend("numpy"), params, actions, NOISE, w))
    out = loss(be, to_backend(be, params), *to_backend(be, (actions, NOISE, w)))
    assert_matches(be, out, ref, rtol=1e-5, atol=1e-5, what=name)


def _categorical_ref(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling in float64, independent of puffer."""
    p = np.exp(logits - logits.max(-1, keepdims=True))
    cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)
    return np.minimum((cdf < u[..., None]).sum(-1), logits.shape[-1] - 1).astype(np.int64)


def test_categorical_samples_from_noise(be):
    """The same uniform noise picks the same actions on every backend, and they follow the inverse CDF."""
    g = np.random.default_rng(140)
    logits = (g.standard_normal((256, 6)) * 2).astype(np.float32)
    logits[:, 3] = -1e9  # a masked action is never chosen
    noise = CAT.noise(g, 256)
    out = CAT.sample(be, be.asarray(logits), be.asarray(noise))
    ref = _categorical_ref(logits.astype(np.float64), noise.astype(np.float64))
    assert_matches(be, out, ref, what="categorical sample")
    assert_matches(be, out, CAT.sample(puffer.backend("numpy"), logits, noise), what="same as the numpy backend")
    assert not np.any(be.to_numpy(out) == 3)


def test_multicategorical_samples_from_noise(be):
    g = np.random.default_rng(141)
    logits = g.standard_normal((64, 9)).astype(np.float32)
    noise = MULTI.noise(g, 64)
    out = MULTI.sample(be, be.asarray(logits), be.asarray(noise))
    ref = np.stack([_categorical_ref(logits[:, a:b].astype(np.float64), noise[:, i].astype(np.float64))
                    for i, (a, b) in enumerate([(0, 3), (3, 5), (5, 9)])], axis=-1)
    assert_matches(be, out, ref, what="multicategorical sample")


@pytest.mark.parametrize("dist", [GAUSS, SQUASHED_BOX], ids=["plain", "tanh_box"])
def test_gaussian_samples_from_noise(be, dist):
    g = np.random.default_rng(142)
    mean = g.standard_normal((64, 3)).astype(np.float32)
    log_std = np.array([-0.5, 0.0, 0.3], np.float32)
    noise = dist.noise(g, 64)
    out, logp = dist.sample_and_log_prob(be, (be.asarray(mean), be.asarray(log_std)), be.asarray(noise))
    u = mean.astype(np.float64) + np.exp(log_std.astype(np.float64)) * noise
    ref = u if not dist.squash else np.array([0.0, 0.0, 1.5]) + np.array([2.0, 1.0, 1.5]) * np.tanh(u)
    assert_matches(be, out, ref.astype(np.float32), rtol=1e-5, atol=1e-5, what="gaussian sample")
    ref_lp = dist.log_prob(puffer.backend("numpy"), (mean.astype(np.float64), log_std.astype(np.float64)), ref)
    # the sample's log-prob computed from noise equals log_prob of the sampled action (away from the bounds)
    inside = np.all(np.abs(np.tanh(u)) < 0.99, axis=-1)
    np.testing.assert_allclose(be.to_numpy(logp)[inside], ref_lp[inside], rtol=1e-4, atol=1e-4)


def test_distribution_modes(be):
    logits = data((4, 5), seed=143)
    assert_matches(be, CAT.mode(be, be.asarray(logits)), np.argmax(logits, -1).astype(np.int64))
    mlogits = data((4, 9), seed=144)
    ref = np.stack([np.argmax(mlogits[:, a:b], -1) for a, b in [(0, 3), (3, 5), (5, 9)]], -1).astype(np.int64)
    assert_matches(be, MULTI.mode(be, be.asarray(mlogits)), ref)
    mean = data((4, 3), seed=145)
    params = (be.asarray(mean), be.asarray(np.zeros(3, np.float32)))
    ref_box = (np.array([0.0, 0.0, 1.5]) + np.array([2.0, 1.0, 1.5]) * np.tanh(mean.astype(np.float64)))
    assert_matches(be, SQUASHED_BOX.mode(be, params), ref_box.astype(np.float32))
