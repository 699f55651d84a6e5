"""Preferences: the pair file format and its validation, synthetic labels, fitting, and GRPO on a learned reward.

The learning case (torch only, to keep the suite's budget): 3,000 pairs of 25-step CartPole
segments from a uniform random policy, labelled by CartPole's true reward (1 per step until the
pole falls), a reward model fitted by `puffer preferences fit`, then GRPO trained on the model's
rewards only reaches a true mean return of 400 (measured here with 10 fitting epochs, seeds 0-2:
held-out pair accuracy 0.996-1.0, return 400 at 106k, 166k and 111k env steps).
"""

from __future__ import annotations

import numpy as np
import pytest

import puffer
import puffer.algos  # noqa: F401  (registers GRPO)
from puffer.algos import GRPO
from puffer.cli import main
from puffer.errors import PufferError
from puffer.preferences import Pairs, load_pairs, load_reward_model, save_pairs, synthetic_pairs


def _pairs(n=6, k=4, d=3, a=1) -> Pairs:
    g = np.random.default_rng(0)
    mask = np.ones((n, k), np.float32)
    return Pairs(g.normal(size=(n, k, d)), g.normal(size=(n, k, d)), np.zeros((n, k, a)), np.ones((n, k, a)),
                 mask, mask.copy(), np.array([0, 0.5, 1, 1, 0, 0.5][:n]))


def test_pair_file_round_trip(tmp_path) -> None:
    pairs = _pairs()
    path = save_pairs(tmp_path / "p.safetensors", pairs, env="cartpole")
    back = load_pairs(path)
    for key in ("obs_a", "obs_b", "actions_a", "actions_b", "mask_a", "mask_b", "label"):
        np.testing.assert_array_equal(getattr(back, key), getattr(pairs, key).astype(np.float32))
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file and renamed


def test_bad_pair_files_are_errors(tmp_path) -> None:
    bad = _pairs()
    bad.label = np.array([0, 0.5, 1, 0.7, 0, 2])
    with pytest.raises(PufferError, match=r"labels must be 0, 0.5 or 1 .* got \[0.7, 2.0\] at pairs \[3, 5\]"):
        save_pairs(tmp_path / "x.safetensors", bad)
    bad = _pairs()
    bad.obs_b = bad.obs_b[:, :3]
    with pytest.raises(PufferError, match=r"obs_b has shape \(6, 3, 3\), expected \(6, 4, 3\)"):
        save_pairs(tmp_path / "x.safetensors", bad)
    bad = _pairs()
    bad.mask_a[0, 0] = 0
    with pytest.raises(PufferError, match="mask_a must hold 0 or 1 with every segment's first step 1"):
        save_pairs(tmp_path / "x.safetensors", bad)
    from safetensors.numpy import save

    f = tmp_path / "foreign.safetensors"
    f.write_bytes(save({"x": np.zeros(2, np.float32)}, metadata={"format": "other"}))
    with pytest.raises(PufferError, match="metadata format is 'other'"):
        load_pairs(f)
    f.write_bytes(b"not a safetensors file")
    with pytest.raises(PufferError, match="not a readable safetensors pair file"):
        load_pairs(f)
    with pytest.raises(PufferError, match="no such pair file"):
        load_pairs(tmp_path / "missing.safetensors")


def test_synthetic_labels_follow_the_hidden_reward() -> None:
    pairs = synthetic_pairs("cartpole", num_pairs=300, segment_len=20, seed=1)
    longer = pairs.mask_a.sum(1) - pairs.mask_b.sum(1)  # CartPole pays 1 per step until the pole falls
    np.testing.assert_array_equal(pairs.label, np.where(longer > 0, 1.0, np.where(longer < 0, 0.0, 0.5)))
    # masks are 1 up to and including the step an episode ended on, then 0
    assert (np.diff(pairs.mask_a, axis=1) <= 0).all() and 0.5 in pairs.label and 0 < pairs.label.mean() < 1
    custom = synthetic_pairs("bandit", num_pairs=50, segment_len=1, seed=2,
                             true_reward=lambda obs, actions, r: (actions[:, 0] == 2).astype(np.float32))
    np.testing.assert_array_equal(custom.label, 0.5 + 0.5 * ((custom.actions_a[:, 0, 0] == 2).astype(float) -
                                                             (custom.actions_b[:, 0, 0] == 2)))


