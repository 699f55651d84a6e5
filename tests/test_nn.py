"""puffer.nn: layers, recurrent cells and distributions on every backend, checked against torch and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import puffer
from puffer.nn import attention, distributions, embedding, gru, layer_norm, linear, lstm, mlp
from puffer.nn import init as nn_init


def np_rng(seed=0):
    return np.random.default_rng(seed)


def arr(be, x, dtype=np.float32):
    return be.asarray(np.asarray(x, dtype=dtype))


def to_np(be, x):
    return np.asarray(be.to_numpy(x))


def tt(x):
    return torch.tensor(np.asarray(x))


# ---- initializers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 4), (8, 3), (3, 8), (6, 2, 3)])
def test_orthogonal_is_orthogonal_with_gain(shape):
    w = nn_init.orthogonal(nn_init.rng(0), shape, gain=2.0, dtype=np.float64)
    assert w.shape == shape and w.dtype == np.float64
    flat = w.reshape(shape[0], -1)
    small = min(flat.shape)
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)


def test_initializers_are_deterministic_and_float32_by_default():
    a = nn_init.orthogonal(nn_init.rng(3), (5, 7))
    b = nn_init.orthogonal(np.random.Generator(np.random.PCG64(3)), (5, 7))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert nn_init.zeros((2, 3)).dtype == np.float32
    n = nn_init.normal(nn_init.rng(0), (20000,), std=0.5)
    assert n.dtype == np.float32 and abs(n.std() - 0.5) < 0.01


def test_init_is_identical_on_every_backend(be):
    ref = mlp.init(None, seed=0, sizes=[8, 64, 64, 5], out_gain=0.01, prefix="actor/")
    got = mlp.init(be, seed=0, sizes=[8, 64, 64, 5], out_gain=0.01, prefix="actor/")
    assert sorted(got) == sorted(ref) == sorted(
        f"actor/{i}/{p}" for i in range(3) for p in ("w", "b"))
    for k in ref:
        assert be.is_array(got[k])
        np.testing.assert_array_equal(to_np(be, got[k]), ref[k])
        assert to_np(be, got[k]).dtype == np.float32


def test_init_dtype_option():
    p = linear.init(None, 0, 3, 2, dtype=np.float64, bias=0.5)
    assert p["w"].dtype == np.float64 and np.all(p["b"] == 0.5)
    p = linear.init(None, 0, 3, 2, std=0.02)
    assert p["w"].shape == (3, 2)


def test_mlp_rejects_bad_input():
    with pytest.raises(ValueError, match="at least"):
        mlp.init(None, 0, sizes=[4])
    be = puffer.backend("numpy")
    p = mlp.init(None, 0, sizes=[2, 3])
    with pytest.raises(ValueError, match="unknown activation"):
        mlp.apply(be, p, np.zeros((1, 2), np.float32), activation="swish")
    with pytest.raises(KeyError):
        mlp.apply(be, p, np.zeros((1, 2), np.float32), prefix="critic/")


# ---- feed-forward layers --------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_mlp_matches_numpy(be, activation):
    params = mlp.init(None, seed=1, sizes=[8, 16, 16, 3])
    x = np_rng().standard_normal((5, 8)).astype(np.float32)
    act = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0),
           "gelu": lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))}[activation]
    h = x.astype(np.float64)
    for i in range(3):
        h = h @ params[f"{i}/w"] + params[f"{i}/b"]
        h = act(h) if i < 2 else h
    got = mlp.apply(be, nn_init.to_backend(be, params), arr(be, x), activation=activation)
    np.testing.assert_allclose(to_np(be, got), h, rtol=1e-4, atol=1e-5)


def test_linear_matches_torch_layout():
    params = linear.init(None, 0, 4, 3, bias=0.1)
    x = np_rng().standard_normal((2, 4)).astype(np.float32)
    ref = torch.nn.functional.linear(tt(x), tt(params["w"].T), tt(params["b"])).numpy()
    np.testing.assert_allclose(linear.apply(puffer.backend("numpy"), params, x), ref, rtol=1e-6, atol=1e-6)


def test_layer_norm_matches_torch(be):
    params = layer_norm.init(None, 0, 6, prefix="ln/")
    params["ln/g"] = np_rng(1).standard_normal(6).astype(np.float32)
    params["ln/b"] = np_rng(2).standard_normal(6).astype(np.float32)
    x = np_rng().standard_normal((2, 3, 6)).astype(np.float32) * 3 + 1
    ref = torch.nn.functional.layer_norm(tt(x), (6,), tt(params["ln/g"]), tt(params["ln/b"]), eps=1e-5).numpy()
    got = layer_norm.apply(be, nn_init.to_backend(be, params), arr(be, x), prefix="ln/")
    np.testing.assert_allclose(to_np(be, got), ref, rtol=1e-5, atol=1e-5)


def test_embedding_gathers_rows(be):
    params = embedding.init(None, 0, 10, 4)
    idx = np.array([[1, 9, 0], [3, 3, 7]], dtype=np.int64)
    got = embedding.apply(be, nn_init.to_backend(be, params), be.asarray(idx))
    np.testing.assert_allclose(to_np(be, got), params["w"][idx], rtol=0, atol=0)


# ---- recurrent cells ------------------------------------------------------------------------------
def torch_cell(kind: str, params: dict, in_size: int, hidden: int):
    cell = (torch.nn.LSTMCell if kind == "lstm" else torch.nn.GRUCell)(in_size, hidden, dtype=torch.float64)
    state = {k: torch.tensor(v) for k, v in lstm.to_torch(None, params).items()}
    cell.load_state_dict(state)
    return cell


def random_rnn_params(kind: str, in_size: int, hidden: int) -> dict:
    gates = 4 if kind == "lstm" else 3
    p = lstm.init_gated(None, 0, in_size, hidden, gates, dtype=np.float64)
    # non-zero biases so a swapped or dropped bias would show
    r = np_rng(5)
    return {k: v + 0.3 * r.standard_normal(v.shape) for k, v in p.items()}


def test_torch_layout_round_trip():
    p = random_rnn_params("lstm", 3, 5)
    back = lstm.from_torch(None, lstm.to_torch(None, p))
    assert all(np.array_equal(back[k], p[k]) for k in p)
    assert lstm.to_torch(None, p)["weight_ih"].shape == (20, 3)


def test_lstm_cell_matches_torch(be):
    p = random_rnn_params("lstm", 3, 5)
    r = np_rng(1)
    x, h, c = r.standard_normal((4, 3)), r.standard_normal((4, 5)), r.standard_normal((4, 5))
    with torch.no_grad():
        h_ref, c_ref = torch_cell("lstm", p, 3, 5)(tt(x), (tt(h), tt(c)))
    h1, c1 = lstm.cell(be, nn_init.to_backend(be, p), arr(be, x, np.float64),
                       (arr(be, h, np.float64), arr(be, c, np.float64)))
    np.testing.assert_allclose(to_np(be, h1), h_ref.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_np(be, c1), c_ref.numpy(), rtol=1e-10, atol=1e-12)


def test_gru_cell_matches_torch(be):
    p = random_rnn_params("gru", 3, 5)
    r = np_rng(1)
    x, h = r.standard_normal((4, 3)), r.standard_normal((4, 5))
    with torch.no_grad():
        ref = torch_cell("gru", p, 3, 5)(tt(x), tt(h))
    got = gru.cell(be, nn_init.to_backend(be, p), arr(be, x, np.float64), arr(be, h, np.float64))
    np.testing.assert_allclose(to_np(be, got), ref.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unroll_resets_state_before_the_step(be, kind):
    t_len, batch, in_size, hidden = 3, 3, 2, 4
    p = random_rnn_params(kind, in_size, hidden)
    r = np_rng(2)
    xs = r.standard_normal((t_len, batch, in_size))
    h0, c0 = r.standard_normal((batch, hidden)), r.standard_normal((batch, hidden))
    resets = np.zeros((t_len, batch), dtype=bool)
    resets[0, 0] = resets[1, 1] = resets[2, 1] = True  # at the first step, mid-segment, twice in a row
    cell = torch_cell(kind, p, in_size, hidden)
    h, c, ref = tt(h0), tt(c0), []
    with torch.no_grad():
        for t in range(t_len):
            keep = tt(~resets[t])[:, None].double()
            h, c = h * keep, c * keep
            if kind == "lstm":
                h, c = cell(tt(xs[t]), (h, c))
            else:
                h = cell(tt(xs[t]), h)
            ref.append(h.numpy())
    params = nn_init.to_backend(be, p)
    xs_b, r_b = arr(be, xs, np.float64), be.asarray(resets)
    if kind == "lstm":
        hs, (h_t, c_t) = lstm.unroll(be, params, xs_b, (arr(be, h0, np.float64), arr(be, c0, np.float64)), r_b)
        np.testing.assert_allclose(to_np(be, c_t), c.numpy(), rtol=1e-10, atol=1e-12)
    else:
        hs, h_t = gru.unroll(be, params, xs_b, arr(be, h0, np.float64), r_b)
    np.testing.assert_allclose(to_np(be, hs), np.stack(ref), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_np(be, h_t), ref[-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unroll_without_resets_equals_never_resetting(be, kind):
    mod = lstm if kind == "lstm" else gru
    p = nn_init.to_backend(be, random_rnn_params(kind, 2, 4))
    xs = arr(be, np_rng(2).standard_normal((3, 3, 2)), np.float64)
    state = mod.initial_state(be, 3, 4, np.float64)
    plain = mod.unroll(be, p, xs, state)[0]
    never = mod.unroll(be, p, xs, state, be.asarray(np.zeros((3, 3), bool)))[0]
    np.testing.assert_allclose(to_np(be, plain), to_np(be, never), rtol=1e-12, atol=1e-14)


def test_lstm_gradients_agree_across_training_backends(tbe):
    """BPTT through the scan with resets: gradients equal torch autograd's on a float64 loss."""
    p = random_rnn_params("lstm", 2, 3)
    r = np_rng(3)
    xs = r.standard_normal((3, 2, 2))
    resets = np.array([[0, 0], [0, 1], [1, 0]], dtype=bool)

    def loss(be, params, xs, resets):
        hs, (h, c) = lstm.unroll(be, params, xs, lstm.initial_state(be, 2, 3, np.float64), resets)
        return be.xp.sum(hs * hs) + be.xp.sum(c)

    ref_be = puffer.backend("torch")
    _, ref = ref_be.value_and_grad(lambda q: loss(ref_be, q, arr(ref_be, xs, np.float64), ref_be.asarray(resets)))(
        nn_init.to_backend(ref_be, p))
    step = tbe.compile(tbe.value_and_grad(lambda q, x, rs: loss(tbe, q, x, rs)))
    for _ in range(3):  # compiled code is captured on a later call (TinyJit): check every call
        _, got = step(nn_init.to_backend(tbe, p), arr(tbe, xs, np.float64), tbe.asarray(resets))
        for k in p:
            np.testing.assert_allclose(to_np(tbe, got[k]), to_np(ref_be, ref[k]), rtol=1e-9, atol=1e-12)


