"""GRPO: group advantages, aggregation, the k3 KL, clipping, whole-episode groups, bad input, learning.

Learning budgets were measured on three seeds (0-2, torch, a loaded 2-core machine; see
`puffer.algos.grpo`); each test runs one seed. tinygrad runs Bandit and `sequence` only: its
CartPole run takes about two minutes here (kernel compilation plus 300-wide episode buffers),
too long for the suite, while torch and JAX cover CartPole.
"""

from __future__ import annotations

import numpy as np
import pytest

import puffer
import puffer.algos  # noqa: F401  (registers GRPO)
from puffer import spaces
from puffer.algos import GRPO
from puffer.algos.grpo import GRPOStatic, aggregation_weights, group_advantages, grpo_loss, k3_kl, stepwise_advantages
from puffer.envs.base import NativeEnv
from puffer.envs.sequence import Sequence
from puffer.errors import PufferError
from puffer.policies import make_policy

BACKENDS = [b for b in puffer.backends.TRAINING if b in puffer.backends.available()]
HYPER = {"lr": 1e-3, "clip_low": 0.2, "clip_high": 0.28, "kl_coef": 0.1, "max_grad_norm": 1.0}


def _groups(num_groups: int, size: int) -> np.ndarray:
    return np.arange(num_groups * size).reshape(num_groups, size, 1)


# ---- advantages and weights (host) --------------------------------------------------------------
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_sum_to_zero_per_group(scale) -> None:
    g = np.random.default_rng(0)
    outcomes = g.normal(size=32)
    outcomes[8:16] = 0.5  # one group whose outcomes are all equal
    adv = group_advantages(outcomes, _groups(4, 8), scale)
    np.testing.assert_allclose(adv.reshape(4, 8).sum(axis=1), 0.0, atol=1e-9)
    assert (adv[8:16] == 0.0).all()  # exactly zero, not merely small
    if scale == "group":
        np.testing.assert_allclose(adv.reshape(4, 8)[[0, 2, 3]].std(axis=1, ddof=1), 1.0, atol=1e-3)


def test_stepwise_advantages_sum_to_zero_at_each_step() -> None:
    g = np.random.default_rng(1)
    rewards = g.normal(size=(8, 6))
    lengths = np.array([6, 3, 6, 2, 6, 6, 5, 1])
    mask = (np.arange(6) < lengths[:, None]).astype(np.float32)
    adv = stepwise_advantages(rewards, mask, _groups(2, 4), 0.9, "none")
    assert (adv[mask == 0] == 0).all()
    np.testing.assert_allclose(adv.reshape(2, 4, 6).sum(axis=1), 0.0, atol=1e-9)


def test_aggregation_weights() -> None:
    mask = (np.arange(5) < np.array([5, 2, 1, 4])[:, None]).astype(np.float32)
    w = aggregation_weights(mask, "grpo")
    np.testing.assert_allclose(w.sum(axis=1), 0.25)  # each episode counts the same, whatever its length
    assert aggregation_weights(mask, "dapo").sum() == pytest.approx(1.0)  # each step counts the same
    dr = aggregation_weights(mask, "dr_grpo")
    assert set(np.unique(dr[mask > 0])) == {1 / 20} and (dr[mask == 0] == 0).all()


def test_k3_kl_is_nonnegative_and_zero_for_equal_policies() -> None:
    nb = puffer.backend("numpy")
    g = np.random.default_rng(2)
    logp, ref = np.log(g.random(1000)), np.log(g.random(1000))
    assert (np.asarray(k3_kl(nb, logp, ref)) >= 0).all()
    assert (np.asarray(k3_kl(nb, logp, logp)) == 0).all()


