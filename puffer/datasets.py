"""Offline datasets in Minari's own format: read any local Minari dataset, write ones Minari opens, collect them.

A dataset is a directory `DIR` holding Minari's `DIR/data/metadata.json` and `DIR/data/main_data.hdf5`
(written through `minari`'s storage classes, so `minari.MinariDataset("DIR/data")` opens it, and
`minari.load_dataset("NAME-v0")` does when `DIR` is `$MINARI_DATASETS_PATH/NAME-v0`). puffer records
the env it was collected on (`puffer_env`: name and kwargs; a gymnasium env's `env_spec` too) so that
training and evaluation can check that the spaces agree.

    ds = puffer.datasets.collect("cartpole", policy_fn, episodes=100, epsilon=0.1)   # episodes in memory
    puffer.datasets.save("datasets/cartpole-v0", ds)                                 # a Minari dataset
    ds = puffer.datasets.load("datasets/cartpole-v0"); print(ds.stats())
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from puffer import spaces
from puffer.errors import PufferError

INSTALL = 'offline datasets need minari and h5py: pip install "puffer-rl[offline]" (minari[hdf5]==0.5.4)'


def _minari() -> Any:
    try:
        import minari
    except ImportError as e:
        raise PufferError(f"{INSTALL} ({e})") from None
    return minari


@dataclass
class Episode:
    """One trajectory: `observations` [T+1, D] (the last is the final one), actions [T, ...], rewards [T]."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def ret(self) -> float:
        """The undiscounted return."""
        return float(np.sum(self.rewards))


@dataclass
class Dataset:
    """Episodes with their spaces and the env they came from (`env` name, `env_kwargs`)."""

    episodes: list[Episode]
    observation_space: spaces.Space
    action_space: spaces.Space
    env: str | None = None
    env_kwargs: dict = field(default_factory=dict)
    dataset_id: str | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def total_steps(self) -> int:
        """Steps over all episodes."""
        return int(sum(len(e) for e in self.episodes))

    def returns(self) -> np.ndarray:
        """Each episode's undiscounted return."""
        return np.array([e.ret for e in self.episodes], np.float64)

    def lengths(self) -> np.ndarray:
        """Each episode's length in steps."""
        return np.array([len(e) for e in self.episodes], np.int64)

    def stats(self) -> dict[str, float]:
        """Episodes, steps, and the mean/std/min/max of returns and lengths."""
        r, n = self.returns(), self.lengths()
        if not len(r):
            return {"episodes": 0, "steps": 0}
        return {"episodes": len(r), "steps": int(n.sum()), "return_mean": float(r.mean()),
                "return_std": float(r.std()), "return_min": float(r.min()), "return_max": float(r.max()),
                "length_mean": float(n.mean()), "length_min": int(n.min()), "length_max": int(n.max())}

    def describe(self) -> str:
        """The statistics as one line."""
        s = self.stats()
        if not s["episodes"]:
            return "0 episodes"
        return (f"{s['episodes']} episodes, {s['steps']} steps; return mean {s['return_mean']:.2f} +- "
                f"{s['return_std']:.2f} (min {s['return_min']:.2f}, max {s['return_max']:.2f}); length mean "
                f"{s['length_mean']:.1f} (min {s['length_min']}, max {s['length_max']})")

    def check_spaces(self, observation_space: spaces.Space, action_space: spaces.Space, env_name: str = "env") -> None:
        """Raise PufferError showing both when the dataset's spaces differ from the env's."""
        for what, mine, theirs in (("observation", self.observation_space, observation_space),
                                   ("action", self.action_space, action_space)):
            if mine.to_json() != theirs.to_json():
                raise PufferError(f"dataset {self.path or self.dataset_id}: its {what} space {mine!r} differs from "
                                  f"{env_name}'s {what} space {theirs!r}")

    def flat_actions(self) -> list[np.ndarray]:
        """Each episode's actions as float32 columns [T, action_dim], the layout puffer's policies emit."""
        return [np.asarray(e.actions, np.float32).reshape(len(e), -1) for e in self.episodes]


def _check_supported(observation_space: spaces.Space, action_space: spaces.Space, where: str) -> None:
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise PufferError(f"{where}: observations must be a flat Box, got {observation_space!r}")
    if not isinstance(action_space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete)):
        raise PufferError(f"{where}: actions must be Discrete, MultiDiscrete or Box, got {action_space!r}")


