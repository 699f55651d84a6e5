"""Run an exported policy with onnxruntime alone: `Policy.load("policy.onnx").act(obs)`.

Needs only numpy and onnxruntime (never torch, JAX or tinygrad). Each batch size gets its own
preallocated input and output buffers bound once to an onnxruntime IOBinding, so a call copies the
observation into place and runs; only the outputs a call needs are bound, so `act` skips the critic.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from puffer import spaces
from puffer.errors import ExportError
from puffer.policies import to_env_actions

FORMAT_VERSION = 1
# ONNX metadata_props keys written by puffer.export
META = {k: f"puffer.{k}" for k in (
    "format", "version", "observation_space", "structured_observation_space", "action_space", "obs_norm",
    "backend", "env", "env_kwargs", "policy", "head", "state", "sample_graph", "step")}
_MAX_BOUND = 8  # batch sizes kept bound at once; each holds its own buffers


class _Bound:
    """Buffers and an IOBinding for one batch size and one set of outputs."""

    def __init__(self, session: Any, inputs: dict[str, tuple[np.dtype, tuple[int, ...]]],
                 outputs: dict[str, tuple[np.dtype, tuple[int, ...]]]):
        self.binding = session.io_binding()
        self.inputs = {n: np.zeros(shape, dt) for n, (dt, shape) in inputs.items()}
        self.outputs = {n: np.empty(shape, dt) for n, (dt, shape) in outputs.items()}
        for name, buf in self.inputs.items():
            self.binding.bind_input(name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)
        for name, buf in self.outputs.items():
            self.binding.bind_output(name, "cpu", 0, buf.dtype, buf.shape, buf.ctypes.data)
        # the C-level binding skips the Python wrapper's per-call checks
        self.run_native = session._sess.run_with_iobinding
        self.native_binding = self.binding._iobinding


class Policy:
    """An exported puffer policy on onnxruntime: `act(obs)`, or `act(obs, state)` for recurrent ones."""

    def __init__(self, session: Any, path: Path, meta: dict[str, str], deterministic: bool = True, seed: int = 0):
        self.session, self.path, self.meta = session, path, meta
        self.observation_space = spaces.from_json(json.loads(meta[META["observation_space"]]))
        self.action_space = spaces.from_json(json.loads(meta[META["action_space"]]))
        structured = json.loads(meta.get(META["structured_observation_space"], "null"))
        self.structured_observation_space = spaces.from_json(structured) if structured else None
        self.obs_norm = json.loads(meta.get(META["obs_norm"], "null"))
        self.env = meta.get(META["env"])
        self.env_kwargs = json.loads(meta.get(META["env_kwargs"], "{}"))
        self.training_backend = meta.get(META["backend"])
        self.head = json.loads(meta[META["head"]])
        # [[name, [dims...]]] (any trailing shape: [B, H], [B, K, D]); older exports wrote [[name, hidden]]
        self.state_spec = [(str(n), (int(d),) if isinstance(d, int) else tuple(int(x) for x in d))
                           for n, d in json.loads(meta[META["state"]])]
        self.recurrent = bool(self.state_spec)
        self.has_sample_graph = json.loads(meta.get(META["sample_graph"], "false"))
        self.obs_dim = int(self.observation_space.shape[0])
        self.obs_dtype = np.dtype(self.observation_space.dtype)
        self.deterministic = deterministic
        if not deterministic and not self.has_sample_graph:
            raise ExportError(f"{path}: sampling needs a model exported with a sampling graph "
                              "(puffer export --sample-graph)")
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.output_names = [o.name for o in session.get_outputs()]
        self._types = {v.name: (_np_dtype(v.type), v.shape) for v in (*session.get_inputs(), *session.get_outputs())}
        self._bound: OrderedDict[tuple, _Bound] = OrderedDict()
        self._last: tuple[tuple, _Bound] | None = None
        action = "action" if deterministic else "sample_action"
        self._act_outputs = (action, *(f"{n}_out" for n, _ in self.state_spec))

    @classmethod
    def load(cls, path: str | Path, deterministic: bool = True, seed: int = 0, intra_op_threads: int = 1,
             spinning: bool = False, providers: list[str] | None = None) -> Policy:
        """Load an exported policy; one intra-op thread by default (lowest latency for small policies)."""
        import onnxruntime as ort

        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ExportError(f"{path}: cannot read the policy file ({e.strerror or e})") from e
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(intra_op_threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # spinning trades idle CPU for wake-up latency; off by default so a device's other work keeps its cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(data, so, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unparsable or invalid models
            raise ExportError(f"{path}: not a loadable ONNX model ({str(e).strip().splitlines()[0]})") from e
        meta = dict(session.get_modelmeta().custom_metadata_map)
        if META["format"] not in meta:
            raise ExportError(f"{path}: an ONNX model without puffer metadata (not written by `puffer export`); "
                              "puffer.deploy needs the spaces and state layout it records")
        if meta[META["format"]] != str(FORMAT_VERSION):
            raise ExportError(f"{path}: puffer export format {meta[META['format']]!r} is not supported; this "
                              f"puffer reads format {FORMAT_VERSION}")
        return cls(session, path, meta, deterministic, seed)

    def __repr__(self) -> str:
        return (f"<puffer.deploy.Policy {self.path.name}: obs {self.obs_dtype}[{self.obs_dim}] -> "
                f"{self.action_space!r}{', recurrent' if self.recurrent else ''}>")

    # ---- state ------------------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> tuple[np.ndarray, ...]:
        """Zero recurrent state for `batch` rows (an empty tuple for feed-forward policies)."""
        return tuple(np.zeros((batch, *dims), np.float32) for _, dims in self.state_spec)

    # ---- inputs -----------------------------------------------------------------------------
    def _expected(self) -> str:
        return f"{self.obs_dtype}[batch, {self.obs_dim}] (or [{self.obs_dim}] for one observation)"

    def flatten_obs(self, obs: Any) -> np.ndarray:
        """A (batch of) structured observation(s) as the flat observation array the model takes."""
        space = self.structured_observation_space
        if isinstance(obs, np.ndarray) and obs.dtype.names is not None and space is not None:
            obs = spaces.from_structured(space, obs)
        elif not isinstance(obs, (dict, tuple, list)) or space is None:
            return obs
        return spaces.flatten(space, obs, dtype=self.obs_dtype)

    def _obs(self, obs: Any) -> tuple[np.ndarray, bool]:
        if not isinstance(obs, np.ndarray) or obs.dtype.names is not None:
            obs = self.flatten_obs(obs)
            if not isinstance(obs, np.ndarray):  # Python numbers carry no dtype that could be wrong
                obs = np.asarray(obs, dtype=self.obs_dtype)
        if obs.dtype != self.obs_dtype:
            raise ExportError(f"{self.path.name}: observations must be {self._expected()}, got dtype {obs.dtype} "
                              f"shape {obs.shape}")
        if obs.ndim == 1 and obs.shape[0] == self.obs_dim:
            return obs[None], True
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ExportError(f"{self.path.name}: observations must be {self._expected()}, got shape {obs.shape} "
                              f"dtype {obs.dtype}")
        return obs, False

    def _state(self, state: Any, batch: int, starts: Any) -> tuple[np.ndarray, ...]:
        if state is None or len(state) == 0:
            return self.initial_state(batch)
        if len(state) != len(self.state_spec):
            raise ExportError(f"{self.path.name}: state must be {len(self.state_spec)} arrays "
                              f"({', '.join(n for n, _ in self.state_spec)}), got {len(state)}")
        out = []
        for s, (name, dims) in zip(state, self.state_spec):
            s = np.asarray(s)
            if s.shape != (batch, *dims) or s.dtype != np.float32:
                raise ExportError(f"{self.path.name}: state {name!r} must be float32{[batch, *dims]}, got "
                                  f"{s.dtype}{list(s.shape)}")
            out.append(s)
        if starts is not None:
            keep = 1.0 - np.asarray(starts, np.float32).reshape(batch)
            out = [s * keep.reshape((batch,) + (1,) * (s.ndim - 1)) for s in out]
        return tuple(out)

    def _binding(self, batch: int, outputs: tuple[str, ...], noise: bool) -> _Bound:
        key = (batch, outputs, noise)
        if self._last is not None and self._last[0] == key:  # the common case: the same call as last time
            return self._last[1]
        bound = self._bound.get(key)
        if bound is not None:
            self._bound.move_to_end(key)
            self._last = (key, bound)
            return bound
        inputs = {"obs": (self.obs_dtype, (batch, self.obs_dim))}
        inputs.update({n: (np.dtype(np.float32), (batch, *dims)) for n, dims in self.state_spec})
        if noise:
            inputs["noise"] = (np.dtype(np.float32), (batch, self.head["noise_dim"]))
        outs = {}
        state_dims = {f"{n}_out": dims for n, dims in self.state_spec}
        for name in outputs:
            dt, shape = self._types[name]
            # A state's shape comes from the metadata: shape inference may leave its trailing dims symbolic.
            shape = (batch, *state_dims[name]) if name in state_dims else \
                tuple(batch if not isinstance(d, int) else d for d in shape)
            outs[name] = (dt, shape)
        bound = self._bound[key] = _Bound(self.session, inputs, outs)
        if len(self._bound) > _MAX_BOUND:
            self._bound.popitem(last=False)
        self._last = (key, bound)
        return bound

    def _noise(self, batch: int) -> np.ndarray:
        k, d = self.head["num_discrete"], self.head["num_continuous"]
        out = np.empty((batch, k + d), np.float32)
        out[:, :k] = self.rng.random((batch, k), dtype=np.float32)
        out[:, k:] = self.rng.standard_normal((batch, d), dtype=np.float32)
        return out

    def _run(self, obs: np.ndarray, state: tuple, noise: np.ndarray | None, outputs: tuple[str, ...]) -> _Bound:
        batch = obs.shape[0]
        bound = self._binding(batch, outputs, noise is not None or self.has_sample_graph)
        ins = bound.inputs
        np.copyto(ins["obs"], obs)
        for (name, _), s in zip(self.state_spec, state):
            np.copyto(ins[name], s)
        if noise is not None:
            np.copyto(ins["noise"], noise)
        bound.run_native(bound.native_binding, None)
        return bound

    # ---- calls ------------------------------------------------------------------------------
    def act(self, obs: Any, state: Any = None, starts: Any = None) -> Any:
        """Env actions for `obs`; recurrent policies return `(actions, new_state)`.

        `obs` is `[batch, obs_dim]`, one `[obs_dim]` observation, or (batched) structured
        observations, which are flattened with numpy. `starts` [batch] zeroes the state rows
        where a new episode begins.
        """
        obs, single = self._obs(obs)
        batch = obs.shape[0]
        state = self._state(state, batch, starts) if self.recurrent else ()
        noise = None if self.deterministic else self._noise(batch)
        bound = self._run(obs, state, noise, self._act_outputs)
        out = bound.outputs[self._act_outputs[0]]
        actions = to_env_actions(self.action_space, out)
        if np.may_share_memory(actions, out):  # the bound buffer is overwritten by the next call
            actions = actions.copy()
        if single:
            actions = actions[0]
        if not self.recurrent:
            return actions
        new_state = tuple(bound.outputs[f"{n}_out"].copy() for n, _ in self.state_spec)
        return actions, new_state

    def forward(self, obs: Any, state: Any = None, noise: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every model output (action, logits / mean / log_std, value, state, samples) for a batch `obs`."""
        obs, _ = self._obs(obs)
        batch = obs.shape[0]
        state = self._state(state, batch, None) if self.recurrent else ()
        if self.has_sample_graph and noise is None:
            noise = np.zeros((batch, self.head["noise_dim"]), np.float32)
        if noise is not None:
            if not self.has_sample_graph:
                raise ExportError(f"{self.path.name}: this model has no sampling graph; export with --sample-graph")
            noise = np.asarray(noise, np.float32).reshape(batch, self.head["noise_dim"])
        bound = self._run(obs, state, noise, tuple(self.output_names))
        return {k: v.copy() for k, v in bound.outputs.items()}


def _np_dtype(onnx_type: str) -> np.dtype:
    # onnxruntime reports types as "tensor(float)", "tensor(int64)", ...
    name = onnx_type[len("tensor("):-1]
    return np.dtype({"float": "float32", "double": "float64", "bool": "bool"}.get(name, name))


def load(path: str | Path, **kwargs: Any) -> Policy:
    """`Policy.load(path, **kwargs)`."""
    return Policy.load(path, **kwargs)
