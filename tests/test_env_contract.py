"""The env contract the next algorithms rely on: global state, per-step cost arrays, grouped resets."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces as gs
from pettingzoo import ParallelEnv

import puffer
from puffer.errors import PufferError, SpaceError
from puffer.vector import WorkerError, make

# ------------------------------------------------------------------------------------------- tiny envs


class CostEnv(gym.Env):
    """obs = [start, t]; the start is drawn from the reset seed; cost = 0.5 * action, reported in info.

    Ends (terminated) after 3 steps. `six=True` reports the cost as safety-gymnasium does instead:
    `step` returns (obs, reward, cost, terminated, truncated, info). `bad=True` reports a cost of shape (2,).
    """

    observation_space = gs.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gs.Discrete(3)

    def __init__(self, six=False, bad=False):
        self.six, self.bad = six, bad

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.start, self.t = float(self.np_random.uniform(-1, 1)), 0
        return np.array([self.start, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        cost = np.full(2, 0.5) if self.bad else 0.5 * float(action)
        obs = np.array([self.start, self.t], np.float32)
        if self.six:
            return obs, 1.0, cost, self.t == 3, False, {}
        return obs, 1.0, self.t == 3, False, {"cost": cost}


class Team(ParallelEnv):
    """Two agents; state = [offset, t] with offset drawn from the reset seed; all agents end at step 3."""

    metadata = {"name": "team_v0"}

    def __init__(self):
        self.possible_agents = ["a", "b"]
        self.state_space = gs.Box(-np.inf, np.inf, (2,), np.float32)
        self.rng = np.random.default_rng()

    def observation_space(self, agent):
        return gs.Box(-np.inf, np.inf, (2,), np.float32)

    def action_space(self, agent):
        return gs.Discrete(2)

    def state(self):
        return np.array([self.offset, self.t], np.float32)

    def _obs(self):
        return {ag: np.array([self.offset + i, self.t], np.float32) for i, ag in enumerate(self.agents)}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.offset, self.t, self.agents = float(self.rng.uniform(-1, 1)), 0, list(self.possible_agents)
        return self._obs(), {ag: {} for ag in self.agents}

    def step(self, actions):
        self.t += 1
        self.offset += 0.1 * sum(actions.values())
        done = self.t == 3
        obs = self._obs()
        rew = {ag: float(a) for ag, a in actions.items()}
        infos = {ag: {"cost": 0.25 * a} for ag, a in actions.items()}
        term = {ag: done for ag in self.agents}
        trunc = {ag: False for ag in self.agents}
        if done:
            self.agents = []
        return obs, rew, term, trunc, infos


class SeedlessReset(CostEnv):
    def reset(self):  # an old-API env: no seed
        return super().reset()


class Fixed(puffer.envs.base.NativeEnv):
    """A native env that opts out of grouped resets."""

    single_observation_space = puffer.spaces.Box(-1, 1, (1,), np.float32)
    single_action_space = puffer.spaces.Discrete(2)
    supports_group_reset = False

    def _reset_rows(self, rows):
        self.observations[rows] = 0

    def _step(self, actions):
        self.rewards[:] = 0


class BadCost(Fixed):
    """A native env whose `cost` has one value too many."""

    supports_group_reset = True

    def _add_infos(self, infos):
        infos["cost"] = np.zeros(self.num_agents + 1, np.float32)


def backends(num_envs, batch=None):
    """(backend, kwargs) pairs: serial, multiprocessing sync over 2 workers and, with `batch`, async."""
    out = [("serial", {}), ("multiprocessing", {"num_workers": 2})]
    if batch:
        out.append(("multiprocessing", {"num_workers": 2, "batch_size": batch}))
    return out


# ------------------------------------------------------------------------------------------- global state

@pytest.mark.parametrize("backend,kw", backends(4), ids=["serial", "mp"])
def test_landmarks_global_state_every_step_and_at_the_true_final_step(backend, kw):
    """Landmarks publishes [rows, 12] float32 state; on auto-reset final_global_state is the last state."""
    with make("landmarks", num_envs=4, backend=backend, seed=0, **kw) as env:
        assert env.single_state_space.shape == (12,) and env.single_state_space.dtype == np.float32
        obs, infos = env.reset(seed=1)
        assert infos["global_state"].shape == (12, 12) and infos["global_state"].dtype == np.float32
        previous = infos["global_state"].copy()
        rng = np.random.default_rng(0)
        for t in range(25):
            obs, _, term, trunc, infos = env.step(rng.integers(0, 5, 12))
            state = infos["global_state"]
            assert state.shape == (12, 12)
            if t < 24:
                assert "final_global_state" not in infos
                previous = state.copy()
        assert trunc.all()
        final = infos["final_global_state"]
        # The final state's landmarks are the episode's landmarks; the returned state is a new episode.
        np.testing.assert_array_equal(final[:, 6:], previous[:, 6:])
        assert not np.array_equal(final, state)
        # Agent positions of the true last step match each agent's own position in final_observation.
        np.testing.assert_array_equal(final[:, :6].reshape(4, 3, 3, 2)[:, 0].reshape(-1, 2),
                                      infos["final_observation"][:, :2])


def test_envs_without_state_have_none():
    with make("cartpole", num_envs=2) as env:
        assert env.single_state_space is None
        _, infos = env.reset(seed=0)
        assert "global_state" not in infos
    with make(CostEnv, num_envs=2) as env:
        assert env.single_state_space is None


@pytest.mark.parametrize("backend,kw", backends(4, batch=4), ids=["serial", "mp", "mp-async"])
def test_pettingzoo_state_every_step_and_final_state_before_auto_reset(backend, kw):
    """state() of every env in its agents' rows; on the all-done step final_global_state holds the last state."""
    with make(Team, num_envs=4, backend=backend, **kw) as env:
        assert env.single_state_space.shape == (2,) and env.single_state_space.dtype == np.float32
        env.async_reset(seed=3)
        ended: set[int] = set()
        for _ in range(40):  # async batches may run ahead of each other: go on until every row ended once
            if len(ended) == env.num_agents:
                break
            obs, _, term, _, infos, ids, _ = env.recv()
            state = infos["global_state"]
            assert state.shape == (len(ids), 2) and state.dtype == np.float32
            # Each agent's row holds its env's state: offset of agent 0's observation, step count.
            np.testing.assert_allclose(state[::2, 0], obs[::2, 0], rtol=1e-6)
            np.testing.assert_array_equal(state[::2], state[1::2])
            if term.any():
                ended.update(ids.tolist())
                final = infos["final_global_state"]
                np.testing.assert_array_equal(final[:, 1], 3)  # the state of step 3, before the reset
                np.testing.assert_array_equal(state[:, 1], 0)  # the returned state starts the next episode
                np.testing.assert_allclose(final[::2, 0], infos["final_observation"][::2, 0], rtol=1e-6)
            else:
                assert "final_global_state" not in infos
            env.send(np.ones(len(ids), np.int64))
        assert len(ended) == env.num_agents


