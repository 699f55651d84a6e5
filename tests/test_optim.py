"""puffer.optim: SGD, Adam, AdamW, clipping and schedules against torch.optim on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import puffer
from puffer.errors import GradientError
from puffer.optim import adam, adamw, clip_by_global_norm, cosine, linear, sgd

SHAPES = {"actor/0/w": (3, 4), "actor/0/b": (4,), "critic/w": (4, 1), "scale": ()}
SMALL = {"w": (3, 4), "scale": ()}  # fewer kernels to compile where the number of parameters does not matter


def np_params(seed=0, dtype=np.float64, shapes=SHAPES):
    r = np.random.default_rng(seed)
    return {k: r.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def to_be(be, tree):
    return {k: be.asarray(v) for k, v in tree.items()}


def to_np(be, tree):
    return {k: np.asarray(be.to_numpy(v)) for k, v in tree.items()}


def scalar(be, v, dtype=np.float64):
    return be.asarray(np.asarray(v, dtype=dtype))


def run_torch(opt_cls, params, grads_seq, lrs, **kw):
    """Parameters after each step of feeding `grads_seq` to torch.optim, the learning rate changed every step."""
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = opt_cls(list(tp.values()), lr=lrs[0], **kw)
    out = []
    for grads, lr in zip(grads_seq, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for k, p in tp.items():
            p.grad = torch.tensor(grads[k])
        opt.step()
        out.append({k: p.detach().numpy().copy() for k, p in tp.items()})
    return out


def run_puffer(be, opt, params, grads_seq, lrs, **kw):
    """Parameters after each step of puffer's optimizer, and the final state."""
    p = to_be(be, params)
    state = opt.init(be, p)
    out = []
    for grads, lr in zip(grads_seq, lrs):
        p, state = opt.update(be, p, to_be(be, grads), state, scalar(be, lr, np.float32), **kw)
        out.append(to_np(be, p))
    return out, state


