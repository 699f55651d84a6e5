"""DreamerV3 (Hafner et al. 2023, danijar/dreamerv3), written once against `be`, on the shared machinery.

Read top to bottom: the pure numerics (two-hot over symexp bins, Gumbel one-hot samples, KL with
free bits, the 5th-95th percentile return normalizer, lambda-returns), the world-model loss (the
RSSM of `puffer.nn.rssm` filtering replayed sequences; symlog decoder, two-hot reward head,
continue head, KL balancing), behaviour learning in imagination (REINFORCE actor and two-hot
critic on lambda-returns, a slow EMA critic), then the config and `declare`: a `Replay` data
source (acting into a sequence replay, updates at `train_ratio`), one update of every part, and
the acting RSSM as the policy (`puffer.policies.dreamer`), so `puffer train --algo dreamer`,
checkpoints (with the replay), `puffer eval` and `puffer export` work as for every algorithm.
Every loop is a `be.scan`; every random number (Gumbel noise for latents and discrete actions,
Gaussian noise for continuous actions) is drawn on the host and passed in.

Measured (torch, 4-armed Bandit, 16 envs, deter 32 / hidden 32 / 4x4 latents, batch 16 x 8 steps,
train ratio 16, horizon 5, actor lr 1e-3): see `tests/test_dreamer.py`. Memory (delayed reward)
and CartPole >= 400 are not reached yet (issue 26).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from puffer import optim
from puffer.backends.base import Array, Backend, Params
from puffer.nn.rssm import (
    BIN_RANGE,
    MAX_STD,
    MIN_STD,
    NUM_BINS,
    SIZES,
    UNIMIX,
    Spec,
    actor_dist,
    embed,
    flat,
    img_step,
    init_params,
    make_spec,
    net,
    posterior,
    symexp,
    symlog,
    transition,
    unimix_logits,
)
from puffer.policies import ActionHead, reset_state
from puffer.policies.dreamer import DreamerPolicy
from puffer.train import Algorithm, Plan, Replay, RunConfig, RunContext, Trainer


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






















def observe(be: Backend, spec: Spec, params: Params, obs: Array, prev_actions: Array, is_first: Array,
            noise: Array, h0: Array, z0: Array) -> tuple[Array, Array, Array, Array]:
    """Filter a sequence [T, B, ...]: returns h [T, B, D], z [T, B, S*K], post and prior log-probs [T, B, S, K].

    At `is_first` steps the state and the previous action are zeroed, so episodes never leak into each other.
    """
    xp = be.xp
    embedding = embed(be, params, obs)
    keep = xp.expand_dims(1.0 - is_first, axis=-1)

    def step(carry, inp):
        h, z = carry
        e, a, k, g = inp
        h, prior = img_step(be, spec, params, h * k, z * k, a * k)
        post = posterior(be, spec, params, h, e)
        z = flat(be, sample_onehot(be, post, g))
        return (h, z), (h, z, post, prior)

    _, (hs, zs, posts, priors) = be.scan(step, (h0, z0), (embedding, prev_actions, keep, noise))
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
    recon = net(be, params, feat, "wm/dec/")
    dec_loss = xp.sum((recon - symlog(be, batch["obs"])) ** 2, axis=-1)
    rew_logits = net(be, params, feat, "wm/rew/")
    rew_loss = twohot_loss(be, rew_logits, batch["rewards"], centres)
    cont_logit = net(be, params, feat, "wm/cont/")[..., 0]
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






def actor_sample(be: Backend, spec: Spec, dist: tuple[Array, Array | None], noise: Array) -> Array:
    """An action from host `noise` (Gumbel for discrete, giving a one-hot; standard normal for continuous)."""
    xp = be.xp
    first, std = dist
    if spec.discrete:
        z = first + noise
        return xp.astype(z >= xp.max(z, axis=-1, keepdims=True), first.dtype)
    return first + std * noise


def actor_logp(be: Backend, spec: Spec, dist: tuple[Array, Array | None], action: Array) -> Array:
    """Log-probability [..] of `action` (one-hot, or the unclipped Gaussian sample)."""
    xp = be.xp
    first, std = dist
    if spec.discrete:
        return xp.sum(first * action, axis=-1)
    zs = (action - first) / std
    return xp.sum(-0.5 * zs * zs - xp.log(std) - 0.5 * math.log(2 * math.pi), axis=-1)


def actor_entropy(be: Backend, spec: Spec, dist: tuple[Array, Array | None]) -> Array:
    """Entropy [..] of the action distribution (nats)."""
    xp = be.xp
    first, std = dist
    if spec.discrete:
        return -xp.sum(xp.exp(first) * first, axis=-1)
    return xp.sum(xp.log(std) + 0.5 * math.log(2 * math.pi * math.e), axis=-1)


def model_action(be: Backend, spec: Spec, action: Array) -> Array:
    """What the dynamics (and the env) receive: the one-hot, or the Gaussian sample clipped to [-1, 1]."""
    return action if spec.discrete else be.xp.clip(action, -1.0, 1.0)


def imagine(be: Backend, spec: Spec, params: Params, h: Array, z: Array, latent_noise: Array,
            action_noise: Array) -> tuple[Array, Array]:
    """Roll the prior forward from (h, z) [N, ...] for H = len(noise) steps with the actor.

    Returns features [H + 1, N, F] and the sampled actions [H, N, A], both without gradient: the
    actor learns by REINFORCE on normalized returns (DreamerV3's choice for every action space).
    """
    xp = be.xp
    sg = be.stop_gradient

    def step(carry, inp):
        h, z = carry
        g, e = inp
        feat = xp.concat([h, z], axis=-1)
        action = sg(actor_sample(be, spec, actor_dist(be, spec, params, feat), e))
        h, prior = img_step(be, spec, params, h, z, model_action(be, spec, action))
        z = flat(be, sample_onehot(be, prior, g))
        return (sg(h), sg(z)), (feat, action)

    (h, z), (feats, actions) = be.scan(step, (sg(h), sg(z)), (latent_noise, action_noise))
    last = xp.expand_dims(xp.concat([h, z], axis=-1), axis=0)
    return sg(xp.concat([feats, last], axis=0)), actions


def cumulative_weights(be: Backend, discounts: Array) -> Array:
    """w_0 = 1, w_t = prod_{i < t} discounts_i [T, N]: how much each imagined step still counts."""
    def step(w, d):
        return w * d, w

    _, out = be.scan(step, be.xp.ones_like(discounts[0]), discounts)
    return out


def behaviour_loss(be: Backend, spec: Spec, params: Params, slow: Params, feats: Array, actions: Array,
                   lo: Array, hi: Array, centres: Array, gamma: float, lam: float, ent_coef: float,
                   start_cont: Array | None = None) -> tuple[Array, dict[str, Array], tuple[Array, Array]]:
    """Actor (REINFORCE on percentile-normalized lambda-return advantages, entropy bonus) and critic
    (two-hot on lambda-returns plus a pull toward the slow critic) losses; returns (loss, stats, (lo, hi)).

    `start_cont` [N] (1 - is_terminal of each start state) weights out imagination that starts after
    an episode's end, where the model has never seen a transition.
    """
    xp = be.xp
    sg = be.stop_gradient
    rewards = sg(twohot_mean(be, net(be, params, feats[1:], "wm/rew/"), centres))
    cont = sg(be.sigmoid(net(be, params, feats[1:], "wm/cont/")[..., 0]))
    values = sg(twohot_mean(be, net(be, params, feats, "critic/"), centres))
    discounts = gamma * cont
    returns = sg(lambda_returns(be, rewards, discounts, values[1:], lam))
    weights = sg(cumulative_weights(be, discounts))
    if start_cont is not None:
        weights = weights * start_cont
    lo, hi, scale = return_scale(be, returns, lo, hi)
    adv = sg((returns - values[:-1]) / scale)
    dist = actor_dist(be, spec, params, feats[:-1])
    logp = actor_logp(be, spec, dist, actions)
    ent = actor_entropy(be, spec, dist)
    actor_loss = xp.mean(weights * -(logp * adv + ent_coef * ent))
    logits = net(be, params, feats[:-1], "critic/")
    slow_mean = sg(twohot_mean(be, net(be, slow, feats[:-1], "critic/"), centres))
    critic_loss = xp.mean(weights * (twohot_loss(be, logits, returns, centres)
                                     + twohot_loss(be, logits, slow_mean, centres)))
    stats = {"actor_loss": actor_loss, "critic_loss": critic_loss, "entropy": sg(xp.mean(ent)),
             "imag_return": sg(xp.mean(returns)), "return_scale": sg(scale)}
    return actor_loss + critic_loss, stats, (lo, hi)
















def _sub(params: Params, *prefixes: str) -> Params:
    return {k: v for k, v in params.items() if k.startswith(prefixes)}


# ---- Dreamer on the shared machinery --------------------------------------------------------------
@dataclass
class DreamerConfig(RunConfig):
    """DreamerV3 settings sized for a small CPU run (the xs preset); every field is a flag."""

    num_envs: int = 16
    """Environments stepped together."""
    total_steps: int = 20_000
    """Env steps to train for."""
    model_size: str = "xs"
    """World-model preset: xs, s or m (deterministic state, hidden width, latents, layers)."""
    deter: int | None = None
    """Deterministic (GRU) state size (default: the preset's)."""
    hidden: int | None = None
    """Hidden width of every MLP (default: the preset's)."""
    stoch: int | None = None
    """Categorical latents (default: the preset's)."""
    classes: int | None = None
    """Classes per latent (default: the preset's)."""
    train_ratio: float = 32.0
    """Replayed steps per env step (updates = env steps * train_ratio / (batch_size * seq_len))."""
    batch_size: int = 16
    """Replayed sequences per update."""
    seq_len: int = 16
    """Steps per replayed sequence."""
    capacity: int = 100_000
    """Replay capacity in steps (over all rows)."""
    collect_steps: int = 4
    """Env steps of every row between update rounds (one progress line each)."""
    horizon: int = 15
    """Imagination horizon."""
    gamma: float = 0.99
    """Discount of imagined rewards."""
    lam: float = 0.95
    """Lambda of the imagined lambda-returns."""
    wm_lr: float = 1e-3
    """World-model Adam step size."""
    ac_lr: float = 3e-4
    """Actor and critic Adam step size."""
    ent_coef: float = 3e-4
    """Actor entropy bonus."""
    slow_rate: float = 0.02
    """EMA rate of the slow critic."""
    max_grad_norm: float = 100.0
    """Global gradient-norm clip of each of the two updates."""

    CHOICES: ClassVar[dict[str, tuple]] = {"model_size": tuple(SIZES)}
    POSITIVE: ClassVar[tuple[str, ...]] = ("train_ratio", "batch_size", "seq_len", "capacity", "collect_steps",
                                           "horizon", "wm_lr", "ac_lr")

    def model(self, observation_space: Any, action_space: Any) -> Spec:
        """The network sizes: the preset with the fields that are set."""
        sizes = {k: getattr(self, k) for k in ("deter", "hidden", "stoch", "classes") if getattr(self, k)}
        return make_spec(observation_space, action_space, self.model_size, **sizes)


STAT_KEYS = ("wm_loss", "dec_loss", "rew_loss", "cont_loss", "dyn_loss", "rep_loss", "rew_mse", "actor_loss",
             "critic_loss", "entropy", "imag_return", "return_scale", "wm_grad_norm", "ac_grad_norm", "nonfinite")


def _prefixed(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in d.items()}


def _unprefixed(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}


def initial_opt_state(be: Backend, params: Params) -> dict[str, Any]:
    """Both Adam states, the slow critic and the return-scale EMAs, as one flat dict the update carries."""
    zero = be.asarray(np.float32(0.0))
    return {**_prefixed(optim.adam.init(be, _sub(params, "wm/")), "wm:"),
            **_prefixed(optim.adam.init(be, _sub(params, "actor/", "critic/")), "ac:"),
            **{f"slow:{k}": be.asarray(np.array(be.to_numpy(v), copy=True))  # own buffers: both are donated
               for k, v in _sub(params, "critic/").items()}, "scale:lo": zero, "scale:hi": be.asarray(np.float32(0.0))}


def model_actions(be: Backend, spec: Spec, actions: Array) -> Array:
    """Policy-format actions (a discrete index, or the continuous vector) as the dynamics' input."""
    xp = be.xp
    if not spec.discrete:
        return xp.clip(actions, -1.0, 1.0)
    return xp.astype(actions == xp.arange(spec.act_dim, dtype=actions.dtype), actions.dtype)


def make_update(be: Backend, spec: Spec, cfg: DreamerConfig) -> Any:
    """`update(params, opt_state, mb, consts, hyper)`: one world-model step, imagination from every replayed
    posterior state, one actor-critic step and the slow-critic EMA, all from one parameter set.

    Imagination and the reward and continue heads that score it use the world model before this
    update's step (DreamerV3 uses one set). `mb` holds the replayed sequences `[T, B, ...]` and
    host noise per replayed step (`noise` for filtering, `img_latent` / `img_action` for the H
    imagined steps that start there). A non-finite loss leaves everything unchanged (`nonfinite` 1).
    """
    xp = be.xp
    centres_np = bins()
    s, H = spec, cfg.horizon

    def wm_fn(wm, batch):
        loss, stats, (hs, zs) = world_model_loss(be, s, wm, batch, be.asarray(centres_np))
        return loss, (stats, hs, zs)

    def ac_fn(ac, wm, slow, feats, actions, lo, hi, start_cont):
        loss, stats, (lo, hi) = behaviour_loss(be, s, {**wm, **ac}, slow, feats, actions, lo, hi,
                                               be.asarray(centres_np), cfg.gamma, cfg.lam, cfg.ent_coef, start_cont)
        return loss, (stats, lo, hi)

    wm_grad = be.value_and_grad(wm_fn, has_aux=True)
    ac_grad = be.value_and_grad(ac_fn, has_aux=True)

    def update(params, opt_state, mb, consts, hyper):
        t, b = mb["rewards"].shape
        n = t * b
        batch = {"obs": mb["obs"], "prev_actions": model_actions(be, s, mb["prev_actions"]),
                 "rewards": mb["rewards"], "is_first": mb["is_first"], "is_terminal": mb["is_terminal"],
                 "noise": xp.reshape(mb["noise"], (t, b, s.stoch, s.classes)),
                 "h0": xp.zeros((b, s.deter), dtype=xp.float32), "z0": xp.zeros((b, s.latent), dtype=xp.float32)}
        latent_noise = xp.permute_dims(xp.reshape(mb["img_latent"], (n, H, s.stoch, s.classes)), (1, 0, 2, 3))
        action_noise = xp.permute_dims(xp.reshape(mb["img_action"], (n, H, s.act_dim)), (1, 0, 2))
        wm, ac = _sub(params, "wm/"), _sub(params, "actor/", "critic/")
        (_, (stats, hs, zs)), g = wm_grad(wm, batch)
        g, wm_norm = optim.clip_by_global_norm(be, g, hyper["max_grad_norm"])
        new_wm, wm_opt = optim.adam.update(be, wm, g, _unprefixed(opt_state, "wm:"), hyper["wm_lr"])
        feats, actions = imagine(be, s, params, xp.reshape(hs, (n, s.deter)), xp.reshape(zs, (n, s.latent)),
                                 latent_noise, action_noise)
        start_cont = xp.reshape(1.0 - mb["is_terminal"], (n,))
        slow = _unprefixed(opt_state, "slow:")
        (_, (bstats, lo, hi)), g = ac_grad(ac, wm, slow, feats, actions, opt_state["scale:lo"],
                                           opt_state["scale:hi"], start_cont)
        g, ac_norm = optim.clip_by_global_norm(be, g, hyper["max_grad_norm"])
        new_ac, ac_opt = optim.adam.update(be, ac, g, _unprefixed(opt_state, "ac:"), hyper["ac_lr"])
        slow = {k: (1.0 - cfg.slow_rate) * v + cfg.slow_rate * new_ac[k] for k, v in slow.items()}
        new_params = {**new_wm, **new_ac}
        new_opt = {**_prefixed(wm_opt, "wm:"), **_prefixed(ac_opt, "ac:"), **_prefixed(slow, "slow:"),
                   "scale:lo": lo, "scale:hi": hi}
        total = stats["wm_loss"] + bstats["actor_loss"] + bstats["critic_loss"]
        ok = xp.abs(total) < 1e30  # false for NaN and inf (no bit casts: tinygrad fuses this into the update)
        new_params = {k: xp.where(ok, v, params[k]) for k, v in new_params.items()}
        new_opt = {k: xp.where(ok, v, opt_state[k]) for k, v in new_opt.items()}
        out = {**stats, **bstats, "wm_grad_norm": wm_norm, "ac_grad_norm": ac_norm,
               "nonfinite": 1.0 - xp.astype(ok, xp.float32)}
        return new_params, new_opt, out

    return update


def make_act(spec: Spec) -> Any:
    """The training act: one filtering step from sampled latents (host Gumbel noise), an action sampled
    from the actor; the state (h, z, previous model action) resets where an episode starts."""

    def act_fn(be, params, consts, obs, state, starts, noise, inputs):
        xp = be.xp
        h, z, prev = reset_state(be, state, starts)
        h = transition(be, params, h, z, prev)
        post = posterior(be, spec, params, h, embed(be, params, obs))
        lat = xp.reshape(noise[:, :spec.latent], (noise.shape[0], spec.stoch, spec.classes))
        z = flat(be, sample_onehot(be, post, lat))
        sample = actor_sample(be, spec, actor_dist(be, spec, params, xp.concat([h, z], axis=-1)),
                              noise[:, spec.latent:])
        action = model_action(be, spec, sample)
        if spec.discrete:
            index = xp.argmax(action, axis=-1)
            return xp.expand_dims(xp.astype(index, xp.float32), axis=-1), (), (h, z, action)
        return action, (), (h, z, action)

    return act_fn


def action_noise(rng: np.random.Generator, spec: Spec, shape: tuple[int, ...]) -> np.ndarray:
    """Host noise for sampling actions: Gumbel for discrete, standard normal for continuous."""
    if spec.discrete:
        return gumbel(rng, (*shape, spec.act_dim))
    return rng.standard_normal((*shape, spec.act_dim)).astype(np.float32)


def declare(ctx: RunContext, cfg: DreamerConfig) -> Plan:
    """Dreamer's needs: the acting RSSM, a replay of sequences at `train_ratio`, one whole-model update."""
    be = ctx.be
    spec = cfg.model(ctx.observation_space, ctx.action_space)
    policy = DreamerPolicy(spec, ActionHead.for_space(ctx.action_space))
    params = {k: be.asarray(v) for k, v in init_params(spec, cfg.seed).items()}
    H = cfg.horizon

    def act_noise(rng, rows):
        return np.concatenate([gumbel(rng, (rows, spec.latent)), action_noise(rng, spec, (rows,))], axis=-1)

    def noise(rng, shape):
        return {"noise": gumbel(rng, (*shape, spec.latent)),
                "img_latent": gumbel(rng, (*shape, H * spec.latent)),
                "img_action": action_noise(rng, spec, (*shape, H)).reshape(*shape, H * spec.act_dim)}

    data = Replay(act=make_act(spec), act_noise=act_noise, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                  train_ratio=cfg.train_ratio, capacity=cfg.capacity, collect_steps=cfg.collect_steps, noise=noise)
    return Plan(
        policy=policy, policy_spec=policy.spec(), params=params, opt_state=initial_opt_state(be, params),
        update=make_update(be, spec, cfg), stat_keys=STAT_KEYS,
        hyper=lambda progress, state: {"wm_lr": cfg.wm_lr, "ac_lr": cfg.ac_lr, "max_grad_norm": cfg.max_grad_norm},
        data=data)


ALGORITHM = Algorithm("dreamer", "DreamerV3: an RSSM world model learned from replayed sequences, actor and critic "
                      "trained in imagination", DreamerConfig, declare)


class Dreamer(Trainer):
    """DreamerV3 written once: `Dreamer("bandit", backend="torch").train(6000)`."""

    algorithm = ALGORITHM


__all__ = [
    "symlog", "symexp", "bins", "twohot", "twohot_mean", "twohot_loss", "unimix_logits", "gumbel", "sample_onehot",
    "categorical_kl", "free_bits", "percentile", "return_scale", "lambda_returns", "Spec", "SIZES", "make_spec",
    "init_params", "img_step", "posterior", "observe", "world_model_loss", "world_model_update", "actor_dist",
    "actor_sample", "actor_logp", "actor_entropy", "model_action", "imagine", "cumulative_weights", "behaviour_loss",
    "DreamerConfig", "make_update", "make_act", "declare", "ALGORITHM", "Dreamer", "NUM_BINS", "BIN_RANGE", "UNIMIX",
    "MIN_STD", "MAX_STD",
]
