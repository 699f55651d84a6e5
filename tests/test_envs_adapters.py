"""gymnasium's and PettingZoo's own checkers on puffer's wrappers of the native envs."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

from puffer.envs import registry
from puffer.envs.adapters import to_gymnasium, to_pettingzoo
from puffer.errors import SpaceError

SINGLE = [name for name, cls in registry().items() if cls.agents_per_env == 1]


@pytest.mark.parametrize("name", SINGLE)
def test_gymnasium_check_env(name):
    env = to_gymnasium(registry()[name], seed=0)
    assert isinstance(env, gymnasium.Env)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    # CartPole's unbounded velocities draw the same warning as gymnasium's own CartPole; nothing else may.
    assert [str(w.message) for w in caught if "infinity" not in str(w.message)] == []


def test_gymnasium_episode_end_returns_last_observation():
    env = to_gymnasium(registry()["squared"])
    obs, _ = env.reset(seed=0)
    native = env.native
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(int(native.oracle_actions()[0]))
        if terminated:
            break
    assert terminated and reward == 1.0 and not truncated
    np.testing.assert_array_equal(obs[:2], obs[2:])  # the agent stands on the target
    assert info["episode_return"] == 1.0 and info["success"] == 1 and info["episode_length"] >= 1
    obs2, _ = env.reset()
    np.testing.assert_array_equal(obs2[:2], [0, 0])


def test_gymnasium_dict_spaces_and_cost():
    env = to_gymnasium(registry()["spaces"])
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"image", "vector"} and obs["image"].dtype == np.uint8 and obs["vector"].dtype == np.int8
    labels = env.native.oracle_actions()[0]
    _, reward, terminated, _, _ = env.step({"image": int(labels[0]), "vector": int(labels[1])})
    assert reward == 1.0 and terminated
    with pytest.raises(SpaceError, match="dict action"):
        env.step(np.array([0, 1]))

    hazard = to_gymnasium(registry()["hazard"])
    hazard.reset(seed=0)
    costs = []
    for _ in range(60):
        _, _, terminated, truncated, info = hazard.step(np.array([1.0, 0.0], np.float32))
        costs.append(info["cost"])
        if terminated or truncated:
            break
    assert terminated and sum(costs) == info["episode_cost"] > 0


def test_gymnasium_rejects_bad_actions_and_multi_agent():
    env = to_gymnasium(registry()["bandit"])
    env.reset(seed=0)
    with pytest.raises(SpaceError, match="Bandit"):
        env.step(7)
    with pytest.raises(ValueError, match="to_pettingzoo"):
        to_gymnasium(registry()["landmarks"])


def test_pettingzoo_parallel_api_test():
    env = to_pettingzoo(registry()["landmarks"], seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(env, num_cycles=100)
    assert [str(w.message) for w in caught] == []


def test_pettingzoo_episode_state_and_errors():
    cls = registry()["landmarks"]
    env = to_pettingzoo(cls)
    obs, infos = env.reset(seed=0)
    assert env.agents == env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert env.state().shape == cls.single_state_space.shape == (12,)
    # The global state holds agent positions; each agent's observation starts with its own.
    for i, agent in enumerate(env.agents):
        np.testing.assert_array_equal(obs[agent][:2], env.state()[2 * i : 2 * i + 2])
    with pytest.raises(ValueError, match="agent_2"):
        env.step({"agent_0": 0, "agent_1": 0})
    for _ in range(cls.horizon):
        acts = dict(zip(env.possible_agents, env.native.oracle_actions().tolist()))
        obs, rewards, terms, truncs, infos = env.step(acts)
    assert all(truncs.values()) and not any(terms.values()) and env.agents == []
    assert len(set(rewards.values())) == 1  # one shared team reward
    assert {infos[a]["agent"] for a in env.possible_agents} == {0, 1, 2}
    # state() is the final state of the episode that ended, matching the last observations.
    np.testing.assert_array_equal(obs["agent_1"][:2], env.state()[2:4])
    with pytest.raises(RuntimeError, match="reset"):
        env.step(acts)
