"""JAX: jax.numpy (array-API compliant), jax.value_and_grad, jax.jit, jax.random keys.

64-bit types are enabled so float64 means float64 (as on every other backend); puffer's own
code always names float32 where it wants it, and Python scalars stay weakly typed.

Compiled programs persist across processes in JAX's compilation cache (`~/.cache/puffer/jax`, or
`$PUFFER_JAX_CACHE`; an empty value turns it off; a cache directory the user configured for JAX
itself wins), so a second run of the same config skips most of its compile time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from puffer.backends.base import Array, Backend, check_grad_inputs, check_scalar_loss
from puffer.errors import GradientError


def apply_process_settings() -> None:
    """The process-wide JAX settings puffer applies when a jax backend is constructed (never at import).

    - float64 arrays (`jax_enable_x64`): the conformance suite's float64 references and gradients need
      them; `PUFFER_JAX_X64=0` leaves JAX's default (float32 only) alone;
    - the persistent compilation cache in `~/.cache/puffer/jax` (puffer's programs compile in well
      under JAX's 1 s default threshold, yet add up at start-up): `PUFFER_JAX_CACHE=DIR` moves it,
      `PUFFER_JAX_CACHE=` (empty) turns it off, and a cache the user configured is kept.
    """
    if os.environ.get("PUFFER_JAX_X64", "1") != "0":
        jax.config.update("jax_enable_x64", True)
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return
    path = os.environ.get("PUFFER_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "puffer", "jax"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


class JaxBackend(Backend):
    """Trains with jax.value_and_grad; `compile` is jax.jit with optional buffer donation."""

    name = "jax"
    can_train = True
    compiles_loops = True
    xp = jnp
    array_type = jax.Array

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        apply_process_settings()
        platform = {"cuda": "gpu"}.get(device.split(":")[0], device.split(":")[0])
        index = int(device.split(":")[1]) if ":" in device else 0
        self._device = jax.devices(platform)[index]

    def _is_native_dtype(self, dtype) -> bool:
        return False

    def asarray(self, x, dtype=None) -> Array:
        if isinstance(x, jax.Array):
            return x if dtype is None else x.astype(dtype)
        # copy: on CPU device_put may alias the numpy buffer, which the env and trainer overwrite while
        # an asynchronously dispatched computation may still be reading it
        return jax.device_put(np.array(x, dtype=None if dtype is None else np.dtype(dtype), copy=True), self._device)

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    # ---- extras -----------------------------------------------------------------------------
    def logsumexp(self, x, axis=-1, keepdims=False):
        return jax.nn.logsumexp(x, axis=axis, keepdims=keepdims)

    def log_softmax(self, x, axis=-1):
        return jax.nn.log_softmax(x, axis=axis)

    def softmax(self, x, axis=-1):
        return jax.nn.softmax(x, axis=axis)

    def softplus(self, x):
        return jax.nn.softplus(x)

    def sigmoid(self, x):
        return jax.nn.sigmoid(x)

    def relu(self, x):
        return jax.nn.relu(x)

    def gelu(self, x):
        return jax.nn.gelu(x, approximate=False)

    def erf(self, x):
        return jax.scipy.special.erf(x)

    def stop_gradient(self, x):
        return jax.lax.stop_gradient(x)

    def one_hot(self, idx, n, dtype=None):
        return jax.nn.one_hot(idx, n, dtype=dtype or jnp.float32)

    def scan(self, f, carry, xs, reverse=False):
        return jax.lax.scan(f, carry, xs, reverse=bool(reverse))

    # ---- gradients and compilation ----------------------------------------------------------
    def value_and_grad(self, f: Callable, has_aux: bool = False) -> Callable:
        def checked(params, *args, **kwargs):
            out = f(params, *args, **kwargs)
            if has_aux and not (isinstance(out, tuple) and len(out) == 2):
                raise GradientError("value_and_grad(has_aux=True) needs f to return a (loss, aux) pair")
            check_scalar_loss("jax", out[0] if has_aux else out)
            return out

        vg = jax.value_and_grad(checked, has_aux=has_aux)

        def run(params, *args, **kwargs):
            check_grad_inputs("jax", params)
            return vg(params, *args, **kwargs)

        return run

    def compile(self, f: Callable, donate: Sequence[int] = ()) -> Callable:
        return jax.jit(f, donate_argnums=tuple(donate))

    # ---- randomness -------------------------------------------------------------------------
    def key(self, seed: int):
        return jax.random.key(int(seed))

    def split(self, key, num: int = 2):
        return list(jax.random.split(key, num))

    def uniform(self, key, shape, dtype=None):
        return jax.random.uniform(key, tuple(shape), dtype=dtype or jnp.float32)

    def normal(self, key, shape, dtype=None):
        return jax.random.normal(key, tuple(shape), dtype=dtype or jnp.float32)
