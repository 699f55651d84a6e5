"""The RSSM of DreamerV3 (Hafner et al. 2023) as pure functions of `(be, params, ...)`: sizes, parameters, the
encoder, the transition (prior), the posterior and the actor's distribution.

A GRU deterministic state `h` plus a categorical stochastic state `z` (`stoch` latents of
`classes` classes, 1% unimix); MLPs with layer-normed SiLU hidden layers on symlog observations.
`puffer.algos.dreamer` trains them; `puffer.policies.dreamer` acts with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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


def unimix_logits(be: Backend, logits: Array, mix: float = UNIMIX) -> Array:
    """Log-probabilities of (1 - mix) * softmax(logits) + mix / K: no class ever below mix / K."""
    k = logits.shape[-1]
    probs = (1.0 - mix) * be.softmax(logits, axis=-1) + mix / k
    return be.xp.log(probs)


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
def net(be: Backend, params: Params, x: Array, prefix: str) -> Array:
    """An MLP whose hidden layers are linear -> layer norm (no affine) -> SiLU, as DreamerV3's.

    Plain tanh hidden layers saturated here: the reward head's hidden units went constant across
    inputs within a few hundred Adam steps and its prediction stopped depending on the state.
    """
    xp = be.xp
    n = mlp.num_layers(params, prefix)
    for i in range(n):
        x = linear.apply(be, params, x, prefix=f"{prefix}{i}/")
        if i < n - 1:
            d = x - xp.mean(x, axis=-1, keepdims=True)
            x = d / xp.sqrt(xp.mean(d * d, axis=-1, keepdims=True) + 1e-5)
            x = x * be.sigmoid(x)
    return x


def _latent_logp(be: Backend, spec: Spec, logits: Array) -> Array:
    shape = (*logits.shape[:-1], spec.stoch, spec.classes)
    return unimix_logits(be, be.xp.reshape(logits, shape))


def transition(be: Backend, params: Params, h: Array, z: Array, action: Array) -> Array:
    """The deterministic state after (h, flat z, action)."""
    x = be.xp.tanh(linear.apply(be, params, be.xp.concat([z, action], axis=-1), prefix="wm/img_in/"))
    return gru.cell(be, params, x, h, prefix="wm/gru/")


def img_step(be: Backend, spec: Spec, params: Params, h: Array, z: Array, action: Array) -> tuple[Array, Array]:
    """Deterministic transition: (h, flat z, action) -> (new h, prior log-probs [B, S, K])."""
    h = transition(be, params, h, z, action)
    return h, _latent_logp(be, spec, net(be, params, h, "wm/prior/"))


def posterior(be: Backend, spec: Spec, params: Params, h: Array, embedding: Array) -> Array:
    """Posterior log-probs [B, S, K] from the deterministic state and the observation's embedding."""
    return _latent_logp(be, spec, net(be, params, be.xp.concat([h, embedding], axis=-1), "wm/post/"))


def flat(be: Backend, z: Array) -> Array:
    return be.xp.reshape(z, (*z.shape[:-2], z.shape[-2] * z.shape[-1]))


# ---- behaviour: actor and critic in imagination -------------------------------------------------
MIN_STD, MAX_STD = 0.1, 1.0


def actor_dist(be: Backend, spec: Spec, params: Params, feat: Array) -> tuple[Array, Array | None]:
    """Discrete: (unimix log-probs [.., A], None); continuous: (mean in [-1, 1], std in [MIN_STD, MAX_STD])."""
    xp = be.xp
    out = net(be, params, feat, "actor/")
    if spec.discrete:
        return unimix_logits(be, out), None
    a = spec.act_dim
    std = (MAX_STD - MIN_STD) * be.sigmoid(out[..., a:] + 2.0) + MIN_STD
    return xp.tanh(out[..., :a]), std


def embed(be: Backend, params: Params, obs: Array) -> Array:
    """The encoder's embedding of raw observations [..., D] (symlog first)."""
    return net(be, params, symlog(be, obs), "wm/enc/")