def test_final_global_state_of_workers_where_nothing_ended_is_the_global_state():
    """Across workers, rows of a worker whose envs went on hold global_state in final_global_state."""
    with make(Team, num_envs=4, backend="multiprocessing", num_workers=2) as env:
        env.reset(seed=0)
        ones = np.ones(8, np.int64)
        env.step(ones)
        env.reset_group([0, 1], seed=1)  # worker 0's envs now end one step after worker 1's
        env.step(ones)
        _, _, term, _, infos = env.step(ones)
        np.testing.assert_array_equal(term, [False] * 4 + [True] * 4)
        final, state = infos["final_global_state"], infos["global_state"]
        np.testing.assert_array_equal(final[:4], state[:4])
        np.testing.assert_array_equal(final[4:, 1], 3)
        np.testing.assert_array_equal(state[4:, 1], 0)


def test_pettingzoo_state_of_the_wrong_size_is_an_error():
    class Wrong(Team):
        def state(self):
            return np.zeros(3, np.float32)

    with make(Wrong, num_envs=1) as env, pytest.raises(SpaceError, match=r"Wrong.*state\(\) has shape \(3,\)"):
        env.reset(seed=0)


# ------------------------------------------------------------------------------------------- cost

@pytest.mark.parametrize("six", [False, True], ids=["info", "6-tuple"])
@pytest.mark.parametrize("backend,kw", backends(4, batch=2), ids=["serial", "mp", "mp-async"])
def test_gymnasium_cost_arrives_as_rows_with_episode_cost(backend, kw, six):
    """cost float32 [rows] whose rows follow env_ids; episode_cost sums it; both ways of reporting it."""
    with make(lambda: CostEnv(six=six), num_envs=4, backend=backend, **kw) as env:
        env.async_reset(seed=0)
        episodes, reset_seen = [], set()
        for _ in range(3 * env.num_agents // env.batch_size):
            _, _, _, _, infos, ids, _ = env.recv()
            if ids[0] in reset_seen:  # a step, not this batch's reset
                cost = infos["cost"]
                assert cost.dtype == np.float32 and cost.shape == (len(ids),)
                np.testing.assert_allclose(cost, 0.5 * (ids % 3))  # the actions sent for these rows
            reset_seen.add(ids[0])
            episodes += infos["episodes"]
            env.send(ids % 3)
        _, _, _, _, infos, ids, _ = env.recv()
        episodes += infos["episodes"]
        assert len(episodes) >= 2
        for ep in episodes:
            assert ep["episode_length"] == 3
            assert ep["episode_cost"] in (0.0, 1.5, 3.0)


def test_wrong_shaped_cost_is_an_error_naming_the_env():
    with make(lambda: CostEnv(bad=True), num_envs=2) as env:
        env.reset(seed=0)
        with pytest.raises(SpaceError, match=r"<lambda>: info\['cost'\] must be one number per step.*\(2,\)"):
            env.step(np.zeros(2, np.int64))

    def safety():
        return CostEnv(six=True, bad=True)

    with make(safety, num_envs=2, backend="multiprocessing", num_workers=2) as env:
        env.reset(seed=0)
        with pytest.raises(WorkerError, match=r"safety.*the cost returned by step\(\) must be one number"):
            env.step(np.zeros(2, np.int64))
    with make(BadCost, num_envs=2) as env, pytest.raises(SpaceError, match=r"BadCost: infos\['cost'\] must be"):
        env.reset(seed=0)


def test_hazard_cost_rows_follow_env_ids_in_async_batches():
    with make("hazard", num_envs=4, backend="multiprocessing", num_workers=2, batch_size=2) as env:
        env.async_reset(seed=0)
        for _ in range(6):
            _, _, _, _, infos, ids, _ = env.recv()
            assert infos["cost"].shape == (2,) and infos["cost"].dtype == np.float32
            env.send(np.zeros((2, 2), np.float32))


# ------------------------------------------------------------------------------------------- grouped reset

def _buffer(env):
    """The observation buffer of every row of a vector env (shared memory or the serial env's own)."""
    return env.observations if hasattr(env, "observations") else env.env.observations


def _rollout(env, actions):
    """(obs, rewards, dones) of every row for each of `actions`, copied."""
    out = []
    for a in actions:
        obs, rew, term, trunc, _ = env.step(a)
        out.append((obs.copy(), rew.copy(), term | trunc))
    return out


# Envs whose transitions draw no randomness: identical actions must give identical trajectories.
DETERMINISTIC = ["cartpole", "memory", "password", "squared", "stochastic", "spaces", "continuous", "landmarks",
                 "hazard"]
# Envs whose initial state is random: another seed must give another start.
RANDOM_START = ["cartpole", "memory", "squared", "spaces", "continuous", "landmarks", "hazard"]


@pytest.mark.parametrize("name", sorted(puffer.envs.registry()))
def test_native_group_starts_identically_and_leaves_other_envs_untouched(name):
    """Every built-in env: G envs from one seed start and (given identical actions) play one identical episode."""
    group, others = [1, 3, 4], [0, 2, 5]
    rng = np.random.default_rng(1)
    probe = make(name, num_envs=6)
    warm = [probe.action_emulator.sample(probe.num_agents, rng) for _ in range(3)]
    A = probe.agents_per_env
    per_env = [probe.action_emulator.sample(A, rng) for _ in range(30)]
    probe.close()
    actions = [np.concatenate([a] * 6) for a in per_env]  # the same action for an agent slot in every env
    rows = lambda envs: np.array([e * A + j for e in envs for j in range(A)])  # noqa: E731
    g, o = rows(group), rows(others)

    def warmed():
        env = make(name, num_envs=6, seed=7)
        env.reset(seed=0)
        _rollout(env, warm)
        return env

    with warmed() as env, warmed() as twin:
        before = _buffer(env).copy()
        obs, infos = env.reset_group(group, seed=11)
        assert obs.shape == (len(g), env.single_observation_space.shape[0]) and infos["episodes"] == []
        starts = obs.reshape(len(group), A, -1)
        np.testing.assert_array_equal(starts, np.broadcast_to(starts[:1], starts.shape))
        np.testing.assert_array_equal(_buffer(env)[g], obs)  # the next policy input sees the new episodes
        np.testing.assert_array_equal(_buffer(env)[o], before[o])
        if name == "landmarks":
            assert infos["global_state"].shape == (len(g), 12)
            np.testing.assert_array_equal(infos["global_state"][:A], infos["global_state"][-A:])
        mine, theirs = _rollout(env, actions), _rollout(twin, actions)
        same_dones, first_episode = True, True
        for (obs_m, rew_m, done_m), (obs_t, rew_t, done_t) in zip(mine, theirs):
            # The group shares its first episode; the envs' next starts come from the env's own generator.
            if name in DETERMINISTIC and first_episode:
                first_episode = not done_m[g].any()
                for x in (rew_m[g], done_m[g]) + ((obs_m[g],) if first_episode else ()):
                    x = x.reshape(len(group), A, *x.shape[1:])
                    np.testing.assert_array_equal(x, np.broadcast_to(x[:1], x.shape))
            # Other envs are untouched: they match the twin (its generator too) while the same rows restart.
            same_dones = same_dones and np.array_equal(done_m, done_t)
            if same_dones:
                np.testing.assert_array_equal(obs_m[o], obs_t[o])
                np.testing.assert_array_equal(rew_m[o], rew_t[o])
        np.testing.assert_array_equal(env.reset_group(group, seed=11)[0], obs)
        if name in RANDOM_START:
            assert not np.array_equal(env.reset_group(group, seed=12)[0], obs)


def test_group_episode_bookkeeping_restarts():
    """Episodes of restarted envs count from the grouped reset; the others keep counting."""
    with make("cartpole", num_envs=4, seed=0) as env:
        env.reset(seed=0)
        for _ in range(5):
            env.step(np.zeros(4, np.int64))
        env.reset_group([0, 1], seed=3)
        ended = {}
        for t in range(1, 100):
            _, _, term, trunc, infos = env.step(np.zeros(4, np.int64))
            for row, ep in zip(np.flatnonzero(term | trunc), infos["episodes"]):
                ended.setdefault(int(row), (t, ep["episode_length"]))
            if len(ended) == 4:
                break
        assert ended[0] == ended[1] and ended[0][1] == ended[0][0]
        assert ended[2][1] == ended[2][0] + 5 and ended[3][1] == ended[3][0] + 5


@pytest.mark.parametrize("kind", ["gym", "creator", "pettingzoo"])
@pytest.mark.parametrize("backend,kw", [("serial", {}), ("multiprocessing", {"num_workers": 2})], ids=["serial", "mp"])
def test_gymnasium_and_pettingzoo_groups_replay_one_seed(kind, backend, kw):
    """env.reset(seed) per env: identical starts and trajectories, across workers too; others untouched."""
    target = {"gym": "gym:CartPole-v1", "creator": CostEnv, "pettingzoo": Team}[kind]
    group, others = [0, 3], [1, 2]
    with make(target, num_envs=4, backend=backend, **kw) as env:
        A = env.agents_per_env
        g = np.array([e * A + j for e in group for j in range(A)])
        o = np.array([e * A + j for e in others for j in range(A)])
        obs, _ = env.reset(seed=0)
        assert not np.array_equal(obs[g[:A]], obs[g[A:]])
        untouched = obs[o].copy()
        start, infos = env.reset_group(group, seed=5)
        np.testing.assert_array_equal(start[:A], start[A:])
        np.testing.assert_array_equal(env.reset_group(group, seed=5)[0], start)
        assert not np.array_equal(env.reset_group(group, seed=6)[0], start)
        start, _ = env.reset_group(group, seed=5)
        np.testing.assert_array_equal(_buffer(env)[o], untouched)
        if kind == "pettingzoo":
            np.testing.assert_array_equal(infos["global_state"][:A], infos["global_state"][A:])
        actions = np.ones(env.num_agents, np.int64)
        for _ in range(4):
            obs, rew, term, trunc, infos = env.step(actions)
            np.testing.assert_array_equal(obs[g[:A]], obs[g[A:]])
            np.testing.assert_array_equal(rew[g[:A]], rew[g[A:]])


def test_grouped_reset_errors_name_the_env():
    with make(Fixed, num_envs=2) as env:
        env.reset(seed=0)
        with pytest.raises(PufferError, match="Fixed cannot restart a group"):
            env.reset_group([0], seed=0)
    with make(SeedlessReset, num_envs=2, backend="multiprocessing", num_workers=2) as env:
        with pytest.raises(PufferError, match="SeedlessReset: its reset\\(\\) takes no seed"):
            env.reset_group([0], seed=0)
    with make("cartpole", num_envs=2) as env:
        env.reset(seed=0)
        with pytest.raises(PufferError, match=r"cartpole: reset_group env_ids must be distinct env indices"):
            env.reset_group([0, 2], seed=0)
        with pytest.raises(PufferError, match="integer seed"):
            env.reset_group([0], seed=None)
    with make("landmarks", num_envs=2, backend="multiprocessing", num_workers=2, batch_size=3) as env:
        env.async_reset(seed=0)
        with pytest.raises(PufferError, match="landmarks: reset_group\\(\\) while async batches are in flight"):
            env.reset_group([0], seed=0)
