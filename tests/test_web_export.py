"""`puffer export --web`: the page plays CartPole in headless Chromium as well as `puffer eval` measures, and an
env without a JavaScript port gets a page with a notice that runs the policy on typed-in observations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from puffer import checkpoint, spaces
from puffer.policies import make_policy

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from browser import run_page  # noqa: E402 - tests/ helper module

from puffer.cli import main  # noqa: E402
from puffer.deploy import Policy  # noqa: E402

SOLVED = 475.0


def _mean_return(line: str) -> float:
    return float(line.split("mean return")[1].split()[0])


def test_web_page_plays_cartpole_as_well_as_puffer_eval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, site = tmp_path / "run", tmp_path / "site"
    # seed 3 solves CartPole (deterministic eval 500) in ~120k steps; a resume covers a seed that lands short
    train = ["train", "cartpole", "--backend", "jax", "--seed", "3", "--steps", "150000", "--stop-at-return", "490",
             "--run-dir", str(run), "--log", "none", "--quiet"]
    assert main(train) == 0
    assert main(["export", str(run), "--web", str(site)]) == 0
    assert "web page:" in capsys.readouterr().out
    evaluate = ["eval", "cartpole", "--policy", str(site / "policy.onnx"), "--episodes", "10"]
    assert main(evaluate) == 0
    measured = _mean_return(capsys.readouterr().out)
    if measured < SOLVED:
        assert main(["train", "--resume", str(run), "--steps", "300000", "--stop-at-return", "495", "--quiet"]) == 0
        assert main(["export", str(run), "--web", str(site)]) == 0
        assert main(evaluate) == 0
        measured = _mean_return(capsys.readouterr().out)
    assert measured >= SOLVED, f"the quick training run did not solve CartPole (puffer eval: {measured})"
    assert {"index.html", "puffer-web.js", "cartpole.js", "policy.onnx", "policy.json", "ort.wasm.min.js",
            "ort-wasm-simd-threaded.wasm"} <= {p.name for p in site.iterdir()}
    got = run_page(site, "index.html?episodes=5&fast=1&seed=7&report=1")
    assert got.get("ok") and got["mode"] == "play", got
    returns = got["returns"]
    assert len(returns) == 5 and np.mean(returns) >= SOLVED, f"browser returns {returns}, puffer eval {measured}"


def test_env_without_js_port_gets_a_notice_and_runs_typed_in_observations(tmp_path: Path) -> None:
    obs_space, act_space = spaces.Box(-1.0, 1.0, (3,), np.float32), spaces.Box(-2.0, 2.0, (1,), np.float32)
    policy = make_policy(obs_space, act_space, "lstm", 8, 1, "tanh")
    config = {"policy": "lstm", "hidden_size": 8, "num_layers": 1, "activation": "tanh", "env_kwargs": {}}
    meta = {"env": "gym:Pendulum-v1", "backend": "jax", "config": config, "observation_space": obs_space.to_json(),
            "action_space": act_space.to_json(), "structured_observation_space": None}
    run = checkpoint.save(tmp_path / "run", 1, {"params": policy.init(None, 0)}, meta)
    site = tmp_path / "site"
    assert main(["export", str(run), "--to", str(tmp_path / "p.onnx"), "--web", str(site)]) == 0
    assert not (site / "cartpole.js").exists()
    assert "no JavaScript port" in json.loads((site / "policy.json").read_text())["notice"]
    got = run_page(site, "index.html?report=1")
    assert got.get("ok") and got["mode"] == "manual", got
    assert "gym:Pendulum-v1" in got["notice"] and "nothing is drawn" in got["notice"]
    # the page ran the prefilled observation (zeros) through the model: the same as puffer.deploy
    want = Policy.load(site / "policy.onnx").forward(np.zeros((1, 3), np.float32))
    for key in ("action", "mean", "value", "h_out"):
        np.testing.assert_allclose(got["outputs"][key], want[key].ravel(), rtol=1e-5, atol=1e-6, err_msg=key)


def test_export_needs_a_destination(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(tmp_path)]) == 2
    assert "needs --to FILE.onnx, --web DIR, or both" in capsys.readouterr().err


def test_web_export_bad_input_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx import TensorProto, helper

    from puffer.errors import ExportError
    from puffer.export.web import write_site

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ExportError, match="plain.onnx: not a puffer export"):
        write_site(plain, tmp_path / "site")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="exists and is not a directory"):
        write_site(plain, tmp_path / "file")
    monkeypatch.setenv("PUFFER_ORT_WEB", str(tmp_path))  # a directory without onnxruntime-web's files
    obs, act = spaces.Box(-1.0, 1.0, (4,), np.float32), spaces.Discrete(2)
    policy = make_policy(obs, act, "mlp", 8, 2, "tanh")
    config = {"policy": "mlp", "hidden_size": 8, "num_layers": 2, "activation": "tanh", "env_kwargs": {}}
    meta = {"env": "cartpole", "backend": "jax", "config": config, "observation_space": obs.to_json(),
            "action_space": act.to_json(), "structured_observation_space": None}
    run = checkpoint.save(tmp_path / "run", 1, {"params": policy.init(None, 0)}, meta)
    assert main(["export", str(run), "--web", str(tmp_path / "site")]) == 2
    assert not (tmp_path / "site").exists()
