"""Run configuration: a dataclass base whose every field becomes a CLI flag, with its docstring as help.

An algorithm's config subclasses `RunConfig` and documents each field with a string literal right
below it (an attribute docstring); `add_config_arguments` turns the fields into `--field-name`
options and `config_from_args` reads them back, so a new field is a new flag with no other edit.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from puffer.errors import PufferError


@dataclass
class RunConfig:
    """What every run shares, whatever the algorithm: budget, seed, envs and their vectorization."""

    total_steps: int = 300_000
    """Env steps to train for; every agent row of every env counts."""
    seed: int = 0
    """Seed of the parameters, the envs and the host-drawn sampling noise."""
    num_envs: int = 64
    """Environments stepped together."""
    vec: str = "serial"
    """Vectorization backend (see `puffer.vector.BACKENDS`): serial steps every env in this process."""
    num_workers: int | None = None
    """Worker processes of a parallel vec backend (default: the largest divisor of num_envs up to the CPU count)."""
    vec_batch_size: int | None = None
    """Rows per receive of an asynchronous vec backend; below num_envs * agents it steps envs EnvPool-style."""
    obs_norm: bool = False
    """Normalize observations by running mean and variance (clipped to +-10), as SB3's VecNormalize."""
    env_kwargs: dict = field(default_factory=dict)
    """Keyword arguments for the env constructor, as JSON."""
    reward_model: str | None = None
    """Directory of a reward model (`puffer preferences fit`) whose rewards replace the env's in training."""

    # field -> allowed values, and the fields that must be positive; subclasses extend both
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {}
    POSITIVE: ClassVar[tuple[str, ...]] = ("total_steps", "num_envs")

    def validate(self) -> None:
        """Raise PufferError naming the first field whose value cannot work."""
        from puffer.vector import BACKENDS

        choices = {"vec": tuple(BACKENDS)}
        for cls in reversed(type(self).__mro__):
            choices.update(vars(cls).get("CHOICES", {}))
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise PufferError(f"config {name}={getattr(self, name)!r}: choose one of "
                                  f"{', '.join(str(a) for a in allowed)}")
        positive = {n for cls in type(self).__mro__ for n in vars(cls).get("POSITIVE", ())}
        for name in sorted(positive):
            if getattr(self, name) <= 0:
                raise PufferError(f"config {name}={getattr(self, name)} must be positive")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PufferError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        return cls(**data)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's attribute docstring, from `cls` and its bases (empty where there is none)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # classes defined in a REPL have no source to read
            continue
        body = ast.parse(source).body[0].body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one `--field-name` option per dataclass field (defaults None: unset keeps the config's)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for f in fields(cls):
        hint = hints[f.name]
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        default = getattr(defaults, f.name)
        text = f"{docs.get(f.name, '')} (default: {json.dumps(default) if isinstance(default, dict) else default})"
        text = text.replace("%", "%%").strip()
        if base is bool:
            group.add_argument(_flag(f.name), type=_parse_bool, default=None, metavar="BOOL", help=text)
        elif base is dict or typing.get_origin(base) is dict:
            group.add_argument(_flag(f.name), type=_parse_json_object, default=None, metavar="JSON", help=text)
        else:
            group.add_argument(_flag(f.name), type=base, default=None, metavar=base.__name__.upper(), help=text)


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"N\": 3}}', got {text!r}")
    return value


def config_from_args(args: argparse.Namespace, base: Any) -> Any:
    """`base` with every field the user set on the command line replaced."""
    updates = {f.name: getattr(args, f.name) for f in fields(base) if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **updates)
