"""What an algorithm declares to the machinery: a small core `Plan` and one typed data source.

An algorithm module writes pure functions (loss, advantages, the update) and one
`declare(ctx, cfg) -> Plan`. `ctx` is a frozen `RunContext` (backend, spaces, rows, seed, ...),
never the trainer. The machinery (`puffer.train.trainer.Trainer`) owns everything else: env and
backend, the collector of the declared data source, minibatching, compiling the update once,
the loop, logging, checkpoints and evaluation. Nothing here knows any particular algorithm.

The core (`Plan`) is what every algorithm has: the acting policy and its spec, initial params and
optimizer state, the pure `update`, the per-update values (`hyper`), the statistics it reports and
its own host state (`state`, checkpointed). The data source says where batches come from:

- `OnPolicy`: rollouts of `rollout_len` steps of every row, with recorded act outputs, env
  channels, truncation bootstraps and shuffled minibatches (PPO and its relatives);
- `Episodes`: one whole episode per row, rows in groups sharing a reset (GRPO);
- `Offline`: minibatches drawn from a dataset on the host; the env only evaluates (DT, BC);
- `Replay`: acting into a sequence replay, updates on replayed sequences at a train ratio (Dreamer).

Each has one collector (`puffer.train.collectors`); the trainer's loop calls `collect()`, the
algorithm's host hooks, then the compiled update, whatever the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from puffer.backends.base import Params

AlgoState = dict[str, np.ndarray]


@dataclass(frozen=True)
class RunContext:
    """What a declaration may know about the run: backend, env spaces and shape, seed. Frozen; no trainer."""

    be: Any
    """The training backend."""
    env_name: str
    observation_space: Any
    """One agent row's (flat) observation space."""
    action_space: Any
    state_space: Any
    """The env's global-state space (`single_state_space`), or None."""
    obs_dim: int
    rows: int
    """Agent rows stepped together (num_envs * agents_per_env)."""
    batch_rows: int
    """Rows per receive (below `rows`: asynchronous, EnvPool-style)."""
    num_envs: int
    agents_per_env: int
    seed: int
    max_episode_steps: int | None
    """The env's longest episode where it says (its `max_episode_steps`, or that of an env it wraps)."""

    @property
    def sync(self) -> bool:
        """True when every row steps together."""
        return self.batch_rows == self.rows


@dataclass(frozen=True)
class Progress:
    """How far the running `train` call is: `step` of its `total` budget (env or gradient steps)."""

    step: int
    total: int

    @property
    def fraction(self) -> float:
        """Fraction of the budget done, in [0, 1] (drives progress-based schedules)."""
        return min(self.step / max(self.total, 1), 1.0)


@dataclass(frozen=True)
class UpdateInfo:
    """What a `before_update` hook sees: counters, recent finished episodes, the current parameters."""

    global_step: int
    updates: int
    episodes: tuple[dict[str, Any], ...]
    """The last (up to 100) finished episodes' statistics, oldest first."""
    new_episodes: int
    """How many episodes finished since the previous update."""
    params: Params


@dataclass(frozen=True, kw_only=True)
class Acting:
    """What the sources that step the env with the policy share: the act function and minibatches.

    `act(be, params, consts, obs, state, starts, noise, inputs) -> (actions, outputs, state)` is pure;
    its `outputs` (one `[B]` array per name) are recorded per step. `inputs` is a dict of the declared
    per-step env channels (`infos[name]`, `[rows, width]`; empty when none). After collection the
    update runs `epochs` passes of shuffled minibatches of `minibatch_size` steps in segments of
    `segment` steps, each one call of `Plan.update` on the `fields` named here.
    """

    act: Callable
    outputs: tuple[str, ...]
    fields: tuple[str, ...]
    """Buffer fields every minibatch carries (the update's `mb` keys, besides `state` and `next_*`)."""
    minibatch_size: int
    epochs: int
    segment: int = 1
    derived: dict[str, int] = field(default_factory=dict)
    """Buffer fields `Plan.prepare` fills, name -> trailing width (0: one number per step)."""
    record: dict[str, int] = field(default_factory=dict)
    """Per-step env channels (`infos[name]`, `[rows]` or `[rows, width]`) stored in the buffer."""
    record_help: dict[str, str] = field(default_factory=dict)
    """How an env reports a recorded channel (name -> sentence), added to the error when an env lacks it."""
    inputs: dict[str, int] = field(default_factory=dict)
    """Per-step env channels fed to `act`/`values` and stored as buffer fields; truncation bootstraps read
    them from `infos["final_<name>"]`."""
    early_stop: Callable[[dict[str, float]], bool] | None = None
    """Called with the running mean statistics after each epoch; True ends the update's epochs."""