# ---- attention ------------------------------------------------------------------------------------
def numpy_block(params: dict, x: np.ndarray) -> np.ndarray:
    """A plain numpy pre-LN causal self-attention block, written independently of puffer."""
    b, t, d = x.shape
    _, _, nh, hd = params["attn/qkv/w"].shape

    def ln(v, g, bias):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-5) * g + bias

    h = ln(x, params["ln1/g"], params["ln1/b"])
    q, k, v = (np.einsum("btd,dhe->bhte", h, params["attn/qkv/w"][:, i]) + params["attn/qkv/b"][i][None, :, None]
               for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = (a / a.sum(-1, keepdims=True)) @ v
    x = x + a.transpose(0, 2, 1, 3).reshape(b, t, d) @ params["attn/out/w"] + params["attn/out/b"]
    h = ln(x, params["ln2/g"], params["ln2/b"]) @ params["mlp/0/w"] + params["mlp/0/b"]
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
    return x + h @ params["mlp/1/w"] + params["mlp/1/b"]


def test_attention_matches_numpy_and_is_causal(be):
    p = attention.init(None, 0, d_model=8, n_heads=2, std=0.3, dtype=np.float64, prefix="blk/")
    r = np_rng(4)
    p = {k: v + 0.1 * r.standard_normal(v.shape) for k, v in p.items()}  # non-trivial LN and biases
    x = r.standard_normal((2, 5, 8))
    ref = numpy_block({k[4:]: v for k, v in p.items()}, x)
    params = nn_init.to_backend(be, p)
    got = to_np(be, attention.apply(be, params, arr(be, x, np.float64), prefix="blk/"))
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-10)
    x2 = x.copy()
    x2[:, 3:] += 10.0 * r.standard_normal((2, 2, 8))
    got2 = to_np(be, attention.apply(be, params, arr(be, x2, np.float64), prefix="blk/"))
    np.testing.assert_array_equal(got2[:, :3], got[:, :3])
    assert not np.allclose(got2[:, 3:], got[:, 3:])


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="multiple"):
        attention.init(None, 0, d_model=6, n_heads=4)


