"""PPO-Lagrangian is the same algorithm on every training backend: loss, gradients and whole updates.

Same reference and tolerances as PPO's parity (`test_ppo_parity.py`, whose batches this reuses):
a float64 run of the single-source loss on torch (or jax), each backend in float32 to 1e-5.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import puffer
from conformance.test_ppo_parity import HEADS, HYPER, OBS_DIM, S, _batch, _close, _reference_name
from puffer import spaces
from puffer.algos.ppo import LossStatic
from puffer.algos.ppo_lagrangian import PPOLagrangian, PPOLagrangianConfig, cost_critic_init, make_loss
from puffer.policies import make_policy

# (policy, cost critic, action head)
CASES = [("mlp", "separate", "continuous"), ("mlp", "shared", "discrete"), ("lstm", "separate", "mixed")]


def _run(be_name: str, case: tuple[str, str, str], dtype: str) -> tuple[float, dict[str, np.ndarray]]:
    kind, critic, head = case
    be = puffer.backend(be_name)
    policy = make_policy(spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32), HEADS[head], kind, 16)
    batch = _batch(policy, "gae")
    g = np.random.default_rng(5)
    batch.update({k: g.normal(size=batch["values"].shape).astype(np.float32)
                  for k in ("cost_values", "cost_adv", "cost_returns")})
    cfg = PPOLagrangianConfig(policy=kind, hidden_size=16, cost_critic=critic, seed=1)
    raw = {**policy.init(None, 1), **cost_critic_init(policy, cfg)}
    params = {k: be.asarray(v.astype(dtype)) for k, v in raw.items()}
    mb = {k: be.asarray(v.astype(dtype)) for k, v in batch.items()}
    mb["state"] = tuple(be.asarray(np.full((S, s.shape[-1]), 0.1, dtype)) for s in policy.initial_state(be, S))
    hyper = {k: be.asarray(np.asarray(v, dtype)) for k, v in {**HYPER, "lagrangian": 0.7}.items()}
    loss_fn = make_loss(critic == "shared")
    (loss, _), grads = be.value_and_grad(lambda p: loss_fn(be, policy, LossStatic(), p, mb, hyper),
                                         has_aux=True)(params)
    return float(be.to_numpy(loss)), {k: np.asarray(be.to_numpy(v), np.float64) for k, v in grads.items()}


@functools.cache
def _reference(case: tuple[str, str, str]) -> tuple[float, dict[str, np.ndarray]]:
    return _run(_reference_name(), case, "float64")


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_ppo_lagrangian_loss_and_gradients_agree(tbe, case) -> None:
    loss, grads = _run(tbe.name, case, "float32")
    ref_loss, ref_grads = _reference(case)
    _close(np.asarray(loss), np.asarray(ref_loss), "loss")
    assert set(grads) == set(ref_grads) and any(k.startswith("cost_critic/") for k in grads)
    for k in ref_grads:
        assert np.any(ref_grads[k] != 0) or k == "actor/log_std", f"no gradient reaches {k}"
        _close(grads[k], ref_grads[k], f"gradient of {k}")


SMALL = {"num_envs": 8, "rollout_len": 32, "minibatch_size": 64, "update_epochs": 2, "total_steps": 10_000,
         "cost_limit": 1.0, "lagrangian_init": 0.5, "lagrangian_lr": 0.05}


def _three_updates(backend: str) -> tuple[dict[str, np.ndarray], list[float]]:
    trainer = PPOLagrangian("hazard", backend=backend, seed=7, **SMALL)
    try:
        lams = []
        for _ in range(3):
            trainer.collect()
            lams.append(trainer.before_update()["lagrangian"])
            trainer.prepare()
            trainer.update()
        return trainer.numpy_params(), lams
    finally:
        trainer.close()


@functools.cache
def _reference_updates() -> tuple[dict[str, np.ndarray], list[float]]:
    return _three_updates(_reference_name())


def test_same_seed_same_first_three_updates(tbe) -> None:
    (got, lams), (ref, ref_lams) = _three_updates(tbe.name), _reference_updates()
    assert lams == pytest.approx(ref_lams, abs=1e-9) and len(set(ref_lams)) > 1  # the multiplier moved, alike
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-4, rtol=0, err_msg=f"parameter {k} after 3 updates")