# ---- the loss (backends) ------------------------------------------------------------------------
def _batch(policy, n: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    obs = g.normal(size=(n, t, policy.obs_dim)).astype(np.float32)
    mask = (np.arange(t) < g.integers(1, t + 1, n)[:, None]).astype(np.float32)
    return {"obs": obs, "actions": g.integers(0, 3, (n, t, 1)).astype(np.float32),
            "logp": np.full((n, t), np.log(1 / 3), np.float32), "mask": mask, "starts": np.zeros((n, t), np.float32),
            "ref_logp": (np.log(1 / 3) + g.normal(0, 0.1, (n, t))).astype(np.float32),
            "weight": aggregation_weights(mask, "grpo").astype(np.float32)}


def _grads(be, policy, params, batch, kl=False):
    mb = {k: be.asarray(v) for k, v in batch.items()}
    mb["state"] = ()
    hyper = {k: be.asarray(np.asarray(v, np.float32)) for k, v in HYPER.items()}
    _, grads = be.value_and_grad(lambda p: grpo_loss(be, policy, GRPOStatic(kl=kl), p, mb, hyper),
                                 has_aux=True)(params)
    return {k: np.asarray(be.to_numpy(v)) for k, v in grads.items()}


def test_equal_outcome_group_contributes_exactly_zero_gradient(tbe) -> None:
    policy = make_policy(spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(3), "mlp", 16)
    params = {k: tbe.asarray(v) for k, v in policy.init(None, 0).items()}
    batch = _batch(policy, 8, 5)
    outcomes = np.array([1.0, 0.0, 2.0, 1.0, 3.0, 3.0, 3.0, 3.0])  # the second group is all equal
    batch["adv"] = (group_advantages(outcomes, _groups(2, 4))[:, None] * batch["mask"]).astype(np.float32)
    base = _grads(tbe, policy, params, batch)
    moved = dict(batch, obs=batch["obs"].copy(), actions=batch["actions"].copy())
    moved["obs"][4:] += 1.0
    moved["actions"][4:] = (moved["actions"][4:] + 1) % 3
    for k, v in _grads(tbe, policy, params, moved).items():
        np.testing.assert_array_equal(v, base[k], err_msg=f"gradient of {k} changed with the equal group's data")
    all_equal = dict(batch, adv=np.zeros_like(batch["adv"]))
    assert all((g == 0).all() for g in _grads(tbe, policy, params, all_equal).values())


# ---- trainer: whole-episode groups, clipping, KL reference, bad input ----------------------------
def test_episode_groups_share_their_start_and_mask_after_the_end() -> None:
    t = GRPO("cartpole", backend="torch", num_envs=16, group_size=4, seed=3, max_episode_len=200)
    try:
        t.collect()
        buf = t.buffer
        first = buf.obs[:, 0].reshape(4, 4, -1)
        assert (first == first[:, :1]).all() and len({tuple(r) for r in first[:, 0]}) == 4
        lengths = buf.mask.sum(axis=1)
        np.testing.assert_array_equal(lengths, buf.lengths)
        assert (buf.mask == (np.arange(200) < lengths[:, None])).all()  # masked after each row's end
        np.testing.assert_allclose(buf.outcomes, lengths)  # CartPole pays 1 per step
        assert t.global_step == 16 * min(int(lengths.max()), 200)  # every step taken counts
        assert len(t.episodes) == int(buf.finished.sum())
    finally:
        t.close()


def test_clip_fraction_zero_with_one_iteration_positive_with_several() -> None:
    def clipfracs(iterations):
        t = GRPO("sequence", backend="torch", num_iterations=iterations, learning_rate=0.03, seed=1)
        try:
            t.train(total_steps=64 * 3 * 6)
            return [s["clipfrac"] for s in t.history]
        finally:
            t.close()

    assert all(c == 0.0 for c in clipfracs(1))
    assert max(clipfracs(8)) > 0.0


def test_kl_to_reference_is_logged_and_checkpointed(tmp_path) -> None:
    t = GRPO("sequence", backend="torch", kl_coef=0.05, ref_update_every=2, seed=0, total_steps=64 * 3 * 4)
    try:
        t.train()
        assert all(s["kl"] >= 0 for s in t.history)
        assert max(s["kl"] for s in t.history) > 0
        path = t.save(tmp_path)
        ref = dict(t.algo_state)
    finally:
        t.close()
    resumed = puffer.train.resume_trainer(path, backend="jax")
    try:
        for k, v in resumed.algo_state.items():
            np.testing.assert_array_equal(v, ref[k])
    finally:
        resumed.close()


class NoGroups(NativeEnv):
    """A native env that cannot restart a group from one seed."""

    single_observation_space = spaces.Box(-1, 1, (1,), np.float32)
    single_action_space = spaces.Discrete(2)
    supports_group_reset = False
    max_episode_steps = 1

    def _reset_rows(self, rows):
        self.observations[rows] = 0

    def _step(self, actions):
        self.rewards[:] = 0
        self.terminals[:] = True


def test_bad_group_settings_are_errors_with_values_that_work() -> None:
    with pytest.raises(PufferError, match=r"group_size=1 must be at least 2 and divide num_envs=12; values that "
                                          r"work: 2, 3, 4, 6, 12"):
        GRPO("sequence", backend="torch", num_envs=12, group_size=1)
    with pytest.raises(PufferError, match="group_size=5 .* values that work: 2, 4, 8, 16"):
        GRPO("sequence", backend="torch", num_envs=16, group_size=5)
    env = puffer.make(NoGroups, num_envs=8)
    with pytest.raises(PufferError, match="env NoGroups cannot restart a group of envs from one seed.*NoGroups"):
        GRPO(env, backend="torch", group_size=4, num_envs=8)
    env = puffer.make("memory", num_envs=8)
    with pytest.raises(PufferError, match="env memory does not say how long its episodes can be; pass "
                                          "--max-episode-len"):
        GRPO(env, backend="torch", group_size=4, num_envs=8)


def test_grpo_cli_flags() -> None:
    from puffer.train.config import field_docs

    docs = field_docs(puffer.algos.GRPOConfig)
    for name in ("group_size", "scale_rewards", "clip_low", "clip_high", "kl_coef", "loss_type", "reward_model"):
        assert docs[name]
    with pytest.raises(PufferError, match="scale_rewards='std'"):
        GRPO("sequence", backend="torch", scale_rewards="std")


# ---- learning -----------------------------------------------------------------------------------
def _best_arm_probability(t) -> float:
    be = t.be
    dist, _, _ = t.policy.step(be, t.params, be.asarray(np.ones((1, 1), np.float32)), ())
    logits = np.asarray(be.to_numpy(dist[0]), np.float64)[0]
    p = np.exp(logits - logits.max())
    return float(p[2] / p.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_grpo_learns_bandit_and_sequence(backend) -> None:
    t = GRPO("bandit", backend=backend, seed=0, total_steps=3000)
    try:
        t.train()
        assert _best_arm_probability(t) >= 0.9
    finally:
        t.close()
    t = GRPO("sequence", backend=backend, seed=0, total_steps=15_000)
    try:
        t.train()
        assert t.evaluate(200, key="success") >= 0.9
        assert t.evaluate(200, deterministic=False, key="success") >= 0.9
    finally:
        t.close()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "tinygrad"])
