"""Action distributions as frozen dataclasses of static config (sizes, bounds) and pure methods.

They hold no arrays and no framework state, so they are safe to close over inside `be.compile`d
and differentiated code. Every method takes `(be, params, ...)`, where `params` is the network's
output: logits for the categorical ones, a `(mean, log_std)` pair for DiagGaussian.

Sampling takes the noise as an argument, drawn on the host by `dist.noise(rng, batch_shape)`:
the same numpy noise gives the same action on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from puffer import spaces

Array = Any
LOG_2PI = math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)


def _shape(batch_shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(batch_shape),) if np.ndim(batch_shape) == 0 else tuple(int(s) for s in batch_shape)


def _categorical_log_prob(be: Any, logits: Array, actions: Array) -> Array:
    xp = be.xp
    logp = be.log_softmax(logits, axis=-1)
    return xp.squeeze(be.take_along_axis(logp, xp.expand_dims(actions, axis=-1), axis=-1), axis=-1)


def _categorical_entropy(be: Any, logits: Array) -> Array:
    xp = be.xp
    logp = be.log_softmax(logits, axis=-1)
    # a logit of -inf (a masked action) has p = 0 and log p = -inf; clamping log p to the lowest finite
    # value makes its term 0 * finite = 0 instead of NaN, as torch.distributions.Categorical does
    finite = xp.clip(logp, min=float(xp.finfo(logp.dtype).min))
    return -xp.sum(xp.exp(logp) * finite, axis=-1)


def _categorical_sample(be: Any, logits: Array, u: Array) -> Array:
    # Inverse CDF: the first index whose cumulative probability exceeds u * total. Float differences
    # between backends change the choice only when u lies within rounding error of a CDF boundary
    # (unlike Gumbel argmax, where any near-tie of perturbed logits can flip it), and a
    # zero-probability category is never chosen. Scaling u by the total (not assuming 1) and leaving
    # the last category out of the comparison keep the index in range despite rounding.
    xp = be.xp
    cdf = xp.cumulative_sum(be.softmax(logits, axis=-1), axis=-1)
    v = xp.expand_dims(xp.astype(u, cdf.dtype), axis=-1) * cdf[..., -1:]
    return xp.sum(xp.astype(cdf[..., :-1] <= v, xp.int64), axis=-1)


@dataclass(frozen=True)
class Categorical:
    """One categorical over `n` actions; params are logits [..., n], actions int [...].

    Mask an invalid action with a logit of -inf: it is never sampled and the entropy stays finite.
    """

    n: int

    @property
    def param_size(self) -> int:
        """Number of network outputs the distribution consumes."""
        return self.n

    def log_prob(self, be: Any, logits: Array, actions: Array) -> Array:
        """log p(actions), shape [...]."""
        return _categorical_log_prob(be, logits, actions)

    def entropy(self, be: Any, logits: Array) -> Array:
        """Exact entropy, shape [...]."""
        return _categorical_entropy(be, logits)

    def mode(self, be: Any, logits: Array) -> Array:
        """The most likely action (int64)."""
        return be.xp.astype(be.xp.argmax(logits, axis=-1), be.xp.int64)

    def sample(self, be: Any, logits: Array, noise: Array) -> Array:
        """The action chosen by uniform [0, 1) `noise` [...] through the inverse CDF (int64)."""
        return _categorical_sample(be, logits, noise)

    def sample_and_log_prob(self, be: Any, logits: Array, noise: Array) -> tuple[Array, Array]:
        """`sample` and its log-probability."""
        actions = self.sample(be, logits, noise)
        return actions, self.log_prob(be, logits, actions)

    def noise(self, rng: np.random.Generator, batch_shape: int | Sequence[int]) -> np.ndarray:
        """Uniform [0, 1) float32 noise of shape `batch_shape` for `sample`."""
        return rng.random(_shape(batch_shape), dtype=np.float32)


@dataclass(frozen=True)
class MultiCategorical:
    """Independent categoricals, one per dimension: logits [..., sum(nvec)] concatenated, actions int [..., k].

    log_prob and entropy are summed over the k dimensions.
    """

    nvec: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "nvec", tuple(int(n) for n in np.ravel(self.nvec)))

    @property
    def param_size(self) -> int:
        """Number of network outputs the distribution consumes."""
        return sum(self.nvec)

    def _split(self, logits: Array) -> list[Array]:
        offsets = np.concatenate([[0], np.cumsum(self.nvec)])
        return [logits[..., int(a):int(b)] for a, b in zip(offsets[:-1], offsets[1:])]

    def log_prob(self, be: Any, logits: Array, actions: Array) -> Array:
        """Sum over dimensions of log p(actions[..., i]), shape [...]."""
        return sum(_categorical_log_prob(be, lg, actions[..., i]) for i, lg in enumerate(self._split(logits)))

    def entropy(self, be: Any, logits: Array) -> Array:
        """Exact entropy (sum over dimensions), shape [...]."""
        return sum(_categorical_entropy(be, lg) for lg in self._split(logits))

    def mode(self, be: Any, logits: Array) -> Array:
        """The most likely action per dimension, int64 [..., k]."""
        xp = be.xp
        return xp.stack([xp.astype(xp.argmax(lg, axis=-1), xp.int64) for lg in self._split(logits)], axis=-1)

    def sample(self, be: Any, logits: Array, noise: Array) -> Array:
        """Actions int64 [..., k] from uniform [0, 1) `noise` [..., k], inverse CDF per dimension."""
        return be.xp.stack(
            [_categorical_sample(be, lg, noise[..., i]) for i, lg in enumerate(self._split(logits))], axis=-1
        )

    def sample_and_log_prob(self, be: Any, logits: Array, noise: Array) -> tuple[Array, Array]:
        """`sample` and its log-probability."""
        actions = self.sample(be, logits, noise)
        return actions, self.log_prob(be, logits, actions)

    def noise(self, rng: np.random.Generator, batch_shape: int | Sequence[int]) -> np.ndarray:
        """Uniform [0, 1) float32 noise of shape `(*batch_shape, k)` for `sample`."""
        return rng.random((*_shape(batch_shape), len(self.nvec)), dtype=np.float32)


@dataclass(frozen=True)
class DiagGaussian:
    """Diagonal Gaussian over `dim` actions; params `(mean [..., dim], log_std [dim] or [..., dim])`.

    With `squash=True` an action is `center + scale * tanh(u)`, u ~ N(mean, std), where
    `center, scale = (high + low) / 2, (high - low) / 2` (default bounds -1, 1); log_prob includes
    the log-determinant of both maps. `low`/`high` need `squash=True`: an unsquashed Gaussian is
    unbounded (clip its samples in the environment instead).
    """

    dim: int
    squash: bool = False
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    # Squashed actions are clipped this far inside the bounds before atanh so log_prob stays finite.
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError("DiagGaussian needs both low and high, or neither")
        if self.low is not None and not self.squash:
            raise ValueError("DiagGaussian low/high rescale a tanh-squashed Gaussian; pass squash=True")
        for name in ("low", "high"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(float(x) for x in np.broadcast_to(v, (self.dim,))))
        if self.low is not None and not np.all(np.isfinite(self.low + self.high)):
            raise ValueError("DiagGaussian low/high must be finite to be reached by tanh squashing")

    @property
    def param_size(self) -> int:
        """Number of network outputs for the mean (log_std is usually a separate parameter)."""
        return self.dim

    def _affine(self, be: Any, like: Array) -> tuple[Any, Any, float]:
        """center, scale (Python floats when uniform, else arrays of `like`'s dtype) and sum(log scale)."""
        if self.low is None:
            return 0.0, 1.0, 0.0
        low, high = np.asarray(self.low), np.asarray(self.high)
        center, scale = (high + low) / 2.0, (high - low) / 2.0
        log_det = float(np.sum(np.log(scale)))
        if np.all(center == center[0]) and np.all(scale == scale[0]):
            return float(center[0]), float(scale[0]), log_det
        return be.asarray(center, dtype=like.dtype), be.asarray(scale, dtype=like.dtype), log_det

    @staticmethod
    def _log_sech2(be: Any, u: Array) -> Array:
        # log(1 - tanh(u)^2) written so it neither overflows nor loses precision for large |u|
        return 2.0 * (LOG_2 - u - be.softplus(-2.0 * u))

    def log_prob(self, be: Any, params: tuple[Array, Array], actions: Array) -> Array:
        """log p(actions) summed over the action dimension, shape [...]."""
        xp = be.xp
        mean, log_std = params
        if not self.squash:
            z = (actions - mean) * xp.exp(-log_std)
            return xp.sum(-0.5 * z * z - log_std - 0.5 * LOG_2PI, axis=-1)
        center, scale, log_det = self._affine(be, mean)
        y = xp.clip((actions - center) / scale, min=-1.0 + self.eps, max=1.0 - self.eps)
        lp1, lm1 = xp.log1p(y), xp.log1p(-y)
        u = 0.5 * (lp1 - lm1)  # atanh(y)
        z = (u - mean) * xp.exp(-log_std)
        # log|d action / d u| = log(1 - y^2) + sum(log scale), with log(1 - y^2) = log1p(y) + log1p(-y)
        return xp.sum(-0.5 * z * z - log_std - 0.5 * LOG_2PI - lp1 - lm1, axis=-1) - log_det

    def entropy(self, be: Any, params: tuple[Array, Array]) -> Array:
        """Entropy, shape [...]: exact unsquashed; squashed, a deterministic upper bound (see below).

        A tanh-squashed Gaussian has no closed-form entropy. H = H_gauss + E[log(1 - tanh(u)^2)] +
        sum(log scale); log(1 - tanh(u)^2) is concave in u, so evaluating it at u = mean bounds the
        expectation from above (Jensen). The bound is tight as std -> 0, smooth and noise-free, which
        suits an entropy bonus; use `-log_prob` of a sample for an unbiased single-sample estimate.
        """
        xp = be.xp
        mean, log_std = params
        h = xp.sum(log_std + xp.zeros_like(mean) + 0.5 * (1.0 + LOG_2PI), axis=-1)
        if not self.squash:
            return h
        _, _, log_det = self._affine(be, mean)
        return h + xp.sum(self._log_sech2(be, mean), axis=-1) + log_det

    def mode(self, be: Any, params: tuple[Array, Array]) -> Array:
        """The mean action (squashed and rescaled when `squash`)."""
        mean, _ = params
        if not self.squash:
            return mean
        center, scale, _ = self._affine(be, mean)
        return center + scale * be.xp.tanh(mean)

    def sample(self, be: Any, params: tuple[Array, Array], noise: Array) -> Array:
        """`mean + std * noise` for standard-normal `noise` [..., dim] (squashed and rescaled when `squash`)."""
        mean, log_std = params
        u = mean + be.xp.exp(log_std) * be.xp.astype(noise, mean.dtype)
        if not self.squash:
            return u
        center, scale, _ = self._affine(be, mean)
        return center + scale * be.xp.tanh(u)

    def sample_and_log_prob(self, be: Any, params: tuple[Array, Array], noise: Array) -> tuple[Array, Array]:
        """`sample` and its log-probability, computed from the pre-squash value (exact even at the bounds)."""
        xp = be.xp
        mean, log_std = params
        noise = xp.astype(noise, mean.dtype)
        u = mean + xp.exp(log_std) * noise
        lp = xp.sum(-0.5 * noise * noise - log_std - 0.5 * LOG_2PI, axis=-1)
        if not self.squash:
            return u, lp
        center, scale, log_det = self._affine(be, mean)
        return center + scale * xp.tanh(u), lp - xp.sum(self._log_sech2(be, u), axis=-1) - log_det

    def noise(self, rng: np.random.Generator, batch_shape: int | Sequence[int]) -> np.ndarray:
        """Standard-normal float32 noise of shape `(*batch_shape, dim)` for `sample`."""
        return rng.standard_normal((*_shape(batch_shape), self.dim), dtype=np.float32)


Distribution = Categorical | MultiCategorical | DiagGaussian


def for_space(space: spaces.Space, squash: bool = False) -> Distribution:
    """The distribution matching an action space: Discrete, MultiDiscrete, MultiBinary or a float Box.

    A Box gives an unsquashed DiagGaussian over its flattened shape, or with `squash=True` one
    squashed into the Box's bounds.
    """
    if isinstance(space, spaces.Discrete):
        return Categorical(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiCategorical(tuple(np.ravel(space.nvec)))
    if isinstance(space, spaces.MultiBinary):
        return MultiCategorical((2,) * int(np.prod(space.shape)))
    if isinstance(space, spaces.Box) and space.dtype.kind == "f":
        dim = int(np.prod(space.shape))
        if not squash:
            return DiagGaussian(dim)
        return DiagGaussian(dim, squash=True, low=tuple(np.ravel(space.low)), high=tuple(np.ravel(space.high)))
    raise ValueError(f"no action distribution for space {space!r}; use Discrete, MultiDiscrete, MultiBinary "
                     "or a float Box (flatten Dict/Tuple action spaces first)")
