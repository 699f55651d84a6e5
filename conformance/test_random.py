"""Key-based randomness: reproducible per backend, independent across keys, with the right range and moments.

(Identical samples across backends come from injected numpy noise; see test_nn.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance._helpers import np_of

N = 4096


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_same_key_same_numbers(be, kind):
    draw = getattr(be, kind)
    a, b = np_of(be, draw(be.key(7), (3, 5))), np_of(be, draw(be.key(7), (3, 5)))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 5) and a.dtype == np.float32


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_different_keys_differ(be, kind):
    draw = getattr(be, kind)
    a, b = np_of(be, draw(be.key(7), (16,))), np_of(be, draw(be.key(8), (16,)))
    assert not np.any(a == b)


def test_split(be):
    """split gives keys that differ from each other and from their parent, reproducibly."""
    key = be.key(3)
    k1, k2 = be.split(key)
    draws = [np_of(be, be.uniform(k, (8,))) for k in (key, k1, k2)]
    assert not np.any(draws[0] == draws[1]) and not np.any(draws[1] == draws[2])
    again = be.split(be.key(3))
    np.testing.assert_array_equal(np_of(be, be.uniform(again[1], (8,))), draws[2])
    assert len(be.split(key, 4)) == 4


def test_uniform_range_and_moments(be):
    u = np_of(be, be.uniform(be.key(11), (N,)))
    assert np.all((u >= 0.0) & (u < 1.0))
    # 5 standard errors: a correct generator fails this about once in 3 million seeds
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / N)
    assert abs(u.var() - 1 / 12) < 0.01


def test_normal_moments(be):
    z = np_of(be, be.normal(be.key(12), (N,)))
    assert abs(z.mean()) < 5 / np.sqrt(N)
    assert abs(z.std() - 1.0) < 0.05
    assert np.all(np.isfinite(z))


def test_float64_draws(be):
    from conformance._helpers import supports_float64

    if not supports_float64(be.name):
        pytest.skip(f"{be.name} has no float64 on this device")
    for kind in ("uniform", "normal"):
        x = np_of(be, getattr(be, kind)(be.key(13), (4,), dtype=be.float64))
        assert x.dtype == np.float64
