"""DreamerV3's pieces (Hafner et al. 2023, danijar/dreamerv3), written once against `be`.

Read top to bottom: the pure numerics (symlog, two-hot over symexp bins, 1% unimix categoricals,
free bits, the 5th-95th percentile return normalizer, lambda-returns), then the world model (an
RSSM: GRU deterministic state plus a categorical stochastic state sampled with straight-through
gradients; MLP encoder/decoder on symlog observations; two-hot reward head and a continue head;
KL balancing with free bits), then behaviour learning in imagination (REINFORCE actor and two-hot
critic on lambda-returns, a slow EMA critic). Every loop is a `be.scan`; every random number
(Gumbel noise for latents and discrete actions, Gaussian noise for continuous actions) is drawn on
the host and passed in, so one seed gives the same world-model update and the same imagination on
every backend.

Not yet here (see the report of issue 14): the sequence-replay data source in `puffer.train`, the
`puffer train --algo dreamer` registration, `puffer dream` and the ONNX export of the acting path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from puffer import optim
from puffer.backends.base import Array, Backend, Params
from puffer.errors import PufferError
from puffer.nn import gru, linear, mlp
from puffer.nn import init as _init

NUM_BINS = 255
BIN_RANGE = 20.0  # bins span symlog space [-20, 20], i.e. symexp to about +-4.9e8
UNIMIX = 0.01


# ---- numerics ----------------------------------------------------------------------------------
def symlog(be: Backend, x: Array) -> Array:
    """sign(x) * log(1 + |x|): compresses large magnitudes, identity-like near 0."""
    xp = be.xp
    return xp.sign(x) * xp.log1p(xp.abs(x))


def symexp(be: Backend, x: Array) -> Array:
    """The inverse of symlog: sign(x) * (exp(|x|) - 1)."""
    xp = be.xp
    return xp.sign(x) * (xp.exp(xp.abs(x)) - 1.0)


def bins(num: int = NUM_BINS, span: float = BIN_RANGE) -> np.ndarray:
    """Equally spaced bin centres in symlog space (their symexp are the represented values)."""
    return np.linspace(-span, span, num, dtype=np.float32)


def twohot(be: Backend, x: Array, num: int = NUM_BINS, span: float = BIN_RANGE) -> Array:
    """`x` [...] (symlog space) as weights [..., num] on its two neighbouring `bins(num, span)` (clamped at the ends).

    The neighbours come from arithmetic on the equal spacing, not from gathering bin values: a
    one-hot-times-bins sum is rewritten into a gather that tinygrad 0.14 fails to compile.
    """
    xp = be.xp
    step = 2.0 * span / (num - 1)
    pos = xp.floor((x + span) / step)
    below = xp.clip(pos, 0.0, float(num - 1))
    above = xp.clip(pos + 1.0, 0.0, float(num - 1))
    ar = xp.arange(num, dtype=x.dtype)
    oh_below = xp.astype(xp.expand_dims(below, axis=-1) == ar, x.dtype)
    oh_above = xp.astype(xp.expand_dims(above, axis=-1) == ar, x.dtype)
    equal = below == above
    one = xp.ones_like(x)
    d_below = xp.where(equal, one, xp.abs(below * step - span - x))
    d_above = xp.where(equal, one, xp.abs(above * step - span - x))
    total = d_below + d_above
    w_below, w_above = d_above / total, d_below / total
    return oh_below * xp.expand_dims(w_below, axis=-1) + oh_above * xp.expand_dims(w_above, axis=-1)


def twohot_mean(be: Backend, logits: Array, centres: Array) -> Array:
    """The value a two-hot head predicts: symexp of the expected bin under softmax(logits)."""
    return symexp(be, be.xp.sum(be.softmax(logits, axis=-1) * centres, axis=-1))


def twohot_loss(be: Backend, logits: Array, target: Array, centres: Array) -> Array:
    """Cross-entropy [...] of the head's logits against the two-hot of symlog(target) (target in raw units)."""
    weights = be.stop_gradient(twohot(be, symlog(be, target), centres.shape[0], BIN_RANGE))
    return -be.xp.sum(weights * be.log_softmax(logits, axis=-1), axis=-1)


