"""Share trained policies on the Hugging Face Hub: `puffer push RUN --repo user/name`, load with `hf://user/name`.

A pushed repo holds one checkpoint (manifest.json and safetensors files, so it resumes and evaluates
on any backend), `policy.onnx` exported from it (for onnxruntime) and a generated model card.
`hf://user/name[@revision]` works wherever a checkpoint path does (`puffer eval --checkpoint`,
`puffer train --resume`, `CheckpointPolicy`): the repo is downloaded into the Hugging Face cache.
The Hub's address is read from `HF_ENDPOINT` and the token from `HF_TOKEN` (or `hf auth login`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import puffer
from puffer import checkpoint
from puffer.errors import PufferError

DEFAULT_ENDPOINT = "https://huggingface.co"


class HubError(PufferError):
    """The Hub refused or could not be reached: missing repo, bad credentials, network."""


def _hf() -> Any:
    try:
        import huggingface_hub
    except ImportError as e:
        raise HubError("the Hugging Face Hub needs huggingface_hub: pip install 'puffer-rl[hub]'") from e
    return huggingface_hub


def endpoint() -> str:
    """The Hub's base URL: `HF_ENDPOINT`, read at call time, or huggingface.co."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`hf://user/name[@revision]` -> (repo id, revision or None)."""
    if not ref.startswith("hf://"):
        raise HubError(f"{ref!r} is not a hub reference; write hf://user/name or hf://user/name@revision")
    body = ref[len("hf://"):]
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"{ref!r}: the repo must be user/name (as in hf://user/name)")
    return repo_id, revision or None


def _explain(e: Exception, repo_id: str, action: str) -> HubError:
    """A HubError that says what went wrong in terms of the repo, the token or the network."""
    hf = _hf()
    errors = hf.errors
    where = f"{endpoint()}/{repo_id}"
    if isinstance(e, errors.RevisionNotFoundError):
        return HubError(f"cannot {action} {where}: no such revision ({e.server_message or e})")
    if isinstance(e, (errors.RepositoryNotFoundError, errors.GatedRepoError)):
        return HubError(f"cannot {action} {where}: the repo does not exist, or it is private and the token "
                        "(HF_TOKEN or `hf auth login`) has no access to it")
    if isinstance(e, errors.LocalTokenNotFoundError):
        return HubError(f"cannot {action} {where}: no Hugging Face token; set HF_TOKEN or run `hf auth login`")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        return HubError(f"cannot {action} {where}: the Hub rejected the credentials (HTTP {status}); check HF_TOKEN "
                        "or run `hf auth login` with a token that has write access")
    if isinstance(e, errors.HfHubHTTPError):
        return HubError(f"cannot {action} {where}: HTTP {status}: {e}")
    if isinstance(e, errors.LocalEntryNotFoundError):
        return HubError(f"cannot {action} {where}: the Hub could not be reached and nothing is cached ({e})")
    return HubError(f"cannot {action} {where}: {type(e).__name__}: {e}")


def model_card(manifest: dict[str, Any], repo_id: str, onnx_note: str | None) -> str:
    """A README.md for the repo: env, algorithm, backend, achieved return and how to load the policy."""
    env, algo, backend = manifest["env"], manifest.get("algo", "ppo"), manifest.get("backend", "?")
    ret = manifest.get("mean_return")
    ret_text = f"{ret:.2f}" if isinstance(ret, (int, float)) and ret == ret else "n/a"
    steps = int(manifest.get("global_step", manifest["step"]))
    config = json.dumps(manifest.get("config", {}), indent=2, sort_keys=True)
    obs_dim = manifest["observation_space"].get("shape", ["D"])[0]
    front = "\n".join([
        "---", "library_name: puffer", "tags:", "- reinforcement-learning", "- puffer", f"- {algo}", f"- {env}",
        "model-index:", f"- name: {repo_id.split('/')[1]}", "  results:", "  - task:",
        "      type: reinforcement-learning", "      name: reinforcement-learning", "    dataset:",
        f"      name: {env}", f"      type: {env}", "    metrics:", "    - type: mean_reward",
        f"      value: '{ret_text}'", "      name: mean_reward", "---"])
    onnx = (f"- `policy.onnx`: the policy exported to ONNX; run it without torch or JAX:\n"
            f"  `puffer eval {env} --policy policy.onnx` (after `hf download {repo_id}`)"
            if onnx_note is None else f"- no ONNX export: {onnx_note}")
    return f"""{front}

# {algo.upper()} on `{env}`, trained with puffer

| | |
|---|---|
| environment | `{env}` |
| algorithm | {algo.upper()} |
| trained on backend | {backend} (the checkpoint is backend-neutral: load it on torch, JAX or tinygrad) |
| env steps | {steps} |
| mean return (last 20 training episodes) | {ret_text} |
| puffer | {manifest.get("puffer_version", "?")} (checkpoint format {manifest["format_version"]}) |

## Use

```bash
pip install puffer-rl
puffer eval {env} --checkpoint hf://{repo_id}                   # mean return, default backend
puffer eval {env} --checkpoint hf://{repo_id} --backend torch   # any backend
puffer train --resume hf://{repo_id} --steps 1000000            # keep training
```

```python
from puffer.train import CheckpointPolicy

policy = CheckpointPolicy("hf://{repo_id}", backend="jax")
actions = policy.act(observations)   # observations: float32 [batch, {obs_dim}]
```

## Files

- `manifest.json` and `*.safetensors`: the puffer checkpoint (parameters, optimizer and training state;
  safetensors and JSON only, so loading it runs no code)
{onnx}

## Config

```json
{config}
```
"""


