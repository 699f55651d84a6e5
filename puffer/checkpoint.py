"""Backend-neutral checkpoints: a directory with a JSON manifest and safetensors files (no pickle).

Layout of a run's checkpoint directory:
    run/checkpoints/<step>/manifest.json  format version, puffer version, config, spaces, counters, RNG, checksums
    run/checkpoints/<step>/<group>.safetensors   params, opt_state, obs_norm, env and trainer state
    run/LATEST                            name of the newest complete checkpoint
    run/BEST                              name of the checkpoint with the highest mean return
A checkpoint is written into a temporary directory (every file fsynced), which is then renamed into
place; LATEST and BEST move after that. A process killed mid-save therefore leaves at most a stray
temporary directory (removed by the next save) and the previous checkpoint loadable.
This module is storage only: it knows no algorithm (the manifest names the algorithm and its policy,
and `puffer.train.resume_trainer` rebuilds it) and no Hub (`puffer.hub.locate` turns an
`hf://user/name` reference into a local directory first).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import puffer
from puffer.errors import CheckpointError

FORMAT_VERSION = 3
# Versions this puffer can read; older ones are migrated on load by _MIGRATIONS[v] (v -> v + 1).
OLDEST_READABLE = 1
CHECKPOINTS = "checkpoints"
TMP_PREFIX = ".tmp-"


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
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory holding the entry is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    write_atomic(path, _json_bytes(obj))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _tensors_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    # np.ascontiguousarray would turn 0-d arrays (e.g. Adam's step count) into shape (1,)
    return save({k: np.require(v, requirements="C") for k, v in arrays.items()})


def _read_tensors(path: Path, data: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return dict(load(data))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


# ---- state dicts: arrays go to safetensors, everything else to the manifest ------------------------
def split_state(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split a state dict into (numpy arrays for safetensors, JSON-serializable rest)."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    return arrays, {k: v for k, v in state.items() if k not in arrays}


def describe_mismatch(want: dict[str, tuple], got: dict[str, tuple]) -> str:
    """What differs between two {name: shape} maps, briefly: missing and unexpected names, wrong shapes."""
    parts = []
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    wrong = [f"{k}: {got[k]} instead of {want[k]}" for k in sorted(set(want) & set(got)) if want[k] != got[k]]
    if wrong:
        parts.append("wrong shapes " + ", ".join(wrong))
    return "; ".join(parts) or "nothing"


def join_state(arrays: dict[str, np.ndarray] | None, values: dict[str, Any] | None) -> dict[str, Any]:
    """Inverse of `split_state`."""
    return {**(values or {}), **(arrays or {})}


# ---- saving ------------------------------------------------------------------------------------
def _checkpoint_name(step: int) -> str:
    return f"{int(step):012d}"


def save(run_dir: str | Path, step: int, groups: dict[str, dict[str, np.ndarray]], meta: dict[str, Any],
         keep_last: int | None = None) -> Path:
    """Save tensor `groups` and JSON `meta` as checkpoint `step` of `run_dir`; returns its directory.

    `meta["mean_return"]` ranks checkpoints for BEST. With `keep_last`, only the newest `keep_last`
    checkpoints and the best one are kept.
    """
    if keep_last is not None and keep_last < 1:
        raise CheckpointError(f"keep_last={keep_last}: keep at least the newest checkpoint (1 or more)")
    run_dir = Path(run_dir)
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    name = _checkpoint_name(step)
    final = root / name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{TMP_PREFIX}{name}-"))
    try:
        checksums = {}
        for group, arrays in groups.items():
            data = _tensors_bytes(arrays)
            _write_synced(tmp / f"{group}.safetensors", data)
            checksums[f"{group}.safetensors"] = hashlib.sha256(data).hexdigest()
        manifest = {**meta, "format_version": FORMAT_VERSION, "puffer_version": puffer.__version__,
                    "step": int(step), "groups": sorted(groups), "sha256": checksums}
        _write_synced(tmp / "manifest.json", _json_bytes(manifest))
        _fsync_dir(tmp)
        if final.exists():
            # Saving the same step again (e.g. a final save right after a periodic one): swap it out.
            old = Path(tempfile.mkdtemp(dir=root, prefix=f"{TMP_PREFIX}old-{name}-"))
            os.replace(final, old / name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_atomic(run_dir / "LATEST", name.encode())
    _update_best(run_dir, name, manifest.get("mean_return"))
    if keep_last is not None:
        prune(run_dir, keep_last)
    return final


def _remove_stale_tmp(root: Path) -> None:
    # Leftovers of a save that was killed; one run directory has one writer at a time.
    for p in root.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _update_best(run_dir: Path, name: str, mean_return: Any) -> None:
    if not _finite(mean_return):
        return
    best = best_checkpoint(run_dir)
    if best is not None:
        try:
            best_return = json.loads((best / "manifest.json").read_text()).get("mean_return")
        except (OSError, json.JSONDecodeError):
            best_return = None
        if best.name != name and _finite(best_return) and best_return >= mean_return:
            return
    write_atomic(run_dir / "BEST", name.encode())


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def _pointer(run_dir: Path, file: str) -> Path | None:
    f = run_dir / file
    if not f.is_file():
        return None
    ckpt = run_dir / CHECKPOINTS / f.read_text().strip()
    return ckpt if (ckpt / "manifest.json").is_file() else None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest mean return so far (None before any had a finite one)."""
    return _pointer(Path(run_dir), "BEST")


