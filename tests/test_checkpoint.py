"""Checkpoint format: round trips, keep-last and best, format versions, corrupt files, a kill mid-save, env state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import puffer
from puffer import checkpoint
from puffer.errors import CheckpointError


def _groups(step: int) -> dict[str, dict[str, np.ndarray]]:
    return {"params": {"w": np.full((3, 2), step, np.float32), "b": np.arange(2, dtype=np.float32)},
            "opt_state": {"step": np.asarray(step, np.int32), "m": np.zeros(4, np.float64)}}


def _save(run: Path, step: int, ret: float = float("nan"), keep_last: int | None = None) -> Path:
    return checkpoint.save(run, step, _groups(step), {"mean_return": ret, "env": "x"}, keep_last=keep_last)


def test_round_trip_keeps_shapes_dtypes_and_meta(tmp_path):
    ckpt = _save(tmp_path, 7, 1.5)
    groups, meta = checkpoint.load(tmp_path)
    assert Path(meta["path"]) == ckpt and meta["step"] == 7 and meta["env"] == "x"
    assert meta["format_version"] == checkpoint.FORMAT_VERSION and meta["puffer_version"] == puffer.__version__
    for name, arrays in _groups(7).items():
        for k, v in arrays.items():
            got = groups[name][k]
            assert got.shape == v.shape and got.dtype == v.dtype and np.array_equal(got, v)  # 0-d stays 0-d
    assert (tmp_path / "LATEST").read_text() == ckpt.name
    assert checkpoint.load(ckpt)[1]["step"] == 7  # a checkpoint directory works as well as its run


def test_keep_last_and_best(tmp_path):
    returns = {1: 1.0, 2: 9.0, 3: 2.0, 4: float("nan"), 5: 3.0, 6: 4.0}
    for step, ret in returns.items():
        _save(tmp_path, step, ret, keep_last=2)
    assert [int(p.name) for p in checkpoint.checkpoints(tmp_path)] == [2, 5, 6]  # last two + the best
    assert checkpoint.load(tmp_path)[1]["step"] == 6
    assert checkpoint.load(tmp_path, which="best")[1]["step"] == 2
    _save(tmp_path, 7, 10.0, keep_last=2)
    assert [int(p.name) for p in checkpoint.checkpoints(tmp_path)] == [6, 7]
    assert checkpoint.best_checkpoint(tmp_path).name == checkpoint.checkpoints(tmp_path)[-1].name
    with pytest.raises(CheckpointError, match="keep_last=0"):
        _save(tmp_path, 8, keep_last=0)


def test_saving_the_same_step_again_replaces_it(tmp_path):
    _save(tmp_path, 3, 1.0)
    groups = _groups(3)
    groups["params"]["w"] += 1
    checkpoint.save(tmp_path, 3, groups, {"mean_return": 2.0})
    loaded, meta = checkpoint.load(tmp_path)
    assert np.array_equal(loaded["params"]["w"], groups["params"]["w"]) and meta["mean_return"] == 2.0
    assert not list((tmp_path / "checkpoints").glob(".*"))


def _manifest(run: Path) -> Path:
    return checkpoint.resolve(run) / "manifest.json"


def test_format_versions(tmp_path):
    _save(tmp_path, 1)
    mpath = _manifest(tmp_path)
    manifest = json.loads(mpath.read_text())
    # version 1 (the seed's format) had no env or in-flight trainer state: migrated on load
    mpath.write_text(json.dumps({**manifest, "format_version": 1}))
    _, meta = checkpoint.load(tmp_path)
    assert meta["format_version"] == checkpoint.FORMAT_VERSION == 3
    assert meta["env_state"] is None and meta["trainer_state"] is None and meta["algo"] == "ppo"
    mpath.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(CheckpointError, match=r"format version 99 .*upgrade puffer to one that reads version 99"):
        checkpoint.load(tmp_path)
    mpath.write_text(json.dumps({**manifest, "format_version": 0}))
    with pytest.raises(CheckpointError, match=r"version 0 is too old.*reads versions 1 to 3"):
        checkpoint.load(tmp_path)
    mpath.write_text(json.dumps({**manifest, "format_version": "2.0-beta"}))
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format version '2.0-beta'"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_tensor_file_is_named(tmp_path, damage):
    _save(tmp_path, 1)
    f = checkpoint.resolve(tmp_path) / "params.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        f.unlink()
    with pytest.raises(CheckpointError, match=str(f)):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("text", ['{"format_version": 2, "gro', "\x00\xff\xfe", "[1, 2]", '{"format_version": 2}'])
def test_damaged_manifest_is_named(tmp_path, text):
    _save(tmp_path, 1)
    mpath = _manifest(tmp_path)
    mpath.write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match=str(mpath)):
        checkpoint.load(tmp_path)


def test_missing_paths_and_fallback_without_latest(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        checkpoint.load(tmp_path)
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    # a kill between the rename and the LATEST update: the newest complete checkpoint is used
    (tmp_path / "LATEST").write_text("000000000001")
    assert checkpoint.load(tmp_path)[1]["step"] == 1
    (tmp_path / "LATEST").unlink()
    assert checkpoint.load(tmp_path)[1]["step"] == 2


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from puffer import checkpoint

    run = sys.argv[1]
    big = np.zeros(8_000_000, np.float32)  # 32 MB per save: each takes long enough to be caught in the middle
    step = 0
    while True:
        step += 1
        big[:] = step
        checkpoint.save(run, step, {"params": {"big": big, "step": np.asarray(step)}}, {"mean_return": float(step)})
        print(step, flush=True)
""")


