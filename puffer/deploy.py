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
    "backend", "env", "env_kwargs", "policy", "head", "state", "sample_graph", "step", "opset", "ir_version",
    "sequence")}
# the metadata a model must carry for Policy to know its spaces and state layout
REQUIRED = tuple(META[k] for k in ("format", "observation_space", "action_space", "head", "state"))
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
        missing = [k for k in REQUIRED if k not in meta]
        if missing:
            what = "without puffer metadata" if len(missing) == len(REQUIRED) else "with incomplete puffer metadata"
            raise ExportError(f"{path}: an ONNX model {what} (missing {', '.join(missing)}), so not written by "
                              "`puffer export`; puffer.deploy needs the spaces and state layout it records. "
                              "Export the trained run with `puffer export RUN --to policy.onnx`")
        if meta[META["format"]] != str(FORMAT_VERSION):
            raise ExportError(f"{path}: puffer export format {meta[META['format']]!r} is not supported; this "
                              f"puffer reads format {FORMAT_VERSION}")
        if cls is Policy and META["sequence"] in meta:  # a Decision Transformer keeps its own context
            cls = SequencePolicy
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


class RollingContext:
    """The last K steps of each row for a sequence policy (Decision Transformer), numpy only.

    Right-padded: a row's first steps sit at positions 0..n-1 (`mask` marks them); once K steps are
    held, each new step shifts the window left. `push(obs)` adds the step to act on, `record(actions)`
    its action, `observe(rewards, ended)` decrements the return-to-go by the rewards and restarts
    the rows whose episodes ended.
    """

    def __init__(self, batch: int, context: int, obs_dim: int, action_dim: int, target_return: float,
                 rtg_scale: float, state_mean: Any, state_std: Any, max_timestep: int):
        if not np.isfinite(target_return):
            raise ExportError(f"the target return must be a finite number, got {target_return}")
        self.batch, self.k = batch, context
        self.target, self.scale, self.max_timestep = float(target_return), float(rtg_scale), int(max_timestep)
        self.mean = np.asarray(state_mean, np.float32)
        self.inv_std = (1.0 / np.maximum(np.asarray(state_std, np.float64), 1e-6)).astype(np.float32)
        self.states = np.zeros((batch, context, obs_dim), np.float32)
        self.actions = np.zeros((batch, context, action_dim), np.float32)
        self.rtg = np.zeros((batch, context, 1), np.float32)
        self.timesteps = np.zeros((batch, context), np.int64)
        self.mask = np.zeros((batch, context), np.float32)
        self.count = np.zeros(batch, np.int64)  # steps held, at most K
        self.t = np.zeros(batch, np.int64)  # the episode timestep of the next step
        self.togo = np.full(batch, self.target, np.float64)

    @classmethod
    def for_model(cls, model: Any, batch: int, target_return: float) -> RollingContext:
        """A context shaped for `model` (a `puffer.sequence.DecisionTransformer`)."""
        return cls(batch, model.context, model.obs_dim, model.head.action_dim, target_return, model.rtg_scale,
                   model.state_mean, model.state_std, model.max_timestep)

    def push(self, obs: np.ndarray) -> None:
        """Add the current observations [B, obs_dim] as each row's newest step."""
        full = self.count >= self.k
        if full.any():
            for a in (self.states, self.actions, self.rtg, self.timesteps):
                a[full] = np.roll(a[full], -1, axis=1)
        pos = np.minimum(self.count, self.k - 1)
        rows = np.arange(self.batch)
        self.states[rows, pos] = (np.asarray(obs, np.float32) - self.mean) * self.inv_std
        self.actions[rows, pos] = 0.0
        self.rtg[rows, pos, 0] = self.togo / self.scale
        self.timesteps[rows, pos] = np.minimum(self.t, self.max_timestep - 1)
        self.mask[rows, pos] = 1.0
        self.count = np.minimum(self.count + 1, self.k)
        self._pos = pos

    def inputs(self) -> tuple[np.ndarray, ...]:
        """(states, actions, returns_to_go, timesteps, mask), the model's inputs."""
        return self.states, self.actions, self.rtg, self.timesteps, self.mask

    def record(self, actions: np.ndarray) -> None:
        """The flat float actions [B, action_dim] taken at the newest step."""
        self.actions[np.arange(self.batch), self._pos] = np.asarray(actions, np.float32).reshape(self.batch, -1)

    def observe(self, rewards: Any, ended: Any = None) -> None:
        """Rewards [B] of the step just taken; `ended` [B] rows start a new episode next step."""
        self.togo -= np.asarray(rewards, np.float64).reshape(self.batch)
        self.t += 1
        if ended is not None:
            done = np.asarray(ended, bool).reshape(self.batch)
            if done.any():
                self.reset(done)

    def reset(self, rows: Any = None) -> None:
        """Restart `rows` (a boolean mask; all rows by default) at the full target."""
        rows = np.ones(self.batch, bool) if rows is None else rows
        for a in (self.states, self.actions, self.rtg, self.timesteps, self.mask):
            a[rows] = 0
        self.count[rows], self.t[rows], self.togo[rows] = 0, 0, self.target


