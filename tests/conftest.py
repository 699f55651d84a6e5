"""Fixtures shared by tests/: every array backend (`be`) and every training backend (`tbe`)."""

from __future__ import annotations

import pytest

import puffer


@pytest.fixture(params=["numpy", "torch", "jax", "tinygrad"])
def be(request: pytest.FixtureRequest) -> puffer.backends.Backend:
    """Each array backend; a backend that cannot be built fails the test rather than skipping it."""
    return puffer.backend(request.param)


@pytest.fixture(params=["torch", "jax", "tinygrad"])
def tbe(request: pytest.FixtureRequest) -> puffer.backends.Backend:
    """Each training backend."""
    return puffer.backend(request.param)
