"""The algorithm-neutral machinery: registry, flags with help, a second algorithm, format-3 checkpoints, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import puffer
from puffer import checkpoint
from puffer.algos import PPO, PPOConfig, ppo
from puffer.cli import main
from puffer.errors import PufferError
from puffer.train import Algorithm, CheckpointPolicy, field_docs, make_trainer, register, registry, resume_trainer
from puffer.train.cli import Progress

SMALL = {"num_envs": 8, "rollout_len": 16, "minibatch_size": 64, "hidden_size": 16, "update_epochs": 1}
FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v2_cartpole"


def _toy_declare(run, cfg):
    """PPO that also records the env's per-step cost: a second algorithm built from its own file alone."""
    plan = ppo.declare(run, cfg)
    return dataclasses.replace(plan, data=dataclasses.replace(plan.data, record={"cost": 0}),
                               summarize=lambda buf, state: {**plan.summarize(buf, state),
                                                             "toy_cost_per_step": float(buf.cost.mean())})


TOY = Algorithm("toy_cost", "PPO recording the env's cost (test only)", PPOConfig, _toy_declare)


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    registry._registered.pop(TOY.name, None)


def test_registry_finds_ppo_and_lists_it(capsys):
    assert "ppo" in registry.names() and registry.get("ppo") is PPO.algorithm
    with pytest.raises(PufferError, match="unknown algorithm 'nope'; known: .*ppo"):
        registry.get("nope")
    assert main(["algos"]) == 0
    assert any(line.startswith("ppo ") for line in capsys.readouterr().out.splitlines())