def test_kill_mid_save_leaves_previous_checkpoint_loadable(tmp_path):
    """SIGKILL a real process while it writes a checkpoint; the last complete one still loads and verifies."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete checkpoint exists
        deadline = time.monotonic() + 60
        caught = False
        while time.monotonic() < deadline and not caught:
            # a temporary directory holding a partial file means a save is in progress right now
            for tmp in (run / "checkpoints").glob(f"{checkpoint.TMP_PREFIX}*"):
                if any(tmp.iterdir()):
                    os.kill(proc.pid, signal.SIGKILL)
                    caught = True
                    break
        assert caught, "never saw a save in progress"
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list((run / "checkpoints").glob(f"{checkpoint.TMP_PREFIX}*")), "the kill should interrupt a save"
    groups, meta = checkpoint.load(run)
    step = meta["step"]
    assert step >= 1 and int(groups["params"]["step"]) == step
    assert np.all(groups["params"]["big"] == step)
    # the next save clears the leftovers of the killed one
    checkpoint.save(run, step + 100, {"params": {"x": np.zeros(1)}}, {})
    assert not list((run / "checkpoints").glob(f"{checkpoint.TMP_PREFIX}*"))


@pytest.mark.parametrize("name", sorted(puffer.envs.registry()))
def test_native_env_state_dict_replays_exactly(name):
    """After load_state_dict, a fresh env (other seed) continues exactly like the original."""
    env = puffer.make(name, num_envs=3, seed=1)
    env.reset(seed=1)
    space = env.single_action_space
    rng = np.random.default_rng(0)

    def actions():
        return np.stack([space.sample(rng) for _ in range(env.num_agents)])

    for _ in range(40):
        env.step(actions())
    state = env.state_dict()
    arrays, values = checkpoint.split_state(state)
    json.dumps(values)  # everything but arrays goes into the JSON manifest
    acts = [actions() for _ in range(60)]
    first = [[np.copy(x) for x in env.step(a)[:4]] for a in acts]
    other = puffer.make(name, num_envs=3, seed=99)
    other.load_state_dict(checkpoint.join_state(arrays, values))
    second = [[np.copy(x) for x in other.step(a)[:4]] for a in acts]
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_env_state_of_another_size_is_refused_unchanged():
    env = puffer.make("cartpole", num_envs=2, seed=0)
    env.reset(seed=0)
    other = puffer.make("cartpole", num_envs=3, seed=0)
    other.reset(seed=5)
    before = other.state_dict()
    with pytest.raises(CheckpointError, match=r"CartPole: saved env state .* is \(2, 4\).*this env has \(3, 4\)"):
        other.load_state_dict(env.state_dict())
    after = other.state_dict()
    assert all(np.array_equal(before[k], after[k]) if isinstance(before[k], np.ndarray) else before[k] == after[k]
               for k in before)
