"""What an algorithm declares to the machinery: its `Plan` (networks, recorded fields, update) and its `Algorithm`.

An algorithm module writes pure functions (loss, advantages, the update step) and one
`declare(run, cfg) -> Plan`. The machinery (`puffer.train.trainer.Trainer`) owns everything else:
env and backend, the rollout that records the declared fields, truncation bootstraps, minibatching,
the loop, logging, checkpoints and evaluation. Nothing here knows any particular algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from puffer.backends.base import Params

ROLLOUT = "rollout"
EPISODES = "episodes"
OFFLINE = "offline"
DATA_SOURCES = (ROLLOUT, EPISODES, OFFLINE)


@dataclass
class Plan:
    """An algorithm's needs, as data: the machinery reads this and runs the algorithm.

    Acting: `act(be, params, obs, state, starts, noise) -> (actions, outputs, state)` is pure; its
    `outputs` (one `[B]` array per name in `outputs`, e.g. log-prob and value) are recorded per step.
    With `inputs` declared (per-step env channels such as a critic's global state), `act` and
    `values` take one more argument, a dict of those `[B, width]` arrays, and truncation bootstraps
    read them from `infos["final_<name>"]` (the true final step's value, as `final_observation`).
    `bootstrap` maps a reward-like channel (`rewards`, or a recorded env channel such as `cost`) to
    the value output and discount it bootstraps with: truncated episodes add `discount * V(true
    final observation)` to that channel, and `values(be, params, obs, state)` (the bootstrapped
    value outputs, in `bootstrap`'s order) gives the value after the rollout's last step.

    Updating: after each rollout the machinery calls `prepare(buffer)` (host-side advantages into
    the `derived` fields), then runs `epochs` passes of shuffled minibatches of `minibatch_size`
    steps in segments of `segment` steps, each one application of the pure
    `step(params, opt_state, acc, packed, nexts, state, hyper) -> (params, opt_state, acc)`:
    `packed` holds `minibatch_fields` (`unpack` with the layout the machinery passes to
    `build_step`), `nexts` `[S, len(bootstrap)]` the value after each segment, `state` the
    recurrent state at each segment's start, `hyper` the 0-d arrays from `hyper(progress)`, and
    `acc` sums `stat_keys`. The machinery compiles `step` twice: as one call per minibatch, and as
    one program for the whole update (every epoch and minibatch in a `be.scan`, minibatches gathered
    inside from the whole rollout by host-drawn shuffles), which it prefers where the backend compiles
    loops (`be.compiles_loops`) unless `early_stop` needs the statistics between epochs or the
    rollout is too large to send at once. Both give the same parameters for the same seed.
    """

    policy: Any
    """The acting policy (`puffer.policies`): `step`, `sequence`, `initial_state`, `head`, `recurrent`."""
    policy_spec: dict[str, Any]
    """JSON description from which eval, export and resume rebuild `policy` (`puffer.policies.from_spec`)."""
    params: Params
    """Trainable parameters (one flat dict; checkpointed as the `params` group)."""
    opt_state: dict[str, Any]
    """Optimizer state (checkpointed as `opt_state`)."""
    act: Callable
    outputs: tuple[str, ...]
    values: Callable
    bootstrap: dict[str, tuple[str, float]]
    build_step: Callable[[Any], Callable]
    """`build_step(layout) -> step`: the pure minibatch update for minibatches packed with `layout`."""
    minibatch_fields: tuple[str, ...]
    stat_keys: tuple[str, ...]
    hyper: Callable[[float], dict[str, float]]
    """Fraction of training done -> the per-update values (become 0-d float32 arrays)."""
    rollout_len: int
    """Steps of every row per rollout (one update per rollout)."""
    minibatch_size: int
    epochs: int
    segment: int = 1
    prepare: Callable[[Any], None] | None = None
    derived: dict[str, int] = field(default_factory=dict)
    """Buffer fields `prepare` fills, name -> trailing width (0: one number per step)."""
    record: dict[str, int] = field(default_factory=dict)
    """Per-step env channels (`infos[name]`, `[rows]` or `[rows, width]`) stored in the buffer."""
    record_help: dict[str, str] = field(default_factory=dict)
    """How an env reports a recorded channel (name -> sentence), added to the error when an env lacks it."""

    inputs: dict[str, int] = field(default_factory=dict)
    """Per-step env channels (`infos[name]`, `[rows, width]`) fed to `act`/`values` and stored as buffer fields."""
    data: str = ROLLOUT
    """Where training data comes from: on-policy rollouts of `rollout_len` steps, or `episodes`: one whole
    episode per row, rows in groups of `group_size` envs sharing a reset, `rollout_len` the longest kept
    (see `puffer.train.episodes`)."""
    group_size: int = 0
    """Envs per group sharing one reset (data source `episodes`)."""
    """Where training data comes from: on-policy rollouts, or "offline" (a dataset: the env only evaluates).

    Offline plans never step the env while training: each update is `epochs` compiled steps
    `step(params, opt_state, acc, packed, hyper)`, each on a minibatch `sample(rng)` draws on the
    host (named arrays with the trailing widths of `offline_fields`, packed with the layout given to
    `build_step`). `global_step` and `total_steps` then count gradient steps, and every
    `eval_every` of them `eval_episodes` episodes on the env (acted by `make_actor`) give the
    `episode_return` statistics. `act`, `values`, `bootstrap`, `rollout_len` and `minibatch_size`
    are unused."""
    sample: Callable[[Any], dict[str, Any]] | None = None
    """Offline: `sample(rng) -> {field: array}` one host minibatch from the dataset."""
    offline_fields: dict[str, int] = field(default_factory=dict)
    """Offline: the fields `sample` returns, name -> trailing width (0: one number per entry)."""
    make_actor: Callable[[bool, int], Any] | None = None
    """`make_actor(deterministic, seed)` -> an actor for evaluation (`act(obs)`, optional `observe(rewards, ended)`)
    when the plan's policy cannot act from one observation (e.g. a sequence model); None: `policy.step`."""
    eval_every: int = 0
    """Offline: gradient steps between evaluation runs on the env (0: only at the end)."""
    eval_episodes: int = 10
    """Offline: episodes per evaluation run."""
    before_update: Callable[[Any], dict[str, float]] | None = None
    """Host hook run after each rollout, before `prepare` (e.g. a Lagrange multiplier step); returns statistics."""
    early_stop: Callable[[dict[str, float]], bool] | None = None
    """Called with the running mean statistics after each epoch; True ends the update's epochs."""
    summarize: Callable[[Any], dict[str, float]] | None = None
    """Host statistics of the filled buffer after an update (e.g. explained variance)."""
    extra_state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None
    """(get, set) of algorithm state beyond params and optimizer (numpy arrays), checkpointed as `algo_state`."""


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: name, one-line summary, config class and `declare(run, cfg) -> Plan`."""

    name: str
    summary: str
    config: type
    declare: Callable[[Any, Any], Plan]
