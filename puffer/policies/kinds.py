"""Policies by kind: each kind says how to rebuild its policy from a spec, act with it from a checkpoint, export it.

A checkpoint's manifest holds the acting policy's spec (`policy.spec()`, a JSON dict with a
`kind`); evaluation (`puffer.train.evaluate.load_actor`), export (`puffer.export.export`) and
resume look the kind up here and never name an algorithm. A kind whose policy follows the step
protocol (`step(be, params, obs, state) -> (dist, value, state)`, `head`, `initial_state`) needs
no actor or export of its own: the generic `CheckpointPolicy` and the ONNX step export serve it.
Kinds are named here by `module:attribute`, loaded on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from puffer.errors import SpaceError


@dataclass(frozen=True)
class Kind:
    """One kind of acting policy."""

    name: str
    from_spec: Callable[[Any, Any, dict[str, Any]], Any]
    """`from_spec(observation_space, action_space, spec)` -> the policy."""
    actor: Callable[..., Any] | None = None
    """`actor(groups, meta, be, deterministic, seed, target_return)` -> an actor (None: `CheckpointPolicy`)."""
    export: Callable[..., Any] | None = None
    """`export(groups, manifest, to, sample_graph, opset)` -> the ONNX file; None: the step-policy export."""
    conditioned: bool = False
    """Whether the actor takes a target return (a return-conditioned sequence model)."""


KINDS = {
    "mlp": "puffer.policies.core:MLP_KIND",
    "lstm": "puffer.policies.core:LSTM_KIND",
    "central_critic": "puffer.policies.central_critic:KIND",
    "decision_transformer": "puffer.sequence:POLICY_KIND",
    "dreamer": "puffer.policies.dreamer:KIND",
}


def kind_name(spec: dict[str, Any]) -> str:
    """The kind a spec describes (a central-critic spec names its actor's kind and adds `central_critic`)."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise SpaceError(f"policy spec {spec!r} names no kind")
    return "central_critic" if "central_critic" in spec else str(spec["kind"])


def kind(spec: dict[str, Any]) -> Kind:
    """The `Kind` of a policy spec; an unknown kind is an error listing the known ones."""
    name = kind_name(spec)
    where = KINDS.get(name)
    if where is None:
        raise SpaceError(f"policy kind {name!r} is unknown; known: {', '.join(sorted(KINDS))}")
    module, attr = where.split(":")
    return getattr(importlib.import_module(module), attr)


def from_spec(observation_space: Any, action_space: Any, spec: dict[str, Any]) -> Any:
    """The policy a spec describes, for these spaces."""
    try:
        return kind(spec).from_spec(observation_space, action_space, spec)
    except (KeyError, TypeError) as e:
        raise SpaceError(f"policy spec {spec!r} is incomplete ({e})") from None


def policy_spec(policy: Any) -> dict[str, Any]:
    """The JSON description checkpoints and exports keep, from which `from_spec` rebuilds the policy."""
    return policy.spec()
