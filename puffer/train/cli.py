"""`puffer train`, `puffer eval` and `puffer algos`, for every registered algorithm.

`puffer train ENV --algo NAME` takes that algorithm's config fields as flags (`--help` lists them
with their documentation). A run keeps everything in one directory: its `run.json` settings, its
checkpoints and its logs; `--resume RUN` continues the algorithm, config and logs saved there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from puffer.errors import PufferError
from puffer.train import registry
from puffer.train.config import add_config_arguments, config_from_args
from puffer.train.trainer import LEADING

DEFAULT_ALGO = "ppo"
RUN_SETTINGS = ("checkpoint_every", "keep_last", "log")


def selected_algo(argv: Sequence[str]) -> str:
    """The algorithm a `puffer train` command line asks for: --algo, else the resumed run's, else the default."""
    args = list(argv)
    for i, a in enumerate(args):
        if a == "--algo" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--algo="):
            return a.split("=", 1)[1]
    for i, a in enumerate(args):
        resume = args[i + 1] if a == "--resume" and i + 1 < len(args) else a.split("=", 1)[1] if a.startswith(
            "--resume=") else None
        if resume is not None and not resume.startswith("hf://"):
            try:
                from puffer import checkpoint

                return checkpoint.read_manifest(resume).get("algo", DEFAULT_ALGO)
            except PufferError:
                return DEFAULT_ALGO  # cmd_train reports the unreadable run itself
    return DEFAULT_ALGO