def data_dir(path: str | Path) -> Path:
    """The Minari `data` directory of a dataset: `DIR/data`, `DIR` itself, or an id under MINARI_DATASETS_PATH."""
    p = Path(path)
    for candidate in (p / "data", p):
        if (candidate / "metadata.json").is_file():
            return candidate
    root = os.environ.get("MINARI_DATASETS_PATH")
    if root and not p.is_absolute() and (Path(root) / p / "data" / "metadata.json").is_file():
        return Path(root) / p / "data"
    where = f"{p} exists but" if p.exists() else f"{p} does not exist and"
    raise PufferError(f"{path} is not a Minari dataset: {where} has no data/metadata.json (make one with "
                      f"`puffer collect ENV --to {path}`)")


def load(path: str | Path, allow_empty: bool = False) -> Dataset:
    """Read a local Minari dataset (a directory, its `data` directory, or an id under MINARI_DATASETS_PATH)."""
    minari = _minari()
    d = data_dir(path)
    try:
        md = minari.MinariDataset(str(d))
    except Exception as e:  # minari raises ValueError/AssertionError/KeyError for what it cannot read
        raise PufferError(f"{path} is not a readable Minari dataset: {type(e).__name__}: {e}") from None
    try:
        observation_space = spaces.from_gymnasium(md.observation_space)
        action_space = spaces.from_gymnasium(md.action_space)
    except PufferError as e:
        raise PufferError(f"{path}: {e}") from None
    _check_supported(observation_space, action_space, str(path))
    if md.total_episodes == 0 and not allow_empty:
        raise PufferError(f"dataset {path} is empty (0 episodes)")
    try:
        episodes = [Episode(np.asarray(e.observations, np.float32), np.asarray(e.actions),
                            np.asarray(e.rewards, np.float32), np.asarray(e.terminations, bool),
                            np.asarray(e.truncations, bool))
                    for e in md.iterate_episodes()] if md.total_episodes else []
    except (OSError, KeyError, ValueError) as e:
        raise PufferError(f"{path}: cannot read the episodes of this Minari dataset ({e})") from None
    raw = json.loads((d / "metadata.json").read_text())
    env = raw.get("puffer_env") or {}
    env_name = env.get("name")
    if env_name is None and md.env_spec is not None:
        env_name = f"gym:{md.env_spec.id}"
    ds = Dataset(episodes, observation_space, action_space, env_name, env.get("kwargs", {}), md.id, Path(path))
    if not episodes and not allow_empty:
        raise PufferError(f"dataset {path} is empty (0 episodes)")
    return ds


def _gym_spec(env: str | None) -> Any:
    if not env or not env.startswith("gym:"):
        return None
    import gymnasium

    try:
        return gymnasium.spec(env[4:])
    except Exception:  # an id gymnasium does not know stays recorded in puffer_env only
        return None


def _dataset_id(path: Path) -> str:
    minari = _minari()
    name = path.name
    try:
        minari.dataset.minari_dataset.parse_dataset_id(name)
        return name
    except (ValueError, TypeError):  # no -vN suffix: Minari ids need a version
        return f"{name}-v0"


