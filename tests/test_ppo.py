"""PPO trainer behaviour: episode boundaries, config errors, async vectorization, the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import puffer
from puffer.algos import PPO, PPOConfig
from puffer.errors import PufferError

SMALL = {"num_envs": 8, "rollout_len": 16, "minibatch_size": 64, "total_steps": 10_000}


def test_truncation_bootstraps_from_true_final_observation_not_reset_one() -> None:
    trainer = PPO("cartpole", backend="torch", **SMALL)
    try:
        n = trainer.rows
        final = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
        rewards = np.ones(n, np.float32)
        trunc = np.zeros(n, bool)
        term = np.zeros(n, bool)
        trunc[[1, 5]] = True
        term[5] = True  # terminated and truncated at once: termination wins, nothing to bootstrap
        out = trainer.collector._bootstrap({"rewards": rewards}, trunc, term, {"final_observation": final},
                                           None)["rewards"]
        be = trainer.be
        value = be.to_numpy(trainer.policy.step(be, trainer.params, be.asarray(final), ())[1])
        expected = rewards.copy()
        expected[1] += trainer.config.gamma * value[1]
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    finally:
        trainer.close()


def test_rollout_marks_episode_ends_and_starts() -> None:
    trainer = PPO("bandit", backend="torch", **SMALL)  # one-step episodes: every step ends one
    try:
        trainer.collect()
        buf = trainer.buffer
        assert buf.dones.all()
        assert buf.starts[:, 1:].all()
        assert trainer.global_step == 8 * 16
        assert trainer.episodes_finished == 8 * 16
    finally:
        trainer.close()


def test_minibatch_that_does_not_divide_the_rollout_names_values_that_work() -> None:
    with pytest.raises(PufferError, match="values that work"):
        PPO("cartpole", backend="torch", num_envs=8, rollout_len=16, minibatch_size=100)


def test_bad_config_values_are_named() -> None:
    with pytest.raises(PufferError, match="advantage"):
        PPO("cartpole", backend="torch", advantage="td")
    with pytest.raises(PufferError, match="unknown PPOConfig keys: not_a_field"):
        PPOConfig.from_dict({"not_a_field": 1})
    with pytest.raises(PufferError, match="cannot train"):
        PPO("cartpole", backend="numpy")
    with pytest.raises(puffer.errors.UnknownBackendError, match="puffer knows"):
        PPO("cartpole", backend="mxnet")


def test_async_multiprocessing_rollout_learns_bandit() -> None:
    trainer = PPO("bandit", backend="torch", num_envs=16, vec="multiprocessing", num_workers=2, vec_batch_size=8,
                  minibatch_size=128, rollout_len=16, total_steps=30_000)
    try:
        assert not trainer.sync
        trainer.train(30_000, stop_at_return=0.75)
        assert trainer.evaluate(200, key="success") >= 0.95
    finally:
        trainer.close()


def test_vtrace_with_live_ratios_learns_bandit() -> None:
    trainer = PPO("bandit", backend="jax", advantage="vtrace", bptt_horizon=4, **SMALL)
    try:
        trainer.train(20_000, stop_at_return=0.75)
        assert trainer.evaluate(200, key="success") >= 0.95
    finally:
        trainer.close()


def test_obs_norm_statistics_track_observations() -> None:
    trainer = PPO("cartpole", backend="torch", obs_norm=True, **SMALL)
    try:
        trainer.collect()
        assert trainer.obs_norm.count > 100
        assert np.all(np.abs(trainer.buffer.obs) <= 10.0)
    finally:
        trainer.close()


def _puffer(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "puffer.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_train_then_eval(tmp_path) -> None:
    run = tmp_path / "run"
    r = _puffer("train", "bandit", "--backend", "torch", "--steps", "4096", "--num-envs", "16",
                "--minibatch-size", "128", "--run-dir", str(run), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "saved" in r.stdout
    r = _puffer("eval", "bandit", "--checkpoint", str(run), "--episodes", "50", "--backend", "numpy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "mean return" in r.stdout


def test_cli_rejects_unknown_flags_and_bad_env(tmp_path) -> None:
    r = _puffer("train", "cartpole", "--no-such-flag", "1", cwd=tmp_path)
    assert r.returncode == 2 and "unrecognized arguments: --no-such-flag" in r.stderr
    r = _puffer("eval", "--checkpoint", str(tmp_path / "missing"), cwd=tmp_path)
    assert r.returncode == 2 and "no such checkpoint" in r.stderr


def test_async_rollout_stores_every_step_result() -> None:
    """CartPole pays 1 per step: every stored reward of an async rollout is at least 1, the last column too."""
    trainer = PPO("cartpole", backend="torch", num_envs=8, vec="multiprocessing", num_workers=2, vec_batch_size=4,
                  rollout_len=16, minibatch_size=64, total_steps=10_000)
    try:
        for _ in range(3):
            trainer.collect()
            assert np.all(trainer.buffer.rewards >= 1.0), trainer.buffer.rewards
            trainer.buffer.rewards[...] = 0.0  # a step the next rollout forgets to store stays 0
    finally:
        trainer.close()