def add_commands(sub: Any, algo: str = DEFAULT_ALGO) -> None:
    """Register the train, eval and algos subcommands; train's flags are `algo`'s config fields."""
    known = registry.names()
    algorithm = registry.get(algo) if algo in known else None
    p = sub.add_parser("train", help="train a policy (default: PPO on the built-in CartPole)",
                       description=f"Train with {algo}"
                                   f"{': ' + algorithm.summary if algorithm else ''}. Every field of its config is a "
                                   "flag; unknown flags are errors. `puffer train --algo NAME --help` lists NAME's.")
    p.add_argument("env", nargs="?", default=None,
                   help="built-in env name, gym:ID, or pettingzoo:MODULE.ENV / pettingzoo:MODULE:FUNCTION (default: "
                        "cartpole, or the resumed run's env)")
    p.add_argument("--algo", default=None, metavar="{" + ",".join(known) + "}",
                   help=f"algorithm (default: {DEFAULT_ALGO}; `puffer algos` describes them)")
    p.add_argument("--backend", default=None,
                   help="torch, jax or tinygrad (default: jax if installed, or the resumed run's backend)")
    p.add_argument("--steps", type=int, default=None, help="total env steps (alias of --total-steps)")
    p.add_argument("--run-dir", default=None,
                   help="the run's directory: its settings, checkpoints and logs (default: --checkpoint-dir, the "
                        "resumed run's, or runs/<env>-<algo>-<backend>-<time>)")
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the run saved in RUN (a run or checkpoint directory, or hf://user/name) on any "
                        "backend, with its algorithm and config; flags given here override it (e.g. --steps)")
    p.add_argument("--checkpoint-dir", default=None, help="where checkpoints go (default: the run directory)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="STEPS",
                   help="also save a checkpoint every STEPS env steps (default: only at the end)")
    p.add_argument("--keep-last", type=_positive_int, default=None, metavar="N",
                   help="keep only the newest N checkpoints, plus the best by mean return (default: keep all)")
    p.add_argument("--log", default=None, choices=["tensorboard", "wandb", "none"],
                   help="log training statistics: TensorBoard event files in the run directory, or W&B (offline "
                        "unless WANDB_MODE=online) (default: none)")
    p.add_argument("--stop-at-return", type=float, default=None,
                   help="stop early once the mean return of the last 20 episodes reaches this")
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    if algorithm is not None:
        add_config_arguments(p, algorithm.config)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="run a trained policy and print the mean and std of its returns")
    p.add_argument("env", nargs="?", default=None, help="env name (default: the one the checkpoint was trained on)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run directory, checkpoint directory or hf://user/name")
    source.add_argument("--policy", help="exported .onnx policy (runs on the onnxruntime backend)")
    p.add_argument("--backend", default=None,
                   help="backend to run on (default: the one it was trained on; onnxruntime for --policy)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--sample", action="store_true", help="sample actions instead of taking the most likely")
    p.add_argument("--target-return", type=float, default=None,
                   help="the return a return-conditioned policy (--algo dt) aims for (default: its training target)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("algos", help="list the registered algorithms")
    p.set_defaults(func=cmd_algos)


class Progress:
    """Live training progress: a rich table on a terminal, one plain line per second otherwise.

    Both show the leading statistics (step, SPS, return, length), then whatever the algorithm reports.
    """

    SKIP = ("rollout_time", "update_time", "mean_return_20")

    def __init__(self, title: str, quiet: bool = False):
        self.title, self.quiet = title, quiet
        self.last = 0.0
        self.live = None
        if not quiet and sys.stdout.isatty():
            try:
                from rich.live import Live

                self.live = Live(refresh_per_second=4)
                self.live.start()
            except ImportError:
                self.live = None

    def __call__(self, trainer: Any, s: dict[str, float]) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(self._table(s))
            return
        now = time.perf_counter()
        if now - self.last >= 1.0:
            self.last = now
            print(self.line(s), flush=True)

    @classmethod
    def rows(cls, s: dict[str, Any]) -> list[tuple[str, Any]]:
        """(name, value) pairs to show: the leading statistics first, then the algorithm's own."""
        nan = float("nan")
        rest = [k for k in s if k not in LEADING and k not in cls.SKIP and isinstance(s[k], (int, float))]
        return [(k, s.get(k, nan)) for k in LEADING] + [(k, s[k]) for k in rest]

    @classmethod
    def line(cls, s: dict[str, float]) -> str:
        """One plain progress line."""
        short = {"global_step": "step", "episode_return": "return", "episode_length": "length"}
        parts = []
        for k, v in cls.rows(s):
            text = f"{int(v):>9d}" if k == "global_step" else f"{v:>8.0f}" if k == "sps" else f"{v:.4g}"
            parts.append(f"{short.get(k, k)} {text}")
        return "  ".join(parts)

    def _table(self, s: dict[str, float]) -> Any:
        from rich.table import Table

        t = Table(title=self.title, show_header=False)
        for k, v in self.rows(s):
            t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
        return t

    def close(self) -> None:
        """Stop the live display."""
        if self.live is not None:
            self.live.stop()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _run_of(path: Path) -> Path:
    """The run directory of a run or of one of its checkpoints (run/checkpoints/<step>)."""
    return path.parent.parent if (path / "manifest.json").is_file() else path


def _saved_settings(run_dir: Path) -> dict[str, Any]:
    """The settings (`run.json`) a run was started with."""
    f = run_dir / "run.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def cmd_train(args: argparse.Namespace) -> int:
    """Train or resume a run: periodic and final checkpoints, optional logging, a summary at the end."""
    from puffer import backends, checkpoint
    from puffer.hub import locate
    from puffer.loggers import make_logger
    from puffer.train.resume import resume_trainer
    from puffer.train.trainer import Trainer

    if args.resume:
        manifest = checkpoint.read_manifest(locate(args.resume))
        if args.algo is not None and args.algo != manifest["algo"]:
            raise PufferError(f"{args.resume} is a {manifest['algo']} run; it cannot continue as {args.algo}")
        algorithm = registry.get(manifest["algo"])
        cfg = config_from_args(args, algorithm.config.from_dict(manifest["config"]))
        env_name = args.env or manifest["env"]
        backend = args.backend or manifest["backend"]
        # a run downloaded from the Hub continues in a local directory of its own
        home = None if args.resume.startswith("hf://") else _run_of(Path(args.resume))
    else:
        algorithm = registry.get(args.algo or DEFAULT_ALGO)
        cfg = config_from_args(args, algorithm.config())
        env_name = args.env or "cartpole"
        backend = args.backend or backends.default_name()
        home = None
    if args.steps is not None:
        cfg.total_steps = args.steps
    # one run, one directory: settings, checkpoints and logs; a resumed run keeps the ones it had
    saved = _saved_settings(home) if home is not None else {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.run_dir or saved.get("run_dir") or args.checkpoint_dir or home
                   or f"runs/{env_name.replace(':', '_')}-{algorithm.name}-{backend}-{stamp}")
    ckpt_dir = Path(args.checkpoint_dir or saved.get("checkpoint_dir") or home or run_dir)
    # flags given now win over the resumed run's
    settings = {k: saved.get(k) for k in RUN_SETTINGS}
    settings.update({k: getattr(args, k) for k in RUN_SETTINGS if getattr(args, k) is not None})
    every, keep_last, log = settings["checkpoint_every"], settings["keep_last"], settings["log"] or "none"
    if args.resume:
        trainer = resume_trainer(manifest["path"], backend=backend, env=env_name, **cfg.to_dict())
        how = "exactly" if trainer.resumed_exactly else "with a fresh env reset (its env state was not saved)"
        print(f"resumed {manifest['path']} (saved on {manifest['backend']}) at step {trainer.global_step} on "
              f"{backend}, {how}")
    else:
        trainer = Trainer(env_name, backend=backend, config=cfg, algorithm=algorithm)
    run_json = {"run_dir": str(run_dir), "checkpoint_dir": str(ckpt_dir), "algo": algorithm.name,
                "checkpoint_every": every, "keep_last": keep_last, "log": log}
    for d in {run_dir, ckpt_dir}:
        checkpoint.write_json(d / "run.json", run_json)
    logger = make_logger(log, run_dir, config={"env": env_name, "algo": algorithm.name, "backend": backend,
                                               **cfg.to_dict()}, name=run_dir.name)
    last_saved = {"step": trainer.global_step, "path": None}

    def on_update(t: Any, stats: dict[str, float]) -> None:
        logger.log(stats, t.global_step)
        if every and t.global_step - last_saved["step"] >= every:
            last_saved.update(step=t.global_step, path=t.save(ckpt_dir, keep_last=keep_last))

    progress = Progress(f"puffer train {env_name} --algo {algorithm.name} ({backend})", args.quiet)
    try:
        stats = trainer.train(cfg.total_steps, stop_at_return=args.stop_at_return, callback=on_update,
                              progress=progress)
    finally:
        progress.close()
        logger.close()
    ckpt = last_saved["path"]
    if ckpt is None or last_saved["step"] != trainer.global_step:
        ckpt = trainer.save(ckpt_dir, keep_last=keep_last)
    trainer.close()
    print(f"trained {env_name} with {algorithm.name} on {backend}: {trainer.global_step} steps, mean return "
          f"(last 20) {trainer.mean_return(20):.2f}, {stats.get('sps', 0):.0f} steps/s")
    print(f"saved {ckpt}")
    print(f"evaluate: puffer eval {env_name} --checkpoint {ckpt_dir}")
    print(f"continue: puffer train --resume {ckpt_dir} --steps {2 * cfg.total_steps}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run a trained policy for --episodes episodes and print its mean and std return."""
    import numpy as np

    import puffer
    from puffer.train.evaluate import load_actor, run_episodes

    if args.policy is not None:
        if (args.backend or "onnxruntime") != "onnxruntime":
            raise PufferError(f"an exported policy ({args.policy}) runs on the onnxruntime backend, not "
                              f"{args.backend!r}; evaluate the run directory with --checkpoint to use {args.backend}")
        from puffer.deploy import Policy

        be = puffer.backend("onnxruntime")
        actor = Policy.load(args.policy, deterministic=not args.sample, seed=args.seed)
        if args.target_return is not None:
            if not hasattr(actor, "set_target"):
                raise PufferError(f"{args.policy} is not return-conditioned; --target-return needs an exported DT")
            actor.set_target(args.target_return)
        source, trained_env, env_kwargs = args.policy, actor.env, actor.env_kwargs
    else:
        actor = load_actor(args.checkpoint, backend=args.backend, deterministic=not args.sample, seed=args.seed,
                           target_return=args.target_return)
        be, source, trained_env = actor.be, args.checkpoint, actor.meta["env"]
        env_kwargs = actor.meta["config"].get("env_kwargs", {})
    env_name = args.env or trained_env
    if args.env and args.env != trained_env:
        raise PufferError(f"{source} was trained on {trained_env!r}, not {args.env!r}")
    env = puffer.make(env_name, num_envs=args.num_envs, seed=args.seed, **env_kwargs)
    try:
        returns = run_episodes(env, actor, args.episodes, seed=args.seed)
    finally:
        env.close()
    print(f"{env_name} on {be.name}: mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} "
          f"over {len(returns)} episodes")
    return 0


def cmd_algos(args: argparse.Namespace) -> int:
    """Print every registered algorithm with its one-line summary."""
    for algorithm in registry.algorithms():
        print(f"{algorithm.name:16s} {algorithm.summary}")
    return 0