def save(path: str | Path, dataset: Dataset, append: bool = False, algorithm: str | None = None) -> Path:
    """Write `dataset` as a Minari dataset at `path` (atomically); `append` adds its episodes to an existing one.

    Appending checks that the spaces agree. Returns the dataset directory.
    """
    minari = _minari()
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    path = Path(path)
    _check_supported(dataset.observation_space, dataset.action_space, str(path))
    if not dataset.episodes and not append:
        raise PufferError(f"refusing to write an empty dataset to {path}")
    exists = (path / "data" / "metadata.json").is_file()
    if exists and not append:
        raise PufferError(f"{path} already holds a dataset; pass --append (append=True) to add episodes to it")
    if append and exists:
        old = load(path, allow_empty=True)
        old.check_spaces(dataset.observation_space, dataset.action_space, f"the new episodes ({dataset.env})")
    elif path.exists() and any(path.iterdir()):
        raise PufferError(f"{path} exists and is not a Minari dataset; choose a new directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    # absolute: minari's size accounting joins relative paths twice
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-")).absolute()
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        if append and exists:
            shutil.copytree(path / "data", tmp / "data")
            storage = MinariStorage.read(tmp / "data")
        else:
            storage = MinariStorage.new(tmp / "data", observation_space=dataset.observation_space.to_gymnasium(),
                                        action_space=dataset.action_space.to_gymnasium(),
                                        env_spec=_gym_spec(dataset.env), data_format="hdf5", jpeg_encoding=False)
            meta: dict[str, Any] = {"dataset_id": _dataset_id(path), "minari_version": minari.__version__,
                                    "algorithm_name": algorithm or "puffer collect",
                                    "puffer_env": {"name": dataset.env, "kwargs": dataset.env_kwargs}}
            storage.update_metadata(meta)
        storage.update_episodes([
            EpisodeBuffer(observations=np.asarray(e.observations, np.float32), actions=np.asarray(e.actions),
                          rewards=np.asarray(e.rewards, np.float64), terminations=np.asarray(e.terminations, bool),
                          truncations=np.asarray(e.truncations, bool), infos={})
            for e in dataset.episodes])
        # swap the finished directory into place; a crash before this leaves the old dataset untouched
        if path.exists():
            trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, trash / "d")
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def epsilon_greedy(policy: Callable[[np.ndarray], np.ndarray], action_space: spaces.Space, epsilon: float,
                   rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """`policy` with each row's action replaced by a uniformly random one with probability `epsilon`."""
    if not 0.0 <= epsilon <= 1.0:
        raise PufferError(f"epsilon must be within [0, 1], got {epsilon}")

    def act(obs: np.ndarray) -> np.ndarray:
        actions = np.array(policy(obs))
        if epsilon > 0:
            swap = rng.random(len(obs)) < epsilon
            for i in np.flatnonzero(swap):
                actions[i] = action_space.sample(rng)
        return actions

    return act


def random_policy(action_space: spaces.Space, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Uniformly random actions, one per observation row."""
    return lambda obs: np.stack([np.asarray(action_space.sample(rng)) for _ in range(len(obs))])


def collect(env: str, policy: Callable[[np.ndarray], np.ndarray], episodes: int, epsilon: float = 0.0,
            seed: int = 0, num_envs: int = 8, env_kwargs: dict | None = None,
            max_steps: int = 10_000_000, observe: Callable[[np.ndarray, np.ndarray], None] | None = None) -> Dataset:
    """`episodes` whole episodes of `policy` (obs batch [B, D] -> env actions [B, ...]) on `env`, ε-noised.

    `observe(rewards, ended)` after each step feeds a sequence policy's context (e.g. a Decision Transformer's).
    """
    import puffer

    if episodes < 1:
        raise PufferError(f"episodes must be positive, got {episodes}")
    env_kwargs = dict(env_kwargs or {})
    rng = np.random.Generator(np.random.PCG64(seed))
    # few rows: finishing the first `episodes` episodes of many rows would favour short episodes
    vec = puffer.make(env, num_envs=min(num_envs, episodes), seed=seed, **env_kwargs)
    try:
        if vec.num_agents != vec.num_envs:
            raise PufferError(f"collect records single-agent envs; {env} has {vec.num_agents} agent rows for "
                              f"{vec.num_envs} envs")
        obs_space, act_space = vec.single_observation_space, vec.single_action_space
        _check_supported(obs_space, act_space, env)
        act = epsilon_greedy(policy, act_space, epsilon, rng)
        obs, _ = vec.reset(seed=seed)
        rows = vec.num_envs
        trace: list[dict[str, list]] = [{"o": [], "a": [], "r": [], "d": [], "t": []} for _ in range(rows)]
        done: list[Episode] = []
        for _ in range(max_steps):
            # a copy: vector envs write the next observations into the same buffer
            obs = np.array(obs, np.float32, copy=True)
            actions = act(obs)
            nxt, rewards, term, trunc, infos = vec.step(actions)
            ended = np.asarray(term) | np.asarray(trunc)
            if observe is not None:
                observe(rewards, ended)
            final = infos.get("final_observation")
            for i in range(rows):
                tr = trace[i]
                tr["o"].append(obs[i])
                tr["a"].append(np.array(actions[i]))
                tr["r"].append(float(rewards[i]))
                tr["d"].append(bool(term[i]))
                tr["t"].append(bool(trunc[i]))
                if ended[i]:
                    tr["o"].append(np.array(final[i], np.float32))
                    done.append(Episode(np.stack(tr["o"]), np.stack(tr["a"]), np.array(tr["r"], np.float32),
                                        np.array(tr["d"]), np.array(tr["t"])))
                    trace[i] = {"o": [], "a": [], "r": [], "d": [], "t": []}
            obs = nxt
            if len(done) >= episodes:
                break
        else:
            raise PufferError(f"only {len(done)} of {episodes} episodes finished within {max_steps} steps")
    finally:
        vec.close()
    return Dataset(done[:episodes], obs_space, act_space, env, env_kwargs)


def load_script(spec: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function named by `MODULE:FN` (obs batch [B, D] -> env actions [B, ...])."""
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise PufferError(f"--script takes MODULE:FUNCTION, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise PufferError(f"cannot load script policy {spec}: {e}") from None
    if not callable(fn):
        raise PufferError(f"script policy {spec} is not callable")
    return fn


def add_command(sub: Any) -> None:
    """Register `puffer collect`."""
    p = sub.add_parser("collect", help="record episodes of a policy into a local Minari dataset",
                       description="Record whole episodes of a policy (a checkpoint, an exported ONNX policy, a "
                                   "script MODULE:FN taking an observation batch, or random), with epsilon-noise, "
                                   "into a Minari dataset; prints the dataset's statistics.")
    p.add_argument("env", help="built-in env name, or gym:ID")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run or checkpoint directory whose policy acts")
    source.add_argument("--policy", help="an exported .onnx policy, or 'random'")
    source.add_argument("--script", metavar="MODULE:FN", help="a function: observations [B, D] -> actions [B, ...]")
    p.add_argument("--episodes", type=int, default=100, help="episodes to record (default: 100)")
    p.add_argument("--epsilon", type=float, default=0.0, help="probability of a random action per step (default: 0)")
    p.add_argument("--to", required=True, metavar="DIR", help="dataset directory (Minari layout: DIR/data)")
    p.add_argument("--append", action="store_true", help="add the episodes to the dataset already in DIR")
    p.add_argument("--num-envs", type=int, default=8, help="envs stepped together (default: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", action="store_true", help="sample the policy's actions instead of the most likely")
    p.add_argument("--env-kwargs", type=json.loads, default={}, metavar="JSON", help="env constructor kwargs")
    p.set_defaults(func=cmd_collect)


def cmd_collect(args: Any) -> int:
    """`puffer collect`: record, save (or append), print statistics."""
    import puffer

    algorithm, observe = "random", None
    if args.checkpoint:
        from puffer.train.evaluate import load_actor

        actor = load_actor(args.checkpoint, deterministic=not args.sample, seed=args.seed)
        if actor.recurrent:
            raise PufferError(f"{args.checkpoint}: collecting with a recurrent policy is not supported")
        policy, algorithm = actor.act, f"{actor.meta.get('algo')} checkpoint {args.checkpoint}"
        observe = getattr(actor, "observe", None)
    elif args.script:
        policy, algorithm = load_script(args.script), f"script {args.script}"
    elif args.policy == "random":
        env = puffer.make(args.env, num_envs=1, **args.env_kwargs)
        space = env.single_action_space
        env.close()
        policy = random_policy(space, np.random.Generator(np.random.PCG64(args.seed + 1)))
    else:
        from puffer.deploy import Policy

        onnx = Policy.load(args.policy, deterministic=not args.sample, seed=args.seed)
        policy, algorithm = onnx.act, f"onnx policy {args.policy}"
        observe = getattr(onnx, "observe", None)
    ds = collect(args.env, policy, args.episodes, args.epsilon, args.seed, args.num_envs, args.env_kwargs,
                 observe=observe)
    print(f"collected {ds.describe()}")
    path = save(args.to, ds, append=args.append, algorithm=f"{algorithm}, epsilon {args.epsilon}")
    total = load(path)
    print(f"{'appended to' if args.append else 'wrote'} {path}: {total.describe()}")
    print(f"train: puffer train {args.env} --algo dt --dataset {path}")
    return 0
