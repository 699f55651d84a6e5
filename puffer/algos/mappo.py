"""MAPPO (Yu et al. 2022): decentralized shared-parameter actors with a centralized critic, written once.

Read top to bottom: the config (PPO's flags plus MAPPO's), the value normalizer, the loss (PPO's
clipped surrogate and entropy from `puffer.algos.ppo`, a Huber or squared value loss on
normalized targets), then `declare`. What differs from shared-parameter PPO, following
marlbenchmark/on-policy:

- the actor (MLP or LSTM, one set of parameters for every agent) reads only the agent's own
  observation plus a one-hot agent id; the critic is an MLP over the env's global state
  (`single_state_space`, `infos["global_state"]`, PettingZoo's `state()`) plus the id, one value
  per agent row. An env without a global state gets the concatenation of all its agents'
  observations (with a warning). The state enters the step as a declared input channel
  (`Plan.inputs`), so truncated episodes bootstrap from `infos["final_global_state"]`;
- value normalization (running mean and mean square, debiased, beta 0.99999, variance floored at
  1e-2; on by default): the critic predicts normalized returns, the values recorded during the
  rollout are denormalized (the moments are the algorithm's state; their mean and std reach the
  act and value functions as non-trainable `consts`), so GAE runs on real values. The statistics are
  updated once per rollout with that rollout's returns (on-policy updates them per minibatch);
- Huber value loss (delta 10) with value clipping, as on-policy; every loss term is masked for
  absent and dead agents (`mask`), rewards and dones are per agent row.

Measured here (torch, 2-core machine under load): see `tests/test_mappo.py` and BENCHMARKS.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

import puffer
from puffer.algos import ppo
from puffer.algos.advantage import gae
from puffer.algos.numerics import explained_variance, gradient_update, masked_mean, standardize
from puffer.backends.base import Array, Backend, Params
from puffer.errors import PufferError
from puffer.policies import CentralCriticPolicy, make_policy, policy_spec, reset_state
from puffer.train import Algorithm, OnPolicy, Plan, RunContext, Trainer

STAT_KEYS = ppo.STAT_KEYS
STATE = "global_state"


@dataclass
class MAPPOConfig(ppo.PPOConfig):
    """MAPPO hyperparameters: PPO's, a centralized critic and on-policy's value normalization and Huber loss."""

    learning_rate: float = 2e-3
    """Adam step size at the start of training (JaxMARL's MPE setting)."""
    agent_ids: bool = True
    """Append a one-hot agent id to the actor's and the critic's inputs (needs synchronous rollouts)."""
    value_norm: bool = True
    """Normalize value targets by a running, debiased mean and variance; values are denormalized for GAE."""
    value_norm_beta: float = 0.99999
    """Decay of the value normalizer's running moments."""
    huber_delta: float = 10.0
    """Huber value loss threshold on normalized targets (0: squared error)."""

    CHOICES: ClassVar[dict[str, tuple]] = {"advantage": ("gae",)}
    POSITIVE: ClassVar[tuple[str, ...]] = ("value_norm_beta",)

    def validate(self) -> None:
        """Raise PufferError naming the first field whose value cannot work."""
        super().validate()
        if not 0.0 < self.value_norm_beta < 1.0:
            raise PufferError(f"config value_norm_beta={self.value_norm_beta} must lie in (0, 1)")
        if self.huber_delta < 0:
            raise PufferError(f"config huber_delta={self.huber_delta} must be >= 0 (0: squared error)")


class ValueNorm:
    """Running debiased mean and variance of value targets (on-policy's ValueNorm), on the host."""

    def __init__(self, beta: float = 0.99999, eps: float = 1e-5, var_floor: float = 1e-2,
                 state: dict[str, np.ndarray] | None = None):
        self.beta, self.eps, self.var_floor = beta, eps, var_floor
        self.mean_ = 0.0
        self.mean_sq = 0.0
        self.debias = 0.0
        if state is not None:
            self.load_state_dict(state)

    def update(self, x: np.ndarray) -> None:
        """Fold the entries of `x` into the running moments."""
        if x.size == 0:
            return
        x = np.asarray(x, np.float64)
        b = self.beta
        self.mean_ = b * self.mean_ + (1 - b) * float(x.mean())
        self.mean_sq = b * self.mean_sq + (1 - b) * float((x * x).mean())
        self.debias = b * self.debias + (1 - b)

    def stats(self) -> tuple[float, float]:
        """Debiased (mean, std), the variance floored."""
        d = max(self.debias, self.eps)
        mean = self.mean_ / d
        return mean, float(np.sqrt(max(self.mean_sq / d - mean * mean, self.var_floor)))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """`(x - mean) / std`."""
        mean, std = self.stats()
        return ((x - mean) / std).astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Moments as arrays (checkpointed as `algo_state`)."""
        return {"mean": np.asarray(self.mean_), "mean_sq": np.asarray(self.mean_sq),
                "debias": np.asarray(self.debias)}

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore moments saved by `state_dict`."""
        self.mean_, self.mean_sq, self.debias = float(d["mean"]), float(d["mean_sq"]), float(d["debias"])


@dataclass(frozen=True)
class MAPPOStatic:
    """Loss settings fixed for a whole run."""

    norm_adv: bool = True
    clip_vloss: bool = True
    huber_delta: float = 10.0


def huber(be: Backend, err: Array, delta: float) -> Array:
    """Huber loss of errors `err` (squared error / 2 inside `delta`, linear outside); delta 0: squared / 2."""
    xp = be.xp
    if not delta:
        return 0.5 * err * err
    a = xp.abs(err)
    small = xp.astype(a <= delta, err.dtype)
    return small * 0.5 * err * err + (1.0 - small) * delta * (a - 0.5 * delta)


def mappo_value_loss(be: Backend, new: Array, old: Array, targets: Array, mask: Array, clip: Array | None,
                     delta: float) -> Array:
    """Huber (or squared) value error against normalized targets, the clipped error's max when clipping."""
    xp = be.xp
    err = huber(be, targets - new, delta)
    if clip is not None:
        clipped = old + xp.clip(new - old, -clip, clip)
        err = xp.maximum(err, huber(be, targets - clipped, delta))
    return masked_mean(be, err, mask)


def critic_inputs(be: Backend, policy: CentralCriticPolicy, mb: dict[str, Array]) -> Array:
    """The critic's inputs: the global state, then the one-hot agent id."""
    return policy.with_ids(be, mb[STATE], mb.get("agent_id"))


def mappo_loss(be: Backend, policy: CentralCriticPolicy, static: MAPPOStatic, params: Params,
               mb: dict[str, Array], hyper: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """PPO's clipped surrogate and entropy on the actor, the value loss on the central critic; (loss, stats)."""
    xp = be.xp
    dist = policy.actor_sequence(be, params, policy.with_ids(be, mb["obs"], mb.get("agent_id")), mb["state"],
                                 mb["starts"])
    new_values = policy.critic(be, params, critic_inputs(be, policy, mb))
    mask = mb["mask"]
    # zero on masked rows, so whatever an absent agent's row holds cannot overflow the ratio
    log_ratio = (policy.head.log_prob(be, dist, mb["actions"]) - mb["logp"]) * mask
    ratio = xp.exp(log_ratio)
    adv = standardize(be, mb["adv"], mask) if static.norm_adv else mb["adv"]
    pg_loss = ppo.surrogate_loss(be, ratio, adv, mask, hyper["clip_coef"])
    v_loss = mappo_value_loss(be, new_values, mb["values_norm"], mb["returns_norm"], mask,
                              hyper["vf_clip"] if static.clip_vloss else None, static.huber_delta)
    ent = masked_mean(be, policy.head.entropy(be, dist), mask)
    loss = pg_loss - hyper["ent_coef"] * ent + hyper["vf_coef"] * v_loss
    stats = {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": ent,
             **ppo.ratio_stats(be, ratio, log_ratio, mask, hyper["clip_coef"])}
    return loss, stats


def concat_agents(be: Backend, obs: Array, agents: int) -> Array:
    """Each row's env's agents' observations concatenated `[B, agents * D]` (rows in env order)."""
    xp = be.xp
    b, d = obs.shape[0], obs.shape[-1]
    joint = xp.reshape(obs, (b // agents, 1, agents * d))
    return xp.reshape(xp.broadcast_to(joint, (b // agents, agents, agents * d)), (b, agents * d))


def declare(ctx: RunContext, cfg: MAPPOConfig) -> Plan:
    """MAPPO's needs: a decentralized actor, a central critic on the global state, value-normalized GAE."""
    be = ctx.be
    agents = ctx.agents_per_env
    has_state = ctx.state_space is not None
    if (cfg.agent_ids or not has_state) and not ctx.sync:
        raise PufferError("mappo: agent ids and the observation-concatenation critic need synchronous rollouts "
                          f"(vec_batch_size={cfg.vec_batch_size} gives async batches); drop --vec-batch-size, or "
                          "pass --agent-ids false for an env with a global state")
    if has_state:
        state_dim = int(ctx.state_space.shape[0])
    else:
        state_dim = agents * ctx.obs_dim
        warnings.warn(f"mappo: env {ctx.env_name} has no global state (single_state_space is None); the critic "
                      f"sees the concatenation of all {agents} agents' observations ({state_dim} values)",
                      stacklevel=2)
    base = make_policy(ctx.observation_space, ctx.action_space, cfg.policy, cfg.hidden_size, cfg.num_layers,
                       cfg.activation)
    ids = agents if cfg.agent_ids else 0
    policy = CentralCriticPolicy(base.obs_dim, base.head, cfg.policy, base.hidden_size, base.num_layers,
                                 base.activation, ids, state_dim)
    params = policy.init(be, cfg.seed)
    opt, opt_kwargs = ppo.optimizer(cfg)
    static = MAPPOStatic(cfg.norm_adv, cfg.vf_clip > 0, cfg.huber_delta)
    update = gradient_update(be, lambda p, mb, consts, hyper: mappo_loss(be, policy, static, p, mb, hyper), opt,
                             opt_kwargs)

    def norm_of(state) -> ValueNorm:
        return ValueNorm(cfg.value_norm_beta, state=state)

    def stats_of(state) -> tuple[float, float]:
        return norm_of(state).stats() if cfg.value_norm else (0.0, 1.0)

    def consts(state) -> dict[str, np.ndarray]:
        mean, std = stats_of(state)
        return {"value_norm/mean": np.array([mean], np.float32), "value_norm/std": np.array([std], np.float32)}

    def global_state(obs, inputs):
        return inputs[STATE] if has_state else concat_agents(be, obs, agents)

    def real_value(params, consts, obs, inputs):
        v = policy.critic(be, params, policy.with_ids(be, global_state(obs, inputs), policy.row_ids(be, obs)))
        return v * consts["value_norm/std"] + consts["value_norm/mean"]

    def act_fn(be, params, consts, obs, state, starts, noise, inputs):
        x = policy.with_ids(be, obs, policy.row_ids(be, obs))
        dist, state = policy.actor(be, params, x, reset_state(be, state, starts))
        actions, logp = policy.head.sample(be, dist, noise)
        return actions, (logp, real_value(params, consts, obs, inputs)), state

    def values_fn(be, params, consts, obs, state, inputs):
        return (real_value(params, consts, obs, inputs),)

    def prepare(buf, state):
        """GAE on denormalized values; then the normalizer takes this rollout's returns and targets are normalized."""
        nb = puffer.backend("numpy")
        buf.adv[...] = gae(nb, buf.rewards, buf.values, buf.next["values"], buf.dones, cfg.gamma, cfg.gae_lambda)
        buf.returns[...] = buf.adv + buf.values
        old_mean, old_std = stats_of(state)
        buf.values_norm[...] = (buf.values - old_mean) / old_std
        if cfg.value_norm:
            norm = norm_of(state)
            norm.update(buf.returns[buf.mask > 0])
            buf.returns_norm[...] = norm.normalize(buf.returns)
            state = norm.state_dict()
        else:
            buf.returns_norm[...] = buf.returns
        if ids:
            buf.agent_id[...] = np.eye(ids, dtype=np.float32)[np.arange(buf.shape[0]) % ids][:, None, :]
        if not has_state:
            n, t, d = buf.obs.shape
            joint = buf.obs.reshape(n // agents, agents, t, d).transpose(0, 2, 1, 3).reshape(n // agents, t, -1)
            buf.data[STATE][...] = np.repeat(joint, agents, axis=0)
        return state

    def summarize(buf, state) -> dict[str, float]:
        mean, std = norm_of(state).stats()
        return {"explained_variance": explained_variance(buf.values, buf.returns), "value_norm_mean": mean,
                "value_norm_std": std}

    fields = ["obs", "actions", "logp", "values_norm", "mask", "starts", "adv", "returns_norm", STATE]
    derived = {"adv": 0, "returns": 0, "values_norm": 0, "returns_norm": 0}
    if ids:
        fields.append("agent_id")
        derived["agent_id"] = ids
    if not has_state:
        derived[STATE] = state_dim
    data = OnPolicy(
        act=act_fn, outputs=("logp", "values"), fields=tuple(fields), rollout_len=cfg.rollout_len,
        minibatch_size=cfg.minibatch_size, epochs=cfg.update_epochs,
        segment=1 if cfg.policy == "mlp" else cfg.bptt_horizon, derived=derived,
        inputs={STATE: state_dim} if has_state else {}, values=values_fn, bootstrap={"rewards": ("values", cfg.gamma)},
        early_stop=None if cfg.target_kl is None else (lambda s: s["approx_kl"] > cfg.target_kl))
    return Plan(
        policy=policy, policy_spec=policy_spec(policy), params=params, opt_state=opt.init(be, params), update=update,
        stat_keys=STAT_KEYS, hyper=lambda progress, state: ppo.ppo_hyper(cfg, progress), data=data,
        state=ValueNorm(cfg.value_norm_beta).state_dict(), consts=consts, prepare=prepare, summarize=summarize)


ALGORITHM = Algorithm("mappo", "Multi-agent PPO: shared decentralized actors, a centralized critic on the "
                               "global state, value normalization, Huber value loss", MAPPOConfig, declare)


class MAPPO(Trainer):
    """MAPPO written once: `MAPPO("landmarks", backend="torch").train(2_000_000)`."""

    algorithm = ALGORITHM


__all__ = ["MAPPO", "MAPPOConfig", "ValueNorm", "mappo_loss", "mappo_value_loss", "huber", "declare", "ALGORITHM"]
