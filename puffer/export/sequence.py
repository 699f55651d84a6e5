"""Export a sequence policy (the Decision Transformer) to ONNX with its context window as the model's inputs.

Inputs (batch symbolic, K the context length): `states` float32[batch, K, obs_dim] (normalized by
the dataset statistics recorded in the metadata), `actions` float32[batch, K, action_dim],
`returns_to_go` float32[batch, K, 1] (scaled), `timesteps` int64[batch, K] and `mask`
float32[batch, K] (right-padded: 1 for the steps held). Outputs: `action` [batch, action_dim] at
each row's last real step, `logits` / `mean` there, and with a sampling graph `sample_action` from
a `noise` input. `puffer.deploy.SequencePolicy` keeps the rolling context and calls it once per step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import puffer
from puffer import checkpoint, spaces
from puffer.deploy import FORMAT_VERSION, META
from puffer.errors import ExportError
from puffer.sequence import DecisionTransformer

BATCH = "batch"


def build_model(model: DecisionTransformer, params: dict[str, np.ndarray], sample_graph: bool = False,
                opset: int | None = None, metadata: dict[str, str] | None = None) -> Any:
    """Trace `model` with numpy `params` into a validated `onnx.ModelProto` of `opset` (default 17)."""
    import onnx

    from puffer.backends.onnx_backend import DEFAULT_OPSET, OnnxBackend

    expected = set(model.init(None, 0))
    if set(params) != expected:
        raise ExportError(f"parameters {sorted(params)} do not fit the model, which needs {sorted(expected)}")
    be = OnnxBackend()
    k, head = model.context, model.head
    opset = DEFAULT_OPSET if opset is None else opset
    with be.trace(opset):
        states = be.input("states", np.float32, (BATCH, k, model.obs_dim))
        actions = be.input("actions", np.float32, (BATCH, k, head.action_dim))
        rtg = be.input("returns_to_go", np.float32, (BATCH, k, 1))
        timesteps = be.input("timesteps", np.int64, (BATCH, k))
        mask = be.input("mask", np.float32, (BATCH, k))
        noise = be.input("noise", np.float32, (BATCH, head.noise_dim)) if sample_graph else None
        p = {name: be.param(name, np.asarray(v, np.float32)) for name, v in sorted(params.items())}
        out = model.last(be, model.forward(be, p, states, actions, rtg, timesteps), mask)
        logits, mean, _ = model.dist(out)
        be.output("action", model.head.mode(be, model.dist(out)))
        if logits is not None:
            be.output("logits", logits)
        if mean is not None:
            be.output("mean", mean)
        if sample_graph:
            be.output("sample_action", model.act(be, p, states, actions, rtg, timesteps, mask, noise))
        graph = be.model("puffer_sequence_policy",
                         doc="puffer sequence policy: context of the last K steps -> next action")
    props = dict(metadata or {})
    props.update({META["opset"]: str(graph.opset_import[0].version), META["ir_version"]: str(graph.ir_version)})
    onnx.helper.set_model_props(graph, props)
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the traced sequence policy is not a valid ONNX model: {e}") from e
    return graph


def export_sequence(groups: dict[str, dict[str, np.ndarray]], manifest: dict[str, Any], to: str | Path,
                    sample_graph: bool = False, opset: int | None = None) -> Path:
    """Write the sequence policy of a loaded checkpoint (`groups`, `manifest`) to the ONNX file `to`."""
    obs_space = spaces.from_json(manifest["observation_space"])
    act_space = spaces.from_json(manifest["action_space"])
    spec = checkpoint.policy_spec(manifest)
    model = DecisionTransformer.from_spec(obs_space, act_space, spec)
    cfg = manifest["config"]
    head = model.head
    meta = {
        META["format"]: str(FORMAT_VERSION),
        META["version"]: puffer.__version__,
        META["observation_space"]: json.dumps(manifest["observation_space"]),
        META["action_space"]: json.dumps(manifest["action_space"]),
        META["backend"]: str(manifest.get("backend")),
        META["env"]: str(manifest.get("env")),
        META["env_kwargs"]: json.dumps(cfg.get("env_kwargs", {})),
        META["policy"]: json.dumps({**spec, "recurrent": False, "algo": manifest.get("algo")}),
        META["head"]: json.dumps({"action_dim": head.action_dim, "num_discrete": head.num_discrete,
                                  "num_continuous": head.num_continuous, "noise_dim": head.noise_dim}),
        META["state"]: json.dumps([]),
        META["sample_graph"]: json.dumps(bool(sample_graph)),
        META["step"]: str(manifest.get("step")),
        META["sequence"]: json.dumps({**spec, "target_return": cfg.get("target_return", 0.0)}),
    }
    graph = build_model(model, groups["params"], sample_graph, opset, meta)
    out = Path(to)
    checkpoint.write_atomic(out, graph.SerializeToString())
    return out
