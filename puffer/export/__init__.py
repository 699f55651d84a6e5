"""Export a trained policy to ONNX, whichever backend trained it.

The policy's single-source forward (`policy.step`, `head.mode`, `head.sample`) runs once on the
recording `onnx` backend, which turns every array operation into an ONNX node. Parameters become
initializers, the batch dimension is symbolic, observation normalization is folded into the graph,
and the spaces, normalization statistics, puffer version, training backend and env travel in the
model's metadata (read back by `puffer.deploy`).

Compatibility: the model targets opset 17 unless asked otherwise (`opset=`, `puffer export --opset`)
and declares the lowest IR version that opset needs, so old onnxruntime releases, onnxruntime-node and
onnxruntime-web load it; an op the target opset lacks is an `ExportError` naming the op and the opset
it needs. The metadata records both (`puffer.opset`, `puffer.ir_version`).
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
from puffer.normalize import RunningNorm
from puffer.policies import LSTMPolicy, Policy, from_spec
from puffer.policies import kind as policy_kind

__all__ = ["export", "build_model", "state_names", "state_metadata"]

BATCH = "batch"


def state_names(policy: Policy) -> tuple[str, ...]:
    """Graph input names of the recurrent state (LSTM: h, c); outputs append `_out`."""
    n = len(policy.initial_state(puffer.backend("numpy"), 1))
    lstm = isinstance(policy, LSTMPolicy) or getattr(policy, "kind", None) == "lstm"
    return ("h", "c") if lstm else tuple(f"state{i}" for i in range(n))


def state_metadata(policy: Policy) -> str:
    """The `puffer.state` metadata: `[[name, [dims...]], ...]`, each state's shape after the batch axis."""
    shapes = [[int(d) for d in s.shape[1:]] for s in policy.initial_state(puffer.backend("numpy"), 1)]
    return json.dumps([[n, dims] for n, dims in zip(state_names(policy), shapes)])


def _norm_constants(obs_norm: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    # exactly the float32 constants RunningNorm applies on the host during training
    mean = np.asarray(obs_norm["mean"], np.float64)
    norm = RunningNorm(len(mean))
    norm.load_state_dict(obs_norm)
    return norm.mean.astype(np.float32), (1.0 / np.sqrt(norm.var + norm.eps)).astype(np.float32)


def build_model(policy: Policy, params: dict[str, np.ndarray], observation_space: spaces.Box,
                obs_norm: dict[str, np.ndarray] | None = None, sample_graph: bool = False,
                opset: int | None = None, metadata: dict[str, str] | None = None) -> Any:
    """Trace `policy` with numpy `params` into a validated `onnx.ModelProto` of `opset` (default 17)."""
    import onnx

    from puffer.backends.onnx_backend import DEFAULT_OPSET, OnnxBackend

    opset = DEFAULT_OPSET if opset is None else opset

    expected = set(policy.init(None, 0))
    # an algorithm may train more than the policy (e.g. a cost critic): the actor graph takes only the policy's own
    if not expected <= set(params):
        raise ExportError(f"parameters {sorted(params)} do not fit the policy, which needs {sorted(expected)}")
    params = {k: params[k] for k in expected}
    be = OnnxBackend()
    xp = be.xp
    head = policy.head
    obs_dim = int(observation_space.shape[0])
    names = state_names(policy)
    with be.trace(opset):
        obs = be.input("obs", observation_space.dtype, (BATCH, obs_dim))
        state_init = policy.initial_state(puffer.backend("numpy"), 1)
        state = tuple(be.input(n, np.float32, (BATCH, *s.shape[1:])) for n, s in zip(names, state_init))
        noise = be.input("noise", np.float32, (BATCH, head.noise_dim)) if sample_graph else None
        p = {k: be.param(k, np.asarray(v, np.float32)) for k, v in sorted(params.items())}
        x = xp.astype(obs, xp.float32)
        if obs_norm is not None:
            mean, inv_std = _norm_constants(obs_norm)
            x = xp.clip((x - mean) * inv_std, min=-10.0, max=10.0)
        dist, value, new_state = policy.step(be, p, x, state)
        logits, mean_, log_std = dist
        be.output("action", head.mode(be, dist))
        if logits is not None:
            be.output("logits", logits)
        if mean_ is not None:
            be.output("mean", mean_)
            be.output("log_std", log_std + xp.zeros_like(mean_))
        be.output("value", value)
        for n, s in zip(names, new_state):
            be.output(f"{n}_out", s)
        if sample_graph:
            actions, logp = head.sample(be, dist, noise)
            be.output("sample_action", actions)
            be.output("sample_log_prob", logp)
        model = be.model("puffer_policy", doc="puffer policy: obs -> action, distribution, value")
    props = dict(metadata or {})
    props.update({META["opset"]: str(model.opset_import[0].version), META["ir_version"]: str(model.ir_version)})
    onnx.helper.set_model_props(model, props)
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the traced policy is not a valid ONNX model: {e}") from e
    return model


def export(run_or_checkpoint_path: str | Path, to: str | Path, sample_graph: bool = False,
           opset: int | None = None) -> Path:
    """Export the policy of a run or checkpoint directory to the ONNX file `to` (opset 17 by default)."""
    groups, manifest = checkpoint.load(run_or_checkpoint_path)
    own = policy_kind(checkpoint.policy_spec(manifest)).export
    if own is not None:  # e.g. a sequence model, whose context window is the model's input
        return own(groups, manifest, to, sample_graph, opset)
    obs_space = spaces.from_json(manifest["observation_space"])
    act_space = spaces.from_json(manifest["action_space"])
    cfg = manifest["config"]
    spec = checkpoint.policy_spec(manifest)
    policy = from_spec(obs_space, act_space, spec)
    obs_norm = groups.get("obs_norm")
    head = policy.head
    norm_meta = None
    if obs_norm is not None:
        norm_meta = {"mean": np.asarray(obs_norm["mean"]).tolist(), "var": np.asarray(obs_norm["var"]).tolist(),
                     "count": float(obs_norm["count"]), "clip": 10.0, "eps": 1e-8, "applied_in_graph": True}
    meta = {
        META["format"]: str(FORMAT_VERSION),
        META["version"]: puffer.__version__,
        META["observation_space"]: json.dumps(manifest["observation_space"]),
        META["structured_observation_space"]: json.dumps(manifest.get("structured_observation_space")),
        META["action_space"]: json.dumps(manifest["action_space"]),
        META["obs_norm"]: json.dumps(norm_meta),
        META["backend"]: str(manifest.get("backend")),
        META["env"]: str(manifest.get("env")),
        META["env_kwargs"]: json.dumps(cfg.get("env_kwargs", {})),
        META["policy"]: json.dumps({**spec, "recurrent": policy.recurrent, "algo": manifest.get("algo", "ppo")}),
        META["head"]: json.dumps({"action_dim": head.action_dim, "num_discrete": head.num_discrete,
                                  "num_continuous": head.num_continuous, "noise_dim": head.noise_dim}),
        META["state"]: state_metadata(policy),
        META["sample_graph"]: json.dumps(bool(sample_graph)),
        META["step"]: str(manifest.get("step")),
    }
    model = build_model(policy, groups["params"], obs_space, obs_norm, sample_graph, opset, meta)
    out = Path(to)
    checkpoint.write_atomic(out, model.SerializeToString())
    return out