# ---- distributions --------------------------------------------------------------------------------
def logits_np(shape, seed=0):
    return (2.0 * np_rng(seed).standard_normal(shape)).astype(np.float64)


def test_categorical_matches_torch(be):
    d = distributions.Categorical(5)
    logits = logits_np((7, 5))
    actions = np_rng(1).integers(0, 5, 7)
    ref = torch.distributions.Categorical(logits=tt(logits))
    lg = arr(be, logits, np.float64)
    np.testing.assert_allclose(to_np(be, d.log_prob(be, lg, be.asarray(actions))),
                               ref.log_prob(tt(actions)).numpy(), rtol=1e-10)
    np.testing.assert_allclose(to_np(be, d.entropy(be, lg)), ref.entropy().numpy(), rtol=1e-10)
    mode = to_np(be, d.mode(be, lg))
    assert mode.dtype == np.int64 and np.array_equal(mode, logits.argmax(-1))


def test_masked_logits_are_never_sampled_and_keep_entropy_finite(be):
    d = distributions.Categorical(4)
    logits = np.array([[0.5, -np.inf, 1.0, -np.inf]] * 3, dtype=np.float32)
    lg = arr(be, logits)
    ref = torch.distributions.Categorical(logits=tt(logits))
    np.testing.assert_allclose(to_np(be, d.entropy(be, lg)), ref.entropy().numpy(), rtol=1e-6)
    u = np.array([0.0, 0.5, np.nextafter(np.float32(1), 0)], np.float32)
    assert set(to_np(be, d.sample(be, lg, be.asarray(u))).tolist()) <= {0, 2}


