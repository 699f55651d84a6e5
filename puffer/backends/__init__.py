"""Backend registry: `puffer.backend(name)` and `puffer.backends.available()`.

Frameworks are imported only when their backend is first asked for, so `import puffer` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util

from puffer.backends.base import Backend
from puffer.errors import BackendUnavailableError, UnknownBackendError

# backend name -> (module, class, import names that must exist, pip extra, distribution for version)
_REGISTRY: dict[str, tuple[str, str, tuple[str, ...], str, str]] = {
    "numpy": ("puffer.backends.numpy_backend", "NumpyBackend", ("numpy",), "", "numpy"),
    "torch": ("puffer.backends.torch_backend", "TorchBackend", ("torch",), "torch", "torch"),
    "jax": ("puffer.backends.jax_backend", "JaxBackend", ("jax", "jaxlib"), "jax", "jax"),
    "tinygrad": ("puffer.backends.tinygrad_backend", "TinygradBackend", ("tinygrad",), "tinygrad", "tinygrad"),
    "onnx": ("puffer.backends.onnx_backend", "OnnxBackend", ("onnx",), "onnx", "onnx"),
    "onnxruntime": ("puffer.backends.onnxruntime_backend", "OnnxruntimeBackend", ("onnxruntime",), "onnx",
                    "onnxruntime"),
}
TRAINING = ("torch", "jax", "tinygrad")
DEFAULT = "jax"

_cache: dict[tuple[str, str], Backend] = {}


def names() -> list[str]:
    """Every backend name puffer knows, installed or not."""
    return list(_REGISTRY)


def _installed(name: str) -> bool:
    return all(importlib.util.find_spec(mod) is not None for mod in _REGISTRY[name][2])


def available() -> dict[str, str]:
    """Installed backends mapped to their framework's version, e.g. {"torch": "2.13.0", ...}."""
    out = {}
    for name, (_, _, _, _, dist) in _REGISTRY.items():
        if _installed(name):
            try:
                out[name] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[name] = "unknown"
    return out


def default_name() -> str:
    """The default training backend: jax if installed, else the first installed trainer."""
    for name in (DEFAULT, *TRAINING):
        if _installed(name):
            return name
    raise BackendUnavailableError(
        "no training backend is installed; pip install 'puffer-rl[jax]' (or [torch], [tinygrad])"
    )


def backend(name: str | Backend | None = None, device: str = "cpu") -> Backend:
    """The backend object called `name` (None: the default), created once per (name, device)."""
    if isinstance(name, Backend):
        return name
    name = default_name() if name is None else name
    if name not in _REGISTRY:
        raise UnknownBackendError(
            f"unknown backend {name!r}; puffer knows {', '.join(_REGISTRY)} "
            f"(installed here: {', '.join(available()) or 'none'})"
        )
    if (name, device) in _cache:
        return _cache[(name, device)]
    module, cls, _, extra, _ = _REGISTRY[name]
    if not _installed(name):
        hint = f"pip install 'puffer-rl[{extra}]'" if extra else "pip install numpy"
        raise BackendUnavailableError(f"backend {name!r} needs a package that is not installed: {hint}")
    be = getattr(importlib.import_module(module), cls)(device=device)
    _cache[(name, device)] = be
    return be
