"""The NativeEnv contract, checked on every built-in env: buffers, auto-reset, episodes, seeding, errors."""

from __future__ import annotations

import numpy as np
import pytest

from puffer import spaces as S
from puffer.envs import NativeEnv, describe, make, registry
from puffer.errors import SpaceError

NAMES = list(registry())
ROWS = 8


def random_actions(env: NativeEnv, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random batch of valid actions in the form `step` takes."""
    space, rows = env.single_action_space, env.num_agents
    if isinstance(space, S.Discrete):
        return rng.integers(0, space.n, rows)
    if isinstance(space, S.Box):
        return rng.uniform(space.low, space.high, (rows, *space.shape)).astype(space.dtype)
    assert isinstance(space, S.Dict)  # Spaces: two Discretes as columns
    return np.stack([rng.integers(0, s.n, rows) for s in space.values()], axis=1)


def obs_rows_in_space(env: NativeEnv, obs: np.ndarray) -> bool:
    space = env.single_observation_space
    if obs.dtype.names is not None:
        nested = S.from_structured(space, obs)
        return all(space.contains({k: v[i] for k, v in nested.items()}) for i in range(len(obs)))
    return all(space.contains(row) for row in obs)


def rollout(env: NativeEnv, steps: int, seed: int, policy=None) -> list:
    """(obs, rewards, terminals, truncations, infos) copies for `steps` steps after reset(seed)."""
    # Not default_rng(seed): that is the env's own stream, and Continuous would get its targets.
    rng = np.random.default_rng([seed, 1])
    obs, _ = env.reset(seed=seed)
    out = [obs.copy()]
    for _ in range(steps):
        actions = policy(env) if policy else random_actions(env, rng)
        obs, rew, term, trunc, infos = env.step(actions)
        out.append((obs.copy(), rew.copy(), term.copy(), trunc.copy(), infos))
    return out


def test_registry_and_describe():
    reg = registry()
    assert set(reg) == {"cartpole", "bandit", "memory", "password", "squared", "stochastic", "spaces",
                        "continuous", "landmarks", "hazard", "sequence"}
    assert all(issubclass(cls, NativeEnv) for cls in reg.values())
    reg.clear()  # a copy: the registry itself is unaffected
    assert len(registry()) == 11
    lines = describe()
    assert len(lines) == 11 and all(line.startswith(name) for line, name in zip(lines, NAMES))
    assert all("\n" not in line for line in lines)
    with pytest.raises(KeyError, match="known: cartpole"):
        make("nope")


@pytest.mark.parametrize("name", NAMES)
def test_class_attributes(name):
    cls = registry()[name]
    assert cls.__doc__ and cls.solved_return <= cls.optimal_return
    assert cls.max_return is None or cls.optimal_return <= cls.max_return
    assert cls.agents_per_env >= 1


@pytest.mark.parametrize("name", NAMES)
def test_reset_and_step_layout(name):
    env = make(name, ROWS // registry()[name].agents_per_env, seed=0)
    rows = env.num_agents
    obs, infos = env.reset(seed=1)
    assert obs is env.observations and len(obs) == rows and isinstance(infos, dict)
    assert obs_rows_in_space(env, obs)
    assert env.masks.all() and env.masks.shape == (rows,)
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs2, rew, term, trunc, infos = env.step(random_actions(env, rng))
        assert obs2 is env.observations
        assert rew.dtype == np.float32 and rew.shape == (rows,)
        assert term.dtype == bool and trunc.dtype == bool and term.shape == trunc.shape == (rows,)
        assert obs_rows_in_space(env, obs2)
        assert isinstance(infos["episodes"], list)
        for ep in infos["episodes"]:
            assert isinstance(ep["episode_return"], float) and isinstance(ep["episode_length"], int)


@pytest.mark.parametrize("name", NAMES)
def test_auto_reset_and_episode_statistics(name):
    """Ended rows restart in the same step; final_observation and the episode dicts are exact."""
    env = make(name, ROWS // registry()[name].agents_per_env, seed=0)
    rows = env.num_agents
    rng = np.random.default_rng(3)
    env.reset(seed=3)
    ret, length, seen = np.zeros(rows), np.zeros(rows, int), 0
    for _ in range(150):
        obs, rew, term, trunc, infos = env.step(random_actions(env, rng))
        ret += rew
        length += 1
        done = term | trunc
        assert ("final_observation" in infos) == bool(done.any())
        assert len(infos["episodes"]) == done.sum()
        if done.any():
            final = infos["final_observation"]
            assert final is not obs and final.shape == obs.shape
            np.testing.assert_array_equal(final[~done], obs[~done])
            for ep, row in zip(infos["episodes"], np.flatnonzero(done)):
                assert ep["episode_length"] == length[row]
                assert ep["episode_return"] == pytest.approx(ret[row], rel=1e-5, abs=1e-5)
                if "success" in ep:
                    assert ep["success"] in (0, 1)
            ret[done], length[done] = 0, 0
            seen += done.sum()
    assert seen > 0


@pytest.mark.parametrize("name", NAMES)
def test_seeding_is_deterministic(name):
    cls = registry()[name]
    a, b = cls(4, seed=0), cls(4, seed=99)
    ra, rb = rollout(a, 30, seed=7), rollout(b, 30, seed=7)
    np.testing.assert_array_equal(ra[0], rb[0])
    for (oa, wa, ta, ua, ia), (ob, wb, tb, ub, ib) in zip(ra[1:], rb[1:]):
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(ua, ub)
        assert ia["episodes"] == ib["episodes"]
    # The same env reset with the same seed replays itself; reset() without a seed moves on.
    again = rollout(a, 30, seed=7)
    np.testing.assert_array_equal(again[-1][0], ra[-1][0])


def test_seeds_change_the_episodes():
    env = make("cartpole", 16)
    first = env.reset(seed=1)[0].copy()
    assert not np.array_equal(first, env.reset(seed=2)[0])
    assert not np.array_equal(first, env.reset()[0])
    np.testing.assert_array_equal(first, env.reset(seed=1)[0])


@pytest.mark.parametrize("name", NAMES)
def test_writes_into_given_buffers(name):
    """With `buffers`, the env writes in place and never rebinds (e.g. views of shared memory)."""
    cls = registry()[name]
    probe = cls(2)
    shape, dtype = probe.observation_layout()
    rows = shape[0]
    # Views into one bigger block, as a vector backend would carve shared memory.
    big = np.zeros((2 * rows, *shape[1:]), dtype)
    buffers = {
        "observations": big[rows:],
        "rewards": np.full(rows, 7, np.float32),
        "terminals": np.zeros(rows, bool),
        "truncations": np.zeros(rows, bool),
        "masks": np.zeros(rows, bool),
    }
    env = cls(2, seed=0, buffers=buffers)
    obs, _ = env.reset(seed=0)
    assert obs is buffers["observations"] and env.masks is buffers["masks"] and buffers["masks"].all()
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = env.step(random_actions(env, rng))
        for arr, key in zip(out[:4], ["observations", "rewards", "terminals", "truncations"]):
            assert arr is buffers[key]
    np.testing.assert_array_equal(big[rows:], env.observations)
    assert not (buffers["rewards"] == 7).any()


def test_bad_buffers():
    with pytest.raises(ValueError, match="exactly the keys"):
        make("cartpole", 2, buffers={"observations": np.zeros((2, 4), np.float32)})
    good = {"observations": np.zeros((2, 4), np.float32), "rewards": np.zeros(2, np.float32),
            "terminals": np.zeros(2, bool), "truncations": np.zeros(2, bool), "masks": np.zeros(2, bool)}
    with pytest.raises(ValueError, match=r"buffers\['rewards'\] must be a numpy array \(2,\) float32"):
        make("cartpole", 2, buffers={**good, "rewards": np.zeros(2, np.float64)})
    with pytest.raises(ValueError, match="observations"):
        make("cartpole", 3, buffers=good)
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        make("cartpole", 0)


def test_step_before_reset():
    with pytest.raises(RuntimeError, match="reset"):
        make("bandit", 2).step(np.zeros(2, np.int64))


@pytest.mark.parametrize("name", [n for n in NAMES if isinstance(registry()[n].single_action_space, S.Discrete)])
def test_bad_discrete_actions(name):
    env = make(name, 2 // registry()[name].agents_per_env or 1, seed=0)
    env.reset()
    rows, n = env.num_agents, env.single_action_space.n
    good = np.zeros(rows, np.int64)
    env.step(good)
    env.step(good.reshape(rows, 1))  # a trailing singleton axis (policy output) is accepted
    env.step(good.astype(np.uint8))
    cases = [
        (np.zeros(rows + 1, np.int64), "wrong shape"),
        (np.zeros((rows, 2), np.int64), "wrong shape"),
        (good.astype(np.float32), "not an integer dtype"),
        (np.full(rows, n, np.int64), "out of range"),
        (np.full(rows, -1, np.int32), "out of range"),
        (np.full(rows, n, np.uint8), "out of range"),
    ]
    for actions, reason in cases:
        with pytest.raises(SpaceError) as err:
            env.step(actions)
        msg = str(err.value)
        assert env.name in msg and repr(env.single_action_space) in msg and reason in msg
        assert f"shape {actions.shape}" in msg and str(actions.dtype) in msg


@pytest.mark.parametrize("name", ["continuous", "hazard"])
def test_box_actions_are_checked_and_clipped(name):
    env = make(name, 3, seed=0)
    env.reset(seed=0)
    for actions, reason in [(np.zeros((3, 3), np.float32), "wrong shape"),
                            (np.zeros((3, 2), np.int64), "not a floating dtype"),
                            (np.array([[0, 0], [np.nan, 0], [0, 0]], np.float32), "not finite"),
                            (np.array([[0, 0], [np.inf, 0], [0, 0]]), "not finite")]:
        with pytest.raises(SpaceError, match=reason) as err:
            env.step(actions)
        assert env.name in str(err.value) and "Box" in str(err.value)
    # Out-of-box values are clipped, so a huge action equals the boundary action.
    a, b = make(name, 3, seed=0), make(name, 3, seed=0)
    a.reset(seed=5)
    b.reset(seed=5)
    big = np.full((3, 2), 50.0)
    np.testing.assert_array_equal(a.step(big)[0], b.step(np.ones((3, 2), np.float32))[0])


@pytest.mark.parametrize("name", NAMES)
def test_scripted_optimum_reaches_solved_return(name):
    """The documented optimum is achieved by the scripted policy, and solved_return sits below it."""
    cls = registry()[name]
    rng = np.random.default_rng(0)
    policy = (lambda env: env.oracle_actions(rng)) if name == "stochastic" else (lambda env: env.oracle_actions())
    env = cls(1024 // cls.agents_per_env if name != "cartpole" else 16, seed=0)
    steps = {"cartpole": 500, "stochastic": 96, "landmarks": 50, "hazard": 60}.get(name, 20)
    episodes = [ep for *_, infos in rollout(env, steps, seed=0, policy=policy)[1:] for ep in infos["episodes"]]
    mean = np.mean([ep["episode_return"] for ep in episodes])
    assert mean >= cls.solved_return
    # Hazard's scripted policy is the cost-free one by default (its unconstrained optimum: test_envs_special).
    target = getattr(cls, "safe_return", cls.optimal_return)
    assert mean == pytest.approx(target, abs=0.02 * max(1.0, abs(target)))
    # A uniform random policy is far from solving it (the threshold means something).
    randoms = [ep for *_, infos in rollout(cls(256, seed=1), 60, seed=1)[1:] for ep in infos["episodes"]]
    assert np.mean([ep["episode_return"] for ep in randoms]) < cls.solved_return


def test_envs_import_no_framework():
    """Native envs are numpy only: importing them (and the adapters) loads no ML framework or gymnasium."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, puffer.envs, puffer.envs.adapters; "
            "print(sorted(m for m in ('torch', 'jax', 'tinygrad', 'gymnasium', 'pettingzoo') if m in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resumes_exactly(name):
    """Every env keeps its state in arrays, generators and scalars, so `state_dict` captures all of it."""
    cls = registry()[name]
    a, b = cls(4, seed=0), cls(4, seed=5)
    rng = np.random.default_rng(0)
    a.reset(seed=0)
    b.reset(seed=9)
    for _ in range(7):
        a.step(random_actions(a, rng))
    b.load_state_dict(a.state_dict())
    for _ in range(30):
        actions = random_actions(a, rng)
        out_a, out_b = a.step(actions), b.step(actions)
        for x, y in zip(out_a[:4], out_b[:4]):
            np.testing.assert_array_equal(x, y)
        assert out_a[4]["episodes"] == out_b[4]["episodes"]
