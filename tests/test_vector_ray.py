"""The ray vector backend on a real local Ray: equivalence with serial, async batches, faults, restarts, PPO.

One Ray (2 CPUs) is started for the whole module, since starting one takes about 10 s here.
"""

from __future__ import annotations

import functools
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
from puffer.envs import registry
from puffer.envs.adapters import to_pettingzoo
from puffer.errors import PufferError
from puffer.vector import WorkerError, make


@pytest.fixture(scope="module")
def ray():
    """A local Ray with 2 CPUs for this module, shut down at its end."""
    try:
        import ray
    except ImportError:
        pytest.fail("the ray backend tests need Ray: pip install -e '.[ray]' (./dev.sh test installs it)")
    # The actors unpickle the test's env classes; ship this module by value, as workers cannot import it.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class Crashy(gym.Env):
    """Raises at step `at` in the env seeded `only_seed` (every env when None), or hangs with how="hang"."""

    observation_space = gs.Box(-1, 1, (3,), np.float32)
    action_space = gs.Discrete(2)

    def __init__(self, at=3, how="raise", only_seed=None):
        self.at, self.how, self.only_seed = at, how, only_seed

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
            time.sleep(30)
        return np.zeros(3, np.float32), 1.0, False, False, {}


DRIVER_PID = os.getpid()


class FailsInWorkers:
    """A native env whose constructor raises anywhere but in the test's own process."""

    single_observation_space = puffer.spaces.Box(-1, 1, (2,), np.float32)
    single_action_space = puffer.spaces.Discrete(2)
    agents_per_env = 1

    def __init__(self, num_envs, seed=None, buffers=None):
        if os.getpid() != DRIVER_PID:
            raise RuntimeError("no simulator licence on this node")
        self.num_envs = self.num_agents = num_envs

    def close(self):
        pass


def trace(env, actions):
    """Everything a run returns, copied: the reset obs, then per step obs, rewards, dones, episodes, final obs."""
    out = [env.reset()[0].copy()]
    for a in actions:
        obs, rew, term, trunc, infos = env.step(a)
        fo = infos.get("final_observation")
        out += [obs.copy(), rew.copy(), term.copy(), trunc.copy(), infos["episodes"],
                None if fo is None else fo[term | trunc].copy()]
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("env_name", ["gym:CartPole-v1", "landmarks-pettingzoo"])
def test_ray_matches_serial_for_200_steps(ray, env_name):
    if env_name == "landmarks-pettingzoo":  # the built-in landmarks as a PettingZoo ParallelEnv, 3 agents
        env_name = functools.partial(to_pettingzoo, registry()["landmarks"])
    runs = []
    for backend in ("serial", "ray"):
        with make(env_name, num_envs=4, backend=backend, num_workers=None if backend == "serial" else 2,
                  seed=7) as env:
            rng = np.random.default_rng(0)
            actions = [env.action_emulator.sample(env.num_agents, rng) for _ in range(200)]
            runs.append(trace(env, actions))
            if backend == "ray":
                assert type(env).__name__ == "Ray" and env.num_workers == 2
                assert len({pid for pid, _ in env.worker_pids()} | {os.getpid()}) == 3
    assert_same(*runs)
    assert any(len(eps) for eps in runs[0][5::6])  # episodes ended, so auto-reset and final obs were compared


def test_native_env_seeds_match_multiprocessing(ray):
    rng = np.random.default_rng(1)
    actions = [rng.integers(0, 2, 8) for _ in range(50)]
    runs = []
    # spawn: forking this process, which runs Ray's gRPC threads, could deadlock the child.
    for backend, options in (("multiprocessing", {"start_method": "spawn"}), ("ray", {})):
        with make("cartpole", num_envs=8, backend=backend, num_workers=2, seed=3, backend_options=options) as env:
            runs.append(trace(env, actions))
    assert_same(*runs)


def test_async_steps_every_worker(ray):
    with make("gym:CartPole-v1", num_envs=8, backend="ray", num_workers=4, batch_size=2, seed=0) as env:
        assert env.batch_size == 2 and len(env.groups) == 4
        env.async_reset()
        seen, steps = set(), 0
        for _ in range(200):  # whichever batch finishes first comes back: loop until every worker has
            obs, rew, term, trunc, infos, ids, masks = env.recv()
            assert obs.shape == (2, 4) and masks.all() and ids.dtype == np.int64
            seen.add(tuple(ids.tolist()))
            with pytest.raises(PufferError, match=r"recv\(\) called twice"):
                env.recv()
            env.send(np.ones(2, int))
            steps += 1
            if len(seen) == 4 and steps >= 20:
                break
        assert seen == {(0, 1), (2, 3), (4, 5), (6, 7)}
        with pytest.raises(PufferError, match=r"send\(\) needs a recv"):
            env.send(np.ones(2, int))
        assert env.reset(seed=0)[0].shape == (8, 4)  # waits out the batches in flight
        assert env.step(np.zeros(8, int))[0].shape == (8, 4)
    with pytest.raises(PufferError, match=r"batch_size.*valid: \[2, 4, 8\]"):
        make("gym:CartPole-v1", num_envs=8, backend="ray", num_workers=4, batch_size=3)
    with pytest.raises(PufferError, match=r"num_workers must divide num_envs=6.*valid: \[1, 2, 3, 6\]"):
        make("gym:CartPole-v1", num_envs=6, backend="ray", num_workers=4)


