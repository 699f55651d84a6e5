"""Bad input gets a clear puffer error: unknown backends, gradients of what has none."""

from __future__ import annotations

import numpy as np
import pytest

import puffer
from puffer.errors import BackendUnavailableError, GradientError, UnknownBackendError


def test_unknown_backend_lists_available():
    with pytest.raises(UnknownBackendError) as info:
        puffer.backend("tensorflow")
    message = str(info.value)
    assert "tensorflow" in message
    for name in puffer.backends.available():
        assert name in message, f"the error does not list the installed backend {name!r}: {message}"


def test_missing_framework_names_the_extra(monkeypatch):
    """A known backend whose framework is not installed names the pip extra that installs it."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "tinygrad" else real_find_spec(name, *a))
    # a device no test uses, so the registry's per-(name, device) cache cannot answer first
    with pytest.raises(BackendUnavailableError, match=r"puffer-rl\[tinygrad\]"):
        puffer.backend("tinygrad", device="cpu:conformance-missing")
    assert "tinygrad" not in puffer.backends.available()


def test_available_reports_versions():
    available = puffer.backends.available()
    assert "numpy" in available
    assert all(isinstance(v, str) and v for v in available.values())


def test_backend_is_cached(be):
    assert puffer.backend(be.name) is be
    assert puffer.backend(be) is be


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_gradient_of_integer_param(tbe, dtype):
    params = {"w": tbe.asarray(np.ones(3, np.float32)), "n": tbe.asarray(np.ones(3, dtype))}
    vg = tbe.value_and_grad(lambda p: tbe.xp.sum(p["w"] * tbe.xp.astype(p["n"], tbe.float32)))
    with pytest.raises(GradientError, match="'n'"):
        vg(params)


def test_gradient_of_non_scalar_loss(tbe):
    vg = tbe.value_and_grad(lambda p: p["w"] * 2.0)
    with pytest.raises(GradientError, match=r"scalar"):
        vg({"w": tbe.asarray(np.ones(3, np.float32))})


def test_gradient_of_non_scalar_loss_with_aux(tbe):
    vg = tbe.value_and_grad(lambda p: (p["w"] * 2.0, p["w"]), has_aux=True)
    with pytest.raises(GradientError, match=r"scalar"):
        vg({"w": tbe.asarray(np.ones(3, np.float32))})


def test_gradient_needs_param_dict(tbe):
    vg = tbe.value_and_grad(lambda w: tbe.xp.sum(w))
    with pytest.raises(GradientError):
        vg(tbe.asarray(np.ones(3, np.float32)))


def test_forward_only_backend_refuses_gradients():
    be = puffer.backend("numpy")
    with pytest.raises(GradientError, match="numpy"):
        be.value_and_grad(lambda p: p["w"].sum())({"w": np.ones(3, np.float32)})
