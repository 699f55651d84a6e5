"""CartPole against gymnasium's CartPole-v1: same state and actions give the same trajectory."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from puffer.envs import CartPole


def _gym_envs(n: int, seed: int) -> list:
    envs = []
    for i in range(n):
        env = gymnasium.make("CartPole-v1")
        env.reset(seed=seed + i)
        envs.append(env)
    return envs


def _sync_start(ours: CartPole, theirs: list) -> None:
    """Give both the same float32-exact start state (gymnasium keeps float64, we keep float32)."""
    for i, env in enumerate(theirs):
        start = np.asarray(env.unwrapped.state, np.float32)
        env.unwrapped.state = start.astype(np.float64)
        ours.state[:, i] = start
        ours.observations[i] = start


@pytest.mark.parametrize("policy", ["random", "balancing"])
def test_trajectories_match_gymnasium(policy):
    """Step 8 gymnasium CartPole-v1 envs and one batch of 8 in lockstep until every env has ended once.

    Random play runs both freely (episodes of ~10-60 steps). The balancing controller keeps the pole
    up for 500 steps, but under shared actions the open-loop dynamics amplify float32-vs-float64
    rounding ~e^0.11 per step, so there gymnasium is re-synced to our state before every step: each
    of the 500 transitions, and the truncation, is compared from the same state.
    """
    n = 8
    ours = CartPole(n, seed=0)
    ours.reset(seed=0)
    theirs = _gym_envs(n, seed=100)
    _sync_start(ours, theirs)
    rng = np.random.default_rng(0)
    ended = np.zeros(n, bool)
    worst = 0.0
    for _ in range(500):
        actions = rng.integers(0, 2, n) if policy == "random" else ours.oracle_actions()
        if policy == "balancing":
            for i, env in enumerate(theirs):
                env.unwrapped.state = ours.state[:, i].astype(np.float64)
        obs, rew, term, trunc, infos = ours.step(actions)
        last = infos.get("final_observation", obs)
        for i, env in enumerate(theirs):
            if ended[i]:
                continue
            g_obs, g_rew, g_term, g_trunc, _ = env.step(int(actions[i]))
            assert g_obs.dtype == last.dtype == np.float32
            worst = max(worst, float(np.abs(last[i] - g_obs).max()))
            np.testing.assert_allclose(last[i], g_obs, rtol=1e-4, atol=1e-4)
            assert (rew[i], term[i], trunc[i]) == (g_rew, g_term, g_trunc)
            if g_term or g_trunc:
                ended[i] = True
                # Auto-reset: the returned row is a fresh start inside gymnasium's reset range.
                assert np.all(np.abs(obs[i]) <= 0.05)
        if ended.all():
            break
    assert ended.all()
    assert worst < 1e-4
    if policy == "balancing":
        assert all(env.unwrapped.steps_beyond_terminated is None for env in theirs)  # all truncated at 500
        assert all(ep["episode_length"] == 500 for ep in infos["episodes"]) and len(infos["episodes"]) == n


def test_physics_step_from_arbitrary_states():
    """One step from many random states (both actions) matches gymnasium's equations to float32 precision."""
    n = 256
    rng = np.random.default_rng(1)
    states = rng.uniform([-2.3, -2, -0.2, -2], [2.3, 2, 0.2, 2], (n, 4)).astype(np.float32)
    actions = rng.integers(0, 2, n)
    ours = CartPole(n, seed=0)
    ours.reset(seed=0)
    ours.state[:] = states.T
    obs, _, term, _, infos = ours.step(actions)
    last = infos.get("final_observation", obs)
    env = gymnasium.make("CartPole-v1").unwrapped
    env.reset(seed=0)
    for i in range(n):
        env.state = states[i].astype(np.float64)
        env.steps_beyond_terminated = None  # a fresh state, not a step after termination
        g_obs, _, g_term, _, _ = env.step(int(actions[i]))
        np.testing.assert_allclose(last[i], g_obs, rtol=1e-5, atol=1e-6)
        assert term[i] == g_term


def test_truncation_and_configurable_limit():
    env = CartPole(4, seed=0, max_episode_steps=20)
    env.reset(seed=0)
    for t in range(20):
        _, _, term, trunc, infos = env.step(env.oracle_actions())
        assert not term.any()
        assert trunc.all() == (t == 19)
    assert [ep["episode_length"] for ep in infos["episodes"]] == [20] * 4
    assert [ep["episode_return"] for ep in infos["episodes"]] == [20.0] * 4
    with pytest.raises(ValueError, match="max_episode_steps"):
        CartPole(1, max_episode_steps=0)


def test_resets_stay_deterministic_across_pool_refills():
    """Reset draws come from a pre-generated pool; refills keep the seeded sequence reproducible."""
    a, b = CartPole(64, seed=0), CartPole(64, seed=0)
    rng = np.random.default_rng(0)
    a.reset(seed=11)
    b.reset(seed=11)
    for _ in range(600):  # random play ends ~3 episodes per env per 60 steps: several pool refills
        actions = rng.integers(0, 2, 64)
        np.testing.assert_array_equal(a.step(actions)[0], b.step(actions)[0])