class SequencePolicy(Policy):
    """An exported Decision Transformer on onnxruntime: `act(obs, reward)` once per step of one env.

        policy = SequencePolicy.load("dt.onnx", target_return=300)
        action = policy.act(obs)                        # the first step of an episode
        action = policy.act(obs, reward)                # then: the reward the previous action earned
        policy.reset()                                  # a new episode

    It keeps the rolling context of the last K steps (states, actions, returns-to-go, timesteps),
    decrements the target by each reward and feeds the window to the model.
    """

    def __init__(self, session: Any, path: Path, meta: dict[str, str], deterministic: bool = True, seed: int = 0,
                 target_return: float | None = None):
        self.session, self.path, self.meta = session, path, meta
        if META["sequence"] not in meta:
            raise ExportError(f"{path}: not an exported sequence policy (no {META['sequence']} metadata); load it "
                              "with puffer.deploy.Policy")
        self.observation_space = spaces.from_json(json.loads(meta[META["observation_space"]]))
        self.action_space = spaces.from_json(json.loads(meta[META["action_space"]]))
        self.env = meta.get(META["env"])
        self.env_kwargs = json.loads(meta.get(META["env_kwargs"], "{}"))
        self.sequence = json.loads(meta[META["sequence"]])
        self.head = json.loads(meta[META["head"]])
        self.obs_dim = int(self.observation_space.shape[0])
        self.obs_dtype = np.dtype(np.float32)
        self.deterministic = deterministic
        self.rng = np.random.Generator(np.random.PCG64(seed))
        target = self.sequence.get("target_return", 0.0) if target_return is None else target_return
        self.target_return = float(target)
        self.recurrent = False
        self._ctx: RollingContext | None = None
        self._started = False

    @classmethod
    def load(cls, path: str | Path, deterministic: bool = True, seed: int = 0, target_return: float | None = None,
             **kwargs: Any) -> SequencePolicy:
        """Load an exported Decision Transformer; `target_return` defaults to the one it was trained for."""
        policy = super().load(path, deterministic=deterministic, seed=seed, **kwargs)
        if target_return is not None:
            policy.set_target(target_return)
        return policy

    def set_target(self, target_return: float) -> None:
        """Condition the next episodes on `target_return` (starts a new episode)."""
        if not np.isfinite(target_return):
            raise ExportError(f"the target return must be a finite number, got {target_return}")
        self.target_return = float(target_return)
        self._ctx = None
        self._started = False

    def _context(self, batch: int) -> RollingContext:
        if self._ctx is None or self._ctx.batch != batch:
            q = self.sequence
            self._ctx = RollingContext(batch, q["context"], self.obs_dim, self.head["action_dim"],
                                       self.target_return, q["rtg_scale"], q["state_mean"], q["state_std"],
                                       q["max_timestep"])
            self._started = False
        return self._ctx

    def reset(self) -> None:
        """Start a new episode (the full target, an empty context)."""
        if self._ctx is not None:
            self._ctx.reset()
        self._started = False

    def run(self, states: np.ndarray, actions: np.ndarray, rtg: np.ndarray, timesteps: np.ndarray,
            mask: np.ndarray, noise: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The model's outputs for one batch of contexts (the raw graph, for parity checks)."""
        feeds = {"states": states, "actions": actions, "returns_to_go": rtg, "timesteps": timesteps, "mask": mask}
        names = [i.name for i in self.session.get_inputs()]
        if "noise" in names:
            feeds["noise"] = np.zeros((len(states), self.head["noise_dim"]), np.float32) if noise is None else noise
        return dict(zip(self.output_names_(), self.session.run(None, feeds)))

    def output_names_(self) -> list[str]:
        """The graph's output names."""
        return [o.name for o in self.session.get_outputs()]

    def observe(self, rewards: Any, ended: Any = None) -> None:
        """The outcome of the last action for a batch of envs (an alternative to passing `reward` to `act`)."""
        if self._ctx is not None and self._started:
            self._ctx.observe(rewards, ended)

    def act(self, obs: Any, reward: Any = None, done: Any = None) -> Any:
        """The action for `obs` (one observation, or a batch [B, obs_dim]); `reward` is the previous step's.

        `done` (the previous step ended its episode) restarts the context before this step.
        """
        obs = np.asarray(obs, np.float32)
        single = obs.ndim == 1
        obs = obs[None] if single else obs
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ExportError(f"{self.path.name}: observations must be float32[{self.obs_dim}] or "
                              f"[batch, {self.obs_dim}], got shape {obs.shape}")
        ctx = self._context(len(obs))
        if self._started and reward is not None:
            ctx.observe(np.broadcast_to(np.asarray(reward, np.float64), (len(obs),)), done)
        ctx.push(obs)
        self._started = True
        noise = None
        if not self.deterministic:
            noise = np.concatenate([self.rng.random((len(obs), self.head["num_discrete"]), dtype=np.float32),
                                    np.zeros((len(obs), self.head["num_continuous"]), np.float32)], axis=1)
        name = "action" if self.deterministic else "sample_action"
        out = self.run(*ctx.inputs(), noise=noise)[name]
        ctx.record(out)
        actions = to_env_actions(self.action_space, out)
        return actions[0] if single else actions


def _np_dtype(onnx_type: str) -> np.dtype:
    # onnxruntime reports types as "tensor(float)", "tensor(int64)", ...
    name = onnx_type[len("tensor("):-1]
    return np.dtype({"float": "float32", "double": "float64", "bool": "bool"}.get(name, name))


def load(path: str | Path, **kwargs: Any) -> Policy:
    """`Policy.load(path, **kwargs)`."""
    return Policy.load(path, **kwargs)