def actors_gone(ray, pids, seconds=10.0):
    """Whether every pid has exited (Ray reaps killed actors asynchronously)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_running(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_env_that_raises_names_the_env_worker_and_exception(ray):
    # Env i is seeded i, so only_seed=3 makes the last env of worker 1 raise.
    env = make(Crashy, num_envs=4, backend="ray", num_workers=2, seed=0, only_seed=3)
    pids = [pid for pid, _ in env.worker_pids()]
    env.reset()
    with pytest.raises(WorkerError, match=r"(?s)Crashy: worker 1 \(envs 2..3, pid \d+ on .*\) raised ValueError: "
                                          r"boom at step 3.*worker traceback.*in step"):
        for _ in range(5):
            env.step(np.zeros(4, int))
    assert actors_gone(ray, pids)
    with pytest.raises(PufferError, match="closed"):
        env.step(np.zeros(4, int))
    env.close()  # idempotent


def test_an_env_that_cannot_be_built_in_a_worker_is_an_error(ray):
    with pytest.raises(WorkerError, match=r"(?s)FailsInWorkers: worker 0 \(envs 0..0, pid \d+ on .*\) raised "
                                          r"RuntimeError: no simulator licence on this node while building its envs"
                                          r".*worker traceback"):
        make(FailsInWorkers, num_envs=2, backend="ray", num_workers=2)


def test_a_killed_actor_is_an_error_within_seconds(ray):
    env = make("gym:CartPole-v1", num_envs=4, backend="ray", num_workers=2, seed=0)
    env.reset()
    pid = env.worker_pids()[1][0]
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"CartPole-v1: worker 1 \(envs 2..3, pid \d+ .*\) died \(.*actor died"):
        for _ in range(100):
            env.step(np.zeros(4, int))
    assert time.monotonic() - start < 10
    assert actors_gone(ray, [env.worker_pids()[0][0]])


def test_max_restarts_recreates_a_dead_worker_and_counts_it(ray):
    env = make("gym:CartPole-v1", num_envs=4, backend="ray", num_workers=2, seed=0,
               backend_options={"max_restarts": 1})
    env.reset()
    before = env.step(np.zeros(4, int))[0].copy()
    old = env.worker_pids()[0][0]
    os.kill(old, signal.SIGKILL)
    obs, rew, term, trunc, infos = env.step(np.zeros(4, int))
    assert infos["worker_restarts"] == 1 and env.restarts == 1
    np.testing.assert_array_equal(trunc[:2], True)  # the restarted worker's episodes were cut
    np.testing.assert_array_equal(rew[:2], 0)
    np.testing.assert_array_equal(infos["final_observation"][:2], before[:2])
    assert np.abs(obs[:2]).max() <= 0.05  # fresh CartPole episodes
    assert env.worker_pids()[0][0] != old
    assert "worker_restarts" not in env.step(np.zeros(4, int))[4]
    os.kill(env.worker_pids()[1][0], signal.SIGKILL)
    with pytest.raises(WorkerError, match=r"worker 1 .*died .*max_restarts=1 used up"):
        for _ in range(100):
            env.step(np.zeros(4, int))


def test_a_hanging_env_times_out(ray):
    env = make(Crashy, num_envs=2, backend="ray", num_workers=2, at=2, how="hang",
               backend_options={"timeout": 1.0})
    pids = [pid for pid, _ in env.worker_pids()]
    env.reset()
    env.step(np.zeros(2, int))
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"Crashy: worker 0 .*worker 1 .*did not answer within timeout=1.0s"):
        env.step(np.zeros(2, int))
    assert time.monotonic() - start < 5 and actors_gone(ray, pids)


def test_import_is_lazy_ray_address_is_honoured_and_a_local_ray_starts(ray):
    # A fresh process joins this module's Ray through RAY_ADDRESS, and leaves it running when it closes.
    script = textwrap.dedent("""
        import sys
        import puffer, puffer.vector
        assert "ray" not in sys.modules, "import puffer.vector imported ray"
        env = puffer.make("gym:CartPole-v1", num_envs=2, backend="ray", num_workers=2)
        import ray
        print(ray.get_runtime_context().gcs_address)
        env.reset()
        env.step([0, 1])
        env.close()
        print(ray.is_initialized())
        # Without an address a local Ray sized to this machine starts, and stops with the last env using it.
        import os
        del os.environ["RAY_ADDRESS"]
        with puffer.make("gym:CartPole-v1", num_envs=2, backend="ray", num_workers=2) as env:
            env.reset()
            own = ray.get_runtime_context().gcs_address
            print(int(ray.cluster_resources()["CPU"]) == os.cpu_count(), own != sys.argv[1])
        print(ray.is_initialized())
    """)
    address = ray.get_runtime_context().gcs_address
    out = subprocess.run([sys.executable, "-c", script, address], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RAY_ADDRESS": address})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [address, "False", "True", "True", "False"]


# Steps to 475 over ray (jax, 2 workers) measured on seeds 0, 1, 2: 120,832, 129,024, 83,968 (14-22 s each).
BUDGET = 300_000


def test_ppo_trains_cartpole_to_475_over_ray(ray):
    from puffer.algos import PPO, PPOConfig

    trainer = PPO("cartpole", backend="jax", config=PPOConfig(vec="ray", num_workers=2, seed=0,
                                                              total_steps=BUDGET))
    try:
        assert type(trainer.env).__name__ == "Ray"
        trainer.train(stop_at_return=475)
        assert len(trainer.episodes) >= 20
        assert trainer.mean_return(20) >= 475, f"mean return {trainer.mean_return(20):.1f} after " \
                                               f"{trainer.global_step} steps"
    finally:
        trainer.close()


def test_puffer_vector_knows_ray():
    assert "ray" in puffer.vector.BACKENDS
    puffer.algos.PPOConfig(vec="ray").validate()
    with pytest.raises(PufferError, match="vec='threads'.*ray"):
        puffer.algos.PPOConfig(vec="threads").validate()