# (id, optimizer, torch reference, hyperparameters)
CASES = [
    ("adam", adam, torch.optim.Adam, {}),
    ("adam-l2", adam, torch.optim.Adam, {"weight_decay": 0.1}),
    ("adam-betas", adam, torch.optim.Adam, {"betas": (0.5, 0.9), "eps": 1e-3}),
    ("adamw", adamw, torch.optim.AdamW, {}),
    ("adamw-wd", adamw, torch.optim.AdamW, {"weight_decay": 0.3, "betas": (0.8, 0.99)}),
    ("sgd", sgd, torch.optim.SGD, {}),
    ("sgd-momentum", sgd, torch.optim.SGD, {"momentum": 0.9, "dampening": 0.2, "weight_decay": 0.05}),
    ("sgd-nesterov", sgd, torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
]


def puffer_kwargs(kw: dict) -> dict:
    out = dict(kw)
    if "betas" in out:
        out["beta1"], out["beta2"] = out.pop("betas")
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_optim_float64_after_one_and_several_steps(be, case):
    _, opt, torch_cls, kw = case
    steps = 5
    params = np_params()
    r = np.random.default_rng(1)
    grads_seq = [{k: r.standard_normal(v.shape) for k, v in params.items()} for _ in range(steps)]
    lrs = [0.1 / (i + 1) for i in range(steps)]  # the lr changes every step, as under a schedule
    ref = run_torch(torch_cls, params, grads_seq, lrs, **kw)
    got, state = run_puffer(be, opt, params, grads_seq, lrs, **puffer_kwargs(kw))
    for step in range(steps):
        for k in params:
            assert got[step][k].dtype == np.float64 and got[step][k].shape == params[k].shape
            np.testing.assert_allclose(got[step][k], ref[step][k], rtol=1e-6, atol=1e-6, err_msg=f"step {step + 1}")
    assert float(be.to_numpy(state["step"])) == steps
    assert np.asarray(be.to_numpy(state["step"])).dtype == np.float32


def test_state_layout():
    be = puffer.backend("numpy")
    p = np_params(dtype=np.float32)
    state = adam.init(be, p)
    assert set(state) == {"step"} | {f"m/{k}" for k in p} | {f"v/{k}" for k in p}
    assert state["step"].shape == () and state["step"].dtype == np.float32
    assert all(state[f"m/{k}"].dtype == np.float32 and state[f"m/{k}"].shape == p[k].shape for k in p)
    assert set(sgd.init(be, p)) == {"step"} | {f"buf/{k}" for k in p}


@pytest.mark.parametrize("opt", [adam, adamw, sgd])
def test_float32_params_stay_float32_with_float64_hyperparameters(be, opt):
    p = to_be(be, np_params(dtype=np.float32, shapes=SMALL))
    grads = to_be(be, np_params(1, dtype=np.float32, shapes=SMALL))
    new, state = opt.update(be, p, grads, opt.init(be, p), scalar(be, 1e-3, np.float64),
                            weight_decay=scalar(be, 0.01, np.float64))
    for k, v in to_np(be, new).items():
        assert v.dtype == np.float32, k
    assert all(np.asarray(be.to_numpy(v)).dtype == np.float32 for v in state.values())


def test_mismatched_keys_raise_a_clear_error():
    be = puffer.backend("numpy")
    p = np_params()
    grads = {k: v for k, v in p.items() if k != "scale"}
    grads["extra"] = np.zeros(1)
    with pytest.raises(GradientError, match=r"grads lack \['scale'\].*extra \['extra'\]"):
        adam.update(be, p, grads, adam.init(be, p), 1e-3)


@pytest.mark.parametrize("opt", [adam, adamw, sgd])
def test_compiled_update_follows_changing_lr(tbe, opt):
    """The compile contract: lr enters as a 0-d array, so every call of the compiled step sees its value."""
    params = np_params(dtype=np.float32, shapes=SMALL)
    grads = np_params(1, dtype=np.float32, shapes=SMALL)
    kw = {"momentum": 0.9} if opt is sgd else {}
    step = tbe.compile(lambda p, g, s, lr: opt.update(tbe, p, g, s, lr, **kw))
    p_c, s_c = to_be(tbe, params), opt.init(tbe, to_be(tbe, params))
    p_e, s_e = to_be(tbe, params), opt.init(tbe, to_be(tbe, params))
    for i in range(4):
        lr = scalar(tbe, 0.1 / (i + 1), np.float32)
        p_c, s_c = step(p_c, to_be(tbe, grads), s_c, lr)
        p_e, s_e = opt.update(tbe, p_e, to_be(tbe, grads), s_e, lr, **kw)
        for k in params:
            np.testing.assert_allclose(tbe.to_numpy(p_c[k]), tbe.to_numpy(p_e[k]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_by_global_norm_matches_torch(be, max_norm):
    grads = np_params(2)
    tg = {k: torch.tensor(v, requires_grad=True) for k, v in grads.items()}
    for k, t in tg.items():
        t.grad = torch.tensor(grads[k])
    ref_norm = torch.nn.utils.clip_grad_norm_(list(tg.values()), max_norm)
    clipped, norm = clip_by_global_norm(be, to_be(be, grads), scalar(be, max_norm))
    np.testing.assert_allclose(float(be.to_numpy(norm)), ref_norm.item(), rtol=1e-12)
    for k, v in to_np(be, clipped).items():
        np.testing.assert_allclose(v, tg[k].grad.numpy(), rtol=1e-12)
    if max_norm > 50:
        assert all(np.array_equal(v, grads[k]) for k, v in to_np(be, clipped).items())


def test_schedules():
    assert linear(0, 100, 3e-4, 0.0) == 3e-4
    assert linear(50, 100, 3e-4, 0.0) == pytest.approx(1.5e-4)
    assert linear(150, 100, 3e-4, 1e-5) == 1e-5
    assert cosine(0, 100, 1.0, 0.1) == 1.0
    assert cosine(50, 100, 1.0, 0.1) == pytest.approx(0.55)
    assert cosine(100, 100, 1.0, 0.1) == pytest.approx(0.1)
    assert cosine(5, 110, 1.0, warmup=10) == pytest.approx(0.5)
    assert cosine(10, 110, 1.0, warmup=10) == 1.0
    assert cosine(60, 110, 1.0, warmup=10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    # CleanRL's annealing: lr * (1 - (iteration - 1) / num_iterations)
    assert linear(9, 10, 2.5e-4, 0.0) == pytest.approx(2.5e-4 * (1 - 9 / 10))
