"""Loggers: TensorBoard files read back with tensorboard's own reader, W&B offline runs read back record by record."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from puffer import loggers
from puffer.errors import PufferError

STATS = [
    {"episode_return": 10.0 * i, "episode_length": 20.0 + i, "loss": 0.5 - i / 10, "policy_loss": -0.01 * i,
     "value_loss": 1.0 / (i + 1), "entropy": 0.69, "approx_kl": 0.001 * i, "clipfrac": 0.1, "grad_norm": 0.3,
     "explained_variance": 0.2 * i, "sps": 1000.0 + i, "learning_rate": 2.5e-3 * (1 - i / 4), "success": 0.5,
     "global_step": 128 * (i + 1), "rollout_time": 0.1, "update_time": 0.2, "mean_return_20": 10.0 * i}
    for i in range(3)
]
REQUIRED = ["charts/episode_return", "charts/episode_length", "losses/loss", "losses/policy_loss",
            "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
            "losses/explained_variance", "charts/sps", "charts/learning_rate"]


def test_scalars_tags_and_skips():
    tags = loggers.scalars({**STATS[1], "flag": True, "name": "x", "nan": math.nan})
    assert set(REQUIRED) <= set(tags) and tags["charts/success"] == 0.5
    assert not {"charts/global_step", "charts/flag", "charts/name", "charts/nan", "charts/rollout_time"} & set(tags)


def test_tensorboard_event_files_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = loggers.make_logger("tensorboard", tmp_path)
    for s in STATS:
        logger.log(s, s["global_step"])
    logger.log({"episode_return": math.nan, "loss": 0.0}, 512)  # no return yet: skipped, not logged as nan
    logger.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(REQUIRED) <= set(acc.Tags()["scalars"])
    for tag, key in (("charts/episode_return", "episode_return"), ("charts/learning_rate", "learning_rate"),
                     ("losses/approx_kl", "approx_kl"), ("charts/sps", "sps")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [s["global_step"] for s in STATS]
        assert [e.value for e in events] == pytest.approx([s[key] for s in STATS], rel=1e-6)
    assert [e.step for e in acc.Scalars("losses/loss")][-1] == 512


def test_tensorboard_needs_no_framework(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from puffer.loggers import TensorBoardLogger
        logger = TensorBoardLogger({str(tmp_path)!r})
        logger.log({{"loss": 1.0}}, 1)
        logger.close()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "jax", "tinygrad")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _wandb_records(path: Path):
    """The protobuf records of a .wandb file (a LevelDB-style log: 32 KiB blocks of CRC-framed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = loggers.make_logger("wandb", tmp_path / "run", config={"env": "cartpole", "learning_rate": 2.5e-3})
    for s in STATS:
        logger.log(s, s["global_step"])
    logger.close()
    run_id = (tmp_path / "run" / "wandb_id").read_text().strip()
    runs = list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1, "offline mode writes one offline-run directory"
    # wandb's core process may still be writing the log after finish() returns: wait for its exit record
    deadline = time.monotonic() + 30
    while True:
        records = list(_wandb_records(runs[0] / f"run-{run_id}.wandb"))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    config = next(({item.key: json.loads(item.value_json) for item in r.run.config.update}
                   for r in records if r.WhichOneof("record_type") == "run"), None)
    assert config is not None and config["env"] == "cartpole"
    assert [h["_step"] for h in history] == [s["global_step"] for s in STATS]
    for h, s in zip(history, STATS):
        assert set(REQUIRED) <= set(h)
        assert h["charts/episode_return"] == pytest.approx(s["episode_return"])
        assert h["losses/clipfrac"] == pytest.approx(s["clipfrac"])


def test_unknown_logger():
    with pytest.raises(PufferError, match="unknown logger 'csv'; choose one of tensorboard, wandb, none"):
        loggers.make_logger("csv", ".")