def unimix_logits(be: Backend, logits: Array, mix: float = UNIMIX) -> Array:
    """Log-probabilities of (1 - mix) * softmax(logits) + mix / K: no class ever below mix / K."""
    k = logits.shape[-1]
    probs = (1.0 - mix) * be.softmax(logits, axis=-1) + mix / k
    return be.xp.log(probs)


def gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Host-drawn Gumbel(0, 1) noise for `sample_onehot`."""
    u = rng.random(shape, dtype=np.float64)
    return (-np.log(-np.log(np.clip(u, 1e-20, 1.0 - 1e-7)))).astype(np.float32)


def sample_onehot(be: Backend, logp: Array, noise: Array) -> Array:
    """A one-hot sample (Gumbel-max with host `noise`) with straight-through gradients to the probabilities."""
    xp = be.xp
    z = be.stop_gradient(logp) + noise
    hard = xp.astype(z >= xp.max(z, axis=-1, keepdims=True), logp.dtype)
    probs = xp.exp(logp)
    return hard + probs - be.stop_gradient(probs)


def categorical_kl(be: Backend, logp: Array, logq: Array) -> Array:
    """KL(p || q) of categoricals [..., S, K], summed over the S latents and K classes."""
    xp = be.xp
    return xp.sum(xp.sum(xp.exp(logp) * (logp - logq), axis=-1), axis=-1)


def free_bits(be: Backend, kl: Array, free: float) -> Array:
    """max(kl, free): below `free` nats the KL is constant, so it gives no gradient."""
    xp = be.xp
    return xp.maximum(kl, xp.full_like(kl, free))


def percentile(be: Backend, x: Array, q: float) -> Array:
    """The q-th quantile (0..1) of all entries of `x`, linearly interpolated as numpy's default."""
    xp = be.xp
    flat = xp.sort(xp.reshape(x, (-1,)))
    pos = q * (flat.shape[0] - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, flat.shape[0] - 1)
    frac = pos - lo
    return flat[lo] * (1.0 - frac) + flat[hi] * frac


def return_scale(be: Backend, returns: Array, lo: Array, hi: Array, rate: float = 0.01,
                 low: float = 0.05, high: float = 0.95) -> tuple[Array, Array, Array]:
    """EMA of the 5th and 95th percentiles of `returns`; returns (lo, hi, scale = max(1, hi - lo))."""
    xp = be.xp
    r = be.stop_gradient(returns)
    lo = (1.0 - rate) * lo + rate * percentile(be, r, low)
    hi = (1.0 - rate) * hi + rate * percentile(be, r, high)
    span = hi - lo
    return lo, hi, xp.maximum(span, xp.ones_like(span))


def lambda_returns(be: Backend, rewards: Array, discounts: Array, next_values: Array, lam: float) -> Array:
    """TD(lambda) targets [T, ...]: R_t = r_t + d_t ((1 - lam) v_{t+1} + lam R_{t+1}), R_T = v_T.

    `rewards[t]`, `discounts[t]` (gamma times continuation) and `next_values[t]` = v_{t+1} belong
    to the transition from t to t + 1; the recursion starts from `next_values[-1]`.
    """

    def step(ret, inp):
        r, d, v = inp
        ret = r + d * ((1.0 - lam) * v + lam * ret)
        return ret, ret

    _, out = be.scan(step, next_values[-1], (rewards, discounts, next_values), reverse=True)
    return out


# ---- model sizes and parameters ----------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """Shapes of one Dreamer: observation and action sizes, and the network sizes of a preset."""

    obs_dim: int
    act_dim: int
    discrete: bool
    deter: int = 64
    hidden: int = 64
    stoch: int = 8
    classes: int = 8
    layers: int = 1
    free_nats: float = 1.0
    dyn_scale: float = 0.5
    rep_scale: float = 0.1

    @property
    def latent(self) -> int:
        return self.stoch * self.classes

    @property
    def feat(self) -> int:
        return self.deter + self.latent


SIZES = {"xs": dict(deter=64, hidden=64, stoch=8, classes=8, layers=1),
         "s": dict(deter=256, hidden=256, stoch=16, classes=16, layers=2),
         "m": dict(deter=512, hidden=512, stoch=32, classes=32, layers=3)}