def test_grpo_learns_cartpole(backend) -> None:
    t = GRPO("cartpole", backend=backend, seed=0, total_steps=300_000)
    try:
        t.train(stop_at_return=400)
        assert t.global_step <= 300_000 and t.mean_return(20) >= 400
    finally:
        t.close()


def test_sequence_verifier() -> None:
    env = Sequence(4, seed=0)
    env.reset(seed=5)
    env.reset_group([0, 1, 2, 3], seed=9)
    assert (env._prompt == env._prompt[:1]).all()
    for _ in range(3):
        _, r, d, _, infos = env.step(env.oracle_actions())
    assert d.all() and (r == 1).all() and all(e["success"] == 1 for e in infos["episodes"])


def test_cli_train_resume_matches_straight_run_and_exports(tmp_path) -> None:
    from puffer.cli import main

    flags = ["--algo", "grpo", "--backend", "torch", "--kl-coef", "0.02", "--loss-type", "dr_grpo", "--quiet"]
    assert main(["train", "sequence", *flags, "--steps", "960", "--run-dir", str(tmp_path / "a")]) == 0
    assert main(["train", "--resume", str(tmp_path / "a"), "--steps", "1920", "--quiet"]) == 0
    assert main(["train", "sequence", *flags, "--steps", "1920", "--run-dir", str(tmp_path / "b")]) == 0
    a = puffer.train.resume_trainer(tmp_path / "a")
    b = puffer.train.resume_trainer(tmp_path / "b")
    try:
        assert a.global_step == b.global_step == 1920
        for k, v in b.numpy_params().items():
            np.testing.assert_allclose(a.numpy_params()[k], v, atol=1e-6, err_msg=k)
    finally:
        a.close()
        b.close()
    assert main(["export", str(tmp_path / "a"), "--to", str(tmp_path / "p.onnx")]) == 0
    assert main(["eval", "--policy", str(tmp_path / "p.onnx"), "--episodes", "8"]) == 0
