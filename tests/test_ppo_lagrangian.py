"""PPO-Lagrangian: the multiplier rules, bad input, costs from gymnasium envs, CLI, resume, export."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces as gs
from pettingzoo import ParallelEnv

import puffer.algos  # noqa: F401  (registers ppo_lagrangian without the installed entry points)
from puffer import checkpoint
from puffer.algos.ppo_lagrangian import (
    PPOLagrangian,
    PPOLagrangianConfig,
    gradient_step,
    initial_state,
    pid_step,
    window_cost,
)
from puffer.cli import main
from puffer.errors import PufferError
from puffer.train import resume_trainer

TINY = dict(num_envs=8, rollout_len=16, minibatch_size=64, hidden_size=16, update_epochs=2)
LIMIT = 5.0


# ---- the multiplier rules -----------------------------------------------------------------------
def _run(rule, costs, **kw):
    state, lams = initial_state(kw.pop("init", 0.0)), []
    for c in costs:
        state = rule(state, c, LIMIT, **kw)
        lams.append(float(state["lagrangian"]))
    return state, lams


RULES = {"sgd": (gradient_step, {"lr": 0.1}), "adam": (gradient_step, {"lr": 0.1, "optimizer": "adam"}),
         "pid": (pid_step, {"kp": 0.1, "ki": 0.05, "kd": 0.1})}


@pytest.mark.parametrize("rule", list(RULES))
def test_cost_above_the_limit_raises_below_lowers_never_below_zero(rule):
    fn, kw = RULES[rule]
    _, up = _run(fn, [LIMIT + 3.0] * 10, init=1.0, **kw)
    assert all(b > a for a, b in zip(up, up[1:])) and up[0] > (0.0 if rule == "pid" else 1.0)
    _, down = _run(fn, [LIMIT - 3.0] * 10, init=1.0, **kw)
    assert down[-1] < 1.0 and all(b <= a for a, b in zip(down, down[1:]))
    _, floor = _run(fn, [0.0] * 200, init=1.0, **kw)
    assert min(floor) >= 0.0 and floor[-1] == 0.0


def test_sgd_steps_with_the_violation_and_adam_by_about_lr():
    state, _ = _run(gradient_step, [LIMIT + 2.0], init=1.0, lr=0.1)
    assert float(state["lagrangian"]) == pytest.approx(1.2)
    small, _ = _run(gradient_step, [LIMIT + 0.01], init=1.0, lr=0.1, optimizer="adam")
    big, _ = _run(gradient_step, [LIMIT + 100.0], init=1.0, lr=0.1, optimizer="adam")
    # the trap of Adam on a scalar: the same step whatever the size of the violation
    assert float(small["lagrangian"]) == pytest.approx(1.1, abs=1e-3) == float(big["lagrangian"])


def test_pid_integral_does_not_wind_up_while_the_multiplier_sits_at_zero():
    state, lams = _run(pid_step, [0.0] * 100, init=0.5, kp=0.1, ki=0.05, kd=0.1)
    assert lams[-1] == 0.0 and float(state["pid_integral"]) == 0.0  # clamped, never negative
    after = pid_step(state, LIMIT + 2.0, LIMIT, kp=0.1, ki=0.05, kd=0.1)
    # the first violation after a long safe stretch acts at once: P + I + D, none of it owed to the past
    assert float(after["lagrangian"]) == pytest.approx(0.1 * 2.0 + 0.05 * 2.0 + 0.1 * 7.0)


@pytest.mark.parametrize("rule", list(RULES))
def test_no_finished_episode_leaves_the_state_unchanged(rule):
    fn, kw = RULES[rule]
    state, _ = _run(fn, [LIMIT + 1.0, LIMIT + 4.0], init=0.3, **kw)
    same = fn(state, None, LIMIT, **kw)
    assert {k: float(v) for k, v in same.items()} == {k: float(v) for k, v in state.items()}


def test_window_cost_is_the_mean_of_recent_episodes_or_none():
    episodes = [{"episode_cost": float(c), "episode_return": 0.0} for c in range(10)]
    assert window_cost(episodes, 3, 4) == pytest.approx(7.5)
    assert window_cost(episodes, 0, 4) is None and window_cost([], 2, 4) is None
    with pytest.raises(PufferError, match="needs episode_cost in every finished episode.*myenv"):
        window_cost([{"episode_return": 1.0}], 1, 4, "myenv")


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [-1.0, math.nan, math.inf])
def test_a_negative_or_nan_cost_limit_is_refused(limit):
    with pytest.raises(PufferError, match="cost_limit=.* must be a finite number >= 0"):
        PPOLagrangianConfig(cost_limit=limit).validate()

def test_the_cli_reports_a_bad_cost_limit(capsys):
    assert main(["train", "hazard", "--algo", "ppo_lagrangian", "--cost-limit", "-1", "--steps", "128"]) == 2
    assert "cost_limit=-1.0 must be a finite number >= 0" in capsys.readouterr().err


def test_other_bad_settings_are_named():
    for kw, msg in [({"lagrangian_lr": -0.1}, "lagrangian_lr"), ({"lagrangian": "newton"}, "lagrangian"),
                    ({"advantage": "vtrace"}, "gae only"), ({"cost_window": 500}, "cost_window"),
                    ({"cost_critic": "shared", "policy": "lstm"}, "shared"), ({"pid_ema": 1.0}, "pid_ema")]:
        with pytest.raises(PufferError, match=msg):
            PPOLagrangianConfig(**kw).validate()


def test_an_env_without_cost_is_named_with_the_two_ways_to_report_one():
    trainer = PPOLagrangian("cartpole", backend="torch", **TINY)
    try:
        with pytest.raises(PufferError, match=r"ppo_lagrangian needs infos\['cost'\].*env cartpole reports none.*"
                                              r"info\['cost'\].*6-tuple"):
            trainer.collect()
    finally:
        trainer.close()


def test_a_cost_of_the_wrong_shape_is_named():
    trainer = PPOLagrangian("hazard", backend="torch", **TINY)
    step = trainer.env.step

    def two_costs(actions):
        obs, rewards, term, trunc, infos = step(actions)
        return obs, rewards, term, trunc, {**infos, "cost": np.zeros((8, 2), np.float32)}

    trainer.env.step = two_costs
    try:
        with pytest.raises(PufferError, match=r"env hazard: infos\['cost'\] has shape \(8, 2\), expected \(8,\)"):
            trainer.collect()
    finally:
        trainer.close()


# ---- costs from gymnasium envs ----------------------------------------------------------------------
class Lava(gym.Env):
    """Walk right to the goal at x = 4 (reward 1); action 1 is fast but costs 1, action 0 is slow and free."""

    observation_space = gs.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gs.Discrete(2)

    def __init__(self, six: bool = False):
        self.six = six

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.t += 1
        self.x += 1.0 if action == 1 else 0.5
        cost, done = float(action == 1), self.x >= 4.0
        obs, reward, trunc = np.array([self.x], np.float32), 1.0 if done else -0.1, self.t >= 10
        if self.six:
            return obs, reward, cost, done, trunc, {}
        return obs, reward, done, trunc, {"cost": cost}


@pytest.mark.parametrize("six", [False, True], ids=["info", "6-tuple"])
def test_gymnasium_costs_drive_the_multiplier(six):
    trainer = PPOLagrangian(lambda: Lava(six), backend="torch", cost_limit=0.5, lagrangian_lr=0.1, **TINY)
    try:
        stats = trainer.train(512)
        assert all("episode_cost" in e for e in trainer.episodes)
        # a random policy pays about 2 an episode here, far above the limit of 0.5: the multiplier rises
        assert stats["lagrangian"] > 0.0 and stats["window_episode_cost"] > 0.5
        assert (trainer.buffer.cost == 1.0).any()  # the fast steps' cost, recorded per step
    finally:
        trainer.close()


class Pair(ParallelEnv):
    """Two agents walk right for 4 steps; action 1 earns 1 and costs 1 (each agent its own cost)."""

    metadata = {"name": "pair_v0"}
    possible_agents = ["a", "b"]

    def observation_space(self, agent):
        return gs.Box(-10.0, 10.0, (1,), np.float32)

    def action_space(self, agent):
        return gs.Discrete(2)

    def reset(self, seed=None, options=None):
        self.t, self.agents = 0, list(self.possible_agents)
        return {ag: np.zeros(1, np.float32) for ag in self.agents}, {ag: {} for ag in self.agents}

    def step(self, actions):
        self.t += 1
        done = self.t == 4
        obs = {ag: np.full(1, self.t, np.float32) for ag in self.agents}
        out = (obs, {ag: float(a) for ag, a in actions.items()}, {ag: done for ag in self.agents},
               {ag: False for ag in self.agents}, {ag: {"cost": float(a)} for ag, a in actions.items()})
        if done:
            self.agents = []
        return out


def test_pettingzoo_costs_arrive_per_agent():
    trainer = PPOLagrangian(lambda: Pair(), backend="torch", cost_limit=0.5, lagrangian_lr=0.1, **TINY)
    try:
        stats = trainer.train(512)
        assert trainer.rows == 16 and {e["agent"] for e in trainer.episodes} == {"a", "b"}
        assert all(0 <= e["episode_cost"] <= 4 for e in trainer.episodes)
        assert stats["lagrangian"] > 0.0 and stats["window_episode_cost"] > 0.5
    finally:
        trainer.close()


def test_gym_id_through_the_cli(tmp_path, capsys):
    gym.register("PufferLava-v0", entry_point=Lava)
    try:
        assert main(["train", "gym:PufferLava-v0", "--algo", "ppo_lagrangian", "--backend", "torch", "--steps",
                     "256", "--num-envs", "8", "--rollout-len", "16", "--minibatch-size", "64", "--cost-limit",
                     "0.5", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    finally:
        gym.registry.pop("PufferLava-v0")
    assert checkpoint.read_manifest(tmp_path / "run")["algo"] == "ppo_lagrangian"


# ---- logging, resume, export --------------------------------------------------------------------------
def test_a_rollout_without_a_finished_episode_logs_it_and_keeps_the_multiplier():
    # Hazard episodes last at least ~20 steps: the first 16-step rollout finishes none
    trainer = PPOLagrangian("hazard", backend="torch", lagrangian_init=0.7, **TINY)
    try:
        stats = trainer.train(128)
        first = trainer.history[0]
        assert first["lagrangian_no_episode"] == 1.0 and first["lagrangian"] == 0.7
        assert "window_episode_cost" not in first
        assert all(math.isfinite(h["lagrangian"]) for h in trainer.history)  # no NaN mean of no episodes
        for key in ("cost_value_loss", "cost_explained_variance", "lagrangian"):
            assert key in stats
    finally:
        trainer.close()


@pytest.mark.parametrize("rule", ["gradient", "pid"])
def test_resume_repeats_the_straight_run_with_the_multiplier_state(tmp_path, rule):
    cfg = PPOLagrangianConfig(total_steps=1024, cost_limit=1.0, lagrangian=rule, lagrangian_lr=0.05, **TINY)
    straight = PPOLagrangian("hazard", backend="torch", config=cfg)
    straight.train(1024)
    first = PPOLagrangian("hazard", backend="torch", config=cfg)
    first.train(1024, callback=lambda t, stats: t.global_step >= 512)  # interrupted half-way through its budget
    first.save(tmp_path)
    first.close()
    saved = checkpoint.load(tmp_path)[0]["algo_state"]
    assert {"lagrangian", "pid_integral", "pid_p", "pid_cost", "adam_m"} <= set(saved)
    resumed = resume_trainer(tmp_path, backend="torch")
    try:
        assert resumed.resumed_exactly and resumed.algo == "ppo_lagrangian"
        resumed.train(1024)
        lams = [h["lagrangian"] for h in straight.history]
        assert lams[-1] > 0.0 and len(set(lams)) > 2  # the multiplier moved
        assert [h["lagrangian"] for h in resumed.history] == lams[len(lams) - len(resumed.history):]
        a, b = straight.algo_state, resumed.algo_state
        assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
        pa, pb = straight.numpy_params(), resumed.numpy_params()
        assert any(k.startswith("cost_critic/") for k in pa)
        for k in pa:
            np.testing.assert_allclose(pb[k], pa[k], rtol=0, atol=1e-6, err_msg=k)
    finally:
        straight.close()
        resumed.close()


def test_cross_backend_resume_and_actor_export(tmp_path):
    trainer = PPOLagrangian("hazard", backend="torch", cost_limit=1.0, cost_critic="shared", **TINY)
    trainer.train(256)
    trainer.save(tmp_path / "run")
    trainer.close()
    resumed = resume_trainer(tmp_path / "run", backend="jax")
    try:
        resumed.train(384)
        assert resumed.global_step == 384
    finally:
        resumed.close()
    pytest.importorskip("onnx")
    from puffer.deploy import Policy
    from puffer.export import export

    policy = Policy.load(export(tmp_path / "run", tmp_path / "p.onnx"))
    assert policy.act(np.zeros((3, 7), np.float32)).shape == (3, 2)