def push(run: str | Path, repo_id: str, token: str | None = None, private: bool | None = None,
         which: str = "latest", commit_message: str | None = None) -> str:
    """Upload a run's checkpoint (latest or best), its ONNX export and a model card to `repo_id`; returns the URL."""
    hf = _hf()
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"--repo {repo_id!r}: write it as user/name")
    manifest = checkpoint.read_manifest(run, which)
    ckpt = Path(manifest["path"])
    checkpoint.load(ckpt)  # verifies every checksum: never publish a corrupt checkpoint
    api = hf.HfApi(endpoint=endpoint(), token=token)
    with tempfile.TemporaryDirectory(prefix="puffer-push-") as tmp:
        stage = Path(tmp)
        for f in ckpt.iterdir():
            if f.is_file():
                shutil.copy2(f, stage / f.name)
        onnx_note = _export_onnx(ckpt, stage / "policy.onnx")
        (stage / "README.md").write_text(model_card(manifest, repo_id, onnx_note))
        message = commit_message or f"puffer push: {manifest['env']} at step {manifest['step']}"
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=stage, commit_message=message)
        except Exception as e:  # huggingface_hub and httpx raise many types; each becomes one clear message
            raise _explain(e, repo_id, "push to") from e
    return f"{endpoint()}/{repo_id}"


def _export_onnx(ckpt: Path, out: Path) -> str | None:
    """Export the policy to `out`; returns None, or why there is no ONNX file."""
    try:
        from puffer.export import export
    except ImportError as e:
        return f"ONNX export is unavailable here ({e})"
    try:
        export(ckpt, out)
    except (PufferError, ImportError) as e:
        return f"the policy could not be exported ({e})"
    return None


def locate(path: str | Path) -> Path:
    """A local checkpoint or run directory for `path`; `hf://user/name[@revision]` is downloaded first."""
    if isinstance(path, str) and path.startswith("hf://"):
        return download(path)
    return Path(path)


def download(ref: str, cache_dir: str | Path | None = None, token: str | None = None) -> Path:
    """Download `hf://user/name[@revision]` into the Hugging Face cache; returns the local checkpoint directory."""
    hf = _hf()
    repo_id, revision = parse_ref(ref)
    if cache_dir is None:
        # huggingface_hub fixes its cache path at import; read the same variables now instead
        home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
        cache_dir = os.environ.get("HF_HUB_CACHE") or home / "hub"
    try:
        path = hf.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                    endpoint=endpoint())
    except Exception as e:  # as in push: one clear message whatever the transport raised
        raise _explain(e, repo_id, "download") from e
    if not (Path(path) / "manifest.json").is_file():
        raise HubError(f"{ref}: the repo holds no puffer checkpoint (no manifest.json); push one with `puffer push`")
    return Path(path)


def add_command(sub: Any) -> None:
    """Register `puffer push` on an argparse subparsers object."""
    p = sub.add_parser("push", help="upload a run (checkpoint, ONNX policy, model card) to the Hugging Face Hub")
    p.add_argument("run", help="run directory or checkpoint directory")
    p.add_argument("--repo", required=True, help="Hub repo as user/name (created if missing)")
    p.add_argument("--best", action="store_true", help="push the best checkpoint instead of the latest")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the one saved by `hf auth login`)")
    p.set_defaults(func=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    """`puffer push RUN --repo user/name`."""
    url = push(args.run, args.repo, token=args.token, private=args.private or None,
               which="best" if args.best else "latest")
    print(f"pushed {args.run} to {url} (puffer {puffer.__version__})")
    print(f"evaluate: puffer eval --checkpoint hf://{args.repo}")
    return 0
