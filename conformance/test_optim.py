"""puffer.optim against torch.optim: Adam, AdamW (and SGD) steps on an MLP, clip_by_global_norm, key checks.

Each step's gradients are fixed random arrays shaped like the MLP's parameters, handed to both sides, so
the comparison isolates the optimizer arithmetic (gradients themselves are checked in test_grad_ops.py
and test_nn.py) and costs no gradient kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

import puffer
from conformance._helpers import data, np_of, supports_float64
from puffer import optim
from puffer.nn import mlp

SIZES = [4, 8, 3]


def _torch():
    return pytest.importorskip("torch", reason="torch.optim is the reference for optimizer steps; pip install torch")


# name -> (puffer update kwargs, torch optimizer class name, torch kwargs)
OPTIMIZERS = {
    "adam": (optim.adam, {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8}, "Adam", {"betas": (0.9, 0.99), "eps": 1e-8}),
    "adam_l2": (optim.adam, {"weight_decay": 0.1}, "Adam", {"weight_decay": 0.1}),
    "adamw": (optim.adamw, {"weight_decay": 0.05}, "AdamW", {"weight_decay": 0.05}),
    "adamw_defaults": (optim.adamw, {}, "AdamW", {}),
    "sgd_nesterov": (optim.sgd, {"momentum": 0.9, "nesterov": True}, "SGD", {"momentum": 0.9, "nesterov": True}),
}


# float64 for Adam and AdamW (with its default hyperparameters), whose bias corrections are where the
# float64 and float32 code paths differ
CASES = [(name, "float32") for name in OPTIMIZERS if name != "adamw_defaults"] + [
    ("adam", "float64"), ("adamw_defaults", "float64")]


@pytest.mark.parametrize("name,dtype", CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_optimizer_matches_torch(tbe, name, dtype):
    """Three steps with lrs 1e-2, 3e-3, 2e-2 (a 0-d array) match torch.optim to 1e-6."""
    torch = _torch()
    if dtype == "float64" and not supports_float64(tbe.name):
        pytest.skip(f"{tbe.name} has no float64 on this device")
    module, kwargs, torch_name, torch_kwargs = OPTIMIZERS[name]
    params_np = {k: v.astype(dtype) for k, v in mlp.init(None, 0, SIZES).items()}
    params = {k: tbe.asarray(v) for k, v in params_np.items()}
    state = module.init(tbe, params)
    ref = {k: torch.tensor(v, requires_grad=True) for k, v in params_np.items()}
    lrs = [1e-2, 3e-3, 2e-2]
    opt = getattr(torch.optim, torch_name)(list(ref.values()), lr=lrs[0], **torch_kwargs)
    for step, lr in enumerate(lrs):
        grads_np = {k: data(v.shape, dtype, -1, 1, seed=150 + 10 * step + i)
                    for i, (k, v) in enumerate(params_np.items())}
        grads = {k: tbe.asarray(v) for k, v in grads_np.items()}
        lr_array = tbe.asarray(np.asarray(lr, dtype=dtype))
        params, state = module.update(tbe, params, grads, state, lr_array, **kwargs)
        for group in opt.param_groups:
            group["lr"] = lr
        for k, t in ref.items():
            t.grad = torch.tensor(grads_np[k])
        opt.step()
        for k in params_np:
            got = np_of(tbe, params[k])
            assert got.dtype == np.dtype(dtype), f"{k}: the update changed the dtype to {got.dtype}"
            np.testing.assert_allclose(got, ref[k].detach().numpy(), rtol=1e-6, atol=1e-6,
                                       err_msg=f"{name} step {step + 1} param {k}")


def test_clip_by_global_norm(be):
    """As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when the norm exceeds max_norm."""
    torch = _torch()
    grads_np = {"a": data((3, 4), seed=170) * 3, "b": data((5,), seed=171)}
    for max_norm in (0.5, 1e3):
        clipped, norm = optim.clip_by_global_norm(be, {k: be.asarray(v) for k, v in grads_np.items()}, max_norm)
        ts = [torch.tensor(v) for v in grads_np.values()]
        for t in ts:
            t.grad = t.clone()
        ref_norm = torch.nn.utils.clip_grad_norm_(ts, max_norm)
        np.testing.assert_allclose(np_of(be, norm), ref_norm.numpy(), rtol=1e-6)
        for k, t in zip(grads_np, ts):
            got = np_of(be, clipped[k])
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-6, atol=1e-7, err_msg=f"{k} max_norm={max_norm}")


@pytest.mark.parametrize("module", [optim.sgd, optim.adam, optim.adamw], ids=["sgd", "adam", "adamw"])
@pytest.mark.parametrize("mismatch", ["missing", "extra"])
def test_mismatched_keys(be, module, mismatch):
    """grads whose keys differ from the params' raise a clear puffer error naming the key."""
    params = {k: be.asarray(v) for k, v in mlp.init(None, 0, SIZES).items()}
    state = module.init(be, params)
    grads = dict(params)
    if mismatch == "missing":
        del grads["1/b"]
    else:
        grads["1/bias"] = grads["1/b"]
    with pytest.raises(puffer.errors.PufferError, match="1/b"):
        module.update(be, params, grads, state, be.asarray(np.float32(1e-3)))
