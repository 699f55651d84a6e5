"""PPO is the same algorithm on every training backend: loss, gradients, advantages and whole updates.

The reference is a float64 run of the same single-source code on torch (or jax where torch is not
installed); each backend runs in float32 and must agree to 1e-5 relative (scaled by the largest
magnitude of each array, so near-zero entries do not demand impossible relative precision).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import puffer
from puffer import spaces
from puffer.algos import PPO
from puffer.algos.advantage import gae, vtrace
from puffer.algos.ppo import LossStatic, ppo_loss
from puffer.policies import make_policy

HEADS = {
    "discrete": spaces.Discrete(3),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "continuous": spaces.Box(-1.0, 1.0, (2,), np.float32),
    "mixed": spaces.Tuple((spaces.MultiDiscrete([3]), spaces.Box(-1.0, 1.0, (2,), np.float32))),
}
CASES = [("mlp", "gae", "discrete"), ("mlp", "vtrace", "multidiscrete"), ("lstm", "vtrace", "continuous"),
         ("lstm", "gae", "mixed"), ("mlp", "gae", "continuous")]
OBS_DIM, S, L = 5, 6, 4
HYPER = {"lr": 1e-3, "clip_coef": 0.2, "vf_clip": 0.2, "vf_coef": 0.5, "ent_coef": 0.01, "max_grad_norm": 0.5}


def _reference_name() -> str:
    installed = puffer.backends.available()
    return next(n for n in ("torch", "jax") if n in installed)


def _batch(policy, advantage: str, seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    head = policy.head
    noise = head.noise(g, S * L)
    # actions sampled from the numpy reference so log-probs are those of a real behaviour policy
    be = puffer.backend("numpy")
    params = policy.init(None, seed)
    obs = g.normal(size=(S, L, OBS_DIM)).astype(np.float32)
    dist, _ = _numpy_sequence(be, policy, params, obs)
    flat = tuple(None if d is None else np.reshape(d, (S * L, *d.shape[2:])) if d.ndim > 1 else d for d in dist)
    actions, logp = head.sample(be, flat, noise)
    dones = g.random((S, L)) < 0.2
    batch = {
        "obs": obs,
        "actions": np.asarray(actions, np.float32).reshape(S, L, -1),
        "logp": (np.asarray(logp, np.float32).reshape(S, L) + g.normal(0, 0.05, (S, L))).astype(np.float32),
        "values": g.normal(size=(S, L)).astype(np.float32),
        "mask": (g.random((S, L)) < 0.9).astype(np.float32),
        "starts": np.concatenate([np.ones((S, 1)), dones[:, :-1]], axis=1).astype(np.float32),
        "rewards": g.normal(size=(S, L)).astype(np.float32),
        "dones": dones.astype(np.float32),
        "next_values": g.normal(size=S).astype(np.float32),
        "adv": g.normal(size=(S, L)).astype(np.float32),
        "returns": g.normal(size=(S, L)).astype(np.float32),
    }
    return batch


def _numpy_sequence(be, policy, params, obs):
    state = tuple(np.zeros((obs.shape[0], s.shape[-1]), np.float32) for s in policy.initial_state(be, obs.shape[0]))
    return policy.sequence(be, params, obs, state, np.zeros(obs.shape[:2], np.float32))


def _run(be_name: str, case: tuple[str, str, str], dtype: str) -> tuple[float, dict[str, np.ndarray]]:
    kind, adv, head = case
    be = puffer.backend(be_name)
    policy = make_policy(spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32), HEADS[head], kind, 16)
    batch = _batch(policy, adv)
    params = {k: be.asarray(v.astype(dtype)) for k, v in policy.init(None, 1).items()}
    mb = {k: be.asarray(v.astype(dtype)) for k, v in batch.items()}
    mb["state"] = tuple(be.asarray(np.full((S, s.shape[-1]), 0.1, dtype)) for s in policy.initial_state(be, S))
    hyper = {k: be.asarray(np.asarray(v, dtype)) for k, v in HYPER.items()}
    static = LossStatic(advantage=adv)
    (loss, _), grads = be.value_and_grad(lambda p: ppo_loss(be, policy, static, p, mb, hyper), has_aux=True)(params)
    return float(be.to_numpy(loss)), {k: np.asarray(be.to_numpy(g), np.float64) for k, g in grads.items()}


@functools.cache
def _reference(case: tuple[str, str, str]) -> tuple[float, dict[str, np.ndarray]]:
    return _run(_reference_name(), case, "float64")


def _close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_ppo_loss_and_gradients_agree(tbe, case) -> None:
    loss, grads = _run(tbe.name, case, "float32")
    ref_loss, ref_grads = _reference(case)
    _close(np.asarray(loss), np.asarray(ref_loss), "loss")
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        _close(grads[k], ref_grads[k], f"gradient of {k}")


def _advantage_reference(rewards, values, next_value, dones, ratios, gamma, lam, rho_clip, c_clip):
    """An independent float64 loop: V-trace with per-step truncated weights (GAE when ratios are 1)."""
    b, t = rewards.shape
    adv = np.zeros((b, t))
    for i in range(b):
        acc = 0.0
        for j in reversed(range(t)):
            nxt = next_value[i] if j == t - 1 else values[i, j + 1]
            notdone = 1.0 - dones[i, j]
            rho, c = min(rho_clip, ratios[i, j]), min(c_clip, ratios[i, j])
            delta = rho * (rewards[i, j] + gamma * notdone * nxt - values[i, j])
            acc = delta + gamma * lam * c * notdone * acc
            adv[i, j] = acc
    return adv


@pytest.mark.parametrize("kind", ["gae", "vtrace"])
def test_advantages_match_float64_reference(tbe, kind) -> None:
    g = np.random.default_rng(3)
    b, t = 5, 17
    rewards, values = g.normal(size=(b, t)), g.normal(size=(b, t))
    next_value = g.normal(size=b)
    # terminations, truncations (already folded into rewards by the trainer) and resets mid-rollout
    dones = (g.random((b, t)) < 0.25).astype(np.float64)
    dones[0, :] = 0.0
    dones[1, -1] = 1.0
    ratios = np.exp(g.normal(0, 0.5, (b, t))) if kind == "vtrace" else np.ones((b, t))
    ref = _advantage_reference(rewards, values, next_value, dones, ratios, 0.99, 0.95, 1.0, 0.9 if kind == "vtrace"
                               else 1.0)
    a = [tbe.asarray(x.astype(np.float32)) for x in (rewards, values, next_value, dones)]
    if kind == "gae":
        out = gae(tbe, *a, 0.99, 0.95)
    else:
        out = vtrace(tbe, *a, tbe.asarray(ratios.astype(np.float32)), 0.99, 0.95, 1.0, 0.9)
    np.testing.assert_allclose(np.asarray(tbe.to_numpy(out), np.float64), ref, rtol=1e-5, atol=1e-5)


SMALL = {"num_envs": 8, "rollout_len": 16, "bptt_horizon": 8, "minibatch_size": 64, "update_epochs": 2,
         "total_steps": 10_000}


def _three_updates(backend: str) -> dict[str, np.ndarray]:
    trainer = PPO("cartpole", backend=backend, seed=7, **SMALL)
    try:
        for _ in range(3):
            trainer.collect()
            trainer.prepare()
            trainer.update()
        return trainer.numpy_params()
    finally:
        trainer.close()


@functools.cache
def _reference_updates() -> dict[str, np.ndarray]:
    return _three_updates(_reference_name())


def test_same_seed_same_first_three_updates(tbe) -> None:
    got, ref = _three_updates(tbe.name), _reference_updates()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-4, rtol=0, err_msg=f"parameter {k} after 3 updates")
