"""torch: array-api-compat's torch namespace, autograd gradients, eager by default."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import array_api_compat.torch as xp_torch
import numpy as np
import torch

from puffer.backends.base import Array, Backend, check_grad_inputs, check_scalar_loss
from puffer.errors import GradientError
from puffer.tree import tree_map

_NP_TO_TORCH = {
    np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64,
    np.dtype("int32"): torch.int32, np.dtype("int64"): torch.int64, np.dtype("bool"): torch.bool,
    np.dtype("uint8"): torch.uint8, np.dtype("int8"): torch.int8, np.dtype("float16"): torch.float16,
    np.dtype("int16"): torch.int16,
}


class _TorchNamespace:
    """array-api-compat's torch namespace with the fixes the conformance suite found."""

    def __getattr__(self, name: str):
        value = getattr(xp_torch, name)
        setattr(self, name, value)  # cache: later lookups skip __getattr__
        return value

    @staticmethod
    def take_along_axis(x, indices, /, *, axis: int = -1):
        """torch.take_along_dim accepts only int64 indices; the standard allows any integer dtype."""
        return torch.take_along_dim(x, indices.long(), dim=axis)


class TorchBackend(Backend):
    """Trains with torch autograd; eager unless PUFFER_TORCH_COMPILE=1; one CPU thread unless PUFFER_TORCH_THREADS."""

    name = "torch"
    can_train = True
    xp = _TorchNamespace()
    array_type = torch.Tensor

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self._device = torch.device(device)
        self._use_torch_compile = os.environ.get("PUFFER_TORCH_COMPILE", "0") == "1"
        # RL networks are small: intra-op threads cost more in wake-ups than they save, and with the
        # env and other processes on the same cores they thrash (a CartPole run took 5x longer with 2)
        threads = os.environ.get("PUFFER_TORCH_THREADS")
        if threads is not None:
            torch.set_num_threads(int(threads))
        elif device == "cpu":
            torch.set_num_threads(1)

    def _is_native_dtype(self, dtype) -> bool:
        return isinstance(dtype, torch.dtype)

    def asarray(self, x, dtype=None) -> Array:
        if isinstance(x, torch.Tensor):
            return x.to(device=self._device, dtype=self._torch_dtype(dtype) or x.dtype)
        arr = np.asarray(x) if dtype is None else np.asarray(x, dtype=self._np_dtype(dtype))
        # torch.tensor copies: a view of a numpy buffer that the env overwrites would corrupt data
        return torch.tensor(arr, device=self._device)

    def _torch_dtype(self, dtype):
        if dtype is None or isinstance(dtype, torch.dtype):
            return dtype
        return _NP_TO_TORCH[np.dtype(dtype)]

    def _np_dtype(self, dtype):
        if isinstance(dtype, torch.dtype):
            return {v: k for k, v in _NP_TO_TORCH.items()}[dtype]
        return np.dtype(dtype)

    def to_numpy(self, x: Array) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    # ---- extras: native kernels where torch has them ----------------------------------------
    def logsumexp(self, x, axis=-1, keepdims=False):
        return torch.logsumexp(x, dim=axis, keepdim=keepdims)

    def log_softmax(self, x, axis=-1):
        return torch.log_softmax(x, dim=axis)

    def softmax(self, x, axis=-1):
        return torch.softmax(x, dim=axis)

    def softplus(self, x):
        return torch.nn.functional.softplus(x)

    def sigmoid(self, x):
        return torch.sigmoid(x)

    def relu(self, x):
        return torch.relu(x)

    def gelu(self, x):
        return torch.nn.functional.gelu(x)

    def erf(self, x):
        return torch.erf(x)

    def stop_gradient(self, x):
        return x.detach()

    def one_hot(self, idx, n, dtype=None):
        return torch.nn.functional.one_hot(idx.long(), n).to(dtype or torch.float32)

    def take_along_axis(self, x, idx, axis=-1):
        return torch.take_along_dim(x, idx.long(), dim=axis)

    # ---- gradients and compilation ----------------------------------------------------------
    def value_and_grad(self, f: Callable, has_aux: bool = False) -> Callable:
        def vg(params, *args, **kwargs):
            check_grad_inputs("torch", params)
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            with torch.enable_grad():
                out = f(leaves, *args, **kwargs)
                value, aux = _split_aux(out, has_aux)
                check_scalar_loss("torch", value)
                if value.requires_grad:
                    grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
                else:  # the loss does not depend on the parameters (e.g. only through stop_gradient)
                    grads = [None] * len(leaves)
            grads = {
                k: g if g is not None else torch.zeros_like(leaves[k]) for k, g in zip(leaves, grads)
            }
            value = value.detach()
            if has_aux:
                return (value, tree_map(_detach, aux)), grads
            return value, grads

        return vg

    def compile(self, f: Callable, donate: Sequence[int] = ()) -> Callable:
        fn = torch.compile(f, dynamic=False) if self._use_torch_compile else f

        def run(*args, **kwargs):
            with torch.no_grad():
                return fn(*args, **kwargs)

        return run

    # ---- randomness -------------------------------------------------------------------------
    def _generator(self, key) -> torch.Generator:
        g = torch.Generator(device=self._device)
        g.manual_seed(int(key.generate_state(1, np.uint64)[0] >> np.uint64(1)))
        return g

    def uniform(self, key, shape, dtype=None):
        return torch.rand(tuple(shape), generator=self._generator(key), device=self._device,
                          dtype=self._torch_dtype(dtype) or torch.float32)

    def normal(self, key, shape, dtype=None):
        return torch.randn(tuple(shape), generator=self._generator(key), device=self._device,
                           dtype=self._torch_dtype(dtype) or torch.float32)


def _detach(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


def _split_aux(out, has_aux: bool):
    if not has_aux:
        return out, None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise GradientError("value_and_grad(has_aux=True) needs f to return a (loss, aux) pair")
    return out