def make_spec(obs_space: Any, act_space: Any, size: str = "xs", **overrides: Any) -> Spec:
    """A Spec for vector observations and Discrete or Box actions; other spaces raise PufferError."""
    from puffer import spaces

    if size not in SIZES:
        raise PufferError(f"model size {size!r} is unknown; choose one of {', '.join(SIZES)}")
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        shape = getattr(obs_space, "shape", None)
        kind = "image" if shape is not None and len(shape) == 3 else type(obs_space).__name__
        raise PufferError(f"dreamer supports flat vector observations (Box of shape (n,)) only; got a {kind} "
                          f"observation space {obs_space!r}: image observations are not supported yet")
    if isinstance(act_space, spaces.Discrete):
        act_dim, discrete = int(act_space.n), True
    elif isinstance(act_space, spaces.Box) and len(act_space.shape) == 1:
        act_dim, discrete = int(act_space.shape[0]), False
    else:
        raise PufferError(f"dreamer supports Discrete or flat Box actions; got {act_space!r}")
    return Spec(int(obs_space.shape[0]), act_dim, discrete, **{**SIZES[size], **overrides})


def _mlp(rng: np.random.Generator, n_in: int, hidden: int, layers: int, n_out: int, prefix: str,
         zero_out: bool = False) -> dict[str, np.ndarray]:
    p = mlp.init(None, rng, [n_in] + [hidden] * layers + [n_out], prefix=prefix, out_gain=0.0 if zero_out else 1.0)
    return p


def init_params(spec: Spec, seed: int) -> dict[str, np.ndarray]:
    """World model (`wm/...`), actor (`actor/...`) and critic (`critic/...`) parameters as numpy arrays.

    The reward and critic output layers start at zero (DreamerV3): the first predictions are 0, not
    a random value that the early symexp two-hot targets would amplify.
    """
    rng = _init.rng(seed)
    s, h, n = spec, spec.hidden, spec.layers
    p: dict[str, np.ndarray] = {}
    p.update(_mlp(rng, s.obs_dim, h, n, h, "wm/enc/"))
    p.update(linear.init(None, rng, s.latent + s.act_dim, h, prefix="wm/img_in/"))
    p.update(gru.init(None, rng, h, s.deter, prefix="wm/gru/"))
    p.update(_mlp(rng, s.deter, h, n, s.latent, "wm/prior/"))
    p.update(_mlp(rng, s.deter + h, h, n, s.latent, "wm/post/"))
    p.update(_mlp(rng, s.feat, h, n, s.obs_dim, "wm/dec/"))
    p.update(_mlp(rng, s.feat, h, n, NUM_BINS, "wm/rew/", zero_out=True))
    p.update(_mlp(rng, s.feat, h, n, 1, "wm/cont/"))
    p.update(_mlp(rng, s.feat, h, n, s.act_dim if s.discrete else 2 * s.act_dim, "actor/"))
    p.update(_mlp(rng, s.feat, h, n, NUM_BINS, "critic/", zero_out=True))
    return p


# ---- world model -------------------------------------------------------------------------------
def _net(be: Backend, params: Params, x: Array, prefix: str) -> Array:
    return mlp.apply(be, params, x, activation="tanh", prefix=prefix)


def _latent_logp(be: Backend, spec: Spec, logits: Array) -> Array:
    shape = (*logits.shape[:-1], spec.stoch, spec.classes)
    return unimix_logits(be, be.xp.reshape(logits, shape))


def img_step(be: Backend, spec: Spec, params: Params, h: Array, z: Array, action: Array) -> tuple[Array, Array]:
    """Deterministic transition: (h, flat z, action) -> (new h, prior log-probs [B, S, K])."""
    xp = be.xp
    x = xp.tanh(linear.apply(be, params, xp.concat([z, action], axis=-1), prefix="wm/img_in/"))
    h = gru.cell(be, params, x, h, prefix="wm/gru/")
    return h, _latent_logp(be, spec, _net(be, params, h, "wm/prior/"))


def posterior(be: Backend, spec: Spec, params: Params, h: Array, embed: Array) -> Array:
    """Posterior log-probs [B, S, K] from the deterministic state and the observation's embedding."""
    return _latent_logp(be, spec, _net(be, params, be.xp.concat([h, embed], axis=-1), "wm/post/"))