def test_multicategorical_matches_torch(be):
    d = distributions.MultiCategorical([3, 2, 4])
    assert d.nvec == (3, 2, 4) and d.param_size == 9
    logits = logits_np((6, 9))
    actions = np.stack([np_rng(i).integers(0, n, 6) for i, n in enumerate(d.nvec)], axis=-1)
    refs = [torch.distributions.Categorical(logits=tt(lg)) for lg in np.split(logits, [3, 5], axis=-1)]
    lg = arr(be, logits, np.float64)
    np.testing.assert_allclose(to_np(be, d.log_prob(be, lg, be.asarray(actions))),
                               sum(r.log_prob(tt(actions[:, i])) for i, r in enumerate(refs)).numpy(), rtol=1e-10)
    np.testing.assert_allclose(to_np(be, d.entropy(be, lg)), sum(r.entropy() for r in refs).numpy(), rtol=1e-10)
    mode = to_np(be, d.mode(be, lg))
    assert mode.shape == (6, 3) and np.array_equal(mode[:, 2], logits[:, 5:].argmax(-1))


@pytest.mark.parametrize("log_std_shape", [(3,), (4, 3)])
def test_gaussian_matches_torch(be, log_std_shape):
    d = distributions.DiagGaussian(3)
    mean, log_std = logits_np((4, 3)), 0.3 * logits_np(log_std_shape, 1)
    actions = logits_np((4, 3), 2)
    ref = torch.distributions.Normal(tt(mean), tt(np.exp(log_std)))
    params = (arr(be, mean, np.float64), arr(be, log_std, np.float64))
    np.testing.assert_allclose(to_np(be, d.log_prob(be, params, arr(be, actions, np.float64))),
                               ref.log_prob(tt(actions)).sum(-1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(to_np(be, d.entropy(be, params)), ref.entropy().sum(-1).numpy(), rtol=1e-10)
    np.testing.assert_allclose(to_np(be, d.mode(be, params)), mean)


def squashed_reference(mean, log_std, low, high):
    from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

    low, high = np.broadcast_to(low, mean.shape[-1:]), np.broadcast_to(high, mean.shape[-1:])
    base = Normal(tt(mean), tt(np.exp(np.broadcast_to(log_std, mean.shape))))
    affine = AffineTransform(tt((high + low) / 2), tt((high - low) / 2))
    return TransformedDistribution(base, [TanhTransform(), affine])


@pytest.mark.parametrize("bounds", [None, (-2.0, 2.0), ((-1.0, 0.0, -3.0), (1.0, 2.0, 5.0))])
def test_squashed_gaussian_matches_torch(be, bounds):
    low, high = bounds if bounds else (-1.0, 1.0)
    d = distributions.DiagGaussian(3, squash=True, low=bounds and low, high=bounds and high)
    mean, log_std = logits_np((4, 3)), 0.3 * logits_np((3,), 1)
    noise = np_rng(3).standard_normal((4, 3))
    ref = squashed_reference(mean, log_std, np.asarray(low), np.asarray(high))
    params = (arr(be, mean, np.float64), arr(be, log_std, np.float64))
    sample, lp = d.sample_and_log_prob(be, params, arr(be, noise, np.float64))
    ref_sample = ref.transforms[1](torch.tanh(tt(mean + np.exp(log_std) * noise))).numpy()
    np.testing.assert_allclose(to_np(be, sample), ref_sample, rtol=1e-10)
    np.testing.assert_allclose(to_np(be, d.sample(be, params, arr(be, noise, np.float64))), ref_sample, rtol=1e-10)
    ref_lp = ref.log_prob(tt(ref_sample)).sum(-1).numpy()
    np.testing.assert_allclose(to_np(be, lp), ref_lp, rtol=1e-7)
    np.testing.assert_allclose(to_np(be, d.log_prob(be, params, sample)), ref_lp, rtol=1e-6)
    mode = to_np(be, d.mode(be, params))
    assert np.all(mode > np.asarray(low)) and np.all(mode < np.asarray(high))


def test_squashed_entropy_is_an_upper_bound_tight_for_small_std():
    be = puffer.backend("numpy")
    d = distributions.DiagGaussian(2, squash=True, low=-2.0, high=2.0)
    r = np_rng(0)
    for scale in (0.5, 1e-3):
        mean, log_std = np.array([[0.3, -1.2]]), np.log(np.array([scale, scale]))
        noise = r.standard_normal((200000, 2))
        _, lp = d.sample_and_log_prob(be, (np.repeat(mean, len(noise), 0), log_std), noise)
        mc, se = -lp.mean(), lp.std() / np.sqrt(len(noise))
        bound = d.entropy(be, (mean, log_std))[0]
        assert bound >= mc - 3 * se
        if scale < 0.01:  # the Jensen gap is O(std^2): within Monte Carlo error
            assert abs(bound - mc) < 4 * se
        else:
            assert bound - mc > 0.05


def test_gaussian_validates_bounds():
    with pytest.raises(ValueError, match="squash=True"):
        distributions.DiagGaussian(2, low=-1.0, high=1.0)
    with pytest.raises(ValueError, match="both"):
        distributions.DiagGaussian(2, squash=True, low=-1.0)
    with pytest.raises(ValueError, match="finite"):
        distributions.DiagGaussian(2, squash=True, low=-np.inf, high=1.0)


def test_categorical_inverse_cdf_follows_probabilities():
    be = puffer.backend("numpy")
    d = distributions.Categorical(4)
    logits = np.log(np.array([[0.1, 0.0, 0.6, 0.3]], dtype=np.float32) + 1e-30)
    u = d.noise(np_rng(0), 100000)
    a = d.sample(be, np.repeat(logits, len(u), 0), u)
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() <= 3
    freq = np.bincount(a, minlength=4) / len(a)
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.6, 0.3], atol=0.01)
    assert freq[1] == 0.0
    # the extremes of the noise stay in range
    edge = d.sample(be, np.repeat(logits, 2, 0), np.array([0.0, np.nextafter(np.float32(1), 0)], np.float32))
    assert edge.tolist() == [0, 3]


