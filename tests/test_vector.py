"""puffer.vector: make(), the serial and multiprocessing backends (sync, async, failures, cleanup), autotune."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces as gs

import puffer
from puffer import spaces as S
from puffer.errors import PufferError, SpaceError
from puffer.vector import Multiprocessing, Serial, WorkerError, autotune, make
from puffer.vector.base import resolve


class Counter:
    """A tiny NativeEnv-shaped env: obs = [env seed tag, step count]; episodes end after `horizon` steps.

    Reward = the action; terminates when the action is 2, truncates at the horizon; publishes a per-row
    `cost` (0.1 * action) and an episode cost.
    """

    single_observation_space = S.Box(-np.inf, np.inf, (2,), np.float32)
    single_action_space = S.Discrete(3)
    agents_per_env = 1

    def __init__(self, num_envs, seed=None, buffers=None, horizon=4):
        self.num_envs = self.num_agents = num_envs
        self.horizon = horizon
        if buffers is None:
            buffers = {"observations": np.zeros((num_envs, 2), np.float32), "rewards": np.zeros(num_envs, np.float32),
                       "terminals": np.zeros(num_envs, bool), "truncations": np.zeros(num_envs, bool),
                       "masks": np.zeros(num_envs, bool)}
        for k, v in buffers.items():
            setattr(self, k, v)
        self.tag = 0 if seed is None else seed
        self.t = np.zeros(num_envs, np.int64)
        self.ret = np.zeros(num_envs)

    def reset(self, seed=None):
        if seed is not None:
            self.tag = seed
        self.t[:] = 0
        self.ret[:] = 0
        self.observations[:, 0] = self.tag
        self.observations[:, 1] = 0
        self.masks[:] = True
        return self.observations, {"episodes": [], "cost": np.zeros(self.num_agents, np.float32)}

    def step(self, actions):
        a = np.asarray(actions)
        if a.shape != (self.num_agents,) or not ((a >= 0) & (a < 3)).all():
            raise SpaceError(f"Counter: bad actions {a}")
        self.t += 1
        self.rewards[:] = a
        self.ret += a
        self.terminals[:] = a == 2
        self.truncations[:] = (self.t >= self.horizon) & ~self.terminals
        self.observations[:, 1] = self.t
        infos = {"episodes": [], "cost": (0.1 * a).astype(np.float32)}
        done = self.terminals | self.truncations
        if done.any():
            infos["final_observation"] = self.observations.copy()
            for i in np.flatnonzero(done):
                infos["episodes"].append({"episode_return": float(self.ret[i]), "episode_length": int(self.t[i]),
                                          "episode_cost": 0.1 * float(self.ret[i])})
            self.t[done] = 0
            self.ret[done] = 0
            self.observations[done, 1] = 0
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def close(self):
        pass


class Crashy(gym.Env):
    """Raises (or kills its process, or returns NaN) at step `at`; with `only_seed`, only the env seeded so."""

    observation_space = gs.Box(-1, 1, (3,), np.float32)
    action_space = gs.Discrete(2)

    def __init__(self, at=3, how="raise", value=0.0, only_seed=None):
        self.at, self.how, self.value, self.only_seed = at, how, value, only_seed

    def reset(self, seed=None, options=None):
        self.t = 0
        if self.only_seed is not None and seed != self.only_seed:
            self.at = -1
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t == self.at:
            if self.how == "raise":
                raise ValueError("boom at step 3")
            if self.how == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "hang":
                time.sleep(30)
            if self.how == "nan":
                return np.full(3, np.nan, np.float32), 0.0, False, False, {}
        return np.full(3, self.value, np.float32), 1.0, False, False, {}


def alive(procs):
    return [p for p in procs if p.is_alive()]


def test_serial_native_is_direct_and_returns_views():
    with make(Counter, num_envs=3, seed=5) as env:
        assert isinstance(env, Serial) and env.num_agents == env.batch_size == 3
        obs, infos = env.reset()
        np.testing.assert_array_equal(obs, [[5, 0]] * 3)
        obs2, rew, term, trunc, infos = env.step(np.array([1, 1, 2]))
        assert obs2 is obs and np.shares_memory(obs, env.env.env.observations)  # the env's own buffer
        np.testing.assert_array_equal(term, [False, False, True])
        np.testing.assert_array_equal(infos["final_observation"][2], [5, 1])
        np.testing.assert_array_equal(obs[2], [5, 0])
        assert infos["episodes"] == [{"episode_return": 2.0, "episode_length": 1, "episode_cost": pytest.approx(0.2)}]
        env.async_reset(seed=1)
        o, r, d, t, infos, ids, masks = env.recv()
        np.testing.assert_array_equal(ids, [0, 1, 2])
        assert masks.all()
        env.send(np.zeros(3, int))
        with pytest.raises(PufferError, match="twice"):
            env.send(np.zeros(3, int))


def test_builtin_names_and_errors():
    with puffer.make("cartpole", num_envs=16, seed=0) as env:
        obs, _ = env.reset()
        assert obs.shape == (16, 4) and env.single_action_space == S.Discrete(2)
        with pytest.raises(SpaceError, match=r"CartPole.*Discrete\(2\).*got shape \(3,\)"):
            env.step(np.zeros(3, int))
    with pytest.raises(PufferError, match="unknown environment 'nope'.*cartpole"):
        make("nope")
    with pytest.raises(PufferError, match="unknown vector backend"):
        make("cartpole", backend="threads")
    with pytest.raises(PufferError, match="num_envs must be a positive integer"):
        make("cartpole", num_envs=0)
    with pytest.raises(PufferError, match=r"batch_size must be None or 4"):
        make("cartpole", num_envs=4, batch_size=2)
    with pytest.raises(PufferError, match=r"num_workers must divide num_envs=6.*valid: \[1, 2, 3, 6\]"):
        make("cartpole", num_envs=6, backend="multiprocessing", num_workers=4)
    with pytest.raises(PufferError, match=r"batch_size.*valid: \[2, 4, 8\]"):
        make("cartpole", num_envs=8, backend="multiprocessing", num_workers=4, batch_size=3)


def test_structured_native_env_becomes_flat():
    with make("spaces", num_envs=4, seed=0) as env:
        obs, _ = env.reset()
        assert env.single_observation_space.shape == (30,) and obs.dtype == np.float32
        assert env.single_action_space == S.MultiDiscrete([2, 2])
        nested = S.unflatten(env.structured_observation_space, obs)
        assert nested["image"].dtype == np.uint8 and nested["vector"].dtype == np.int8
        assert set(np.unique(nested["vector"])) <= {-1, 1}


def test_multiprocessing_matches_serial_step_for_step():
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 2, 6) for _ in range(60)]
    runs = []
    for backend in ("serial", "multiprocessing"):
        with make("gym:CartPole-v1", num_envs=6, backend=backend, num_workers=None if backend == "serial" else 3,
                  seed=7) as env:
            trace = [env.reset()[0].copy()]
            for a in actions:
                obs, rew, term, trunc, infos = env.step(a)
                fo = infos.get("final_observation")
                trace += [obs.copy(), rew.copy(), term.copy(), trunc.copy(), infos["episodes"],
                          None if fo is None else fo[term | trunc].copy()]
            runs.append(trace)
    for a, b in zip(*runs):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b
    assert any(len(x) for x in runs[0][5::6])  # some episodes ended, so auto-reset was exercised


def test_multiprocessing_native_infos_and_final_observation():
    with make(Counter, num_envs=4, backend="multiprocessing", num_workers=2, seed=3) as env:
        assert isinstance(env, Multiprocessing)
        obs, infos = env.reset()
        tags = obs[:, 0].copy()
        assert tags[0] == 3 and tags[2] != 3  # independent seeds per worker, worker 0 keeps the seed
        np.testing.assert_array_equal(infos["cost"], 0)
        obs, rew, term, trunc, infos = env.step(np.array([1, 2, 0, 2]))
        np.testing.assert_array_equal(rew, [1, 2, 0, 2])
        np.testing.assert_array_equal(term, [False, True, False, True])
        np.testing.assert_allclose(infos["cost"], [0.1, 0.2, 0, 0.2])
        np.testing.assert_array_equal(infos["final_observation"][[1, 3], 1], [1, 1])
        np.testing.assert_array_equal(obs[:, 1], [1, 0, 1, 0])
        assert len(infos["episodes"]) == 2
        for _ in range(3):
            obs, rew, term, trunc, infos = env.step(np.array([1, 1, 1, 1]))
        np.testing.assert_array_equal(trunc, [True, False, True, False])  # horizon 4 on rows 0 and 2
        with pytest.raises(SpaceError, match=r"Counter: actions must be Discrete\(3\).*out of range"):
            env.step(np.array([0, 3, 0, 0]))


def test_async_batches_cover_every_row_and_enforce_order():
    with make("gym:CartPole-v1", num_envs=4, backend="multiprocessing", num_workers=2, batch_size=2,
              seed=0) as env:
        assert env.batch_size == 2
        env.async_reset()
        seen = []
        for i in range(100):  # whichever batch finishes first comes back: loop until both have
            obs, rew, term, trunc, infos, ids, masks = env.recv()
            assert obs.shape == (2, 4) and masks.all() and np.shares_memory(obs, env.observations)
            seen.append(tuple(ids))
            if i == 0:
                with pytest.raises(PufferError, match="recv\\(\\) called twice"):
                    env.recv()
                with pytest.raises(PufferError, match="step\\(\\) while async"):
                    env.step(np.zeros(4, int))
            env.send(np.ones(2, int))
            if len(set(seen)) == 2:
                break
        assert set(seen) == {(0, 1), (2, 3)}
        with pytest.raises(PufferError, match="send\\(\\) needs a recv"):
            env.send(np.ones(2, int))
        obs, _ = env.reset(seed=0)  # waits out the batches in flight
        assert env.step(np.zeros(4, int))[0].shape == (4, 4)


def test_async_multi_agent_rows():
    with make("landmarks", num_envs=4, backend="multiprocessing", num_workers=2, batch_size=6, seed=0) as env:
        assert env.agents_per_env == 3 and env.num_agents == 12
        env.async_reset()
        ids = set()
        for _ in range(100):  # whichever batch finishes first comes back: loop until both have
            obs, rew, term, trunc, infos, env_ids, masks = env.recv()
            assert obs.shape == (6, 15) and infos["global_state"].shape[0] == 6
            ids.add(tuple(env_ids))
            env.send(env.action_emulator.sample(6, 0))
            if len(ids) == 2:
                break
        assert ids == {tuple(range(6)), tuple(range(6, 12))}


@pytest.mark.parametrize("how, match", [("raise", r"Crashy.*worker 1 \(envs 2..3.*ValueError: boom at step 3"),
                                        ("die", r"Crashy.*worker \d .*died \(killed by SIGKILL\)")])
def test_worker_failure_raises_promptly_and_leaves_no_process(how, match):
    # Env i is seeded i on its first reset, so only_seed=3 makes the last env of worker 1 fail.
    env = make(Crashy, num_envs=4, backend="multiprocessing", num_workers=2, seed=0, how=how,
               only_seed=None if how == "die" else 3)
    procs = list(env._procs)
    env.reset()
    start = time.monotonic()
    with pytest.raises(WorkerError, match=match):
        for _ in range(5):
            env.step(np.zeros(4, int))
    assert time.monotonic() - start < 5
    assert not alive(procs)
    with pytest.raises(PufferError, match="closed"):
        env.step(np.zeros(4, int))
    env.close()  # idempotent


def test_a_hanging_worker_times_out_and_is_terminated():
    factory, probe = resolve(Crashy, {"at": 2, "how": "hang"})
    env = Multiprocessing(factory, num_envs=2, num_workers=2, probe=probe, timeout=0.3)
    procs = list(env._procs)
    env.reset()
    env.step(np.zeros(2, int))
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"Crashy: worker 0 .*worker 1 .*did not answer within timeout=0.3s"):
        env.step(np.zeros(2, int))
    assert time.monotonic() - start < 3 and not alive(procs)


def test_nan_observation_is_an_error_unless_opted_out():
    def nan_env():
        return Crashy(at=2, how="nan")

    for backend in ("serial", "multiprocessing"):
        with make(nan_env, num_envs=2, backend=backend) as env:
            env.reset()
            env.step(np.zeros(2, int))
            with pytest.raises(SpaceError, match=r"nan_env.*rows \[0, 1\] hold NaN.*check_finite=False"):
                env.step(np.zeros(2, int))
    with make(nan_env, num_envs=2, check_finite=False) as env:
        env.reset()
        env.step(np.zeros(2, int))
        assert np.isnan(env.step(np.zeros(2, int))[0]).all()


def test_creator_detection_and_kwargs():
    with make(Crashy, num_envs=2, at=99, value=0.5) as env:  # env kwargs reach the creator
        env.reset()
        assert env.step(np.zeros(2, int))[0][0, 0] == 0.5
    with pytest.raises(PufferError, match="vector env"):
        make(lambda: gym.make_vec("CartPole-v1", num_envs=2))


def test_close_at_interpreter_exit_and_when_the_main_process_is_killed():
    script = textwrap.dedent("""
        import os, signal, sys
        import puffer
        env = puffer.make("gym:CartPole-v1", num_envs=2, backend="multiprocessing", num_workers=2)
        env.reset()
        print(" ".join(str(p.pid) for p in env._procs), flush=True)
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    for mode in ("exit", "kill"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60)
        pids = [int(p) for p in out.stdout.split()]
        assert len(pids) == 2, out.stderr
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.05)
        assert not any(_running(p) for p in pids), mode


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_autotune_reports_a_configuration():
    result = autotune(Counter, num_envs=4, seconds=0.05, verbose=False)
    assert result.backend in ("serial", "multiprocessing")
    assert {m["backend"] for m in result.measurements} == {"serial", "multiprocessing"}
    assert result.steps_per_second == max(m["steps_per_second"] for m in result.measurements)
    assert "backend=" in result.advice
    assert make(Counter, **result.make_kwargs()).num_envs == 4
