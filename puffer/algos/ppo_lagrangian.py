"""PPO-Lagrangian (Ray et al. 2019; Stooke, Achiam and Abbeel 2020): PPO under a per-episode cost limit.

Read top to bottom: the config, the pure multiplier rules (numpy, on the host), the cost critic,
the loss (PPO's loss on the combined advantage plus a cost value loss), then `declare`, which
takes PPO's plan and adds what safety needs: the env's per-step `cost` recorded and bootstrapped
with a cost critic, cost GAE in `prepare`, and the multiplier step in `before_update`.

The constrained problem is max J_r subject to J_c <= cost_limit, J_c the expected cost of an
EPISODE (safety-gymnasium's convention: a limit of 25 is per 1000-step episode, not per step).
Its Lagrangian relaxation trains the policy on the advantage (A_r - lam * A_c) / (1 + lam) (both
standardized; the division keeps the advantage's scale as lam grows) and moves lam >= 0 against
the mean episode cost of the last `cost_window` finished episodes, once per update and before the
policy step. Traps the reference implementations fall into and this one avoids: the multiplier
is plain projected SGD by default (Adam on a scalar moves it by about +-lr per update whatever the
violation, OmniSafe's default), a rollout in which no episode finished leaves lam unchanged and
logs `lagrangian_no_episode` = 1 instead of crashing on a NaN mean, and lam and the PID state are
checkpointed (`algo_state`) so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

import puffer
from puffer.algos import ppo
from puffer.algos.advantage import gae
from puffer.algos.numerics import explained_variance, standardize
from puffer.algos.ppo import PPOConfig, ppo_loss, value_loss
from puffer.backends.base import Array, Backend, Params
from puffer.errors import PufferError
from puffer.nn import linear, mlp
from puffer.policies import act
from puffer.train import Algorithm, Plan, RunContext, Trainer, UpdateInfo

STAT_KEYS = (*ppo.STAT_KEYS, "cost_value_loss")
COST_PREFIX = "cost_critic/"
HOW_TO_REPORT_COST = ("report a per-step cost as info['cost'] from a gymnasium env's step, or return "
                      "safety-gymnasium's 6-tuple (obs, reward, cost, terminated, truncated, info)")


@dataclass
class PPOLagrangianConfig(PPOConfig):
    """PPO-Lagrangian hyperparameters: PPO's, plus the cost limit, the cost critic and the multiplier rule."""

    cost_limit: float = 25.0
    """Limit on the expected cost of an EPISODE (safety-gymnasium's 25 is per 1000-step episode)."""
    cost_gamma: float = 0.99
    """Discount factor of the cost."""
    cost_lambda: float = 0.95
    """GAE lambda of the cost advantage."""
    cost_critic: str = "separate"
    """Cost value network: separate (its own MLP over the observation) or shared (a linear head on the reward
    critic's last hidden layer; mlp policies only)."""
    cost_window: int = 20
    """Recent finished episodes whose mean episode cost drives the multiplier (at most 100)."""
    lagrangian: str = "gradient"
    """Multiplier rule: gradient (projected gradient ascent on the violation) or pid (PID Lagrangian)."""
    lagrangian_init: float = 0.0
    """Initial Lagrange multiplier (for pid: the integral term's initial value)."""
    lagrangian_lr: float = 0.01
    """Step size of the gradient rule: lam moves lr * (episode cost - limit) per update with sgd (OmniSafe's 0.035
    is for adam; with sgd on Hazard it overshoots into a policy that stands still)."""
    lagrangian_optimizer: str = "sgd"
    """Optimizer of the gradient rule: sgd (steps proportional to the violation) or adam (about +-lr a step)."""
    pid_kp: float = 0.1
    """PID rule: weight of the (smoothed) violation."""
    pid_ki: float = 0.01
    """PID rule: weight of the accumulated violation (the integral, kept >= 0 so it cannot wind up)."""
    pid_kd: float = 0.01
    """PID rule: weight of the (smoothed) rise of the episode cost since the previous update."""
    pid_ema: float = 0.0
    """PID rule: smoothing of the P and D inputs across updates (0: none; OmniSafe uses 0.95)."""

    CHOICES: ClassVar[dict[str, tuple]] = {"cost_critic": ("separate", "shared"), "lagrangian": ("gradient", "pid"),
                                           "lagrangian_optimizer": ("sgd", "adam")}
    POSITIVE: ClassVar[tuple[str, ...]] = ("cost_window",)

    def validate(self) -> None:
        """Raise PufferError naming the first field whose value cannot work."""
        super().validate()
        if not math.isfinite(self.cost_limit) or self.cost_limit < 0:
            raise PufferError(f"config cost_limit={self.cost_limit} must be a finite number >= 0 (the limit on the "
                              "expected cost of an episode)")
        for name in ("lagrangian_init", "lagrangian_lr", "pid_kp", "pid_ki", "pid_kd"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise PufferError(f"config {name}={value} must be a finite number >= 0")
        if not 0.0 <= self.pid_ema < 1.0:
            raise PufferError(f"config pid_ema={self.pid_ema} must be in [0, 1)")
        if self.cost_window > 100:
            raise PufferError(f"config cost_window={self.cost_window} must be at most 100 (the trainer keeps the "
                              "last 100 episodes)")
        if self.advantage != "gae":
            raise PufferError(f"config advantage={self.advantage!r}: ppo_lagrangian computes reward and cost "
                              "advantages with gae only")
        if self.cost_critic == "shared" and self.policy != "mlp":
            raise PufferError("config cost_critic='shared' needs policy='mlp' (a head on the reward critic's MLP)")


# ---- the multiplier rules: pure numpy, once per update on the host ------------------------------
STATE_KEYS = ("lagrangian", "adam_m", "adam_v", "adam_t", "pid_integral", "pid_p", "pid_cost", "pid_updates")


def initial_state(init: float) -> dict[str, np.ndarray]:
    """Multiplier state before the first update: lam = `init` (also the PID integral), everything else 0."""
    state = {k: np.zeros((), np.float64) for k in STATE_KEYS}
    state["lagrangian"] = np.asarray(init, np.float64)
    state["pid_integral"] = np.asarray(init, np.float64)
    return state


def gradient_step(state: dict[str, np.ndarray], episode_cost: float | None, limit: float, lr: float,
                  optimizer: str = "sgd", betas: tuple[float, float] = (0.9, 0.999),
                  eps: float = 1e-8) -> dict[str, np.ndarray]:
    """Projected gradient ascent of lam on (episode_cost - limit); None (no finished episode) changes nothing."""
    if episode_cost is None:
        return dict(state)
    out = {k: np.array(v, np.float64) for k, v in state.items()}
    violation = float(episode_cost) - limit
    lam = float(state["lagrangian"])
    if optimizer == "sgd":
        lam = lam + lr * violation
    else:
        # Adam on the loss -lam * violation, as OmniSafe's torch optimizer does it
        g = -violation
        t = float(state["adam_t"]) + 1
        m = betas[0] * float(state["adam_m"]) + (1 - betas[0]) * g
        v = betas[1] * float(state["adam_v"]) + (1 - betas[1]) * g * g
        lam = lam - lr * (m / (1 - betas[0] ** t)) / (math.sqrt(v / (1 - betas[1] ** t)) + eps)
        out["adam_m"], out["adam_v"], out["adam_t"] = (np.asarray(x, np.float64) for x in (m, v, t))
    out["lagrangian"] = np.asarray(max(lam, 0.0), np.float64)
    return out


def pid_step(state: dict[str, np.ndarray], episode_cost: float | None, limit: float, kp: float, ki: float,
             kd: float, ema: float = 0.0) -> dict[str, np.ndarray]:
    """The PID Lagrangian (Stooke et al. 2020, Alg. 2): lam = (kp*P + I + kd*D)+; None changes nothing.

    P is the (smoothed) violation, I the accumulated ki * violation clamped at 0 (so a long stretch
    under the limit does not wind it down and the first violation after it acts at once), D the
    rise of the (smoothed) episode cost since the previous update, counted only when positive.
    """
    if episode_cost is None:
        return dict(state)
    out = {k: np.array(v, np.float64) for k, v in state.items()}
    cost = float(episode_cost)
    violation = cost - limit
    first = float(state["pid_updates"]) == 0
    p = violation if first else ema * float(state["pid_p"]) + (1 - ema) * violation
    smoothed = cost if first else ema * float(state["pid_cost"]) + (1 - ema) * cost
    rise = 0.0 if first else max(0.0, smoothed - float(state["pid_cost"]))
    integral = max(0.0, float(state["pid_integral"]) + ki * violation)
    out["pid_p"], out["pid_cost"], out["pid_integral"] = (np.asarray(x, np.float64) for x in (p, smoothed, integral))
    out["pid_updates"] = np.asarray(float(state["pid_updates"]) + 1, np.float64)
    out["lagrangian"] = np.asarray(max(0.0, kp * p + integral + kd * rise), np.float64)
    return out


def window_cost(episodes: list[dict[str, Any]], new_episodes: int, window: int, env_name: str = "env") -> float | None:
    """Mean `episode_cost` of the last `window` finished episodes, or None when none finished since the last update.

    With several agents per env (PettingZoo), each agent's episode counts as one: the limit is per agent.
    """
    if new_episodes <= 0 or not episodes:
        return None
    recent = episodes[-window:]
    missing = [e for e in recent if "episode_cost" not in e]
    if missing:
        raise PufferError(f"ppo_lagrangian needs episode_cost in every finished episode (infos['episodes']), but "
                          f"{env_name} reported {sorted(missing[0])}")
    # float64 whatever the episodes hold (float32 live, Python floats after a resume): the same mean either way
    return float(np.mean(np.asarray([e["episode_cost"] for e in recent], np.float64)))


# ---- the cost critic and the loss -------------------------------------------------------------
def cost_critic_init(policy: Any, cfg: PPOLagrangianConfig) -> dict[str, np.ndarray]:
    """Cost critic parameters under `cost_critic/` (own seed stream, so the policy's init matches PPO's)."""
    rng = np.random.Generator(np.random.PCG64([cfg.seed, 1]))
    if cfg.cost_critic == "shared":
        return linear.init(None, rng, cfg.hidden_size, 1, gain=1.0, prefix=COST_PREFIX)
    return mlp.init(None, rng, [policy.obs_dim, *[cfg.hidden_size] * cfg.num_layers, 1], out_gain=1.0,
                    prefix=COST_PREFIX)


def cost_value(be: Backend, policy: Any, shared: bool, params: Params, obs: Array) -> Array:
    """The cost critic's value of observations `[..., obs_dim]` -> `[...]`."""
    if not shared:
        return mlp.apply(be, params, obs, policy.activation, prefix=COST_PREFIX)[..., 0]
    x = obs
    for i in range(mlp.num_layers(params, "critic/") - 1):  # the reward critic's hidden layers
        x = mlp.activate(be, linear.apply(be, params, x, prefix=f"critic/{i}/"), policy.activation)
    return linear.apply(be, params, x, prefix=COST_PREFIX)[..., 0]


def combined_advantage(be: Backend, adv: Array, cost_adv: Array, lagrangian: Array, mask: Array,
                       norm: bool = True) -> Array:
    """(A_r - lam * A_c) / (1 + lam), each advantage standardized first (with `norm`)."""
    if norm:
        adv, cost_adv = standardize(be, adv, mask), standardize(be, cost_adv, mask)
    return (adv - lagrangian * cost_adv) / (1.0 + lagrangian)


def make_loss(shared: bool):
    """The PPO-Lagrangian loss: PPO's loss on the combined advantage plus the weighted cost value loss."""

    def loss_fn(be: Backend, policy: Any, static: ppo.LossStatic, params: Params, mb: dict[str, Array],
                hyper: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
        mask = mb["mask"]
        adv = combined_advantage(be, mb["adv"], mb["cost_adv"], hyper["lagrangian"], mask, static.norm_adv)
        # already standardized: PPO's loss must not standardize the combination again
        loss, stats = ppo_loss(be, policy, dataclasses.replace(static, norm_adv=False), params, {**mb, "adv": adv},
                               hyper)
        new_cost = cost_value(be, policy, shared, params, mb["obs"])
        c_loss = value_loss(be, new_cost, mb["cost_values"], mb["cost_returns"], mask,
                            hyper["vf_clip"] if static.clip_vloss else None)
        return loss + hyper["vf_coef"] * c_loss, {**stats, "cost_value_loss": c_loss}

    return loss_fn


# ---- what PPO-Lagrangian declares -------------------------------------------------------------
def declare(ctx: RunContext, cfg: PPOLagrangianConfig) -> Plan:
    """PPO's plan plus a cost critic, the recorded and bootstrapped cost, cost GAE and the multiplier step."""
    be = ctx.be
    shared = cfg.cost_critic == "shared"
    base = ppo.declare(ctx, cfg, loss_fn=make_loss(shared), stat_keys=STAT_KEYS)
    policy = base.policy
    params = {**base.params, **{k: be.asarray(v) for k, v in cost_critic_init(policy, cfg).items()}}
    opt, _ = ppo.optimizer(cfg)

    def act_fn(be, params, consts, obs, state, starts, noise, inputs):
        actions, logp, value, state = act(be, policy, params, obs, state, starts, noise)
        return actions, (logp, value, cost_value(be, policy, shared, params, obs)), state

    def values_fn(be, params, consts, obs, state, inputs):
        return policy.step(be, params, obs, state)[1], cost_value(be, policy, shared, params, obs)

    def prepare(buf, state):
        """Reward GAE (PPO's) and cost GAE with the cost's own gamma and lambda, on the host."""
        state = base.prepare(buf, state)
        buf.cost_adv[...] = gae(puffer.backend("numpy"), buf.cost, buf.cost_values, buf.next["cost_values"],
                                buf.dones, cfg.cost_gamma, cfg.cost_lambda)
        buf.cost_returns[...] = buf.cost_adv + buf.cost_values
        return state

    def before_update(state, info: UpdateInfo):
        """The multiplier step from the mean episode cost of recent episodes (unchanged if none finished)."""
        jc = window_cost(list(info.episodes), info.new_episodes, cfg.cost_window, ctx.env_name)
        if cfg.lagrangian == "pid":
            state = {**state, **pid_step(state, jc, cfg.cost_limit, cfg.pid_kp, cfg.pid_ki, cfg.pid_kd, cfg.pid_ema)}
        else:
            state = {**state, **gradient_step(state, jc, cfg.cost_limit, cfg.lagrangian_lr, cfg.lagrangian_optimizer)}
        stats = {"lagrangian": float(state["lagrangian"]), "lagrangian_no_episode": float(jc is None)}
        if jc is not None:
            stats["window_episode_cost"] = jc
        return state, stats

    def hyper(progress, state) -> dict[str, float]:
        return {**base.hyper(progress, state), "lagrangian": float(state["lagrangian"])}

    def summarize(buf, state) -> dict[str, float]:
        return {**base.summarize(buf, state),
                "cost_explained_variance": explained_variance(buf.cost_values, buf.cost_returns)}

    data = dataclasses.replace(
        base.data, act=act_fn, outputs=("logp", "values", "cost_values"), values=values_fn,
        bootstrap={"rewards": ("values", cfg.gamma), "cost": ("cost_values", cfg.cost_gamma)},
        fields=(*base.data.fields, "cost_values", "cost_adv", "cost_returns"),
        derived={**base.data.derived, "cost_adv": 0, "cost_returns": 0}, record={"cost": 0},
        record_help={"cost": HOW_TO_REPORT_COST})
    return dataclasses.replace(
        base, params=params, opt_state=opt.init(be, params), data=data, hyper=hyper, prepare=prepare,
        state=initial_state(cfg.lagrangian_init), before_update=before_update, summarize=summarize)


ALGORITHM = Algorithm("ppo_lagrangian", "PPO under a per-episode cost limit: cost critic, cost GAE, "
                               "gradient or PID Lagrange multiplier", PPOLagrangianConfig, declare)


class PPOLagrangian(Trainer):
    """PPO-Lagrangian written once: `PPOLagrangian("hazard", backend="torch", cost_limit=2).train(100_000)`."""

    algorithm = ALGORITHM


__all__ = ["PPOLagrangian", "PPOLagrangianConfig", "initial_state", "gradient_step", "pid_step", "window_cost",
           "combined_advantage", "cost_value", "make_loss", "declare", "ALGORITHM"]