DISTS = {
    "categorical": distributions.Categorical(6),
    "multicategorical": distributions.MultiCategorical((3, 5)),
    "gaussian": distributions.DiagGaussian(2),
    "squashed": distributions.DiagGaussian(2, squash=True, low=(-1.0, 0.0), high=(1.0, 4.0)),
}


def dist_inputs(name: str, batch: int = 64):
    d = DISTS[name]
    if isinstance(d, distributions.DiagGaussian):
        params = (logits_np((batch, 2)).astype(np.float32), np.array([-0.5, 0.2], np.float32))
    else:
        params = logits_np((batch, d.param_size)).astype(np.float32)
    return d, params, d.noise(np_rng(7), batch)


@pytest.mark.parametrize("name", list(DISTS))
def test_same_noise_same_sample_on_every_backend(be, name):
    d, params, noise = dist_inputs(name)
    ref_be = puffer.backend("numpy")
    ref = d.sample(ref_be, params, noise)
    as_be = (lambda p: tuple(be.asarray(v) for v in p)) if isinstance(params, tuple) else be.asarray
    got = to_np(be, d.sample(be, as_be(params), be.asarray(noise)))
    if isinstance(d, distributions.DiagGaussian):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    else:
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ref)
    a, lp = d.sample_and_log_prob(be, as_be(params), be.asarray(noise))
    # recovering u = atanh(y) from a float32 action near a bound loses digits: the reason
    # sample_and_log_prob computes the log-probability from u itself
    tol = 1e-3 if d == DISTS["squashed"] else 1e-5
    np.testing.assert_allclose(to_np(be, lp), to_np(be, d.log_prob(be, as_be(params), a)), rtol=tol, atol=tol)


