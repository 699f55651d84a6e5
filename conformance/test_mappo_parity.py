"""MAPPO is the same algorithm on every training backend: loss, gradients, value normalization, first updates.

As conformance/test_ppo_parity.py: the reference is a float64 run of the same single-source code on
torch (or jax); every backend runs in float32 and must agree to 1e-5 relative to the largest
magnitude of each array. Cases cover the MLP and LSTM actors, agent ids on and off, Huber and
squared value losses, and a batch where some agent rows are masked (absent or dead agents).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import puffer
from puffer import spaces
from puffer.algos.mappo import MAPPO, MAPPOStatic, ValueNorm, mappo_loss
from puffer.envs.landmarks import Landmarks
from puffer.policies import CentralCriticPolicy, make_policy

OBS_DIM, STATE_DIM, AGENTS, S, L = 5, 7, 3, 6, 4
HYPER = {"lr": 1e-3, "clip_coef": 0.2, "vf_clip": 0.2, "vf_coef": 0.5, "ent_coef": 0.01, "max_grad_norm": 0.5}
CASES = [("mlp", True, 10.0), ("mlp", False, 0.0), ("lstm", True, 0.5)]


def _reference_name() -> str:
    installed = puffer.backends.available()
    return next(n for n in ("torch", "jax") if n in installed)


def _policy(kind: str, ids: bool) -> CentralCriticPolicy:
    base = make_policy(spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32), spaces.Discrete(4), kind, 16)
    return CentralCriticPolicy(base.obs_dim, base.head, kind, base.hidden_size, base.num_layers, base.activation,
                               AGENTS if ids else 0, STATE_DIM)


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {
        "obs": g.normal(size=(S, L, OBS_DIM)).astype(np.float32),
        "global_state": g.normal(size=(S, L, STATE_DIM)).astype(np.float32),
        "agent_id": np.eye(AGENTS, dtype=np.float32)[np.arange(S) % AGENTS][:, None, :].repeat(L, 1),
        "actions": g.integers(0, 4, (S, L, 1)).astype(np.float32),
        "logp": np.log(np.full((S, L), 0.25) + g.normal(0, 0.02, (S, L))).astype(np.float32),
        "values_norm": g.normal(size=(S, L)).astype(np.float32),
        "returns_norm": (3.0 * g.normal(size=(S, L))).astype(np.float32),
        "adv": g.normal(size=(S, L)).astype(np.float32),
        "mask": (g.random((S, L)) < 0.8).astype(np.float32),
        "starts": (g.random((S, L)) < 0.2).astype(np.float32),
    }


def _run(be_name: str, case: tuple, dtype: str) -> tuple[float, dict[str, np.ndarray]]:
    kind, ids, delta = case
    be = puffer.backend(be_name)
    policy = _policy(kind, ids)
    params = {k: be.asarray(v.astype(dtype)) for k, v in policy.init(None, 1).items()}
    mb = {k: be.asarray(v.astype(dtype)) for k, v in _batch().items()}
    mb["state"] = tuple(be.asarray(np.full((S, s.shape[-1]), 0.1, dtype)) for s in policy.initial_state(be, S))
    hyper = {k: be.asarray(np.asarray(v, dtype)) for k, v in HYPER.items()}
    static = MAPPOStatic(huber_delta=delta)
    (loss, _), grads = be.value_and_grad(lambda p: mappo_loss(be, policy, static, p, mb, hyper),
                                         has_aux=True)(params)
    return float(be.to_numpy(loss)), {k: np.asarray(be.to_numpy(g), np.float64) for k, g in grads.items()}


@functools.cache
def _reference(case: tuple) -> tuple[float, dict[str, np.ndarray]]:
    return _run(_reference_name(), case, "float64")


def _close(got: np.ndarray, ref: np.ndarray, what: str, tol: float = 1e-5) -> None:
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-12)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=[f"{k}-ids{int(i)}-huber{d:g}" for k, i, d in CASES])
def test_mappo_loss_and_gradients_agree(tbe, case) -> None:
    loss, grads = _run(tbe.name, case, "float32")
    ref_loss, ref_grads = _reference(case)
    _close(np.asarray(loss), np.asarray(ref_loss), "loss")
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        _close(grads[k], ref_grads[k], f"gradient of {k}")
    # the value normalizer's statistics are not parameters (they reach the act function as consts)
    assert not any(k.startswith("value_norm/") for k in grads)


class _Landmarks2(Landmarks):
    agents_per_env = 2


SMALL = {"rollout_len": 25, "minibatch_size": 100, "update_epochs": 2, "total_steps": 10_000, "seed": 5}


def _three_updates(backend: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    trainer = MAPPO(puffer.make(_Landmarks2, num_envs=4, seed=5), backend=backend, **SMALL)
    try:
        for _ in range(3):
            trainer.collect()
            trainer.prepare()
            trainer.update()
        return trainer.numpy_params(), dict(trainer.algo_state)
    finally:
        trainer.close()


@functools.cache
def _reference_updates() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return _three_updates(_reference_name())


def test_same_seed_same_first_three_updates_and_value_norm(tbe) -> None:
    (got, got_norm), (ref, ref_norm) = _three_updates(tbe.name), _reference_updates()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-4, rtol=0, err_msg=f"parameter {k} after 3 updates")
    for k in ref_norm:
        np.testing.assert_allclose(got_norm[k], ref_norm[k], rtol=1e-5, err_msg=f"value-norm statistic {k}")


def test_value_norm_matches_closed_form() -> None:
    g = np.random.default_rng(0)
    batches = [g.normal(5.0, 2.0, 100) for _ in range(3)]
    norm = ValueNorm(beta=0.9)
    for b in batches:
        norm.update(b)
    w = np.array([0.9 ** 2, 0.9, 1.0]) * 0.1  # weights of the three batches, then debiased
    mean = sum(wi * b.mean() for wi, b in zip(w, batches)) / w.sum()
    mean_sq = sum(wi * (b ** 2).mean() for wi, b in zip(w, batches)) / w.sum()
    got_mean, got_std = norm.stats()
    np.testing.assert_allclose(got_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(got_std, np.sqrt(mean_sq - mean ** 2), rtol=1e-12)
    # a constant target keeps the floored variance 1e-2
    flat = ValueNorm()
    flat.update(np.full(10, 3.0))
    assert flat.stats() == pytest.approx((3.0, 0.1))
