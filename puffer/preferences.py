"""Rewards learned from preferences (Christiano et al. 2017): segment pairs, a Bradley-Terry reward model.

A *pair* is two segments of `K` steps from an env (observations, the policy's flat actions and a
mask that is 0 after a segment's episode ended) and a label: the probability that the first is
preferred (1: the first, 0: the second, 0.5: a tie). The reward model is an MLP from `puffer.nn`
over per-step features (observations standardized by the pairs' statistics, then the action:
one-hot for a Discrete space, the values otherwise); a segment's score is the sum of its masked
per-step rewards and P(first preferred) = sigmoid(score_a - score_b), trained with the binary
cross-entropy of that probability against the labels (`bradley_terry_loss`, single source on
every training backend).

    pairs = synthetic_pairs("cartpole", num_pairs=3000, segment_len=25)   # labelled by the hidden env reward
    save_pairs("prefs.safetensors", pairs)
    fit_reward_model("cartpole", load_pairs("prefs.safetensors"), "runs/rm", backend="torch")
    puffer train cartpole --algo grpo --reward-model runs/rm

Pair files are safetensors (no pickle): tensors `obs_a`, `obs_b` `[N, K, D]`, `actions_a`,
`actions_b` `[N, K, A]`, `mask_a`, `mask_b` `[N, K]` (0 or 1, the first step 1), `label` `[N]`
in {0, 0.5, 1}, all float32, and metadata `format = puffer-preferences`, `version = 1`. A
reward-model run directory holds `reward_model.json` (spec, env spaces, fit statistics) and
`reward_model.safetensors` (parameters and observation statistics), both written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from puffer import checkpoint, optim, spaces
from puffer.backends.base import Array, Backend, Params
from puffer.errors import PufferError
from puffer.nn import mlp

FORMAT, VERSION = "puffer-preferences", "1"
PAIR_KEYS = ("obs_a", "obs_b", "actions_a", "actions_b", "mask_a", "mask_b", "label")
MODEL_JSON, MODEL_TENSORS = "reward_model.json", "reward_model.safetensors"


# ---- pairs and their file format -------------------------------------------------------------
@dataclass
class Pairs:
    """Labelled pairs of segments (see the module docstring for shapes); `validate` checks them."""

    obs_a: np.ndarray
    obs_b: np.ndarray
    actions_a: np.ndarray
    actions_b: np.ndarray
    mask_a: np.ndarray
    mask_b: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def validate(self, where: str = "pairs") -> Pairs:
        """Self, or a PufferError naming the first array whose shape, dtype or values are wrong."""
        arrays = {k: np.asarray(getattr(self, k)) for k in PAIR_KEYS}
        label = arrays["label"]
        if label.ndim != 1 or len(label) == 0:
            raise PufferError(f"{where}: label must be a non-empty [N] array, got shape {label.shape}")
        n = len(label)
        obs = arrays["obs_a"]
        if obs.ndim != 3 or obs.shape[0] != n:
            raise PufferError(f"{where}: obs_a must be [N={n}, K, D], got shape {obs.shape}")
        _, k, d = obs.shape
        act = arrays["actions_a"]
        if act.ndim != 3 or act.shape[:2] != (n, k):
            raise PufferError(f"{where}: actions_a must be [N={n}, K={k}, A], got shape {act.shape}")
        want = {"obs_a": (n, k, d), "obs_b": (n, k, d), "actions_a": act.shape, "actions_b": act.shape,
                "mask_a": (n, k), "mask_b": (n, k), "label": (n,)}
        for key, shape in want.items():
            if arrays[key].shape != tuple(shape):
                raise PufferError(f"{where}: {key} has shape {arrays[key].shape}, expected {tuple(shape)} "
                                  f"(segments of a pair must match: N={n}, K={k}, D={d}, A={act.shape[2]})")
            if arrays[key].dtype.kind not in "fiub":
                raise PufferError(f"{where}: {key} must be numeric, got dtype {arrays[key].dtype}")
            if not np.all(np.isfinite(arrays[key])):
                raise PufferError(f"{where}: {key} holds NaN or inf values")
        bad = ~np.isin(label, (0.0, 0.5, 1.0))
        if bad.any():
            raise PufferError(f"{where}: labels must be 0, 0.5 or 1 (the probability that segment a is preferred); "
                              f"got {np.unique(label[bad])[:5].tolist()} at pairs {np.flatnonzero(bad)[:5].tolist()}")
        for key in ("mask_a", "mask_b"):
            m = arrays[key]
            if not np.isin(m, (0.0, 1.0)).all() or not (m[:, 0] == 1).all():
                raise PufferError(f"{where}: {key} must hold 0 or 1 with every segment's first step 1")
        for key, v in arrays.items():
            setattr(self, key, v.astype(np.float32))
        return self


def save_pairs(path: str | Path, pairs: Pairs, env: str | None = None) -> Path:
    """Write `pairs` as a safetensors file atomically (validated first); returns the path."""
    from safetensors.numpy import save

    pairs.validate(str(path))
    meta = {"format": FORMAT, "version": VERSION, **({"env": env} if env else {})}
    data = save({k: np.ascontiguousarray(getattr(pairs, k)) for k in PAIR_KEYS}, metadata=meta)
    path = Path(path)
    checkpoint.write_atomic(path, data)
    return path


def load_pairs(path: str | Path) -> Pairs:
    """Read and validate a pair file written by `save_pairs` (or any tool writing the same tensors)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise PufferError(f"{path}: no such pair file")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own types for truncated or foreign files
        raise PufferError(f"{path}: not a readable safetensors pair file ({e})") from e
    if meta.get("format") != FORMAT:
        raise PufferError(f"{path}: metadata format is {meta.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in PAIR_KEYS if k not in arrays]
    if missing:
        raise PufferError(f"{path}: missing tensors {missing} (a pair file holds {', '.join(PAIR_KEYS)})")
    return Pairs(**{k: arrays[k] for k in PAIR_KEYS}).validate(str(path))


# ---- synthetic preferences from a hidden true reward -------------------------------------------
def synthetic_pairs(env: Any, num_pairs: int, segment_len: int = 25, policy: Callable | None = None,
                    seed: int = 0, num_envs: int = 16, true_reward: Callable | None = None) -> Pairs:
    """Pairs of segments from `policy` (default uniform random) in `env`, labelled by a hidden true reward.

    `true_reward(obs, actions, env_rewards) -> [B]` defaults to the env's own reward; the label is 1
    when segment a's masked sum is larger, 0 when smaller, 0.5 when equal. Segments are windows of
    `segment_len` steps at random offsets; steps after an episode ended inside a window are masked.
    """
    import puffer
    from puffer.policies import to_env_actions

    if num_pairs < 1 or segment_len < 1:
        raise PufferError(f"num_pairs={num_pairs} and segment_len={segment_len} must be positive")
    rng = np.random.Generator(np.random.PCG64(seed))
    venv = puffer.make(env, num_envs=num_envs, seed=seed) if isinstance(env, str) else env
    try:
        space = venv.single_action_space
        # enough steps that every window start is distinct often enough: 2 segments per pair
        T = max(4 * segment_len, math.ceil(2 * num_pairs * segment_len / venv.num_agents) + segment_len)
        obs, _ = venv.reset(seed=seed)
        rows = venv.num_agents
        O = np.zeros((rows, T, obs.shape[1]), np.float32)
        A = np.zeros((rows, T, _action_dim(space)), np.float32)
        R = np.zeros((rows, T), np.float32)
        D = np.zeros((rows, T), bool)
        for t in range(T):
            acts = policy(obs) if policy is not None else _random_actions(space, rows, rng)
            acts = np.asarray(acts, np.float32).reshape(rows, -1)
            O[:, t], A[:, t] = obs, acts
            obs, rewards, term, trunc, _ = venv.step(to_env_actions(space, acts))
            R[:, t] = rewards if true_reward is None else true_reward(O[:, t], acts, rewards)
            D[:, t] = term | trunc
    finally:
        if isinstance(env, str):
            venv.close()
    row = rng.integers(0, rows, (2, num_pairs))
    start = rng.integers(0, T - segment_len + 1, (2, num_pairs))
    idx = start[..., None] + np.arange(segment_len)
    seg_o, seg_a = O[row[..., None], idx], A[row[..., None], idx]
    ended = D[row[..., None], idx]
    # a step counts until (and including) the first episode end in the window
    mask = (np.cumsum(ended, axis=-1) - ended == 0).astype(np.float32)
    ret = (R[row[..., None], idx] * mask).sum(-1)
    label = np.where(ret[0] > ret[1], 1.0, np.where(ret[0] < ret[1], 0.0, 0.5)).astype(np.float32)
    return Pairs(seg_o[0], seg_o[1], seg_a[0], seg_a[1], mask[0], mask[1], label).validate()


def _action_dim(space: Any) -> int:
    from puffer.policies import ActionHead

    return ActionHead.for_space(space).action_dim


def _random_actions(space: Any, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform actions in the policy's flat float layout."""
    if isinstance(space, spaces.Discrete):
        return rng.integers(0, space.n, (rows, 1)).astype(np.float32)
    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        nvec = np.asarray(space.nvec) if isinstance(space, spaces.MultiDiscrete) else np.full(space.n, 2)
        return (rng.random((rows, len(nvec))) * nvec).astype(np.int64).astype(np.float32)
    if isinstance(space, spaces.Box):
        low, high = np.maximum(space.low, -1.0), np.minimum(space.high, 1.0)
        return rng.uniform(low, high, (rows, *space.shape)).astype(np.float32).reshape(rows, -1)
    raise PufferError(f"synthetic_pairs: no random policy for action space {space!r}; pass policy=")


# ---- the reward model --------------------------------------------------------------------------
@dataclass(frozen=True)
class RewardSpec:
    """A reward model's static shape: observation size, action encoding, hidden layers."""

    obs_dim: int
    action_dim: int
    num_actions: int = 0
    """Discrete action spaces: actions are one-hot over this many values (0: raw values)."""
    use_actions: bool = True
    hidden_size: int = 64
    num_layers: int = 2
    activation: str = "tanh"

    @property
    def feature_dim(self) -> int:
        """Width of the per-step input of the MLP."""
        if not self.use_actions:
            return self.obs_dim
        return self.obs_dim + (self.num_actions or self.action_dim)


def spec_for(env: Any, use_actions: bool = True, hidden_size: int = 64, num_layers: int = 2,
             activation: str = "tanh") -> RewardSpec:
    """The reward spec for `env`'s (flat) spaces."""
    space = env.single_action_space
    n = int(space.n) if isinstance(space, spaces.Discrete) else 0
    return RewardSpec(int(env.single_observation_space.shape[0]), _action_dim(space), n, use_actions, hidden_size,
                      num_layers, activation)


def features(spec: RewardSpec, obs: np.ndarray, actions: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-step float32 features `[..., F]`: standardized observations, then the encoded action."""
    x = (np.asarray(obs, np.float32) - mean) / std
    if not spec.use_actions:
        return x.astype(np.float32)
    a = np.asarray(actions, np.float32)
    if spec.num_actions:
        a = np.eye(spec.num_actions, dtype=np.float32)[a[..., 0].astype(np.int64)]
    return np.concatenate([x, a], axis=-1).astype(np.float32)


def reward_init(spec: RewardSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Initial reward-model parameters (numpy; identical on every backend)."""
    sizes = [spec.feature_dim, *[spec.hidden_size] * spec.num_layers, 1]
    return mlp.init(None, seed, sizes, out_gain=1.0, prefix="reward/")


def step_rewards(be: Backend, spec: RewardSpec, params: Params, x: Array) -> Array:
    """Predicted reward `[...]` of each step's features `[..., F]`."""
    return mlp.apply(be, params, x, spec.activation, prefix="reward/")[..., 0]


def bradley_terry_loss(be: Backend, spec: RewardSpec, params: Params, batch: dict[str, Array]) -> tuple[Array, dict]:
    """Cross-entropy of P(a preferred) = sigmoid(sum r(a) - sum r(b)) against the labels; (loss, stats).

    `batch`: `x_a`, `x_b` `[N, K, F]` features, `mask_a`, `mask_b` `[N, K]`, `label` `[N]`.
    """
    xp = be.xp
    score_a = xp.sum(step_rewards(be, spec, params, batch["x_a"]) * batch["mask_a"], axis=-1)
    score_b = xp.sum(step_rewards(be, spec, params, batch["x_b"]) * batch["mask_b"], axis=-1)
    z = score_a - score_b
    y = batch["label"]
    # -[y log s(z) + (1 - y) log s(-z)] = softplus(z) - y z
    loss = xp.mean(be.softplus(z) - y * z)
    f32 = z.dtype
    decided = xp.astype(y != 0.5, f32)
    right = xp.astype((z > 0) == (y > 0.5), f32) * decided
    accuracy = xp.sum(right) / xp.maximum(xp.sum(decided), xp.ones_like(xp.sum(decided)))
    return loss, {"accuracy": be.stop_gradient(accuracy)}


@dataclass
class RewardModel:
    """A fitted reward model on the host: `rewards(obs, actions) -> [B]` float32 (numpy backend)."""

    spec: RewardSpec
    params: dict[str, np.ndarray]
    obs_mean: np.ndarray
    obs_std: np.ndarray

    def rewards(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Predicted rewards of a batch of steps: raw observations `[B, D]` and flat actions `[B, A]`."""
        import puffer

        x = features(self.spec, obs, actions, self.obs_mean, self.obs_std)
        return np.asarray(step_rewards(puffer.backend("numpy"), self.spec, self.params, x), np.float32)


def fit_reward_model(env: Any, pairs: Pairs, run_dir: str | Path | None = None, backend: str | None = None,
                     epochs: int = 20, learning_rate: float = 3e-3, batch_size: int = 256, hidden_size: int = 64,
                     num_layers: int = 2, use_actions: bool = True, valid_frac: float = 0.1, seed: int = 0,
                     log: Callable[[str], None] | None = None) -> tuple[RewardModel, dict[str, float]]:
    """Fit a Bradley-Terry reward model on `pairs` for `env` (name or env), save it in `run_dir`; (model, stats)."""
    import puffer

    pairs.validate()
    venv = puffer.make(env, num_envs=1) if isinstance(env, str) else env
    try:
        spec = spec_for(venv, use_actions, hidden_size, num_layers)
        space_json = (venv.single_observation_space.to_json(), venv.single_action_space.to_json())
    finally:
        if isinstance(env, str):
            venv.close()
    if pairs.obs_a.shape[2] != spec.obs_dim or pairs.actions_a.shape[2] != spec.action_dim:
        raise PufferError(f"pairs have observations of size {pairs.obs_a.shape[2]} and actions of size "
                          f"{pairs.actions_a.shape[2]}, but env {env if isinstance(env, str) else ''} has "
                          f"{spec.obs_dim} and {spec.action_dim}")
    valid_obs = np.concatenate([pairs.obs_a[pairs.mask_a > 0], pairs.obs_b[pairs.mask_b > 0]])
    mean = valid_obs.mean(axis=0).astype(np.float32)
    std = (valid_obs.std(axis=0) + 1e-6).astype(np.float32)
    data = {"x_a": features(spec, pairs.obs_a, pairs.actions_a, mean, std),
            "x_b": features(spec, pairs.obs_b, pairs.actions_b, mean, std),
            "mask_a": pairs.mask_a, "mask_b": pairs.mask_b, "label": pairs.label}
    rng = np.random.Generator(np.random.PCG64(seed))
    order = rng.permutation(len(pairs))
    n_valid = int(len(pairs) * valid_frac) if len(pairs) >= 20 else 0
    valid, train = order[:n_valid], order[n_valid:]
    be = puffer.backend(backend)
    if not be.can_train:
        raise PufferError(f"backend {be.name!r} cannot train; use one of {', '.join(puffer.backends.TRAINING)}")
    params = {k: be.asarray(v) for k, v in reward_init(spec, seed).items()}
    opt_state = optim.adam.init(be, params)
    loss_and_grad = be.value_and_grad(lambda p, b: bradley_terry_loss(be, spec, p, b), has_aux=True)
    xp = be.xp

    def step(params, opt_state, batch, lr):
        (loss, stats), grads = loss_and_grad(params, batch)
        params, opt_state = optim.adam.update(be, params, grads, opt_state, lr)
        return params, opt_state, xp.stack([loss, stats["accuracy"]])

    step = be.compile(step)
    B = min(batch_size, len(train))
    lr = be.asarray(np.asarray(learning_rate, np.float32))
    history = []
    for epoch in range(epochs):
        perm = train[rng.permutation(len(train))]
        sums = np.zeros(2)
        n = len(perm) // B
        for i in range(n):
            idx = perm[i * B:(i + 1) * B]
            params, opt_state, out = step(params, opt_state, {k: be.asarray(v[idx]) for k, v in data.items()}, lr)
            sums += be.to_numpy(out)
        history.append(sums / max(n, 1))
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {history[-1][0]:.4f}, train accuracy {history[-1][1]:.3f}")
    model = RewardModel(spec, {k: np.asarray(be.to_numpy(v), np.float32) for k, v in params.items()}, mean, std)
    stats = {"train_loss": float(history[-1][0]), "train_accuracy": float(history[-1][1]), "pairs": len(pairs)}
    if n_valid:
        nb = puffer.backend("numpy")
        loss, aux = bradley_terry_loss(nb, spec, model.params, {k: v[valid] for k, v in data.items()})
        stats.update(valid_loss=float(loss), valid_accuracy=float(aux["accuracy"]))
    if run_dir is not None:
        save_reward_model(run_dir, model, {"env": env if isinstance(env, str) else None,
                                           "observation_space": space_json[0], "action_space": space_json[1],
                                           "backend": be.name, "fit": stats})
    return model, stats


def save_reward_model(run_dir: str | Path, model: RewardModel, meta: dict[str, Any]) -> Path:
    """Write the model's spec and tensors into `run_dir` (each file atomically); returns the directory."""
    from safetensors.numpy import save

    run_dir = Path(run_dir)
    tensors = {**model.params, "obs_mean": model.obs_mean, "obs_std": model.obs_std}
    checkpoint.write_atomic(run_dir / MODEL_TENSORS, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}))
    checkpoint.write_json(run_dir / MODEL_JSON, {"format": "puffer-reward-model", "version": 1,
                                                 "spec": asdict(model.spec), **meta})
    return run_dir


def load_reward_model(run_dir: str | Path, env: Any = None, env_name: str | None = None) -> RewardModel:
    """The reward model saved in `run_dir`; with `env`, its spaces must be the ones the model was fitted on."""
    from safetensors.numpy import load

    run_dir = Path(run_dir)
    spec_file, tensor_file = run_dir / MODEL_JSON, run_dir / MODEL_TENSORS
    if not spec_file.is_file() or not tensor_file.is_file():
        raise PufferError(f"{run_dir} is not a reward-model directory (needs {MODEL_JSON} and {MODEL_TENSORS}; "
                          "write one with `puffer preferences fit`)")
    meta = json.loads(spec_file.read_text())
    spec = RewardSpec(**meta["spec"])
    try:
        tensors = dict(load(tensor_file.read_bytes()))
    except Exception as e:
        raise PufferError(f"{tensor_file}: not a readable safetensors file ({e})") from e
    if env is not None:
        for key in ("observation_space", "action_space"):
            mine = getattr(env, f"single_{key}").to_json()
            if meta.get(key) != mine:
                raise PufferError(f"reward model {run_dir} was fitted for {key} {meta.get(key)}, but env "
                                  f"{env_name or ''} has {mine}")
    want = set(reward_init(spec)) | {"obs_mean", "obs_std"}
    if set(tensors) != want:
        raise PufferError(f"{tensor_file}: tensors {sorted(tensors)} do not fit its spec (expected {sorted(want)})")
    params = {k: v for k, v in tensors.items() if k.startswith("reward/")}
    return RewardModel(spec, params, tensors["obs_mean"], tensors["obs_std"])


# ---- command line ------------------------------------------------------------------------------
def add_command(sub: Any) -> None:
    """Register `puffer preferences fit` and `puffer preferences synth` on an argparse subparsers object."""
    p = sub.add_parser("preferences", help="reward models from preferences between trajectory segments")
    cmds = p.add_subparsers(dest="preferences_command", metavar="COMMAND", required=True)
    f = cmds.add_parser("fit", help="fit a Bradley-Terry reward model on a pair file")
    f.add_argument("env", help="the env the pairs come from (built-in name or gym:ID)")
    f.add_argument("--pairs", required=True, help="pair file (safetensors, see puffer.preferences)")
    f.add_argument("--run-dir", required=True, help="where the reward model goes (use it with --reward-model)")
    f.add_argument("--backend", default=None, help="torch, jax or tinygrad (default: jax if installed)")
    f.add_argument("--epochs", type=int, default=20)
    f.add_argument("--learning-rate", type=float, default=3e-3)
    f.add_argument("--batch-size", type=int, default=256)
    f.add_argument("--hidden-size", type=int, default=64)
    f.add_argument("--no-actions", action="store_true", help="reward from observations only")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_fit)
    s = cmds.add_parser("synth", help="write synthetic pairs labelled by the env's own (hidden) reward")
    s.add_argument("env")
    s.add_argument("--out", required=True, help="pair file to write")
    s.add_argument("--num-pairs", type=int, default=3000)
    s.add_argument("--segment-len", type=int, default=25)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)


def cmd_fit(args: argparse.Namespace) -> int:
    """`puffer preferences fit ENV --pairs FILE --run-dir DIR`."""
    _, stats = fit_reward_model(args.env, load_pairs(args.pairs), args.run_dir, backend=args.backend,
                                epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
                                hidden_size=args.hidden_size, use_actions=not args.no_actions, seed=args.seed,
                                log=print)
    print(f"fitted on {stats['pairs']} pairs: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items() if k != "pairs"))
    print(f"saved {args.run_dir}; train with: puffer train {args.env} --reward-model {args.run_dir}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """`puffer preferences synth ENV --out FILE`."""
    pairs = synthetic_pairs(args.env, args.num_pairs, args.segment_len, seed=args.seed)
    save_pairs(args.out, pairs, env=args.env)
    ties = float(np.mean(pairs.label == 0.5))
    print(f"wrote {len(pairs)} pairs of {args.segment_len}-step segments to {args.out} ({ties:.0%} ties)")
    return 0
