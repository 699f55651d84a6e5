"""puffer.emulation: gymnasium and PettingZoo envs as flat rows (nested, mixed dtypes, mixed actions, agents)."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces as gs

from puffer import spaces as S
from puffer.emulation import ActionEmulator, GymnasiumEnvs, PettingZooEnvs, emulate_action_space
from puffer.errors import SpaceError

pettingzoo = pytest.importorskip("pettingzoo")


class NestedEnv(gym.Env):
    """Dict observation with mixed dtypes; Dict action mixing discrete and continuous leaves.

    Terminates when the discrete action `stop` is 1, truncates after `limit` steps; reward = the step
    index; info carries a per-step cost and, at the end, `is_success`.
    """

    def __init__(self, limit=3):
        self.observation_space = gs.Dict({
            "img": gs.Box(0, 255, (2, 2), np.uint8),
            "pos": gs.Tuple([gs.Box(-1.0, 1.0, (2,), np.float32), gs.Discrete(5, start=-2)]),
        })
        self.action_space = gs.Dict({"stop": gs.Discrete(2), "move": gs.Box(-1.0, 1.0, (2,), np.float32),
                                     "mode": gs.MultiDiscrete([3, 4], start=[1, 0])})
        self.limit = limit
        self.received = []

    def _obs(self):
        t = self.t
        return {"img": np.full((2, 2), t, np.uint8), "pos": (np.array([t / 10, -t / 10], np.float32), t % 5 - 2)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = int(self.np_random.integers(0, 3)) * 10
        self.t0 = self.t
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.received.append(action)
        self.t += 1
        term = bool(action["stop"] == 1)
        trunc = self.t - self.t0 >= self.limit and not term
        info = {"cost": 0.5, "is_success": term}
        return self._obs(), float(self.t), term, trunc, info


def nested_actions(rows, stop):
    # gymnasium sorts Dict keys (mode, move, stop); discrete columns come first: [mode0, mode1, stop],
    # then the continuous ones [move0, move1].
    a = np.zeros((rows, 5), np.float32)
    a[:, 2] = stop
    a[:, 0], a[:, 1] = 2, 3
    a[:, 3:] = [0.5, 7.0]  # 7.0 is clipped to the Box's bound 1.0
    return a


def test_nested_mixed_dtype_observation_is_flat_and_unflattens():
    env = GymnasiumEnvs(NestedEnv, 3, seed=0)
    obs, infos = env.reset()
    assert infos == {"episodes": []}
    assert env.single_observation_space == S.Box(
        [0, 0, 0, 0, -1, -1, -2], [255, 255, 255, 255, 1, 1, 2], (7,), np.float32)
    assert obs.shape == (3, 7) and obs.dtype == np.float32
    nested = S.unflatten(env.structured_observation_space, obs)
    ts = [e.t for e in env.envs]
    np.testing.assert_array_equal(nested["img"], np.array(ts, np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8))
    assert nested["img"].dtype == np.uint8
    np.testing.assert_array_equal(nested["pos"][1], [t % 5 - 2 for t in ts])
    assert env.masks.all()


def test_mixed_action_space_decodes_per_leaf():
    env = GymnasiumEnvs(NestedEnv, 2, seed=0)
    assert env.single_action_space == S.Tuple((S.MultiDiscrete([3, 4, 2]), S.Box(-1, 1, (2,))))
    env.reset()
    env.step(nested_actions(2, stop=0))
    act = env.envs[0].received[-1]
    assert act["stop"] == 0
    np.testing.assert_array_equal(act["mode"], [3, 3])  # start [1, 0] added back
    np.testing.assert_array_equal(act["move"], [0.5, 1.0])  # clipped
    assert act["move"].dtype == np.float32
    bad = nested_actions(2, stop=0)
    bad[0, 2] = 0.5
    with pytest.raises(SpaceError, match="integral"):
        env.step(bad)
    bad[0, 2] = 2
    with pytest.raises(SpaceError, match=r"^env: actions must be Tuple\(MultiDiscrete"):
        env.step(bad)


def test_auto_reset_final_observation_truncation_vs_termination_and_episode_stats():
    env = GymnasiumEnvs(NestedEnv, 2, seed=1, name="nested")
    obs, _ = env.reset()
    start = [e.t for e in env.envs]
    stop = np.array([1, 0], np.float32)  # env 0 terminates at once, env 1 runs into its time limit
    a = nested_actions(2, 0)
    a[:, 2] = stop
    obs, rew, term, trunc, infos = env.step(a)
    np.testing.assert_array_equal(term, [True, False])
    np.testing.assert_array_equal(trunc, [False, False])
    np.testing.assert_array_equal(rew, [start[0] + 1, start[1] + 1])
    np.testing.assert_array_equal(infos["cost"], [0.5, 0.5])
    assert infos["episodes"] == [{"episode_return": start[0] + 1.0, "episode_length": 1, "episode_cost": 0.5,
                                  "cost": 0.5, "is_success": True}]
    fo = infos["final_observation"]
    # Row 0 ended: its final observation is the last one, its returned row the next episode's first.
    assert fo[0, 0] == start[0] + 1 and obs[0, 0] == env.envs[0].t0
    np.testing.assert_array_equal(fo[1], obs[1])
    for _ in range(2):
        obs, rew, term, trunc, infos = env.step(nested_actions(2, 0))
    assert trunc[1] and not term[1]
    ep = [e for e in infos["episodes"] if e["episode_length"] == 3]
    assert ep and ep[0]["is_success"] is False and ep[0]["episode_cost"] == 1.5


def test_seeding_is_per_env_and_reproducible():
    a = GymnasiumEnvs(NestedEnv, 4, seed=3)
    b = GymnasiumEnvs(NestedEnv, 4)
    np.testing.assert_array_equal(a.reset()[0], b.reset(seed=3)[0].copy())
    assert len({e.t0 for e in a.envs}) > 1 or True  # seeds differ per env (seed + i)
    np.testing.assert_array_equal(a.reset(seed=9)[0], b.reset(seed=9)[0])


def test_uniform_dtype_observation_keeps_dtype_and_writes_in_place():
    class Img(gym.Env):
        observation_space = gs.Dict({"a": gs.Box(0, 255, (3, 2), np.uint8), "b": gs.Box(0, 255, (1,), np.uint8)})
        action_space = gs.Discrete(3, start=1)

        def reset(self, seed=None, options=None):
            return {"a": np.full((3, 2), 7, np.uint8), "b": np.array([9], np.uint8)}, {}

        def step(self, action):
            assert action in (1, 2, 3)
            self.last = action
            return self.reset()[0], 0.0, False, False, {}

    buffers = {"observations": np.zeros((2, 7), np.uint8), "rewards": np.zeros(2, np.float32),
               "terminals": np.zeros(2, bool), "truncations": np.zeros(2, bool), "masks": np.zeros(2, bool)}
    env = GymnasiumEnvs(Img, 2, buffers=buffers)
    assert env.single_observation_space.dtype == np.uint8 and env.single_action_space == S.Discrete(3)
    obs, _ = env.reset()
    assert obs is buffers["observations"]  # no copy: written into the caller's buffer
    np.testing.assert_array_equal(obs[0], [7] * 6 + [9])
    env.step(np.array([0, 2]))
    assert [e.last for e in env.envs] == [1, 3]
    with pytest.raises(SpaceError, match=r"Discrete\(3\).*values in \[0, 3\].*out of range"):
        env.step(np.array([0, 3]))
    with pytest.raises(SpaceError, match="wrong shape"):
        env.step(np.array([0, 1, 2]))
    with pytest.raises(SpaceError, match="integer"):
        env.step(np.array([0.0, 1.0]))


def test_action_space_emulation_rules():
    assert emulate_action_space(S.Discrete(4, start=2)) == S.Discrete(4)
    assert emulate_action_space(S.Dict(a=S.Discrete(3), b=S.MultiBinary(2))) == S.MultiDiscrete([3, 2, 2])
    assert emulate_action_space(S.Tuple([S.Discrete(3), S.MultiDiscrete([[2, 5]])])) == S.MultiDiscrete([3, 2, 5])
    assert emulate_action_space(S.Box(-2, 2, (2, 3))) == S.Box(-2, 2, (6,))
    assert emulate_action_space(S.Dict(x=S.Box(0, 1, (2,)), y=S.Box(-1, 0, (1,)))) == S.Box([0, 0, -1], [1, 1, 0])
    em = ActionEmulator([S.Dict(d=S.Discrete(3), c=S.Box(-1, 1, (2,)))])
    assert em.kind == "mixed" and em.buffer_layout(4) == ((4, 3), np.float32)
    batch = em.sample(16, 0)
    assert em.check(batch, 16, "x") is batch
    decoded = em.decode_rows(batch)
    assert all(S.Dict(d=S.Discrete(3), c=S.Box(-1, 1, (2,))).contains(d) for d in decoded)


def test_unflattenable_space_names_the_leaf_path():
    class TextEnv(gym.Env):
        observation_space = gs.Dict({"ok": gs.Discrete(2), "bad": gs.Tuple([gs.Text(4)])})
        action_space = gs.Discrete(2)

    with pytest.raises(SpaceError, match=r"\['bad'\]\[0\].*Text"):
        GymnasiumEnvs(TextEnv, 1)


# ------------------------------------------------------------------------------------------- multi-agent

from pettingzoo import ParallelEnv  # noqa: E402


class Agents(ParallelEnv):
    """Three possible agents with different spaces; 'c' joins at step 1; 'a' dies at step 2; all end at 4.

    Rewards differ per agent (a: 1, b: 10, c: 100 per step) so summing or misplacing them shows.
    """

    metadata = {"name": "agents_v0"}

    def __init__(self):
        self.possible_agents = ["a", "b", "c"]
        self._obs = {"a": gs.Box(-1, 1, (2,), np.float32), "b": gs.Box(-1, 1, (3,), np.float32),
                     "c": gs.Dict({"x": gs.Discrete(4), "y": gs.Box(0, 1, (1,), np.float32)})}
        self._act = {"a": gs.Discrete(2), "b": gs.Discrete(4), "c": gs.Discrete(3)}
        self.state_space = gs.Box(-np.inf, np.inf, (2,), np.float32)
        self.log = []

    def observation_space(self, agent):
        return self._obs[agent]

    def action_space(self, agent):
        return self._act[agent]

    def _ob(self, agent):
        if agent == "c":
            return {"x": self.t % 4, "y": np.array([0.5], np.float32)}
        return np.full(self._obs[agent].shape, self.t / 10, np.float32)

    def state(self):
        return np.array([self.t, len(self.agents)], np.float32)

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = ["a", "b"]
        return {ag: self._ob(ag) for ag in self.agents}, {ag: {} for ag in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        for ag, act in actions.items():
            assert self._act[ag].contains(act), (ag, act)
        self.log.append(dict(actions))
        self.t += 1
        live = list(self.agents)
        if self.t == 1:
            self.agents = live + ["c"]
        rew = {ag: {"a": 1.0, "b": 10.0, "c": 100.0}[ag] for ag in live}
        term = {ag: (ag == "a" and self.t == 2) for ag in live}
        trunc = {ag: self.t == 4 for ag in live}
        infos = {ag: {"cost": 0.25} if ag == "b" else {} for ag in live}
        # Dying agents get a last observation, a joining agent its first.
        obs = {ag: self._ob(ag) for ag in self.agents}
        self.agents = [ag for ag in self.agents if not (term.get(ag) or trunc.get(ag))]
        return obs, rew, term, trunc, infos


def test_pettingzoo_fixed_slots_padding_masks_and_per_agent_values():
    env = PettingZooEnvs(Agents, 2, seed=0)
    A = env.agents_per_env
    assert A == 3 and env.num_agents == 6
    assert env.single_observation_space.shape == (3,)  # padded to the largest agent
    assert env.single_action_space == S.Discrete(4)
    assert isinstance(env.structured_observation_space, S.Dict)
    obs, infos = env.reset()
    np.testing.assert_array_equal(env.masks, [True, True, False] * 2)
    np.testing.assert_array_equal(obs[2], 0)
    np.testing.assert_array_equal(infos["global_state"][:3], [[0, 2]] * 3)
    # Agent b's action 3 is valid; agent a's 3 is clipped to its own maximum 1; absent c's is not sent.
    obs, rew, term, trunc, infos = env.step(np.array([3, 3, 2] * 2))
    assert env.envs[0].log[-1] == {"a": 1, "b": 3}
    np.testing.assert_array_equal(rew, [1, 10, 0] * 2)  # per agent, never summed
    np.testing.assert_array_equal(env.masks, [True, True, True] * 2)  # c joined with its first observation
    np.testing.assert_allclose(obs[2], [1, 0.5, 0])  # c's Dict flattens to [x, y], then zero padding
    obs, rew, term, trunc, infos = env.step(np.array([0, 0, 2] * 2))
    assert env.envs[0].log[-1] == {"a": 0, "b": 0, "c": 2}
    np.testing.assert_array_equal(rew, [1, 10, 100] * 2)
    np.testing.assert_array_equal(term, [True, False, False] * 2)
    assert not trunc.any()
    np.testing.assert_array_equal(env.masks, [True, True, True] * 2)
    np.testing.assert_array_equal(infos["cost"], [0, 0.25, 0] * 2)
    assert [e["agent"] for e in infos["episodes"]] == ["a", "a"]
    assert infos["episodes"][0]["episode_return"] == 2.0 and infos["episodes"][0]["episode_length"] == 2
    # Heterogeneous layouts: b's 3 values fill its row, a's 2 are padded with a zero.
    np.testing.assert_allclose(obs[1], [0.2, 0.2, 0.2])
    np.testing.assert_allclose(obs[2], [2, 0.5, 0])
    np.testing.assert_allclose(infos["final_observation"][0], [0.2, 0.2, 0])
    obs, rew, term, trunc, infos = env.step(np.array([0, 0, 0] * 2))
    np.testing.assert_array_equal(env.masks, [False, True, True] * 2)  # a is dead: padded, masked
    np.testing.assert_array_equal(rew, [0, 10, 100] * 2)
    np.testing.assert_array_equal(obs[0], 0)
    obs, rew, term, trunc, infos = env.step(np.array([0, 0, 0] * 2))
    # Everyone truncated at t=4: the env reset in the same step; truncation, not termination.
    np.testing.assert_array_equal(trunc, [False, True, True] * 2)
    assert not term.any()
    # Rows in use this step: a is back (new episode), b and c carry their last rewards.
    np.testing.assert_array_equal(env.masks, [True, True, True] * 2)
    np.testing.assert_array_equal(rew, [0, 10, 100] * 2)
    np.testing.assert_allclose(obs[:3], [[0, 0, 0], [0, 0, 0], [0, 0, 0]])  # t=0 again; c absent at reset
    np.testing.assert_allclose(infos["final_observation"][1], [0.4, 0.4, 0.4])
    returns = {e["agent"]: e["episode_return"] for e in infos["episodes"][:2]}
    assert returns == {"b": 40.0, "c": 300.0}
    assert infos["episodes"][0]["episode_cost"] == 1.0
    np.testing.assert_array_equal(infos["global_state"][3:], [[0, 2]] * 3)
    obs, rew, term, trunc, infos = env.step(np.array([0, 0, 0] * 2))
    assert env.envs[1].log[-1] == {"a": 0, "b": 0}  # c's row held no live agent: its action was dropped
    np.testing.assert_array_equal(rew, [1, 10, 0] * 2)


def test_float64_observations_narrow_to_float32_and_box_actions_reshape():
    class F64(gym.Env):
        observation_space = gs.Box(-1, 1, (3,), np.float64)
        action_space = gs.Box(-1, 1, (2, 2), np.float64)

        def reset(self, seed=None, options=None):
            return np.full(3, 0.25), {}

        def step(self, action):
            self.last = action
            return np.full(3, 0.5), 0.0, False, False, {}

    env = GymnasiumEnvs(F64, 2)
    assert env.single_observation_space == S.Box(-1, 1, (3,), np.float32)
    assert env.single_action_space == S.Box(-1, 1, (4,), np.float32)
    assert env.reset()[0].dtype == np.float32
    env.step(np.array([[0, 1, 2, -3]] * 2, np.float32))
    assert env.envs[0].last.shape == (2, 2) and env.envs[0].last.dtype == np.float64
    np.testing.assert_array_equal(env.envs[0].last, [[0, 1], [1, -1]])  # clipped to the bounds
    with pytest.raises(SpaceError, match="not finite"):
        env.step(np.full((2, 4), np.nan, np.float32))