def prune(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints and the best one; returns what was deleted."""
    run_dir = Path(run_dir)
    all_ckpts = checkpoints(run_dir)
    keep = {p.name for p in all_ckpts[-keep_last:]}
    for pointer in ("LATEST", "BEST"):
        p = _pointer(run_dir, pointer)
        if p is not None:
            keep.add(p.name)
    removed = [p for p in all_ckpts if p.name not in keep]
    for p in removed:
        # Rename first so a half-deleted directory never looks like a complete checkpoint.
        doomed = p.with_name(f"{TMP_PREFIX}del-{p.name}")
        os.replace(p, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return removed


# ---- loading -----------------------------------------------------------------------------------
def resolve(path: str | Path, which: str = "latest") -> Path:
    """The checkpoint directory for a checkpoint, a run directory (its latest or best) or an hf:// reference."""
    if which not in ("latest", "best"):
        raise CheckpointError(f"which={which!r}: choose 'latest' or 'best'")
    if str(path).startswith("hf:/"):
        raise CheckpointError(f"{path}: a Hub reference; download it with puffer.hub.locate() first (the CLI and "
                              "CheckpointPolicy do)")
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    if which == "best":
        best = best_checkpoint(path)
        if best is not None:
            return best
    latest = _pointer(path, "LATEST")
    if latest is not None:
        return latest
    # LATEST is written after the rename, so a kill in between leaves a newer complete checkpoint.
    found = checkpoints(path)
    if found:
        return found[-1]
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    raise CheckpointError(f"{path}: neither a checkpoint (no manifest.json) nor a run directory with checkpoints")


def _migrate_1(manifest: dict[str, Any]) -> dict[str, Any]:
    # Version 1 saved no env or in-flight trainer state: such a checkpoint resumes from a fresh env reset.
    return {**manifest, "format_version": 2, "env_state": None, "trainer_state": None}


def policy_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """The acting policy's description: the manifest's `policy`, or for manifests without one (version 2,
    written by the PPO-only trainer) the one PPO's config keys described."""
    if manifest.get("policy"):
        return manifest["policy"]
    cfg = manifest.get("config", {})
    kind = cfg.get("policy", "mlp")
    # the LSTM policy always had one layer, whatever the config said
    return {"kind": kind, "hidden_size": cfg.get("hidden_size", 64),
            "num_layers": 1 if kind == "lstm" else cfg.get("num_layers", 2),
            "activation": cfg.get("activation", "tanh")}


def _migrate_2(manifest: dict[str, Any]) -> dict[str, Any]:
    # version 3 names the algorithm and the policy so that eval, export and resume need no algorithm's config
    return {**manifest, "format_version": 3, "algo": manifest.get("algo", "ppo"), "policy": policy_spec(manifest)}


_MIGRATIONS = {1: _migrate_1, 2: _migrate_2}


def migrate(manifest: dict[str, Any], where: Path) -> dict[str, Any]:
    """Bring a manifest of an older format version up to FORMAT_VERSION, or refuse naming what is needed."""
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{where}: unknown checkpoint format version {version!r}; this puffer "
                              f"({puffer.__version__}) reads versions {OLDEST_READABLE} to {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: checkpoint format version {version} was written by a newer puffer; this "
                              f"puffer ({puffer.__version__}) reads versions {OLDEST_READABLE} to {FORMAT_VERSION}: "
                              f"upgrade puffer to one that reads version {version}")
    if version < OLDEST_READABLE:
        raise CheckpointError(f"{where}: checkpoint format version {version} is too old; this puffer "
                              f"({puffer.__version__}) reads versions {OLDEST_READABLE} to {FORMAT_VERSION}: "
                              f"load it with a puffer that reads version {version} and save it again")
    while manifest["format_version"] < FORMAT_VERSION:
        manifest = _MIGRATIONS[manifest["format_version"]](manifest)
    return manifest


def read_manifest(path: str | Path, which: str = "latest") -> dict[str, Any]:
    """The (migrated) manifest of a checkpoint without loading its tensors."""
    ckpt = resolve(path, which)
    mpath = ckpt / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{mpath}: unreadable manifest, the file is truncated or corrupt ({e})") from e
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{mpath}: the manifest is not a JSON object, the file is corrupt")
    manifest = migrate(manifest, mpath)
    for key in ("groups", "sha256", "step"):
        if key not in manifest:
            raise CheckpointError(f"{mpath}: the manifest lacks {key!r}, the file is corrupt")
    manifest["path"] = str(ckpt)
    return manifest


def load(path: str | Path, which: str = "latest") -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Load a checkpoint: (tensor groups, manifest); every file is checksum-verified before anything is returned."""
    manifest = read_manifest(path, which)
    ckpt = Path(manifest["path"])
    groups = {}
    for name in manifest["groups"]:
        f = ckpt / f"{name}.safetensors"
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{f}: missing from checkpoint") from None
        if hashlib.sha256(data).hexdigest() != manifest["sha256"].get(f.name):
            raise CheckpointError(f"{f}: checksum mismatch, the file is truncated, corrupt or was changed after "
                                  "saving")
        groups[name] = _read_tensors(f, data)
    return groups, manifest
