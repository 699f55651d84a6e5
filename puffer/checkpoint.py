"""Backend-neutral checkpoints: a directory with a JSON manifest and safetensors files (no pickle).

Layout of a run directory:
    run/config.json                      algorithm, env, backend and config of the run
    run/checkpoints/<step>/manifest.json format version, puffer version, spaces, counters, RNG, checksums
    run/checkpoints/<step>/params.safetensors, opt_state.safetensors, extra.safetensors
    run/LATEST                           name of the newest complete checkpoint
Every file is written to a temporary name, fsynced and renamed, and LATEST moves last, so a
process killed mid-save leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import puffer
from puffer.errors import CheckpointError

FORMAT_VERSION = 1


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a fsynced temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _tensors_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return dict(load(path.read_bytes()))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def save(run_dir: str | Path, step: int, groups: dict[str, dict[str, np.ndarray]], meta: dict[str, Any]) -> Path:
    """Save tensor `groups` (e.g. params, opt_state) and JSON `meta` as checkpoint `step`; returns its path."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / f"{int(step):012d}"
    checksums = {}
    for name, arrays in groups.items():
        data = _tensors_bytes(arrays)
        write_atomic(ckpt / f"{name}.safetensors", data)
        checksums[f"{name}.safetensors"] = hashlib.sha256(data).hexdigest()
    manifest = {"format_version": FORMAT_VERSION, "puffer_version": puffer.__version__, "step": int(step),
                "groups": sorted(groups), "sha256": checksums, **meta}
    write_json(ckpt / "manifest.json", manifest)
    write_atomic(run_dir / "LATEST", ckpt.name.encode())
    return ckpt


def resolve(path: str | Path) -> Path:
    """The checkpoint directory for a run directory (its LATEST) or a checkpoint directory itself."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    latest = path / "LATEST"
    if latest.is_file():
        return path / "checkpoints" / latest.read_text().strip()
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    raise CheckpointError(f"{path}: neither a checkpoint (no manifest.json) nor a run directory (no LATEST)")


def load(path: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Load a checkpoint: (tensor groups, manifest); verifies format version and checksums."""
    ckpt = resolve(path)
    mpath = ckpt / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{mpath}: unreadable manifest ({e})") from e
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{mpath}: checkpoint format version {version!r} is not supported; this puffer "
                              f"({puffer.__version__}) reads version {FORMAT_VERSION}")
    groups = {}
    for name in manifest["groups"]:
        f = ckpt / f"{name}.safetensors"
        if not f.is_file():
            raise CheckpointError(f"{f}: missing from checkpoint")
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        if digest != manifest["sha256"].get(f.name):
            raise CheckpointError(f"{f}: checksum mismatch, the file is corrupt or was changed after saving")
        groups[name] = _read_tensors(f)
    return groups, manifest
