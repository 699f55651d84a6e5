"""puffer.export and the recording onnx backend: metadata, validation, errors, CLI, and CartPole end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import puffer
from puffer import checkpoint, spaces
from puffer.errors import ExportError
from puffer.policies import MLPPolicy, make_policy, policy_spec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from puffer.export import build_model, export  # noqa: E402 - after the importorskip above

OBS = spaces.Box(-5.0, 5.0, (4,), np.float32)
DISCRETE = spaces.Discrete(2)


def make_run(tmp: Path, action_space: spaces.Space = DISCRETE, kind: str = "mlp",
             obs_norm: bool = False) -> Path:
    """A checkpoint of an untrained policy (numpy init), as a trainer would save it."""
    policy = make_policy(OBS, action_space, kind, 8, 2, "tanh")
    groups = {"params": policy.init(None, 0)}
    if obs_norm:
        groups["obs_norm"] = {"mean": np.arange(4.0), "var": np.full(4, 4.0), "count": np.asarray(100.0)}
    config = {"policy": kind, "hidden_size": 8, "num_layers": 2, "activation": "tanh", "env_kwargs": {}}
    meta = {"env": "cartpole", "backend": "jax", "config": config, "algo": "ppo", "policy": policy_spec(policy),
            "observation_space": OBS.to_json(),
            "action_space": action_space.to_json(), "structured_observation_space": None}
    checkpoint.save(tmp / "run", 3, groups, meta)
    return tmp / "run"


def test_export_metadata_and_symbolic_batch(tmp_path: Path) -> None:
    path = export(make_run(tmp_path, obs_norm=True), tmp_path / "p.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["puffer.observation_space"]) == OBS.to_json()
    assert json.loads(meta["puffer.action_space"]) == spaces.Discrete(2).to_json()
    assert meta["puffer.version"] == puffer.__version__
    assert meta["puffer.backend"] == "jax" and meta["puffer.env"] == "cartpole"
    norm = json.loads(meta["puffer.obs_norm"])
    assert norm["mean"] == [0.0, 1.0, 2.0, 3.0] and norm["var"] == [4.0] * 4 and norm["count"] == 100.0
    assert model.opset_import[0].version == 17 and model.ir_version == 8  # the default, not onnx's newest
    assert meta["puffer.opset"] == "17" and meta["puffer.ir_version"] == "8"
    obs = model.graph.input[0]
    assert obs.name == "obs" and obs.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {o.name for o in model.graph.output} == {"action", "logits", "value"}
    # parameters are initializers under their own names, not graph inputs
    assert "actor/0/w" in {i.name for i in model.graph.initializer}
    assert list(tmp_path.glob(".p.onnx.*")) == []  # the atomic write left no temporary file


def test_exported_normalization_matches_running_norm(tmp_path: Path) -> None:
    from puffer.deploy import Policy
    from puffer.train import RunningNorm

    run = make_run(tmp_path, obs_norm=True)
    plain = Policy.load(export(make_run(tmp_path / "plain"), tmp_path / "plain.onnx"))
    normed = Policy.load(export(run, tmp_path / "n.onnx"))
    norm = RunningNorm(4)
    norm.load_state_dict(checkpoint.load(run)[0]["obs_norm"])
    obs = np.random.default_rng(0).normal(0, 30, (9, 4)).astype(np.float32)  # some beyond the +-10 clip
    np.testing.assert_array_equal(normed.forward(obs)["logits"], plain.forward(norm(obs, np.empty_like(obs)))["logits"])


def test_lstm_export_has_state_inputs_and_outputs(tmp_path: Path) -> None:
    model = onnx.load(str(export(make_run(tmp_path, kind="lstm"), tmp_path / "l.onnx", sample_graph=True)))
    assert [i.name for i in model.graph.input] == ["obs", "h", "c", "noise"]
    assert {"h_out", "c_out", "sample_action", "sample_log_prob"} <= {o.name for o in model.graph.output}
    assert not any(n.op_type.startswith("Random") for n in model.graph.node)


@pytest.mark.parametrize("kind, action_space", [
    ("mlp", spaces.Tuple((spaces.MultiDiscrete([2, 3]), spaces.Box(-1.0, 1.0, (2,), np.float32)))),
    ("lstm", spaces.Box(-1.0, 1.0, (2,), np.float32)),
])
def test_every_supported_opset_gives_the_same_outputs_with_the_lowest_ir_version(
        tmp_path: Path, kind: str, action_space: spaces.Space) -> None:
    from onnx.helper import find_min_ir_version_for, make_opsetid

    from puffer.backends.onnx_backend import MIN_OPSET
    from puffer.deploy import Policy

    run = make_run(tmp_path, action_space, kind, obs_norm=True)
    obs = np.random.default_rng(1).normal(0, 3, (5, 4)).astype(np.float32)
    ref = None
    for opset in (MIN_OPSET, 17, 18, 21):
        path = export(run, tmp_path / f"p{opset}.onnx", sample_graph=True, opset=opset)
        model = onnx.load(str(path))
        assert model.opset_import[0].version == opset
        assert model.ir_version == find_min_ir_version_for([make_opsetid("", opset)])
        reduce_forms = {(n.op_type, len(n.input)) for n in model.graph.node if n.op_type.startswith("Reduce")}
        if opset < 18:  # ReduceMax & co. take axes as an attribute before opset 18
            assert all(n == 1 for op, n in reduce_forms if op != "ReduceSum"), reduce_forms
        else:
            assert all(n == 2 for _, n in reduce_forms), reduce_forms
        deployed = Policy.load(path)
        out = deployed.forward(obs, noise=np.full((5, deployed.head["noise_dim"]), 0.3, np.float32))
        ref = ref or out
        for k in ref:
            np.testing.assert_array_equal(out[k], ref[k], err_msg=f"{k} at opset {opset}")


def test_opset_out_of_range_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(ExportError, match="opset 12 is older than the exporter supports.*opset >= 13"):
        export(run, tmp_path / "p.onnx", opset=12)
    newest = onnx.defs.onnx_opset_version()
    with pytest.raises(ExportError, match=f"opset {newest + 1} is newer than the installed onnx"):
        export(run, tmp_path / "p.onnx", opset=newest + 1)
    assert not (tmp_path / "p.onnx").exists()


@dataclass(frozen=True)
class _BitFlagPolicy(MLPPolicy):
    """An MLP that reads bit flags from its first observation with xp.bitwise_and (BitwiseAnd: opset 18)."""

    def step(self, be: Any, params: Any, obs: Any, state: tuple) -> Any:
        xp = be.xp
        flags = xp.astype(obs[..., :1], xp.int32) & 1  # the opset-18 op
        return super().step(be, params, obs * xp.astype(flags, obs.dtype), state)


def test_op_newer_than_target_opset_names_op_opset_and_call_site(tmp_path: Path) -> None:
    base = make_policy(OBS, DISCRETE, "mlp", 8, 2, "tanh")
    policy = _BitFlagPolicy(base.obs_dim, base.head, 8, 2, "tanh")
    with pytest.raises(ExportError) as e:
        build_model(policy, policy.init(None, 0), OBS)  # the default target, opset 17
    lines = Path(__file__).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "the opset-18 op" in text)
    assert "BitwiseAnd needs opset 18, but this export targets opset 17" in str(e.value)
    assert f"{__file__}:{line}" in str(e.value) and "--opset 18" in str(e.value)
    model = build_model(policy, policy.init(None, 0), OBS, opset=18)
    assert "BitwiseAnd" in {n.op_type for n in model.graph.node}


@dataclass(frozen=True)
class _SortingPolicy(MLPPolicy):
    """An MLP whose forward calls an op the exporter does not support."""

    def step(self, be: Any, params: Any, obs: Any, state: tuple) -> Any:
        dist, value, state = super().step(be, params, obs, state)
        return dist, be.xp.sort(value), state  # the unsupported call


def test_unsupported_op_names_op_and_call_site(tmp_path: Path) -> None:
    base = make_policy(OBS, spaces.Discrete(2), "mlp", 8, 2, "tanh")
    policy = _SortingPolicy(base.obs_dim, base.head, 8, 2, "tanh")
    with pytest.raises(ExportError) as e:
        build_model(policy, policy.init(None, 0), OBS)
    lines = Path(__file__).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "the unsupported call" in text)
    assert "xp.sort" in str(e.value) and f"{__file__}:{line}" in str(e.value)


def test_python_control_flow_on_traced_values_is_an_export_error() -> None:
    from puffer.backends.onnx_backend import OnnxBackend

    be = OnnxBackend()
    with be.trace():
        x = be.input("x", np.float32, ("batch", 3))
        with pytest.raises(ExportError, match=r"bool\(array\).*test_export.py:\d+"):
            if be.xp.sum(x) > 0:
                pass
        with pytest.raises(ExportError, match="xp.linalg.inv"):
            be.xp.linalg.inv(x)
        with pytest.raises(ExportError, match="no random ops"):
            be.normal(0, (3,))


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from puffer.cli import main

    assert main(["export", str(make_run(tmp_path)), "--to", str(tmp_path / "c.onnx"), "--sample-graph"]) == 0
    assert "puffer eval --policy" in capsys.readouterr().out
    assert "noise" in [i.name for i in onnx.load(str(tmp_path / "c.onnx")).graph.input]
    assert main(["export", str(make_run(tmp_path)), "--to", str(tmp_path / "o.onnx"), "--opset", "18"]) == 0
    assert onnx.load(str(tmp_path / "o.onnx")).opset_import[0].version == 18
    capsys.readouterr()
    assert main(["export", str(make_run(tmp_path)), "--to", str(tmp_path / "old.onnx"), "--opset", "11"]) == 2
    assert "opset 11 is older than the exporter supports" in capsys.readouterr().err
    from puffer.backends.onnx_backend import DEFAULT_OPSET

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert f"(default: {DEFAULT_OPSET}," in " ".join(capsys.readouterr().out.split())  # the help names the default
    assert main(["export", str(tmp_path / "missing"), "--to", str(tmp_path / "x.onnx")]) == 2


def test_cartpole_end_to_end_onnxruntime_matches_training_backend(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Train briefly on torch, export, and `puffer eval` on onnxruntime reaches the same returns."""
    pytest.importorskip("torch")
    from puffer.algos import PPO, PPOConfig
    from puffer.cli import main

    cfg = PPOConfig(total_steps=2048, num_envs=8, rollout_len=64, minibatch_size=128, update_epochs=2, seed=3)
    trainer = PPO("cartpole", backend="torch", config=cfg)
    trainer.train()
    trainer.save(tmp_path / "run")
    trainer.close()
    assert main(["export", str(tmp_path / "run"), "--to", str(tmp_path / "cp.onnx")]) == 0
    capsys.readouterr()
    common = ["--episodes", "8", "--num-envs", "4"]
    assert main(["eval", "cartpole", "--checkpoint", str(tmp_path / "run"), *common]) == 0
    torch_line = capsys.readouterr().out
    assert main(["eval", "cartpole", "--policy", str(tmp_path / "cp.onnx"), "--backend", "onnxruntime",
                 *common]) == 0
    ort_line = capsys.readouterr().out
    assert "on torch" in torch_line and "on onnxruntime" in ort_line
    assert torch_line.split("mean return")[1] == ort_line.split("mean return")[1]


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_reductions_and_bitwise_ops_in_each_opsets_form_match_numpy(opset: int) -> None:
    import onnxruntime as ort

    from puffer.backends.onnx_backend import OnnxBackend

    be = OnnxBackend()
    xp = be.xp
    x_np = np.random.default_rng(0).normal(0, 1, (3, 4, 5)).astype(np.float32)
    i_np = np.arange(24, dtype=np.int32).reshape(6, 4)
    want = {"sum": x_np.sum(axis=(0, 2)), "prod": x_np.prod(axis=1, keepdims=True), "max": x_np.max(axis=-1),
            "min": x_np.min(), "mean": x_np.mean(axis=(1, 2)), "any": (x_np > 1.5).any(axis=0),
            "all": (x_np > -3).all(axis=1), "flags": (i_np & 6) | (~i_np & 1), "mask": ~(i_np > 3) & (i_np < 9)}
    with be.trace(opset):
        x, i = be.input("x", np.float32, ("batch", 4, 5)), be.input("i", np.int32, ("batch", 4))
        outs = {"sum": xp.sum(x, axis=(0, 2)), "prod": xp.prod(x, axis=1, keepdims=True), "max": xp.max(x, axis=-1),
                "min": xp.min(x), "mean": xp.mean(x, axis=(1, 2)), "any": xp.any(x > 1.5, axis=0),
                "all": xp.all(x > -3, axis=1)}
        if opset >= 18:  # BitwiseAnd & co. appeared in opset 18
            outs.update({"flags": (i & 6) | (~i & 1), "mask": ~(i > 3) & (i < 9)})
        else:
            with pytest.raises(ExportError, match=f"BitwiseAnd needs opset 18, but this export targets opset {opset}"):
                i & 6  # noqa: B018 - the expression is the test
            outs["mask"] = ~(i > 3) & (i < 9)  # on booleans & and ~ are logical, in every opset
        for name, value in outs.items():
            be.output(name, value)
        model = be.model()
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x_np, "i": i_np})
    for name, value in zip(outs, got):
        np.testing.assert_allclose(value, want[name], rtol=1e-6, err_msg=name)
