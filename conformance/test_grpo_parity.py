"""GRPO's loss and the Bradley-Terry reward-model loss are the same on every training backend.

The reference is a float64 run of the same single-source code on torch (or jax where torch is not
installed); each backend runs in float32 and must agree to 1e-5 relative (scaled by the largest
magnitude of each array), for the loss and for the gradient of every parameter.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import puffer
from puffer import spaces
from puffer.algos.grpo import GRPOStatic, aggregation_weights, group_advantages, grpo_loss
from puffer.policies import make_policy
from puffer.preferences import RewardSpec, bradley_terry_loss, reward_init

N, T, OBS_DIM = 8, 5, 4
HYPER = {"lr": 1e-3, "clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.1, "max_grad_norm": 1.0}
GRPO_CASES = [("discrete", "grpo", True), ("continuous", "dapo", False), ("discrete", "dr_grpo", False)]
HEADS = {"discrete": spaces.Discrete(3), "continuous": spaces.Box(-1.0, 1.0, (2,), np.float32)}


def _reference_name() -> str:
    installed = puffer.backends.available()
    return next(n for n in ("torch", "jax") if n in installed)


def _close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    scale = max(float(np.max(np.abs(ref))) if np.size(ref) else 0.0, 1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


def _grpo_batch(policy) -> dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    nb = puffer.backend("numpy")
    params = policy.init(None, 0)
    obs = g.normal(size=(N, T, OBS_DIM)).astype(np.float32)
    dist, _, _ = policy.step(nb, params, obs.reshape(N * T, OBS_DIM), ())
    actions, logp = policy.head.sample(nb, dist, policy.head.noise(g, N * T))
    mask = (np.arange(T) < g.integers(1, T + 1, N)[:, None]).astype(np.float32)
    outcomes = g.normal(size=N)
    return {"obs": obs, "actions": np.asarray(actions, np.float32).reshape(N, T, -1),
            # off the behaviour policy so that ratios leave the clip range on both sides
            "logp": (np.asarray(logp).reshape(N, T) + g.normal(0, 0.3, (N, T))).astype(np.float32),
            "ref_logp": (np.asarray(logp).reshape(N, T) + g.normal(0, 0.2, (N, T))).astype(np.float32),
            "mask": mask, "starts": np.zeros((N, T), np.float32),
            "adv": (group_advantages(outcomes, np.arange(N).reshape(2, 4, 1))[:, None] * mask).astype(np.float32)}


def _grpo_run(be_name: str, case: tuple, dtype: str) -> tuple[float, dict[str, np.ndarray]]:
    head, loss_type, kl = case
    be = puffer.backend(be_name)
    policy = make_policy(spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32), HEADS[head], "mlp", 16)
    batch = _grpo_batch(policy)
    batch["weight"] = aggregation_weights(batch["mask"], loss_type).astype(np.float32)
    params = {k: be.asarray(v.astype(dtype)) for k, v in policy.init(None, 1).items()}
    mb = {k: be.asarray(v.astype(dtype)) for k, v in batch.items()}
    mb["state"] = ()
    hyper = {k: be.asarray(np.asarray(v, dtype)) for k, v in HYPER.items()}
    static = GRPOStatic(kl=kl, minibatches=2)
    (loss, _), grads = be.value_and_grad(lambda p: grpo_loss(be, policy, static, p, mb, hyper), has_aux=True)(params)
    return float(be.to_numpy(loss)), {k: np.asarray(be.to_numpy(v), np.float64) for k, v in grads.items()}


@functools.cache
def _grpo_reference(case: tuple) -> tuple[float, dict[str, np.ndarray]]:
    return _grpo_run(_reference_name(), case, "float64")


@pytest.mark.parametrize("case", GRPO_CASES, ids=["-".join(map(str, c)) for c in GRPO_CASES])
def test_grpo_loss_and_gradients_agree(tbe, case) -> None:
    loss, grads = _grpo_run(tbe.name, case, "float32")
    ref_loss, ref_grads = _grpo_reference(case)
    _close(np.asarray(loss), np.asarray(ref_loss), "loss")
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        _close(grads[k], ref_grads[k], f"gradient of {k}")


SPEC = RewardSpec(obs_dim=OBS_DIM, action_dim=1, num_actions=3, hidden_size=16)


def _bt_run(be_name: str, dtype: str) -> tuple[float, dict[str, np.ndarray]]:
    g = np.random.default_rng(1)
    be = puffer.backend(be_name)
    x = g.normal(size=(2, 16, T, SPEC.feature_dim))
    masks = (np.arange(T) < g.integers(1, T + 1, (2, 16))[..., None]).astype(np.float64)
    batch = {"x_a": x[0], "x_b": x[1], "mask_a": masks[0], "mask_b": masks[1],
             "label": g.choice([0.0, 0.5, 1.0], 16)}
    mb = {k: be.asarray(v.astype(dtype)) for k, v in batch.items()}
    params = {k: be.asarray(v.astype(dtype)) for k, v in reward_init(SPEC, 2).items()}
    (loss, _), grads = be.value_and_grad(lambda p: bradley_terry_loss(be, SPEC, p, mb), has_aux=True)(params)
    return float(be.to_numpy(loss)), {k: np.asarray(be.to_numpy(v), np.float64) for k, v in grads.items()}


@functools.cache
def _bt_reference() -> tuple[float, dict[str, np.ndarray]]:
    return _bt_run(_reference_name(), "float64")


def test_bradley_terry_loss_and_gradients_agree(tbe) -> None:
    loss, grads = _bt_run(tbe.name, "float32")
    ref_loss, ref_grads = _bt_reference()
    _close(np.asarray(loss), np.asarray(ref_loss), "loss")
    for k in ref_grads:
        _close(grads[k], ref_grads[k], f"gradient of {k}")


def test_bradley_terry_matches_its_definition() -> None:
    """The numpy forward equals -[y log s(z) + (1 - y) log s(-z)] computed directly."""
    nb = puffer.backend("numpy")
    g = np.random.default_rng(4)
    params = reward_init(SPEC, 0)
    x = g.normal(size=(2, 10, T, SPEC.feature_dim)).astype(np.float32)
    mask = np.ones((10, T), np.float32)
    y = g.choice([0.0, 0.5, 1.0], 10).astype(np.float32)
    loss, _ = bradley_terry_loss(nb, SPEC, params, {"x_a": x[0], "x_b": x[1], "mask_a": mask, "mask_b": mask,
                                                    "label": y})
    from puffer.nn import mlp

    r = np.asarray(mlp.apply(nb, params, x, "tanh", prefix="reward/"))[..., 0].sum(-1)
    p = 1 / (1 + np.exp(-(r[0] - r[1])))
    assert float(loss) == pytest.approx(float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))), rel=1e-5)
