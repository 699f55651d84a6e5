"""puffer.deploy: loading, acting, recurrent state, structured observations, bad input, no frameworks imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import puffer
from puffer import checkpoint, spaces
from puffer.errors import ExportError
from puffer.policies import make_policy

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from puffer.deploy import Policy  # noqa: E402 - after the importorskip above
from puffer.export import export  # noqa: E402

OBS = spaces.Box(-5.0, 5.0, (4,), np.float32)
DISCRETE = spaces.Discrete(3)
FRAMEWORKS = ("torch", "jax", "jaxlib", "tinygrad")


def exported(tmp: Path, action_space: spaces.Space = DISCRETE, kind: str = "mlp",
             structured: spaces.Space | None = None, sample_graph: bool = False) -> Path:
    """An exported untrained policy (numpy init) for `action_space`."""
    obs_space = spaces.flatten_space(structured) if structured is not None else OBS
    policy = make_policy(obs_space, action_space, kind, 8, 2, "tanh")
    config = {"policy": kind, "hidden_size": 8, "num_layers": 2, "activation": "tanh", "env_kwargs": {}}
    meta = {"env": "cartpole", "backend": "torch", "config": config, "observation_space": obs_space.to_json(),
            "action_space": action_space.to_json(),
            "structured_observation_space": structured.to_json() if structured is not None else None}
    checkpoint.save(tmp / "run", 1, {"params": policy.init(None, 0)}, meta)
    return export(tmp / "run", tmp / "policy.onnx", sample_graph=sample_graph)


def test_deploy_imports_no_training_framework(tmp_path: Path) -> None:
    path = exported(tmp_path, kind="lstm")
    code = textwrap.dedent(f"""
        import sys
        class Block:  # as on a device where only numpy and onnxruntime are installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {FRAMEWORKS!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import puffer
        from puffer.deploy import Policy
        policy = Policy.load({str(path)!r})
        action, state = policy.act(np.zeros((2, 4), np.float32), policy.initial_state(2))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})
        print("LOADED", loaded, action.shape)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED [] (2,)" in out.stdout


def test_act_returns_env_actions_for_batches_and_single_observations(tmp_path: Path) -> None:
    policy = Policy.load(exported(tmp_path, spaces.MultiDiscrete([3, 2])))
    obs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    actions = policy.act(obs)
    assert actions.shape == (5, 2) and actions.dtype == np.int64
    assert np.all(actions < [3, 2]) and np.all(actions >= 0)
    np.testing.assert_array_equal(policy.act(obs[2]), actions[2])
    np.testing.assert_array_equal(policy.act(obs[2].tolist()), actions[2])  # plain Python numbers
    first = policy.act(obs[:1])
    policy.act(obs[1:2])  # reuses the bound buffers of batch size 1
    np.testing.assert_array_equal(first, actions[:1])  # earlier results are not overwritten
    out = policy.forward(obs)
    assert set(out) == {"action", "logits", "value"} and out["logits"].shape == (5, 5)


def test_recurrent_state_is_carried_and_reset(tmp_path: Path) -> None:
    policy = Policy.load(exported(tmp_path, spaces.Box(-1.0, 1.0, (2,), np.float32), kind="lstm"))
    assert policy.recurrent
    state = policy.initial_state(batch=3)
    assert [s.shape for s in state] == [(3, 8), (3, 8)]
    obs = np.ones((3, 4), np.float32)
    a1, s1 = policy.act(obs, state)
    a2, s2 = policy.act(obs, s1)
    assert a1.shape == (3, 2) and not np.allclose(a1, a2)
    a3, _ = policy.act(obs, s2, starts=np.ones(3, np.float32))  # every row starts a new episode
    np.testing.assert_allclose(a3, a1, rtol=1e-6)