def _flat(be: Backend, z: Array) -> Array:
    return be.xp.reshape(z, (*z.shape[:-2], z.shape[-2] * z.shape[-1]))


def observe(be: Backend, spec: Spec, params: Params, obs: Array, prev_actions: Array, is_first: Array,
            noise: Array, h0: Array, z0: Array) -> tuple[Array, Array, Array, Array]:
    """Filter a sequence [T, B, ...]: returns h [T, B, D], z [T, B, S*K], post and prior log-probs [T, B, S, K].

    At `is_first` steps the state and the previous action are zeroed, so episodes never leak into each other.
    """
    xp = be.xp
    embed = _net(be, params, symlog(be, obs), "wm/enc/")
    keep = xp.expand_dims(1.0 - is_first, axis=-1)

    def step(carry, inp):
        h, z = carry
        e, a, k, g = inp
        h, prior = img_step(be, spec, params, h * k, z * k, a * k)
        post = posterior(be, spec, params, h, e)
        z = _flat(be, sample_onehot(be, post, g))
        return (h, z), (h, z, post, prior)

    _, (hs, zs, posts, priors) = be.scan(step, (h0, z0), (embed, prev_actions, keep, noise))
    return hs, zs, posts, priors


def world_model_loss(be: Backend, spec: Spec, params: Params, batch: dict[str, Array],
                     centres: Array) -> tuple[Array, dict[str, Array], tuple[Array, Array]]:
    """The world-model loss of a batch [T, B]: (loss, stats, (h, z) posterior states for imagination).

    `batch`: obs [T, B, O], prev_actions [T, B, A] (the action that led to obs; one-hot for discrete),
    rewards, is_first, is_terminal [T, B] and noise [T, B, S, K] (Gumbel) plus h0 [B, D], z0 [B, S*K].
    Prediction losses: symlog MSE decoder, two-hot reward, Bernoulli continue; KL balancing: dyn_scale *
    max(free, KL(sg(post) || prior)) + rep_scale * max(free, KL(post || sg(prior))).
    """
    xp = be.xp
    hs, zs, posts, priors = observe(be, spec, params, batch["obs"], batch["prev_actions"], batch["is_first"],
                                    batch["noise"], batch["h0"], batch["z0"])
    feat = xp.concat([hs, zs], axis=-1)
    recon = _net(be, params, feat, "wm/dec/")
    dec_loss = xp.sum((recon - symlog(be, batch["obs"])) ** 2, axis=-1)
    rew_logits = _net(be, params, feat, "wm/rew/")
    rew_loss = twohot_loss(be, rew_logits, batch["rewards"], centres)
    cont_logit = _net(be, params, feat, "wm/cont/")[..., 0]
    cont = 1.0 - batch["is_terminal"]
    # Bernoulli NLL with logits: softplus(l) - cont * l
    cont_loss = be.softplus(cont_logit) - cont * cont_logit
    dyn = free_bits(be, categorical_kl(be, be.stop_gradient(posts), priors), spec.free_nats)
    rep = free_bits(be, categorical_kl(be, posts, be.stop_gradient(priors)), spec.free_nats)
    parts = {"dec_loss": xp.mean(dec_loss), "rew_loss": xp.mean(rew_loss), "cont_loss": xp.mean(cont_loss),
             "dyn_loss": xp.mean(dyn), "rep_loss": xp.mean(rep)}
    loss = (parts["dec_loss"] + parts["rew_loss"] + parts["cont_loss"] + spec.dyn_scale * parts["dyn_loss"]
            + spec.rep_scale * parts["rep_loss"])
    rew_pred = twohot_mean(be, rew_logits, centres)
    stats = {**parts, "wm_loss": loss,
             "rew_mse": be.stop_gradient(xp.mean((rew_pred - batch["rewards"]) ** 2))}
    return loss, stats, (hs, zs)


