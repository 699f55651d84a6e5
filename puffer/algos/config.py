"""Training configuration: one dataclass whose every field is a CLI flag (`--learning-rate 3e-4`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from puffer.errors import PufferError


@dataclass
class PPOConfig:
    """PPO hyperparameters; the defaults solve the built-in CartPole in well under 300k steps."""

    total_steps: int = 300_000
    seed: int = 0
    num_envs: int = 64
    vec: str = "serial"
    num_workers: int | None = None
    vec_batch_size: int | None = None
    policy: str = "mlp"
    hidden_size: int = 64
    num_layers: int = 2
    activation: str = "tanh"
    rollout_len: int = 32
    bptt_horizon: int = 16
    minibatch_size: int = 512
    update_epochs: int = 4
    learning_rate: float = 2.5e-3
    lr_schedule: str = "linear"
    gamma: float = 0.99
    gae_lambda: float = 0.95
    advantage: str = "gae"
    vtrace_rho_clip: float = 1.0
    vtrace_c_clip: float = 1.0
    clip_coef: float = 0.2
    vf_coef: float = 0.5
    vf_clip: float = 0.2
    ent_coef: float = 0.01
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    obs_norm: bool = False
    adam_eps: float = 1e-5
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    weight_decay: float = 0.0
    target_kl: float | None = None
    env_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise PufferError naming the first field whose value cannot work."""
        from puffer.vector import BACKENDS

        choices = {"vec": tuple(BACKENDS), "policy": ("mlp", "lstm"),
                   "activation": ("tanh", "relu", "gelu"), "lr_schedule": ("linear", "cosine", "constant"),
                   "advantage": ("gae", "vtrace")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise PufferError(f"config {name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        for name in ("total_steps", "num_envs", "rollout_len", "bptt_horizon", "minibatch_size",
                     "update_epochs", "hidden_size", "num_layers"):
            if getattr(self, name) <= 0:
                raise PufferError(f"config {name}={getattr(self, name)} must be positive")
        sequences = self.policy == "lstm" or self.advantage == "vtrace"
        if sequences and self.rollout_len % self.bptt_horizon:
            raise PufferError(
                f"config rollout_len={self.rollout_len} must be a multiple of bptt_horizon={self.bptt_horizon}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPOConfig:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PufferError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        return cls(**data)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = PPOConfig) -> None:
    """Add one `--field-name` option per dataclass field (defaults None: unset keeps the config's)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for f in fields(cls):
        hint = hints[f.name]
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        if base is bool:
            group.add_argument(_flag(f.name), type=_parse_bool, default=None, metavar="BOOL")
        elif base is dict or typing.get_origin(base) is dict:
            group.add_argument(_flag(f.name), type=json.loads, default=None, metavar="JSON")
        else:
            group.add_argument(_flag(f.name), type=base, default=None, metavar=base.__name__.upper())


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def config_from_args(args: argparse.Namespace, base: Any, cls: type = PPOConfig) -> Any:
    """`base` with every field the user set on the command line replaced."""
    updates = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **updates)
