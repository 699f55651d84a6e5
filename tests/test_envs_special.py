"""What each built-in env promises beyond the common contract: its mechanics, infos and documented numbers."""

from __future__ import annotations

import numpy as np
import pytest

from puffer import spaces as S
from puffer.envs import Bandit, Hazard, Landmarks, Memory, Password, Spaces, Squared, Stochastic, make
from puffer.errors import SpaceError


def play(env, policy, steps: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Episodes finished and the infos of every step, from reset(seed)."""
    env.reset(seed=seed)
    episodes, all_infos = [], []
    for _ in range(steps):
        *_, infos = env.step(policy(env))
        episodes += infos["episodes"]
        all_infos.append(infos)
    return episodes, all_infos


def mean(episodes: list[dict], key: str = "episode_return") -> float:
    return float(np.mean([ep[key] for ep in episodes]))


# ---- Hazard --------------------------------------------------------------------------------------
def test_hazard_tradeoff_between_return_and_cost():
    env = Hazard(512, seed=0)
    straight, _ = play(env, lambda e: e.oracle_actions(safe=False), 25)
    safe, _ = play(env, lambda e: e.oracle_actions(safe=True), 25)
    assert mean(straight) == pytest.approx(Hazard.optimal_return, abs=0.02)
    assert mean(straight, "episode_cost") == pytest.approx(9.3, abs=0.5)
    assert mean(safe) == pytest.approx(Hazard.safe_return, abs=0.02)
    assert max(ep["episode_cost"] for ep in safe) == 0
    assert mean(safe) >= Hazard.solved_return and mean(straight) > mean(safe) + 0.1
    assert all(ep["success"] == 1 for ep in straight + safe)


def test_hazard_cost_every_step_and_episode_cost_sums_it():
    env = Hazard(64, seed=0)
    _, infos = env.reset(seed=0)
    np.testing.assert_array_equal(infos["cost"], np.zeros(64, np.float32))
    rng = np.random.default_rng(0)
    running = np.zeros(64)
    episodes = 0
    for _ in range(150):
        # Mostly straight at the goal, with noise: some rows clip the disc, some miss it.
        actions = (env.oracle_actions(safe=False) + rng.normal(0, 0.7, (64, 2))).astype(np.float32)
        obs, _, term, trunc, infos = env.step(actions)
        cost = infos["cost"]
        assert cost.dtype == np.float32 and cost.shape == (64,) and set(np.unique(cost)) <= {0.0, 1.0}
        running += cost
        done = term | trunc
        for ep, row in zip(infos["episodes"], np.flatnonzero(done)):
            assert ep["episode_cost"] == running[row]
            episodes += 1
        running[done] = 0
        # The cost flags the position reported in the (final) observation: inside the disc.
        last = infos.get("final_observation", obs)
        np.testing.assert_array_equal(cost == 1, last[:, 6] < 0)
    assert episodes > 64


# ---- Landmarks -----------------------------------------------------------------------------------
def test_landmarks_global_state_and_per_agent_episodes():
    env = Landmarks(4, seed=0)
    n = Landmarks.agents_per_env
    obs, infos = env.reset(seed=0)
    for _ in range(Landmarks.horizon):
        state = infos["global_state"]
        assert state.shape == (12, 12) and state.dtype == np.float32
        per_env = state.reshape(4, n, -1)
        assert (per_env == per_env[:, :1]).all()  # the same state for every agent of an env
        # Agent positions in the state are each agent's own position in its observation.
        np.testing.assert_array_equal(per_env[:, 0, : 2 * n].reshape(-1, 2), obs[:, :2])
        # One-hot ids in the observation.
        np.testing.assert_array_equal(obs[:, -n:], np.tile(np.eye(n), (4, 1)))
        obs, rewards, term, trunc, infos = env.step(env.oracle_actions())
        assert (rewards.reshape(4, n) == rewards.reshape(4, n)[:, :1]).all()
        assert not term.any()
    assert trunc.all() and len(infos["episodes"]) == 12
    assert [ep["agent"] for ep in infos["episodes"]] == [0, 1, 2] * 4
    final_state = infos["final_global_state"]
    np.testing.assert_array_equal(final_state[:, : 2 * n].reshape(4, n, n, 2)[:, 0].reshape(-1, 2),
                                  infos["final_observation"][:, :2])
    assert not np.array_equal(final_state, infos["global_state"])


def test_landmarks_documented_baselines():
    # Episode returns spread widely (std 2.2 to 5.5): 2048 episodes give standard errors of 0.05 to 0.12.
    env = Landmarks(2048, seed=0)
    results = {kind: mean(play(env, lambda e, k=kind: e.oracle_actions(k), Landmarks.horizon)[0])
               for kind in ["optimal", "fixed", "nearest"]}
    assert results["optimal"] == pytest.approx(Landmarks.optimal_return, abs=0.2)
    assert results["fixed"] == pytest.approx(-6.2, abs=0.25)
    assert results["nearest"] == pytest.approx(-8.9, abs=0.5)
    assert results["optimal"] > Landmarks.solved_return > results["fixed"] > results["nearest"]
    with pytest.raises(ValueError, match="assignment"):
        env.oracle_actions("best")


@pytest.mark.parametrize("agents", [1, 5])
def test_landmarks_subclass_with_other_agent_counts(agents):
    cls = type("LandmarksN", (Landmarks,), {"agents_per_env": agents})
    env = cls(2, seed=0)
    obs, infos = env.reset(seed=0)
    assert obs.shape == (2 * agents, 5 * agents) and infos["global_state"].shape == (2 * agents, 4 * agents)
    for _ in range(Landmarks.horizon):
        *_, infos = env.step(env.oracle_actions())
    assert len(infos["episodes"]) == 2 * agents


# ---- the ocean suite -----------------------------------------------------------------------------
def test_stochastic_optimum_is_stochastic():
    assert Stochastic.expected_return(Stochastic.optimal_q) == pytest.approx(Stochastic.optimal_return, abs=1e-4)
    grid = np.linspace(0, 1, 201)
    best = grid[np.argmax([Stochastic.expected_return(q) for q in grid])]
    assert best == pytest.approx(Stochastic.optimal_q, abs=0.01)
    # Deterministic memoryless policies are far below the threshold.
    assert Stochastic.expected_return(1.0) == pytest.approx(2 / 3)
    assert Stochastic.expected_return(0.0) == 0.0
    assert max(Stochastic.expected_return(1.0), Stochastic.expected_return(0.0)) < Stochastic.solved_return
    # The simulation agrees with the formula.
    episodes, _ = play(Stochastic(512, seed=0), lambda e: np.ones(e.num_agents, np.int64), 32)
    assert mean(episodes) == pytest.approx(2 / 3, abs=1e-6)


def test_memory_needs_memory():
    env = Memory(512, seed=0, length=4)
    obs, _ = env.reset(seed=0)
    assert (obs[:, :2].sum(axis=1) == 1).all() and (obs[:, 2] == 0).all()  # the cue, step 0 only
    for t in range(1, 4):
        obs, rew, term, _, _ = env.step(np.zeros(512, np.int64))
        assert (obs[:, :2] == 0).all() and (obs[:, 2] == (t == 3)).all() and not term.any()
    # A memoryless policy (here: always 0) is right only half the time.
    episodes, _ = play(env, lambda e: np.zeros(e.num_agents, np.int64), 40)
    assert mean(episodes) == pytest.approx(0.5, abs=0.05)
    assert mean(episodes, "success") == mean(episodes)
    with pytest.raises(ValueError, match="length"):
        Memory(1, length=1)


def test_password_needs_every_bit():
    env = Password(3, seed=0)
    obs, _ = env.reset(seed=0)
    bits = [int(c) for c in Password.password]
    wrong_last = bits[:-1] + [1 - bits[-1]]
    for t in range(len(bits)):
        obs, rew, term, _, infos = env.step(np.array([bits[t], wrong_last[t], 1 - bits[t]]))
        if t == 0:
            np.testing.assert_array_equal(obs[:, 0], np.where(np.array([bits[0], bits[0], 1 - bits[0]]) == 1, 1, -1))
    assert term.all()
    np.testing.assert_array_equal(rew, [1, 0, 0])
    assert [ep["success"] for ep in infos["episodes"]] == [1, 0, 0]
    np.testing.assert_array_equal(infos["final_observation"][0], np.where(np.array(bits) == 1, 1, -1))
    assert (obs == 0).all()  # auto-reset: nothing typed yet


def test_password_subclass():
    class Longer(Password):
        password = "1100101"

    env = Longer(2, seed=0)
    assert env.reset(seed=0)[0].shape == (2, 7)
    episodes, _ = play(env, lambda e: e.oracle_actions(), 7)
    assert [ep["episode_return"] for ep in episodes] == [1.0, 1.0]
    with pytest.raises(ValueError, match="0s and 1s"):
        type("Bad", (Password,), {"password": "12"})


def test_squared_mechanics():
    env = Squared(2000, seed=0, size=5)
    obs, _ = env.reset(seed=0)
    assert (obs[:, :2] == 0).all() and not (obs[:, 2:] == 0).all(axis=1).any()  # target never on the start
    assert len({tuple(r) for r in obs[:, 2:]}) == 24  # every other cell is a target
    for _ in range(env.max_steps):
        _, _, term, trunc, infos = env.step(np.zeros(env.num_agents, np.int64))  # stand still
    assert trunc.all() and not term.any() and infos["episodes"][0]["episode_length"] == 8
    assert infos["episodes"][0]["success"] == 0
    with pytest.raises(ValueError, match="odd"):
        Squared(1, size=4)


def test_bandit_arms():
    env = Bandit(20000, seed=0, best_arm=1)
    env.reset(seed=0)
    for arm, p in enumerate([0.2, 0.8, 0.2, 0.2]):
        _, rew, term, _, infos = env.step(np.full(env.num_agents, arm))
        assert rew.mean() == pytest.approx(p, abs=0.02) and term.all()
        assert infos["episodes"][0]["success"] == int(arm == 1)
    with pytest.raises(ValueError, match="best_arm"):
        Bandit(1, best_arm=4)


def test_spaces_structured_observations_and_actions():
    env = Spaces(64, seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == S.structured_dtype(Spaces.single_observation_space)
    assert obs["image"].dtype == np.uint8 and obs["image"].shape == (64, 5, 5)
    assert obs["vector"].dtype == np.int8 and set(np.unique(obs["vector"])) == {-1, 1}
    labels = env.oracle_actions()
    np.testing.assert_array_equal(labels[:, 0], obs["image"].reshape(64, -1).sum(1) > 12)
    np.testing.assert_array_equal(labels[:, 1], obs["vector"].sum(1) > 0)
    _, rew, *_ = env.step({"image": labels[:, 0], "vector": 1 - labels[:, 1]})
    assert (rew == 0.5).all()
    for bad, reason in [({"image": labels[:, 0]}, r"got a dict with keys \['image'\] \(dict keys must be"),
                        (labels[:, :1], "wrong shape"),
                        (labels + 1, "out of range"), (labels.astype(float), "integer dtype")]:
        with pytest.raises(SpaceError, match=reason):
            env.step(bad)


def test_spaces_writes_into_a_byte_buffer():
    """The vector layer may hand a uint8 [rows, itemsize] block of shared memory for the records."""
    itemsize = S.structured_dtype(Spaces.single_observation_space).itemsize
    raw = np.zeros((4, itemsize), np.uint8)
    buffers = {"observations": raw, "rewards": np.zeros(4, np.float32), "terminals": np.zeros(4, bool),
               "truncations": np.zeros(4, bool), "masks": np.zeros(4, bool)}
    env = Spaces(4, seed=0, buffers=buffers)
    obs, _ = env.reset(seed=0)
    assert np.shares_memory(obs, raw) and raw.any()
    np.testing.assert_array_equal(S.from_structured(Spaces.single_observation_space, S.bytes_view(
        Spaces.single_observation_space, raw))["vector"], obs["vector"])


def test_continuous_success_threshold():
    env = make("continuous", 4, seed=0)
    obs, _ = env.reset(seed=0)
    offsets = np.array([[0, 0], [0.05, 0], [0.2, 0], [3, 3]], np.float32)
    target = obs.copy()
    _, rew, *_, infos = env.step(np.clip(target + offsets, -1, 1))
    assert [ep["success"] for ep in infos["episodes"]][:3] == [1, 1, 0]
    np.testing.assert_allclose(rew[:3], [1.0, 0.95, 0.8], atol=1e-6)
