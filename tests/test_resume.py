"""Resume: N steps + save + resume N == 2N straight; any backend resumes any other's checkpoint; the CLI flags."""

from __future__ import annotations

import numpy as np
import pytest

from puffer import checkpoint
from puffer.algos import PPO, PPOConfig
from puffer.cli import main
from puffer.errors import PufferError
from puffer.train import resume_trainer

TINY = dict(num_envs=8, rollout_len=16, minibatch_size=64, hidden_size=16, update_epochs=2, bptt_horizon=8)


def _straight_and_resumed(tmp_path, backend: str, **overrides):
    cfg = PPOConfig(total_steps=512, **{**TINY, **overrides})
    straight = PPO("cartpole", backend=backend, config=cfg)
    straight.train(512)
    first = PPO("cartpole", backend=backend, config=cfg)
    first.train(512, callback=lambda t, stats: t.global_step >= 256)  # interrupted half-way through its budget
    first.save(tmp_path)
    first.close()
    saved = checkpoint.load(tmp_path)[0]["resume"]
    assert {"trainer.obs", "trainer.starts", "env.state", "env._episode_return"} <= set(saved)
    assert ("trainer.state.0" in saved) == (cfg.policy == "lstm")  # the LSTM's (h, c) travel with the run
    resumed = resume_trainer(tmp_path, backend=backend)
    assert resumed.resumed_exactly and resumed.global_step == 256
    resumed.train(512)
    return straight, resumed


def _assert_same_run(straight: PPO, resumed: PPO, atol: float) -> None:
    assert resumed.global_step == straight.global_step and resumed.updates == straight.updates
    # torch may hand back a weight with transposed strides after an update and a restored one is contiguous:
    # the matmul then rounds differently in the last bit, hence a tolerance rather than bit equality
    a, b = straight.numpy_params(), resumed.numpy_params()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=atol, err_msg=k)
    assert list(resumed.episodes) == list(straight.episodes)
    assert resumed.rng.bit_generator.state == straight.rng.bit_generator.state


@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_resume_equals_straight_run_torch(tmp_path, policy):
    straight, resumed = _straight_and_resumed(tmp_path, "torch", policy=policy)
    _assert_same_run(straight, resumed, atol=1e-6)
    straight.close()
    resumed.close()


def test_resume_equals_straight_run_jax(tmp_path):
    straight, resumed = _straight_and_resumed(tmp_path, "jax")
    _assert_same_run(straight, resumed, atol=1e-6)


def test_torch_checkpoint_keeps_learning_on_jax_and_tinygrad(tmp_path):
    cfg = PPOConfig(total_steps=4096, num_envs=16, rollout_len=16, minibatch_size=128, hidden_size=32,
                    update_epochs=2, learning_rate=5e-3)
    trainer = PPO("cartpole", backend="torch", config=cfg)
    trainer.train(2048)
    trainer.save(tmp_path)
    at_save, saved_params = trainer.mean_return(20), trainer.numpy_params()
    trainer.close()
    for backend, steps in (("jax", 4096), ("tinygrad", 3072)):
        resumed = resume_trainer(tmp_path, backend=backend)
        assert resumed.be.name == backend and resumed.resumed_exactly and resumed.global_step == 2048
        resumed.train(steps)
        assert resumed.global_step == steps
        assert all(np.isfinite(s["loss"]) for s in resumed.history)
        moved = max(float(np.abs(resumed.numpy_params()[k] - v).max()) for k, v in saved_params.items())
        assert moved > 1e-3
        # learning goes on: the mean return of recent episodes rises well above the one at the save
        assert resumed.mean_return(20) > at_save + 10, (backend, at_save, resumed.mean_return(20))
        resumed.close()


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cartpole")
    trainer = PPO("cartpole", backend="torch", config=PPOConfig(total_steps=128, **TINY))
    trainer.train()
    trainer.save(run)
    trainer.close()
    return run


def test_other_spaces_are_refused_showing_both(cartpole_run, capsys):
    trainer = PPO("memory", backend="torch", config=PPOConfig(**TINY))
    before = trainer.numpy_params()
    with pytest.raises(PufferError) as info:
        trainer.restore(cartpole_run)
    msg = str(info.value)
    mine = str(trainer.env.single_observation_space.to_json())
    assert "observation_space" in msg and "this env (memory)" in msg
    assert "'shape': [4]" in msg and mine in msg  # the checkpoint's CartPole space and this env's
    assert all(np.array_equal(v, trainer.numpy_params()[k]) for k, v in before.items())
    trainer.close()
    assert main(["train", "memory", "--resume", str(cartpole_run), "--backend", "torch", "--quiet"]) == 2
    assert "observation_space" in capsys.readouterr().err


def test_damaged_checkpoint_never_half_loads(cartpole_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    f = checkpoint.resolve(run) / "resume.safetensors"  # the last group: params would already be loaded
    f.write_bytes(f.read_bytes()[:100])
    trainer = PPO("cartpole", backend="torch", config=PPOConfig(**TINY))
    before = trainer.numpy_params()
    with pytest.raises(PufferError, match=str(f)):
        trainer.restore(run)
    assert trainer.global_step == 0
    assert all(np.array_equal(v, trainer.numpy_params()[k]) for k, v in before.items())
    trainer.close()


def test_cli_checkpoints_logging_and_resume_on_another_backend(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    flags = ["--num-envs", "8", "--rollout-len", "16", "--minibatch-size", "64", "--hidden-size", "16", "--quiet"]
    assert main(["train", "cartpole", "--backend", "torch", "--steps", "512", "--run-dir", str(run),
                 "--checkpoint-every", "128", "--keep-last", "2", "--log", "tensorboard", *flags]) == 0
    kept = [int(p.name) for p in checkpoint.checkpoints(run)]
    best = int(checkpoint.best_checkpoint(run).name)
    assert kept == sorted({384, 512, best})
    # resume: config, checkpoint cadence and logging come from the run; --steps and --backend override
    assert main(["train", "--resume", str(run), "--steps", "768", "--backend", "jax", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "saved on torch) at step 512 on jax, exactly" in out
    _, manifest = checkpoint.load(run)
    assert manifest["step"] == 768 and manifest["backend"] == "jax" and manifest["config"]["hidden_size"] == 16
    assert manifest["config"]["total_steps"] == 768
    assert [int(p.name) for p in checkpoint.checkpoints(run)][-2:] == [640, 768]
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert [e.step for e in acc.Scalars("losses/loss")] == list(range(128, 769, 128))
    assert {"charts/episode_return", "charts/sps", "losses/approx_kl"} <= set(acc.Tags()["scalars"])


def test_cli_separate_checkpoint_dir_is_kept_on_resume(tmp_path):
    logs, ckpts = tmp_path / "logs", tmp_path / "ckpts"
    flags = ["--num-envs", "8", "--rollout-len", "16", "--minibatch-size", "64", "--hidden-size", "16", "--quiet",
             "--backend", "torch"]
    assert main(["train", "--steps", "128", "--run-dir", str(logs), "--checkpoint-dir", str(ckpts),
                 "--log", "tensorboard", *flags]) == 0
    assert main(["train", "--resume", str(ckpts), "--steps", "256", *flags]) == 0
    assert [int(p.name) for p in checkpoint.checkpoints(ckpts)] == [128, 256]
    assert not (logs / "checkpoints").exists() and len(list(logs.glob("events.out.tfevents.*"))) == 2