def world_model_update(be: Backend, spec: Spec, lr: float = 1e-3, max_grad_norm: float = 100.0) -> Any:
    """`update(params, opt_state, batch) -> (params, opt_state, stats)`: one Adam step on the world-model loss.

    Only the `wm/...` entries of `params` are differentiated and changed.
    """
    centres_np = bins()

    def loss_fn(wm, batch):
        loss, stats, _ = world_model_loss(be, spec, wm, batch, be.asarray(centres_np))
        return loss, stats

    grad = be.value_and_grad(loss_fn, has_aux=True)

    def update(params, opt_state, batch):
        wm = {k: v for k, v in params.items() if k.startswith("wm/")}
        (loss, stats), grads = grad(wm, batch)
        grads, norm = optim.clip_by_global_norm(be, grads, max_grad_norm)
        wm, opt_state = optim.adam.update(be, wm, grads, opt_state, lr)
        return {**params, **wm}, opt_state, {**stats, "wm_grad_norm": norm}

    return update


# ---- host side: env steps into the sequence replay ---------------------------------------------
def replay_fields(spec: Spec) -> dict[str, tuple[tuple[int, ...], Any]]:
    """The per-step fields Dreamer stores: obs, the action that led to it, reward, is_first, is_terminal."""
    return {"obs": ((spec.obs_dim,), np.float32), "prev_actions": ((spec.act_dim,), np.float32),
            "rewards": ((), np.float32), "is_first": ((), np.float32), "is_terminal": ((), np.float32)}


def encode_actions(spec: Spec, actions: np.ndarray) -> np.ndarray:
    """Env actions as model inputs: one-hot for discrete, float32 vectors for continuous."""
    if spec.discrete:
        return np.eye(spec.act_dim, dtype=np.float32)[np.asarray(actions, np.int64)]
    return np.asarray(actions, np.float32).reshape(-1, spec.act_dim)


def record_reset(replay: Any, spec: Spec, obs: np.ndarray, rows: np.ndarray | None = None) -> None:
    """The first step of new episodes: the observation, a zero action and reward, is_first = 1."""
    n = len(obs)
    replay.add({"obs": np.asarray(obs, np.float32), "prev_actions": np.zeros((n, spec.act_dim), np.float32),
                "rewards": np.zeros(n, np.float32), "is_first": np.ones(n, np.float32),
                "is_terminal": np.zeros(n, np.float32)}, rows)


def record_step(replay: Any, spec: Spec, actions: np.ndarray, obs: np.ndarray, rewards: np.ndarray,
                terminals: np.ndarray, truncations: np.ndarray, infos: dict) -> None:
    """One env step: ended rows get their true last observation, then their next episode's first step."""
    done = np.logical_or(terminals, truncations)
    last = np.asarray(infos["final_observation"] if done.any() else obs, np.float32)
    replay.add({"obs": last, "prev_actions": encode_actions(spec, actions), "rewards": np.asarray(rewards, np.float32),
                "is_first": np.zeros(len(obs), np.float32), "is_terminal": np.asarray(terminals, np.float32)})
    if done.any():
        rows = np.flatnonzero(done)
        record_reset(replay, spec, obs[rows], rows)


def to_batch(be: Backend, spec: Spec, seqs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, Array]:
    """Replayed sequences [T, B] with host-drawn latent noise and zero start states, as backend arrays."""
    t, b = seqs["rewards"].shape
    batch = {k: be.asarray(v) for k, v in seqs.items()}
    batch["noise"] = be.asarray(gumbel(rng, (t, b, spec.stoch, spec.classes)))
    batch["h0"], batch["z0"] = initial_latent(be, spec, b)
    return batch


def initial_latent(be: Backend, spec: Spec, batch_size: int) -> tuple[Array, Array]:
    """Zero deterministic and stochastic states [B, D], [B, S*K]."""
    return (be.asarray(np.zeros((batch_size, spec.deter), np.float32)),
            be.asarray(np.zeros((batch_size, spec.latent), np.float32)))


__all__ = ["symlog", "symexp", "bins", "twohot", "twohot_mean", "twohot_loss", "unimix_logits", "gumbel",
           "sample_onehot", "categorical_kl", "free_bits", "percentile", "return_scale", "lambda_returns",
           "Spec", "SIZES", "make_spec", "init_params", "img_step", "posterior", "observe", "world_model_loss",
           "world_model_update", "initial_latent", "replay_fields", "encode_actions", "record_reset",
           "record_step", "to_batch"]