def test_every_config_field_has_help_text(capsys):
    for algorithm in registry.algorithms():
        docs = field_docs(algorithm.config)
        missing = [f.name for f in dataclasses.fields(algorithm.config) if not docs.get(f.name)]
        assert not missing, f"{algorithm.name}: fields without a docstring: {missing}"
    with pytest.raises(SystemExit):
        main(["train", "cartpole", "--algo", "ppo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--learning-rate FLOAT Adam step size at the start of training. (default: 0.0025)" in out
    assert "--num-envs INT Environments stepped together. (default: 64)" in out


def test_make_trainer_builds_the_registered_algorithm():
    trainer = make_trainer("bandit", algo="ppo", backend="torch", total_steps=256, **SMALL)
    try:
        assert trainer.algo == "ppo" and isinstance(trainer.config, PPOConfig)
        trainer.train()
        assert trainer.global_step == 256
    finally:
        trainer.close()
    with pytest.raises(PufferError, match="takes a PPOConfig"):
        make_trainer("bandit", algo="ppo", backend="torch", config=puffer.train.RunConfig())


def test_a_second_algorithm_records_its_channel_logs_it_and_resumes(toy, tmp_path):
    trainer = make_trainer("hazard", algo="toy_cost", backend="torch", total_steps=256, **SMALL)
    step = trainer.env.step

    def known_cost(actions):  # Hazard's own cost is rarely nonzero this early: make the channel recognizable
        obs, rewards, term, trunc, infos = step(actions)
        return obs, rewards, term, trunc, {**infos, "cost": infos["cost"] + np.arange(8, dtype=np.float32)}

    try:
        trainer.env.step = known_cost
        stats = trainer.train()
        trainer.env.step = step
        cost = trainer.buffer.cost
        assert cost.shape == (8, 16) and np.all(cost >= np.arange(8)[:, None])  # infos["cost"], row by row
        assert stats["toy_cost_per_step"] == pytest.approx(float(cost.mean()))
        line = Progress.line(stats)
        assert line.startswith("step ") and "return" in line and "toy_cost_per_step" in line and "approx_kl" in line
        trainer.save(tmp_path)
    finally:
        trainer.close()
    assert checkpoint.read_manifest(tmp_path)["algo"] == "toy_cost"
    resumed = resume_trainer(tmp_path, backend="jax")
    try:
        assert resumed.algo == "toy_cost" and resumed.resumed_exactly and resumed.global_step == 256
        resumed.train(384)
        assert resumed.global_step == 384
    finally:
        resumed.close()
    with pytest.raises(PufferError, match="was trained with 'toy_cost', not 'ppo'"):
        p = PPO("hazard", backend="torch", config=PPOConfig(**SMALL))
        try:
            p.restore(tmp_path)
        finally:
            p.close()


def test_a_declared_channel_the_env_lacks_is_named(toy):
    trainer = make_trainer("cartpole", algo="toy_cost", backend="torch", **SMALL)
    try:
        with pytest.raises(PufferError, match=r"toy_cost needs infos\['cost'\] from every step, but env cartpole"):
            trainer.collect()
    finally:
        trainer.close()


def test_version_2_checkpoint_is_migrated_and_resumes(tmp_path):
    run = tmp_path / "v2"
    shutil.copytree(FIXTURE, run)
    raw = json.loads(next((run / "checkpoints").iterdir()).joinpath("manifest.json").read_text())
    assert raw["format_version"] == 2 and "policy" not in raw
    manifest = checkpoint.read_manifest(run)
    assert manifest["format_version"] == 3 and manifest["algo"] == "ppo"
    assert manifest["policy"] == {"kind": "mlp", "hidden_size": 8, "num_layers": 2, "activation": "tanh"}
    actor = CheckpointPolicy(run, backend="numpy")
    assert actor.act(np.zeros((3, 4), np.float32)).shape == (3,)
    trainer = resume_trainer(run, backend="torch")
    try:
        assert trainer.resumed_exactly and trainer.global_step == 256
        trainer.train(512)
        trainer.save(run)
    finally:
        trainer.close()
    assert checkpoint.read_manifest(run)["format_version"] == 3
    pytest.importorskip("onnx")
    from puffer.export import export

    assert export(run, tmp_path / "p.onnx").is_file()


def test_vtrace_reports_a_finite_explained_variance():
    trainer = PPO("cartpole", backend="torch", advantage="vtrace", bptt_horizon=8, total_steps=256, **SMALL)
    try:
        stats = trainer.train()
        assert math.isfinite(stats["explained_variance"])
    finally:
        trainer.close()


def test_one_run_one_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--backend", "torch", "--num-envs", "8", "--rollout-len", "16", "--minibatch-size", "64",
             "--hidden-size", "16", "--quiet"]
    assert main(["train", "cartpole", "--steps", "128", "--checkpoint-dir", "runs/a", "--log", "tensorboard",
                 *flags]) == 0
    assert main(["train", "--resume", "runs/a", "--steps", "256", *flags]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a"]  # nothing auto-named beside it
    a = tmp_path / "runs" / "a"
    assert len(list(a.glob("events.out.tfevents.*"))) == 2  # the resumed run logs into the same directory
    assert [int(p.name) for p in checkpoint.checkpoints(a)] == [128, 256]
    assert json.loads((a / "run.json").read_text())["log"] == "tensorboard"


def test_cli_version_and_bare_command():
    r = subprocess.run([sys.executable, "-m", "puffer.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"puffer {puffer.__version__}"
    r = subprocess.run([sys.executable, "-m", "puffer.cli"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: puffer" in r.stdout
    for command in ("train", "eval", "export", "algos", "conformance"):
        assert command in r.stdout


def test_jax_programs_persist_in_the_compilation_cache(tmp_path):
    """A second run of the same config reuses the first one's compiled programs (BENCHMARKS: start-up)."""
    code = ("from puffer.algos import PPO\n"
            "t = PPO('bandit', backend='jax', num_envs=8, rollout_len=16, minibatch_size=64, total_steps=128)\n"
            "t.train(); t.close()\n")
    env = {**os.environ, "PUFFER_JAX_CACHE": str(tmp_path / "jax")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "jax").iterdir())) >= 3  # act, value and update programs at least


@pytest.mark.parametrize("algo", ["ppo", "mappo"])
def test_learning_rate_anneals_over_the_budget_actually_run(algo, tmp_path):
    """`train(N)` anneals to 0 at N env steps whatever `config.total_steps` says; a resume continues the same way."""
    env = "landmarks" if algo == "mappo" else "cartpole"
    trainer = make_trainer(env, algo=algo, backend="torch", total_steps=1_000_000, **SMALL)
    rollout = trainer.rows * SMALL["rollout_len"]
    lr = trainer.config.learning_rate
    try:
        trainer.train(4 * rollout)
        lrs = [s["learning_rate"] for s in trainer.history]
        # the lr of each update is read after its rollout: 3/4, 2/4, 1/4 and 0 of the way left
        assert lrs == pytest.approx([lr * f for f in (0.75, 0.5, 0.25, 0.0)], rel=1e-6, abs=1e-12)
        trainer.save(tmp_path)
    finally:
        trainer.close()
    resumed = resume_trainer(tmp_path, backend="jax")
    try:
        resumed.train(8 * rollout)
        lrs = [s["learning_rate"] for s in resumed.history]
        assert lrs == pytest.approx([lr * f for f in (0.375, 0.25, 0.125, 0.0)], rel=1e-6, abs=1e-12)
    finally:
        resumed.close()
