"""Decision Transformer (Chen et al. 2021) and its behaviour-cloning baseline, trained offline from a Minari dataset.

`puffer train cartpole --algo dt --dataset DIR --target-return 500`: the machinery's offline data
source (`puffer.train.Offline`) never steps the env while training; every gradient step draws a
minibatch of K-step windows from the dataset's trajectories on the host (right-padded with a mask
where a window runs past its episode's end, episodes drawn in proportion to their length as in
kzl/decision-transformer), and `total_steps` counts gradient steps. The network is
`puffer.sequence.DecisionTransformer`: returns-to-go (divided by `rtg_scale`), states (normalized
by the dataset's mean and std) and actions embedded, plus a timestep embedding, through a causal
GPT-2 stack. The loss is on actions only (cross-entropy for discrete parts, squared error for
continuous ones) over real steps; AdamW with linear warmup and global-norm clipping; dropout on the
token embeddings from host uniforms. Evaluation conditions on `target_return` and decrements it by
each observed reward. `--algo bc` is the same backbone without return-to-go tokens.

Measured here (a CartPole dataset from three scripted policies, mean return 101; 400 gradient steps of
a small config): targets 500 / 150 / 20 give 352-379 / 188-240 / 9-10 on torch over seeds 0-2, BC 91
(tests/test_decision_transformer.py and BENCHMARKS.md have the details).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from puffer import datasets, optim
from puffer.algos.numerics import gradient_update, masked_mean
from puffer.backends.base import Array, Backend, Params
from puffer.errors import PufferError
from puffer.sequence import ContextActor, DecisionTransformer
from puffer.train import Algorithm, Offline, Plan, RunConfig, RunContext, Trainer

STAT_KEYS = ("loss", "action_error", "grad_norm")


@dataclass
class DTConfig(RunConfig):
    """Decision Transformer hyperparameters (kzl/decision-transformer's, scaled down for small envs)."""

    total_steps: int = 3000
    """Gradient steps to train for (offline: the env is only stepped by evaluation episodes)."""
    num_envs: int = 8
    """Environments stepped together by evaluation episodes."""
    dataset: str = ""
    """The Minari dataset to learn from: a directory (`puffer collect` writes one) or an id in MINARI_DATASETS_PATH."""
    context_len: int = 20
    """K: steps in each context window."""
    embed_dim: int = 64
    """Width of the token embeddings and the transformer."""
    num_layers: int = 2
    """Transformer blocks."""
    num_heads: int = 1
    """Attention heads per block (must divide embed_dim)."""
    dropout: float = 0.1
    """Drop probability on the token embeddings while training."""
    batch_size: int = 64
    """Context windows per gradient step."""
    learning_rate: float = 1e-3
    """AdamW step size after warmup."""
    warmup_steps: int = 300
    """Gradient steps of linear learning-rate warmup from 0."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay."""
    max_grad_norm: float = 0.25
    """Global gradient-norm clip."""
    rtg_scale: float = 100.0
    """Returns-to-go are divided by this before they enter the network (kzl: 1000 for MuJoCo)."""
    target_return: float = 500.0
    """The return evaluation episodes are conditioned on (decremented by each reward)."""
    max_timestep: int = 1000
    """Size of the timestep embedding; later timesteps are clipped to max_timestep - 1."""
    steps_per_update: int = 100
    """Gradient steps between progress reports (one `update`)."""
    eval_every: int = 1000
    """Gradient steps between evaluation runs on the env (their returns are the progress line's return)."""
    eval_episodes: int = 10
    """Episodes per evaluation run."""

    POSITIVE: ClassVar[tuple[str, ...]] = ("context_len", "embed_dim", "num_layers", "num_heads", "batch_size",
                                           "rtg_scale", "max_timestep", "steps_per_update", "eval_episodes")

    def validate(self) -> None:
        """Raise PufferError naming the first field whose value cannot work."""
        super().validate()
        if not self.dataset:
            raise PufferError("config dataset is empty: pass --dataset DIR (make one with "
                              "`puffer collect ENV --to DIR`)")
        if not math.isfinite(self.target_return):
            raise PufferError(f"config target_return={self.target_return} must be a finite number")
        if not 0.0 <= self.dropout < 1.0:
            raise PufferError(f"config dropout={self.dropout} must be within [0, 1)")
        if self.embed_dim % self.num_heads:
            raise PufferError(f"config embed_dim={self.embed_dim} must be a multiple of num_heads={self.num_heads}")
        if self.warmup_steps < 0 or self.eval_every < 0:
            raise PufferError("config warmup_steps and eval_every must not be negative")


@dataclass
class BCConfig(DTConfig):
    """Behaviour cloning on the Decision Transformer's backbone (no return conditioning; target_return is unused)."""


class WindowSampler:
    """K-step windows of a dataset's trajectories as flat host arrays, right-padded with a mask."""

    def __init__(self, ds: datasets.Dataset, model: DecisionTransformer, batch: int, dropout: float):
        self.model, self.batch, self.k, self.dropout = model, batch, model.context, dropout
        lengths = ds.lengths()
        self.lengths, self.starts = lengths, np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.probs = lengths / lengths.sum()
        mean, inv = np.asarray(model.state_mean, np.float32), 1.0 / np.asarray(model.state_std, np.float32)
        self.states = np.concatenate([(e.observations[:-1] - mean) * inv for e in ds.episodes]).astype(np.float32)
        self.actions = np.concatenate(ds.flat_actions()).astype(np.float32)
        # undiscounted return-to-go from each step, scaled
        self.rtg = np.concatenate([np.cumsum(e.rewards[::-1])[::-1] for e in ds.episodes]).astype(np.float32)
        self.rtg /= np.float32(model.rtg_scale)
        self.timesteps = np.concatenate([np.arange(n) for n in lengths]).astype(np.float32)

    def fields(self) -> dict[str, int]:
        """Packed field widths of a minibatch."""
        f = {"states": self.model.obs_dim, "actions": self.model.head.action_dim, "rtg": 0, "timesteps": 0, "mask": 0}
        if self.dropout > 0:
            f["dropout"] = self.model.tokens_per_step * self.model.embed
        return f

    def __call__(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        b, k = self.batch, self.k
        ep = rng.choice(len(self.lengths), size=b, p=self.probs)
        start = (rng.random(b) * self.lengths[ep]).astype(np.int64)
        offs = start[:, None] + np.arange(k)[None]
        valid = offs < self.lengths[ep][:, None]
        idx = np.where(valid, self.starts[ep][:, None] + offs, 0)
        m = valid.astype(np.float32)
        out = {"states": self.states[idx] * m[..., None], "actions": self.actions[idx] * m[..., None],
               "rtg": self.rtg[idx] * m, "timesteps": self.timesteps[idx] * m, "mask": m}
        if self.dropout > 0:
            out["dropout"] = rng.random((b, k, self.model.tokens_per_step * self.model.embed), dtype=np.float32)
        return out


def dt_loss(be: Backend, model: DecisionTransformer, params: Params, mb: dict[str, Array],
            hyper: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """Action loss over real steps: cross-entropy of discrete parts plus squared error of continuous ones."""
    xp = be.xp
    states, actions, mask = mb["states"], mb["actions"], mb["mask"]
    b, k = states.shape[0], states.shape[1]
    drop = mb.get("dropout")
    if drop is not None:
        drop = xp.reshape(drop, (b, k * model.tokens_per_step, model.embed))
    out = model.forward(be, params, states, actions, xp.expand_dims(mb["rtg"], axis=-1), mb["timesteps"],
                        drop, hyper["dropout"])
    logits, mean, _ = model.dist(out)
    head = model.head
    per_step = xp.zeros_like(mask)
    error = xp.zeros_like(mask)
    if head.discrete is not None:
        taken = head._discrete_actions(be, actions)
        per_step = per_step - head.discrete.log_prob(be, logits, taken)
        wrong = xp.astype(head.discrete.mode(be, logits) != taken, xp.float32)
        error = error + (wrong if wrong.ndim == 2 else xp.mean(wrong, axis=-1))
    if head.gaussian is not None:
        sq = xp.mean((mean - actions[..., head.num_discrete:]) ** 2, axis=-1)
        per_step = per_step + sq
        error = error + sq
    return masked_mean(be, per_step, mask), {"action_error": be.stop_gradient(masked_mean(be, error, mask))}


def build_model(ctx: RunContext, cfg: DTConfig, returns: bool) -> tuple[DecisionTransformer, datasets.Dataset]:
    """The network for the run's env, with the statistics of `cfg.dataset` (checked against the env's spaces)."""
    ds = datasets.load(cfg.dataset)
    ds.check_spaces(ctx.observation_space, ctx.action_space, ctx.env_name)
    longest = int(ds.lengths().max())
    if cfg.context_len > longest:
        raise PufferError(f"config context_len={cfg.context_len} is longer than every episode of {cfg.dataset} "
                          f"(the longest has {longest} steps)")
    obs = np.concatenate([e.observations[:-1] for e in ds.episodes]).astype(np.float64)
    model = DecisionTransformer(ctx.observation_space, ctx.action_space, cfg.context_len,
                                cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.max_timestep, cfg.rtg_scale,
                                returns, obs.mean(axis=0).tolist(), (obs.std(axis=0) + 1e-6).tolist())
    return model, ds


def declare(ctx: RunContext, cfg: DTConfig, returns: bool = True) -> Plan:
    """The DT's needs: an offline dataset of K-step windows, AdamW with warmup, evaluation on the env."""
    be = ctx.be
    model, ds = build_model(ctx, cfg, returns)
    params = model.init(be, cfg.seed)
    sampler = WindowSampler(ds, model, cfg.batch_size, cfg.dropout)
    update = gradient_update(be, lambda p, mb, consts, hyper: dt_loss(be, model, p, mb, hyper), optim.adamw,
                             {"weight_decay": cfg.weight_decay})

    def hyper(progress, state) -> dict[str, float]:
        warm = min(1.0, (progress.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        return {"lr": cfg.learning_rate * warm, "max_grad_norm": cfg.max_grad_norm, "dropout": cfg.dropout}

    actors: dict[bool, ContextActor] = {}

    def make_actor(params, deterministic: bool, seed: int) -> ContextActor:
        # one compiled actor per mode, re-pointed at the current parameters
        actor = actors.get(deterministic)
        if actor is None:
            actor = actors[deterministic] = ContextActor(be, model, params, cfg.target_return, deterministic, seed)
        actor.params, actor.context = params, None
        actor.rng = np.random.Generator(np.random.PCG64(seed))
        return actor

    data = Offline(sample=sampler, fields=sampler.fields(), steps_per_update=cfg.steps_per_update,
                   eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes)
    return Plan(
        policy=model, policy_spec=model.spec(), params=params, opt_state=optim.adamw.init(be, params), update=update,
        stat_keys=STAT_KEYS, hyper=hyper, data=data, make_actor=make_actor)


def declare_bc(ctx: RunContext, cfg: BCConfig) -> Plan:
    """Behaviour cloning: the same backbone and data without return-to-go tokens."""
    return declare(ctx, cfg, returns=False)


ALGORITHM = Algorithm("dt", "Decision Transformer: return-conditioned causal transformer trained offline "
                               "from a Minari dataset", DTConfig, declare)
BC_ALGORITHM = Algorithm("bc", "Behaviour cloning on the Decision Transformer's backbone, offline from a "
                                  "Minari dataset", BCConfig, declare_bc)


class DT(Trainer):
    """Decision Transformer: `DT("cartpole", backend="torch", dataset="datasets/cartpole-v0").train()`."""

    algorithm = ALGORITHM

    def evaluate_target(self, target_return: float, episodes: int = 10, seed: int = 12345) -> float:
        """Mean return of `episodes` deterministic episodes conditioned on `target_return`."""
        if not math.isfinite(target_return):
            raise PufferError(f"the target return must be a finite number, got {target_return}")
        actor = self.actor(True, seed)
        actor.target_return = float(target_return)
        try:
            return float(np.mean([e["episode_return"] for e in self.evaluation_episodes(episodes, seed, actor)]))
        finally:
            actor.target_return = self.config.target_return


class BC(Trainer):
    """Behaviour cloning on the DT backbone: `BC("cartpole", backend="torch", dataset=...).train()`."""

    algorithm = BC_ALGORITHM


__all__ = ["DTConfig", "BCConfig", "DT", "BC", "dt_loss", "WindowSampler", "declare", "ALGORITHM",
           "BC_ALGORITHM"]