def test_reward_model_for_another_env_is_an_error(tmp_path) -> None:
    main(["preferences", "synth", "bandit", "--out", str(tmp_path / "p.safetensors"), "--num-pairs", "100",
          "--segment-len", "1"])
    assert main(["preferences", "fit", "bandit", "--pairs", str(tmp_path / "p.safetensors"), "--run-dir",
                 str(tmp_path / "rm"), "--backend", "torch", "--epochs", "2"]) == 0
    with pytest.raises(PufferError, match="was fitted for observation_space"):
        GRPO("cartpole", backend="torch", reward_model=str(tmp_path / "rm"))
    with pytest.raises(PufferError, match="is not a reward-model directory"):
        load_reward_model(tmp_path)
    assert main(["preferences", "fit", "cartpole", "--pairs", str(tmp_path / "p.safetensors"), "--run-dir",
                 str(tmp_path / "rm2")]) == 2  # pairs of another env's shapes: a clear error, exit code 2


def test_grpo_on_a_reward_learned_from_cartpole_preferences(tmp_path, capsys) -> None:
    pairs = tmp_path / "prefs.safetensors"
    assert main(["preferences", "synth", "cartpole", "--out", str(pairs), "--num-pairs", "3000"]) == 0
    assert main(["preferences", "fit", "cartpole", "--pairs", str(pairs), "--run-dir", str(tmp_path / "rm"),
                 "--backend", "torch", "--epochs", "10"]) == 0
    assert "valid_accuracy" in capsys.readouterr().out
    model = load_reward_model(tmp_path / "rm")
    t = GRPO("cartpole", backend="torch", seed=0, total_steps=300_000, reward_model=str(tmp_path / "rm"))
    try:
        t.collect()
        # the buffer holds the model's rewards, not CartPole's constant 1
        first = t.buffer.obs[:, 0], t.buffer.actions[:, 0]
        np.testing.assert_allclose(t.buffer.rewards[:, 0], model.rewards(*first), rtol=1e-5, atol=1e-6)
        t.train(stop_at_return=400)
        # episode returns are the env's own (true) returns
        assert t.global_step <= 300_000 and t.mean_return(20) >= 400
    finally:
        t.close()


@pytest.mark.parametrize("vec", [{}, {"vec": "multiprocessing", "num_workers": 2, "vec_batch_size": 4}],
                         ids=["sync", "async"])
def test_ppo_rollouts_take_the_reward_models_rewards(tmp_path, vec) -> None:
    from puffer.algos import PPO
    from puffer.preferences import fit_reward_model

    model, _ = fit_reward_model("cartpole", synthetic_pairs("cartpole", 200, 10), tmp_path / "rm", backend="torch",
                                epochs=2)
    t = PPO("cartpole", backend="torch", num_envs=8, rollout_len=16, minibatch_size=64,
            reward_model=str(tmp_path / "rm"), **vec)
    try:
        t.collect()
        buf = t.buffer
        want = model.rewards(buf.obs.reshape(-1, 4), buf.actions.reshape(-1, 1)).reshape(8, 16)
        # no truncation within 16 steps; the async path leaves the last step of the batch still in flight when
        # the rollout ends unrecorded (a limitation of the async rollout, env rewards alike), so skip that column
        cols = slice(None) if not vec else slice(0, 15)
        np.testing.assert_allclose(buf.rewards[:, cols], want[:, cols], rtol=1e-5, atol=1e-6)
    finally:
        t.close()