def test_for_space_picks_the_distribution():
    s = puffer.spaces
    assert distributions.for_space(s.Discrete(4)) == distributions.Categorical(4)
    assert distributions.for_space(s.MultiDiscrete([2, 3])) == distributions.MultiCategorical((2, 3))
    assert distributions.for_space(s.MultiBinary(3)) == distributions.MultiCategorical((2, 2, 2))
    assert distributions.for_space(s.Box(-1.0, 1.0, (2,))) == distributions.DiagGaussian(2)
    sq = distributions.for_space(s.Box(np.array([-1.0, 0.0]), np.array([1.0, 2.0])), squash=True)
    assert sq.squash and sq.low == (-1.0, 0.0) and sq.high == (1.0, 2.0)
    with pytest.raises(ValueError, match="no action distribution"):
        distributions.for_space(s.Box(0, 5, (2,), dtype=np.int64))


def test_distributions_differentiate_under_compile(tbe):
    """log_prob and entropy inside a compiled value_and_grad: a PPO-shaped loss on every training backend."""
    d = distributions.Categorical(4)
    params = mlp.init(tbe, 0, [3, 8, 4])
    x = arr(tbe, np_rng().standard_normal((16, 3)))
    actions = tbe.asarray(np_rng(1).integers(0, 4, 16))

    def loss(p, x, a):
        logits = mlp.apply(tbe, p, x)
        return -tbe.xp.mean(d.log_prob(tbe, logits, a)) - 0.01 * tbe.xp.mean(d.entropy(tbe, logits))

    eager = tbe.value_and_grad(loss)(params, x, actions)
    step = tbe.compile(tbe.value_and_grad(loss))
    for _ in range(3):
        value, grads = step(params, x, actions)
        np.testing.assert_allclose(to_np(tbe, value), to_np(tbe, eager[0]), rtol=1e-6)
        for k in params:
            np.testing.assert_allclose(to_np(tbe, grads[k]), to_np(tbe, eager[1][k]), rtol=1e-5, atol=1e-7)
