"""PPO (Schulman et al. 2017) with GAE or live V-trace, written once: config, loss, update, declaration.

Read top to bottom: the config (every field a flag), the clipped loss, the compiled update step,
then `declare`, which tells the machinery (`puffer.train`) what PPO needs: an actor-critic policy,
log-prob and value recorded per step, rewards bootstrapped with the value, GAE on the host and
shuffled minibatches. Minibatches are `[S, L]` sequences (L = 1 for shuffled single steps, L =
bptt_horizon for recurrent policies or V-trace). Every per-call value that may change (lr, clip
coefficients, entropy weight) arrives in `hyper` as 0-d arrays so compiled steps never freeze them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import puffer
from puffer import optim
from puffer.algos.advantage import gae, vtrace
from puffer.algos.numerics import explained_variance, gradient_update, learning_rate, masked_mean, standardize
from puffer.backends.base import Array, Backend, Params
from puffer.errors import PufferError
from puffer.policies import act, make_policy, policy_spec
from puffer.train import Algorithm, OnPolicy, Plan, Progress, RunConfig, RunContext, Trainer, hyper_arrays

HYPER_KEYS = ("lr", "clip_coef", "vf_clip", "vf_coef", "ent_coef", "max_grad_norm")
STAT_KEYS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")


@dataclass
class PPOConfig(RunConfig):
    """PPO hyperparameters; the defaults solve the built-in CartPole in well under 300k steps."""

    policy: str = "mlp"
    """Policy network: mlp (separate actor and critic MLPs) or lstm (shared encoder and LSTM)."""
    hidden_size: int = 64
    """Width of the hidden layers (the LSTM's state size for --policy lstm)."""
    num_layers: int = 2
    """Hidden layers of each MLP."""
    activation: str = "tanh"
    """Activation of the hidden layers."""
    rollout_len: int = 32
    """Steps of every env row per rollout; one update follows each rollout."""
    bptt_horizon: int = 16
    """Sequence length of recurrent (and V-trace) training; must divide rollout_len."""
    minibatch_size: int = 512
    """Env steps per minibatch; must divide num_envs * agents * rollout_len."""
    update_epochs: int = 4
    """Passes over each rollout."""
    learning_rate: float = 2.5e-3
    """Adam step size at the start of training."""
    lr_schedule: str = "linear"
    """Learning-rate annealing over total_steps: linear or cosine to 0, or constant."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (also V-trace's lambda)."""
    advantage: str = "gae"
    """Advantage estimator: gae (once per rollout, on the host) or vtrace (live ratios, every minibatch)."""
    vtrace_rho_clip: float = 1.0
    """V-trace clip of the importance weight rho."""
    vtrace_c_clip: float = 1.0
    """V-trace clip of the trace coefficient c."""
    clip_coef: float = 0.2
    """Clip range of the probability ratio in the surrogate objective."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    vf_clip: float = 0.2
    """Clip range of the value update around the rollout's value (0 turns value clipping off)."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    norm_adv: bool = True
    """Standardize advantages per minibatch."""
    adam_eps: float = 1e-5
    """Adam's epsilon."""
    adam_b1: float = 0.9
    """Adam's beta1."""
    adam_b2: float = 0.999
    """Adam's beta2."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) when above 0."""
    target_kl: float | None = None
    """Stop an update's epochs early once the mean approximate KL exceeds this."""

    CHOICES: ClassVar[dict[str, tuple]] = {"policy": ("mlp", "lstm"), "activation": ("tanh", "relu", "gelu"),
                                           "lr_schedule": ("linear", "cosine", "constant"),
                                           "advantage": ("gae", "vtrace")}
    POSITIVE: ClassVar[tuple[str, ...]] = ("rollout_len", "bptt_horizon", "minibatch_size", "update_epochs",
                                           "hidden_size", "num_layers")

    def validate(self) -> None:
        """Raise PufferError naming the first field whose value cannot work."""
        super().validate()
        sequences = self.policy == "lstm" or self.advantage == "vtrace"
        if sequences and self.rollout_len % self.bptt_horizon:
            raise PufferError(
                f"config rollout_len={self.rollout_len} must be a multiple of bptt_horizon={self.bptt_horizon}"
            )


@dataclass(frozen=True)
class LossStatic:
    """Loss settings fixed for a whole run (safe to close over in compiled code)."""

    advantage: str = "gae"
    norm_adv: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    rho_clip: float = 1.0
    c_clip: float = 1.0
    clip_vloss: bool = True


def surrogate_loss(be: Backend, ratio: Array, adv: Array, mask: Array, clip: Array) -> Array:
    """The clipped surrogate policy loss, averaged over masked entries."""
    xp = be.xp
    return masked_mean(be, xp.maximum(-adv * ratio, -adv * xp.clip(ratio, 1.0 - clip, 1.0 + clip)), mask)


def value_loss(be: Backend, new_values: Array, old_values: Array, returns: Array, mask: Array,
               clip: Array | None) -> Array:
    """Half the (optionally clipped, as in PPO2) squared error of the value against its targets."""
    xp = be.xp
    err = (new_values - returns) ** 2
    if clip is not None:
        clipped = old_values + xp.clip(new_values - old_values, -clip, clip)
        err = xp.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(be, err, mask)


def ratio_stats(be: Backend, ratio: Array, log_ratio: Array, mask: Array, clip: Array) -> dict[str, Array]:
    """Approximate KL (k3 estimator) and the fraction of clipped ratios."""
    xp = be.xp
    return {"approx_kl": be.stop_gradient(masked_mean(be, (ratio - 1.0) - log_ratio, mask)),
            "clipfrac": masked_mean(be, xp.astype(xp.abs(ratio - 1.0) > clip, ratio.dtype), mask)}


def ppo_loss(be: Backend, policy: Any, static: LossStatic, params: Params, mb: dict[str, Array],
             hyper: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """Clipped-surrogate PPO loss with clipped value loss and entropy bonus; returns (loss, stats)."""
    xp = be.xp
    dist, new_values = policy.sequence(be, params, mb["obs"], mb["state"], mb["starts"])
    new_logp = policy.head.log_prob(be, dist, mb["actions"])
    entropy = policy.head.entropy(be, dist)
    mask = mb["mask"]
    log_ratio = new_logp - mb["logp"]
    ratio = xp.exp(log_ratio)

    if static.advantage == "vtrace":
        # live importance ratios of the current policy, as PufferLib's trainer recomputes them
        adv = vtrace(be, mb["rewards"], mb["values"], mb["next_values"], mb["dones"], be.stop_gradient(ratio),
                     static.gamma, static.gae_lambda, static.rho_clip, static.c_clip)
        returns = adv + mb["values"]
    else:
        adv, returns = mb["adv"], mb["returns"]
    if static.norm_adv:
        adv = standardize(be, adv, mask)

    pg_loss = surrogate_loss(be, ratio, adv, mask, hyper["clip_coef"])
    v_loss = value_loss(be, new_values, mb["values"], returns, mask, hyper["vf_clip"] if static.clip_vloss else None)
    ent = masked_mean(be, entropy, mask)
    loss = pg_loss - hyper["ent_coef"] * ent + hyper["vf_coef"] * v_loss
    stats = {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": ent,
             **ratio_stats(be, ratio, log_ratio, mask, hyper["clip_coef"])}
    return loss, stats


def ppo_hyper(cfg: PPOConfig, progress: Progress) -> dict[str, float]:
    """The per-update values of PPO's loss: the annealed learning rate and the loss weights and clips."""
    return {"lr": learning_rate(cfg, progress.fraction), "clip_coef": cfg.clip_coef, "vf_clip": cfg.vf_clip,
            "vf_coef": cfg.vf_coef, "ent_coef": cfg.ent_coef, "max_grad_norm": cfg.max_grad_norm}


def optimizer(cfg: PPOConfig) -> tuple[Any, dict[str, float]]:
    """Adam, or AdamW when weight decay is set, with the config's betas and epsilon."""
    kwargs = {"beta1": cfg.adam_b1, "beta2": cfg.adam_b2, "eps": cfg.adam_eps}
    if cfg.weight_decay:
        return optim.adamw, {**kwargs, "weight_decay": cfg.weight_decay}
    return optim.adam, kwargs


def declare(ctx: RunContext, cfg: PPOConfig, loss_fn: Callable | None = None,
            stat_keys: tuple[str, ...] = STAT_KEYS) -> Plan:
    """PPO's needs: an actor-critic, log-prob and value per step, GAE on the host, shuffled minibatches.

    PPO's relatives pass their own `loss_fn(be, policy, static, params, mb, hyper)` and the `stat_keys`
    its statistics carry.
    """
    be = ctx.be
    policy = make_policy(ctx.observation_space, ctx.action_space, cfg.policy, cfg.hidden_size, cfg.num_layers,
                         cfg.activation)
    params = policy.init(be, cfg.seed)
    opt, opt_kwargs = optimizer(cfg)
    static = LossStatic(cfg.advantage, cfg.norm_adv, cfg.gamma, cfg.gae_lambda, cfg.vtrace_rho_clip,
                        cfg.vtrace_c_clip, cfg.vf_clip > 0)
    loss_fn = loss_fn or ppo_loss
    update = gradient_update(be, lambda p, mb, consts, hyper: loss_fn(be, policy, static, p, mb, hyper), opt,
                             opt_kwargs)
    vtraced = cfg.advantage == "vtrace"

    def act_fn(be, params, consts, obs, state, starts, noise, inputs):
        actions, logp, value, state = act(be, policy, params, obs, state, starts, noise)
        return actions, (logp, value), state

    def values_fn(be, params, consts, obs, state, inputs):
        return (policy.step(be, params, obs, state)[1],)

    def prepare(buf, state):
        """GAE on the host through the numpy backend; V-trace recomputes its own inside the loss, and its
        on-policy targets here serve explained variance."""
        buf.adv[...] = gae(puffer.backend("numpy"), buf.rewards, buf.values, buf.next["values"], buf.dones,
                           cfg.gamma, cfg.gae_lambda)
        buf.returns[...] = buf.adv + buf.values
        return state

    fields = ["obs", "actions", "logp", "values", "mask", "starts"]
    fields += ["rewards", "dones"] if vtraced else ["adv", "returns"]
    data = OnPolicy(
        act=act_fn, outputs=("logp", "values"), fields=tuple(fields), rollout_len=cfg.rollout_len,
        minibatch_size=cfg.minibatch_size, epochs=cfg.update_epochs,
        segment=1 if (cfg.policy == "mlp" and not vtraced) else cfg.bptt_horizon, derived={"adv": 0, "returns": 0},
        values=values_fn, bootstrap={"rewards": ("values", cfg.gamma)},
        early_stop=None if cfg.target_kl is None else (lambda s: s["approx_kl"] > cfg.target_kl))
    return Plan(
        policy=policy, policy_spec=policy_spec(policy), params=params, opt_state=opt.init(be, params), update=update,
        stat_keys=stat_keys, hyper=lambda progress, state: ppo_hyper(cfg, progress), data=data, prepare=prepare,
        summarize=lambda buf, state: {"explained_variance": explained_variance(buf.values, buf.returns)})


ALGORITHM = Algorithm("ppo", "Proximal Policy Optimization: clipped surrogate, GAE or live V-trace, MLP or "
                               "LSTM", PPOConfig, declare)


class PPO(Trainer):
    """Proximal Policy Optimization written once: `PPO(env, backend="torch").train(200_000)`."""

    algorithm = ALGORITHM


__all__ = ["PPO", "PPOConfig", "LossStatic", "ppo_loss", "hyper_arrays", "declare", "ALGORITHM"]