def test_structured_observations_are_flattened_with_numpy(tmp_path: Path) -> None:
    structured = spaces.Dict({"pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
                              "vel": spaces.Box(-1.0, 1.0, (3,), np.float32)})
    policy = Policy.load(exported(tmp_path, structured=structured))
    rng = np.random.default_rng(0)
    obs = {"pos": rng.standard_normal((4, 2)).astype(np.float32), "vel": rng.standard_normal((4, 3)).astype(np.float32)}
    flat = spaces.flatten(structured, obs)
    np.testing.assert_array_equal(policy.act(obs), policy.act(flat))
    records = spaces.to_structured(structured, obs)
    np.testing.assert_array_equal(policy.act(records), policy.act(flat))


def test_sampling_needs_and_uses_the_sampling_graph(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="sample-graph"):
        Policy.load(exported(tmp_path / "a"), deterministic=False)
    policy = Policy.load(exported(tmp_path / "b", sample_graph=True), deterministic=False, seed=1)
    actions = np.concatenate([policy.act(np.zeros((64, 4), np.float32)) for _ in range(4)])
    assert set(np.unique(actions)) == {0, 1, 2}  # near-uniform logits: every action gets sampled


@pytest.mark.parametrize("obs, message", [
    (np.zeros((2, 5), np.float32), r"float32\[batch, 4\].*shape \(2, 5\)"),
    (np.zeros((2, 4), np.float64), r"float32\[batch, 4\].*dtype float64"),
    (np.zeros((2, 2, 4), np.float32), r"float32\[batch, 4\].*shape \(2, 2, 4\)"),
])
def test_wrong_observation_states_expected_shape_and_dtype(tmp_path: Path, obs: np.ndarray, message: str) -> None:
    policy = Policy.load(exported(tmp_path))
    with pytest.raises(ExportError, match=message):
        policy.act(obs)


def test_wrong_state_is_an_error(tmp_path: Path) -> None:
    policy = Policy.load(exported(tmp_path, kind="lstm"))
    with pytest.raises(ExportError, match=r"state 'h' must be float32\[2, 8\]"):
        policy.act(np.zeros((2, 4), np.float32), policy.initial_state(3))


def test_truncated_foreign_missing_and_metadata_free_files_name_the_file(tmp_path: Path) -> None:
    good = exported(tmp_path).read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    foreign = tmp_path / "foreign.onnx"
    foreign.write_text("this is not a model\n")
    for path in (truncated, foreign, tmp_path / "missing.onnx"):
        with pytest.raises(ExportError, match=path.name):
            Policy.load(path)
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ExportError, match="plain.onnx: an ONNX model without puffer metadata"):
        Policy.load(plain)


def test_onnxruntime_backend_compiles_forward_code_through_onnx() -> None:
    be = puffer.backend("onnxruntime")
    policy = make_policy(OBS, spaces.Discrete(3), "mlp", 8, 2, "tanh")
    params = policy.init(be, 0)

    def step(params, obs):
        dist, value, _ = policy.step(be, params, obs, ())
        return be.log_softmax(dist[0]), value

    obs = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    ref = step(params, obs)  # eager: numpy
    got = be.compile(step)(params, obs)  # traced to ONNX, run by onnxruntime
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


class ContextPolicy:
    """A fake recurrent policy whose state is a sliding context `[B, K, D]` of embedded observations plus `[B, 2]`.

    Each step drops the oldest of the K entries and appends `obs @ w`; the logits read the whole context.
    """

    recurrent = True
    K, D = 3, 5

    def __init__(self) -> None:
        from puffer.policies import ActionHead

        self.head = ActionHead.for_space(DISCRETE)

    def init(self, be, seed):
        rng = np.random.default_rng(seed)
        return {"w": rng.standard_normal((4, self.D)).astype(np.float32),
                "u": rng.standard_normal((self.D, 3)).astype(np.float32)}

    def initial_state(self, be, batch):
        return (be.xp.zeros((batch, self.K, self.D), dtype=be.xp.float32), be.xp.zeros((batch, 2), dtype=be.xp.float32))

    def step(self, be, params, obs, state):
        xp = be.xp
        ctx, count = state
        ctx = xp.concat([ctx[:, 1:], xp.expand_dims(obs @ params["w"], axis=1)], axis=1)
        summary = xp.sum(ctx * xp.asarray([0.25, 0.5, 1.0], dtype=xp.float32)[:, None], axis=1)  # [B, D]
        logits = summary @ params["u"]
        return (logits, None, None), xp.sum(summary, axis=1), (ctx, count + 1.0)


