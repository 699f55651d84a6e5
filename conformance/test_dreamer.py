"""Dreamer's pieces are the same on every backend: numerics against numpy references, and one
world-model loss with its gradients against a float64 run of the same single-source code.

Tolerances: float32 on each backend vs float64 numpy (or torch) references, 1e-5 relative to the
largest magnitude of each array (1e-4 for the world-model gradients, which pass through a GRU unroll).
"""

from __future__ import annotations

import numpy as np
import pytest

import puffer
from puffer import spaces
from puffer.algos import dreamer as D
from puffer.errors import PufferError

OBS, ACT, T, B = 3, 2, 4, 3


def _close(got, want, tol: float = 1e-5) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


def _np_twohot(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """DreamerV3's reference encoding: neighbours found by counting bins below and above."""
    n = len(centres)
    below = np.clip((centres <= x[..., None]).sum(-1) - 1, 0, n - 1)
    above = np.clip(n - (centres > x[..., None]).sum(-1), 0, n - 1)
    equal = below == above
    d_below = np.where(equal, 1.0, np.abs(centres[below] - x))
    d_above = np.where(equal, 1.0, np.abs(centres[above] - x))
    total = d_below + d_above
    out = np.zeros((*x.shape, n))
    np.put_along_axis(out, below[..., None], (d_above / total)[..., None], -1)
    np.add.at(out, tuple(np.indices(x.shape)) + (above,), d_below / total)
    return out


def test_symlog_symexp_inverse(be):
    x = np.array([-1e6, -12.5, -1.0, -1e-3, 0.0, 2e-4, 0.7, 3.0, 4e5], np.float32)
    sl = be.to_numpy(D.symlog(be, be.asarray(x)))
    _close(sl, np.sign(x) * np.log1p(np.abs(x.astype(np.float64))))
    back = be.to_numpy(D.symexp(be, be.asarray(sl)))
    np.testing.assert_allclose(back, x, rtol=2e-6, atol=1e-7)


def test_twohot_round_trip(be):
    centres = D.bins()
    g = np.random.default_rng(0)
    # raw values from tiny to huge, exact bin centres, and values beyond both ends of the bins
    edges = centres[[0, 7, 127, 254]]
    raw = np.concatenate([g.normal(size=20) * 10.0 ** g.integers(-3, 6, 20), np.sign(edges) * np.expm1(np.abs(edges)),
                          [-1e10, 1e10, 0.0]]).astype(np.float32)
    x = np.sign(raw) * np.log1p(np.abs(raw))
    w = be.to_numpy(D.twohot(be, be.asarray(x.astype(np.float32))))
    _close(w, _np_twohot(x.astype(np.float64), centres.astype(np.float64)))
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    inside = np.abs(x) <= D.BIN_RANGE
    decoded = (w * centres).sum(-1)
    np.testing.assert_allclose(decoded[inside], x[inside], atol=1e-4)
    # a head whose softmax equals the two-hot weights decodes to the raw value
    logits = np.log(np.maximum(w, 1e-30)).astype(np.float32)
    mean = be.to_numpy(D.twohot_mean(be, be.asarray(logits), be.asarray(centres)))
    np.testing.assert_allclose(mean[inside], raw[inside], rtol=1e-3, atol=1e-4)


def test_unimix_floor(be):
    logits = np.array([[30.0, -30.0, 0.0, -5.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    logp = be.to_numpy(D.unimix_logits(be, be.asarray(logits)))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    want = 0.99 * p / p.sum(-1, keepdims=True) + 0.01 / 4
    _close(np.exp(logp), want)
    assert np.exp(logp).min() >= 0.01 / 4 * (1 - 1e-5)


def test_free_bits_clamp(be):
    kl = np.array([0.0, 0.5, 0.999, 1.0, 1.5, 7.0], np.float32)
    _close(be.to_numpy(D.free_bits(be, be.asarray(kl), 1.0)), np.maximum(kl, 1.0))


def test_categorical_kl(be):
    g = np.random.default_rng(1)
    a, b = g.normal(size=(2, 3, 4)), g.normal(size=(2, 3, 4))
    la = a - np.log(np.exp(a).sum(-1, keepdims=True))
    lb = b - np.log(np.exp(b).sum(-1, keepdims=True))
    want = (np.exp(la) * (la - lb)).sum((-1, -2))
    _close(be.to_numpy(D.categorical_kl(be, be.asarray(la.astype(np.float32)), be.asarray(lb.astype(np.float32)))),
           want)


def test_percentile_normalizer(be):
    g = np.random.default_rng(2)
    ret = (g.normal(size=(5, 7)) * 3.0 + 1.0).astype(np.float32)
    for q in (0.05, 0.5, 0.95):
        _close(be.to_numpy(D.percentile(be, be.asarray(ret), q)), np.percentile(ret, 100 * q))
    lo, hi = np.float32(0.2), np.float32(0.4)
    out = D.return_scale(be, be.asarray(ret), be.asarray(lo), be.asarray(hi))
    want_lo = 0.99 * lo + 0.01 * np.percentile(ret, 5)
    want_hi = 0.99 * hi + 0.01 * np.percentile(ret, 95)
    _close(be.to_numpy(out[0]), want_lo)
    _close(be.to_numpy(out[1]), want_hi)
    _close(be.to_numpy(out[2]), max(1.0, want_hi - want_lo))  # the floor of 1 holds for small spans
    wide = (ret * 1000.0).astype(np.float32)
    _, _, scale = D.return_scale(be, be.asarray(wide), be.asarray(lo), be.asarray(hi), rate=1.0)
    _close(be.to_numpy(scale), np.percentile(wide, 95) - np.percentile(wide, 5))


def test_lambda_returns(be):
    g = np.random.default_rng(3)
    r, d, v = (g.normal(size=(6, 4)).astype(np.float32), (0.99 * (g.random((6, 4)) > 0.2)).astype(np.float32),
               g.normal(size=(6, 4)).astype(np.float32))
    lam = 0.95
    want = np.zeros((6, 4))
    nxt = v[-1].astype(np.float64)
    for t in range(5, -1, -1):
        nxt = r[t] + d[t] * ((1 - lam) * v[t] + lam * nxt)
        want[t] = nxt
    got = D.lambda_returns(be, be.asarray(r), be.asarray(d), be.asarray(v), lam)
    _close(be.to_numpy(got), want)


def test_image_observations_raise():
    with pytest.raises(PufferError, match="image observations are not supported"):
        D.make_spec(spaces.Box(0, 255, (8, 8, 3), np.uint8), spaces.Discrete(2))
    with pytest.raises(PufferError, match="model size"):
        D.make_spec(spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2), "xl")


def _spec(discrete: bool) -> D.Spec:
    act = spaces.Discrete(ACT) if discrete else spaces.Box(-1.0, 1.0, (ACT,), np.float32)
    return D.make_spec(spaces.Box(-1.0, 1.0, (OBS,), np.float32), act, "xs", deter=8, hidden=8, stoch=3, classes=4)


def _wm_batch(spec: D.Spec) -> dict[str, np.ndarray]:
    g = np.random.default_rng(4)
    if spec.discrete:
        actions = np.eye(ACT)[g.integers(0, ACT, (T, B))]
    else:
        actions = g.uniform(-1, 1, (T, B, ACT))
    return {"obs": g.normal(size=(T, B, OBS)) * 2.0, "prev_actions": actions,
            "rewards": g.normal(size=(T, B)) * 3.0, "is_first": (g.random((T, B)) < 0.25) * 1.0,
            "is_terminal": (g.random((T, B)) < 0.2) * 1.0, "noise": D.gumbel(g, (T, B, spec.stoch, spec.classes)),
            "h0": g.normal(size=(B, spec.deter)) * 0.1, "z0": np.zeros((B, spec.latent))}


def _wm_grads(be_name: str, spec: D.Spec, dtype: str):
    be = puffer.backend(be_name)
    params = {k: be.asarray(v.astype(dtype)) for k, v in D.init_params(spec, 5).items() if k.startswith("wm/")}
    # non-zero reward head so its gradient path is exercised beyond the zero-initialized output layer
    g = np.random.default_rng(6)
    last = f"wm/rew/{spec.layers}/w"
    params[last] = be.asarray((g.normal(size=tuple(params[last].shape)) * 0.1).astype(dtype))
    batch = {k: be.asarray(np.asarray(v).astype(dtype)) for k, v in _wm_batch(spec).items()}
    centres = be.asarray(D.bins().astype(dtype))

    def f(p, batch):
        loss, stats, _ = D.world_model_loss(be, spec, p, batch, centres)
        return loss, stats

    (loss, stats), grads = be.value_and_grad(f, has_aux=True)(params, batch)
    return (float(be.to_numpy(loss)), {k: float(be.to_numpy(v)) for k, v in stats.items()},
            {k: be.to_numpy(v) for k, v in grads.items()})


def test_world_model_loss_and_grads_agree(tbe):
    """One world-model loss and its gradients; the world model sees actions only as inputs, so the
    continuous-action case (prev_actions in [-1, 1]) covers the discrete one-hot inputs too."""
    ref_name = next(n for n in ("torch", "jax") if n in puffer.backends.available())
    spec = _spec(False)
    ref_loss, ref_stats, ref_grads = _wm_grads(ref_name, spec, "float64")
    loss, stats, grads = _wm_grads(tbe.name, spec, "float32")
    assert np.isfinite(loss)
    _close(loss, ref_loss, 1e-5)
    for k in ref_stats:
        _close(stats[k], ref_stats[k], 1e-5)
    assert set(grads) == set(ref_grads)
    assert any(np.abs(v).max() > 0 for v in grads.values())
    for k in ref_grads:
        _close(grads[k], ref_grads[k], 1e-4)


def _behaviour_grads(be_name: str, spec: D.Spec, dtype: str):
    be = puffer.backend(be_name)
    g = np.random.default_rng(7)
    raw = D.init_params(spec, 8)
    for head in (f"critic/{spec.layers}/w", f"wm/rew/{spec.layers}/w"):  # leave the zero init for non-trivial values
        raw[head] = g.normal(size=raw[head].shape) * 0.3
    params = {k: be.asarray(np.asarray(v).astype(dtype)) for k, v in raw.items()}
    slow = {k: be.asarray((np.asarray(v) + 0.05 * g.normal(size=np.shape(v))).astype(dtype))
            for k, v in raw.items() if k.startswith("critic/")}
    n, horizon = 5, 3
    h0 = be.asarray((g.normal(size=(n, spec.deter)) * 0.5).astype(dtype))
    z0 = be.asarray(np.eye(spec.classes)[g.integers(0, spec.classes, (n, spec.stoch))].reshape(n, -1).astype(dtype))
    lat = be.asarray(D.gumbel(g, (horizon, n, spec.stoch, spec.classes)).astype(dtype))
    act = be.asarray((D.gumbel(g, (horizon, n, ACT)) if spec.discrete else g.normal(size=(horizon, n, ACT)))
                     .astype(dtype))
    centres = be.asarray(D.bins().astype(dtype))
    lo, hi = be.asarray(np.asarray(-0.5, dtype)), be.asarray(np.asarray(1.5, dtype))
    feats, actions = D.imagine(be, spec, params, h0, z0, lat, act)
    learn = {k: v for k, v in params.items() if k.startswith(("actor/", "critic/"))}

    def f(p, feats, actions):
        loss, stats, (lo_, hi_) = D.behaviour_loss(be, spec, {**params, **p}, slow, feats, actions, lo, hi, centres,
                                                   0.99, 0.95, 3e-3)
        return loss, {**stats, "lo": lo_, "hi": hi_}

    (loss, stats), grads = be.value_and_grad(f, has_aux=True)(learn, feats, actions)
    return (be.to_numpy(feats), {k: float(be.to_numpy(v)) for k, v in stats.items()},
            {k: be.to_numpy(v) for k, v in grads.items()})


@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "continuous"])
def test_imagination_and_behaviour_agree(tbe, discrete):
    """Imagined features, actor/critic losses and their gradients vs the float64 reference."""
    ref_name = next(n for n in ("torch", "jax") if n in puffer.backends.available())
    spec = _spec(discrete)
    ref_feats, ref_stats, ref_grads = _behaviour_grads(ref_name, spec, "float64")
    feats, stats, grads = _behaviour_grads(tbe.name, spec, "float32")
    _close(feats, ref_feats, 1e-5)
    for k in ref_stats:
        _close(stats[k], ref_stats[k], 1e-4)
    assert set(grads) == set(ref_grads) and any(np.abs(v).max() > 0 for v in grads.values())
    for k in ref_grads:
        _close(grads[k], ref_grads[k], 1e-4)
