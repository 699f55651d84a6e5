"""`puffer train` and `puffer eval`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from puffer.algos.config import PPOConfig, add_config_arguments, config_from_args
from puffer.errors import PufferError


def add_commands(sub: Any) -> None:
    """Register the train and eval subcommands on an argparse subparsers object."""
    p = sub.add_parser("train", help="train a policy (default: PPO on the built-in CartPole)",
                       description="Train with PPO. Every PPOConfig field is a flag; unknown flags are errors.")
    p.add_argument("env", nargs="?", default=None,
                   help="built-in env name, or gym:ID (default: cartpole, or the resumed run's env)")
    p.add_argument("--algo", default="ppo", choices=["ppo"], help="algorithm (default: ppo)")
    p.add_argument("--backend", default=None,
                   help="torch, jax or tinygrad (default: jax if installed, or the resumed run's backend)")
    p.add_argument("--steps", type=int, default=None, help="total env steps (alias of --total-steps)")
    p.add_argument("--run-dir", default=None,
                   help="run directory (default: runs/<env>-<algo>-<backend>-<time>, or the resumed run's)")
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the run saved in RUN (a run or checkpoint directory, or hf://user/name) on any "
                        "backend, with its config; flags given here override it (e.g. --steps)")
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
    add_config_arguments(p, PPOConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="run a trained policy and print the mean and std of its returns")
    p.add_argument("env", nargs="?", default=None, help="env name (default: the one the checkpoint was trained on)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run directory or checkpoint directory")
    source.add_argument("--policy", help="exported .onnx policy (runs on the onnxruntime backend)")
    p.add_argument("--backend", default=None,
                   help="backend to run on (default: the one it was trained on; onnxruntime for --policy)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--sample", action="store_true", help="sample actions instead of taking the most likely")
    p.set_defaults(func=cmd_eval)


class Progress:
    """Live training progress: a rich table on a terminal, one plain line per second otherwise."""

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

    @staticmethod
    def line(s: dict[str, float]) -> str:
        """One plain progress line."""
        nan = float("nan")
        return (f"step {int(s['global_step']):>9d}  sps {s['sps']:>8.0f}  return {s.get('episode_return', nan):8.2f}"
                f"  length {s.get('episode_length', nan):7.1f}  loss {s['loss']:8.4f}  kl {s['approx_kl']:.4f}"
                f"  clip {s['clipfrac']:.3f}  ev {s['explained_variance']:.2f}")

    def _table(self, s: dict[str, float]) -> Any:
        from rich.table import Table

        t = Table(title=self.title, show_header=False)
        for key in ("global_step", "sps", "episode_return", "episode_length", "policy_loss", "value_loss", "entropy",
                    "approx_kl", "clipfrac", "explained_variance", "learning_rate"):
            if key in s:
                t.add_row(key, f"{s[key]:.4g}" if isinstance(s[key], float) else str(s[key]))
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


RUN_SETTINGS = ("run_dir", "checkpoint_every", "keep_last", "log")


def _saved_settings(resume: str) -> dict[str, Any]:
    """The run and checkpoint directories and `--checkpoint-every/--keep-last/--log` of the resumed run."""
    import json

    if resume.startswith("hf://"):
        return {}
    path = Path(resume)
    # a checkpoint directory run/checkpoints/<step> belongs to run
    ckpt_dir = path.parent.parent if (path / "manifest.json").is_file() else path
    f = ckpt_dir / "run.json"
    saved = json.loads(f.read_text()) if f.is_file() else {}
    return {"run_dir": str(ckpt_dir), **{k: saved[k] for k in RUN_SETTINGS if k in saved},
            "checkpoint_dir": str(ckpt_dir)}


def cmd_train(args: argparse.Namespace) -> int:
    """Train or resume a run: periodic and final checkpoints, optional logging, a summary at the end."""
    from puffer import backends, checkpoint
    from puffer.loggers import make_logger

    settings: dict[str, Any] = {}
    if args.resume:
        manifest = checkpoint.read_manifest(args.resume)
        cfg = config_from_args(args, PPOConfig.from_dict(manifest["config"]))
        env_name = args.env or manifest["env"]
        backend = args.backend or manifest["backend"]
        settings = _saved_settings(args.resume)
    else:
        cfg = config_from_args(args, PPOConfig())
        env_name = args.env or "cartpole"
        backend = args.backend or backends.default_name()
    # flags given now win over the resumed run's
    settings.update({k: getattr(args, k) for k in RUN_SETTINGS if getattr(args, k) is not None})
    if args.steps is not None:
        cfg.total_steps = args.steps
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(settings.get("run_dir") or f"runs/{env_name.replace(':', '_')}-{args.algo}-{backend}-{stamp}")
    ckpt_dir = Path(args.checkpoint_dir or settings.get("checkpoint_dir") or run_dir)
    every, keep_last, log = settings.get("checkpoint_every"), settings.get("keep_last"), settings.get("log") or "none"
    if args.resume:
        trainer = checkpoint.resume_trainer(manifest["path"], backend=backend, env=env_name, **cfg.to_dict())
        how = "exactly" if trainer.resumed_exactly else "with a fresh env reset (its env state was not saved)"
        print(f"resumed {manifest['path']} (saved on {manifest['backend']}) at step {trainer.global_step} on "
              f"{backend}, {how}")
    else:
        from puffer.algos.trainer import PPO

        trainer = PPO(env_name, backend=backend, config=cfg)
    checkpoint.write_json(ckpt_dir / "run.json", {"run_dir": str(run_dir), "checkpoint_every": every,
                                                  "keep_last": keep_last, "log": log})
    logger = make_logger(log, run_dir, config={"env": env_name, "algo": args.algo, "backend": backend,
                                               **cfg.to_dict()}, name=run_dir.name)
    last_saved = {"step": trainer.global_step, "path": None}

    def on_update(t: Any, stats: dict[str, float]) -> None:
        logger.log(stats, t.global_step)
        if every and t.global_step - last_saved["step"] >= every:
            last_saved.update(step=t.global_step, path=t.save(ckpt_dir, keep_last=keep_last))

    progress = Progress(f"puffer train {env_name} ({backend})", args.quiet)
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
    print(f"trained {env_name} with {args.algo} on {backend}: {trainer.global_step} steps, mean return (last 20) "
          f"{trainer.mean_return(20):.2f}, {stats.get('sps', 0):.0f} steps/s")
    print(f"saved {ckpt}")
    print(f"evaluate: puffer eval {env_name} --checkpoint {ckpt_dir}")
    print(f"continue: puffer train --resume {ckpt_dir} --steps {2 * cfg.total_steps}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run a trained policy for --episodes episodes and print its mean and std return."""
    import numpy as np

    import puffer
    from puffer.algos.evaluate import CheckpointPolicy, run_episodes

    if args.policy is not None:
        if (args.backend or "onnxruntime") != "onnxruntime":
            raise PufferError(f"an exported policy ({args.policy}) runs on the onnxruntime backend, not "
                              f"{args.backend!r}; evaluate the run directory with --checkpoint to use {args.backend}")
        be = puffer.backend("onnxruntime")
        actor = be.load_policy(args.policy, deterministic=not args.sample, seed=args.seed)
        source, trained_env, env_kwargs = args.policy, actor.env, actor.env_kwargs
    else:
        actor = CheckpointPolicy(args.checkpoint, backend=args.backend, deterministic=not args.sample, seed=args.seed)
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