def test_state_of_any_shape_exports_and_deploys(tmp_path: Path) -> None:
    """A [B, K, D] context (next to a [B, 2] state) is a graph input and output; deploy carries it exactly."""
    from puffer.deploy import FORMAT_VERSION, META
    from puffer.export import build_model, state_metadata

    policy = ContextPolicy()
    params = policy.init(None, 0)
    meta = {META["format"]: str(FORMAT_VERSION), META["observation_space"]: json.dumps(OBS.to_json()),
            META["action_space"]: json.dumps(DISCRETE.to_json()), META["state"]: state_metadata(policy),
            META["head"]: json.dumps({"action_dim": 1, "num_discrete": 1, "num_continuous": 0,
                                      "noise_dim": policy.head.noise_dim})}
    assert json.loads(meta[META["state"]]) == [["state0", [3, 5]], ["state1", [2]]]
    model = build_model(policy, params, OBS, metadata=meta)
    ctx_input = model.graph.input[1]
    assert ctx_input.name == "state0"
    assert [d.dim_param or d.dim_value for d in ctx_input.type.tensor_type.shape.dim] == ["batch", 3, 5]
    path = tmp_path / "context.onnx"
    path.write_bytes(model.SerializeToString())

    deployed = Policy.load(path)
    assert deployed.recurrent and [s.shape for s in deployed.initial_state(2)] == [(2, 3, 5), (2, 2)]
    ref_be = puffer.backend("numpy")
    ref_state = policy.initial_state(ref_be, 2)
    state = deployed.initial_state(2)
    obs = np.random.default_rng(1).standard_normal((4, 2, 4)).astype(np.float32)
    for t in range(4):
        action, state = deployed.act(obs[t], state)
        dist, _, ref_state = policy.step(ref_be, params, obs[t], ref_state)
        np.testing.assert_array_equal(action, np.argmax(dist[0], axis=1))
        for got, want in zip(state, ref_state):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert state[0].shape == (2, 3, 5) and state[1][0, 0] == 4.0
    _, fresh = deployed.act(obs[0], state, starts=np.array([1.0, 0.0], np.float32))  # row 0 starts over
    np.testing.assert_allclose(fresh[1][:, 0], [1.0, 5.0])
    np.testing.assert_array_equal(fresh[0][0, :2], 0.0)
    with pytest.raises(ExportError, match=r"state 'state0' must be float32\[2, 3, 5\], got float32\[2, 5\]"):
        deployed.act(obs[0], (np.zeros((2, 5), np.float32), state[1]))


def test_old_state_metadata_form_still_loads(tmp_path: Path) -> None:
    """Exports written before state shapes were general recorded `[[name, hidden]]`."""
    path = exported(tmp_path, kind="lstm")
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "puffer.state":
            assert json.loads(prop.value) == [["h", [8]], ["c", [8]]]
            prop.value = json.dumps([["h", 8], ["c", 8]])
    old = tmp_path / "old.onnx"
    old.write_bytes(model.SerializeToString())
    policy, current = Policy.load(old), Policy.load(path)
    obs = np.ones((3, 4), np.float32)
    assert [s.shape for s in policy.initial_state(3)] == [(3, 8), (3, 8)]
    np.testing.assert_array_equal(policy.act(obs, policy.initial_state(3))[0],
                                  current.act(obs, current.initial_state(3))[0])