@dataclass(frozen=True, kw_only=True)
class OnPolicy(Acting):
    """On-policy rollouts of `rollout_len` steps of every row; one update per rollout.

    `bootstrap` maps a reward-like channel (`rewards`, or a recorded channel such as `cost`) to the
    value output and discount it bootstraps with: truncated episodes add `discount * V(true final
    observation)`, and `values(be, params, consts, obs, state, inputs)` (the bootstrapped value
    outputs, in `bootstrap`'s order) gives the value after the rollout's last step, which the update
    sees as `mb["next_<value output>"]` per segment. The machinery prefers one compiled program for
    the whole update where the backend compiles loops, unless `early_stop` needs the statistics
    between epochs; both paths give the same parameters for the same seed.
    """

    rollout_len: int
    values: Callable | None = None
    bootstrap: dict[str, tuple[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Episodes(Acting):
    """Whole episodes, one per row, rows in groups of `group_size` envs sharing a reset (a fresh seed each).

    Steps after a row's episode ended are masked; the buffer adds `outcomes`, `lengths`, `finished`
    and `groups` (see `puffer.train.collectors.EpisodeCollector`).
    """

    max_len: int
    """The longest episode kept; longer ones are cut."""
    group_size: int


@dataclass(frozen=True, kw_only=True)
class Offline:
    """A dataset: each update is `steps_per_update` gradient steps on host-drawn minibatches.

    `sample(rng) -> {field: array}` draws one minibatch (trailing widths as in `fields`); the
    budget counts gradient steps, and every `eval_every` of them `eval_episodes` episodes on the env
    (acted by `Plan.make_actor`) give the `episode_return` statistics.
    """

    sample: Callable[[np.random.Generator], dict[str, Any]]
    fields: dict[str, int]
    steps_per_update: int
    eval_every: int = 0
    """Gradient steps between evaluation runs (0: only at the end)."""
    eval_episodes: int = 10


@dataclass(frozen=True, kw_only=True)
class Replay:
    """Experience kept per row in a sequence replay; updates on replayed sequences at `train_ratio`.

    The acting policy steps the env `collect_steps` times per collection with
    `act(be, params, consts, obs, state, starts, noise, inputs) -> (actions, (), state)`, its noise
    `act_noise(rng, rows)`; every step stores `obs`, `prev_actions` (the policy-format action that
    led to it), `rewards`, `is_first` and `is_terminal`. Each update samples `batch_size`
    sequences of `seq_len` steps `[T, B]` and the host noise `noise(rng, (T, B))` (named
    `[T, B, width]` arrays) for the update (see `puffer.train.replay_collector`).
    """

    act: Callable
    act_noise: Callable[[np.random.Generator, int], np.ndarray]
    batch_size: int
    seq_len: int
    train_ratio: float
    """Replayed steps per env step."""
    capacity: int
    """Steps the replay keeps, over all rows."""
    collect_steps: int = 1
    noise: Callable[[np.random.Generator, tuple[int, ...]], dict[str, np.ndarray]] | None = None


DataSource = OnPolicy | Episodes | Offline | Replay


@dataclass(frozen=True, kw_only=True)
class Plan:
    """An algorithm's needs, as data: the machinery reads this once and runs the algorithm.

    `update(params, opt_state, mb, consts, hyper) -> (params, opt_state, stats)` is the pure update
    of one minibatch: `mb` the named minibatch arrays, `consts` the non-trainable arrays of
    `consts(state)` (e.g. a value normalizer's statistics; never differentiated), `hyper` the 0-d
    arrays of `hyper(progress, state)`. The machinery compiles it, once, and sums `stat_keys`.

    Host hooks take the algorithm's `state` (numpy arrays, checkpointed as `algo_state`) and return
    it: `before_update(state, info) -> (state, stats)` after collection (e.g. a Lagrange multiplier
    step), `prepare(batch, state) -> state` (advantages into the batch's derived fields), and
    `summarize(batch, state) -> stats` after the update.
    """

    policy: Any
    """The acting policy (`puffer.policies`): `step`, `sequence`, `initial_state`, `head`, `recurrent`."""
    policy_spec: dict[str, Any]
    """JSON description from which eval, export and resume rebuild `policy` (`puffer.policies.from_spec`)."""
    params: Params
    """Initial trainable parameters (one flat dict; checkpointed as the `params` group)."""
    opt_state: dict[str, Any]
    """Initial optimizer state (checkpointed as `opt_state`)."""
    update: Callable
    stat_keys: tuple[str, ...]
    hyper: Callable[[Progress, AlgoState], dict[str, float]]
    """Progress and state -> the per-update values (become 0-d float32 arrays)."""
    data: DataSource
    state: AlgoState = field(default_factory=dict)
    consts: Callable[[AlgoState], dict[str, np.ndarray]] | None = None
    before_update: Callable[[AlgoState, UpdateInfo], tuple[AlgoState, dict[str, float]]] | None = None
    prepare: Callable[[Any, AlgoState], AlgoState] | None = None
    summarize: Callable[[Any, AlgoState], dict[str, float]] | None = None
    make_actor: Callable[[Params, bool, int], Any] | None = None
    """`make_actor(params, deterministic, seed)` -> an evaluation actor (`act(obs)`, optional
    `observe(rewards, ended)`) where the policy cannot act from one observation (a sequence model)."""


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: name, one-line summary, config class and `declare(ctx, cfg) -> Plan`."""

    name: str
    summary: str
    config: type
    declare: Callable[[RunContext, Any], Plan]
