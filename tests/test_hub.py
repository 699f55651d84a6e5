"""`puffer push` and `hf://` loading, end to end through huggingface_hub, against a local stand-in for the Hub.

The stand-in is a threaded http.server on 127.0.0.1 that implements the few endpoints huggingface_hub
calls for create_repo, upload_folder and snapshot_download, with the Hub's error conventions (401 with
"Invalid credentials in Authorization header" for a bad token, 404 with X-Error-Code RepoNotFound for a
missing repo). puffer reaches it through HF_ENDPOINT, exactly as users reach huggingface.co.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

from puffer import checkpoint, hub  # noqa: E402
from puffer.algos import PPO, PPOConfig  # noqa: E402
from puffer.cli import main  # noqa: E402
from puffer.train import CheckpointPolicy  # noqa: E402

TOKEN = "hf_puffer_test_token"


class FakeHub:
    """Repos in memory: {repo_id: {"sha": commit, "files": {path: bytes}}}; `requests` records what was called."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        hub_state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                hub_state.route(self, "GET")

            def do_HEAD(self) -> None:
                hub_state.route(self, "HEAD")

            def do_POST(self) -> None:
                hub_state.route(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def send(h: BaseHTTPRequestHandler, code: int, body: object = b"", headers: dict | None = None,
             head: bool = False) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if not head:
            h.wfile.write(data)

    def error(self, h: BaseHTTPRequestHandler, code: int, message: str, kind: str | None = None) -> None:
        headers = {"X-Error-Message": message, **({"X-Error-Code": kind} if kind else {})}
        self.send(h, code, {"error": message}, headers)

    def route(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append((method, path))
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        auth = h.headers.get("Authorization")
        if auth is not None and auth != f"Bearer {TOKEN}":
            return self.error(h, 401, "Invalid credentials in Authorization header")
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/api/repos/create":
            if auth is None:
                return self.error(h, 401, "You must be authenticated to create a repo")
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}"
            if repo_id in self.repos:  # the Hub answers a conflict with the existing repo's url
                message = "You already created this model repo"
                return self.send(h, 409, {"error": message, "url": f"{self.url}/{repo_id}"},
                                 {"X-Error-Message": message})
            self.repos[repo_id] = {"sha": "0" * 40, "files": {}}
            return self.send(h, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})
        if method == "POST" and path == "/api/validate-yaml":
            return self.send(h, 200, {"errors": [], "warnings": []})
        if parts[:2] == ["api", "models"] and len(parts) >= 5:
            return self.api(h, method, "/".join(parts[2:4]), parts[4], body, auth)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self.repos.get("/".join(parts[:2]))
            if repo is None:
                return self.error(h, 404, "Repository not found", "RepoNotFound")
            name = "/".join(parts[4:])
            if name not in repo["files"]:
                return self.error(h, 404, "Entry not found", "EntryNotFound")
            data = repo["files"][name]
            etag = f'"{hashlib.sha1(data).hexdigest()}"'
            return self.send(h, 200, data, {"X-Repo-Commit": repo["sha"], "ETag": etag}, head=method == "HEAD")
        return self.error(h, 404, f"no route for {method} {path}")

    def api(self, h: BaseHTTPRequestHandler, method: str, repo_id: str, action: str, body: bytes,
            auth: str | None) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self.error(h, 404, "Repository not found", "RepoNotFound")
        if method == "POST" and auth is None:
            return self.error(h, 401, "You must be authenticated to write")
        if method == "POST" and action == "preupload":
            files = json.loads(body)["files"]
            return self.send(h, 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                for f in files]})
        if method == "POST" and action == "commit":
            for line in body.decode().splitlines():
                op = json.loads(line)
                if op["key"] == "file":
                    repo["files"][op["value"]["path"]] = base64.b64decode(op["value"]["content"])
            listing = sorted((k, hashlib.sha1(v).hexdigest()) for k, v in repo["files"].items())
            repo["sha"] = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
            return self.send(h, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{repo['sha']}",
                                      "commitOid": repo["sha"], "pullRequestUrl": None})
        if method == "GET" and action == "revision":
            return self.send(h, 200, {"id": repo_id, "modelId": repo_id, "sha": repo["sha"], "private": False,
                                      "siblings": [{"rfilename": k} for k in sorted(repo["files"])]})
        if method == "GET" and action == "tree":
            return self.send(h, 200, [{"type": "file", "path": k, "size": len(v), "oid": hashlib.sha1(v).hexdigest()}
                                      for k, v in sorted(repo["files"].items())])
        return self.error(h, 404, f"no route for {method} {action}")


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield server
    server.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    cfg = PPOConfig(total_steps=512, num_envs=8, rollout_len=16, minibatch_size=64, hidden_size=16, update_epochs=1)
    trainer = PPO("cartpole", backend="torch", config=cfg)
    trainer.train()
    run = tmp_path_factory.mktemp("run")
    trainer.save(run)
    trainer.close()
    return run


def test_push_then_eval_from_hf(fake_hub, run_dir, capsys):
    assert main(["push", str(run_dir), "--repo", "user/cartpole-ppo"]) == 0
    assert "pushed" in capsys.readouterr().out
    files = fake_hub.repos["user/cartpole-ppo"]["files"]
    _, manifest = checkpoint.load(run_dir)
    assert {"manifest.json", "params.safetensors", "opt_state.safetensors", "README.md"} <= set(files)
    card = files["README.md"].decode()
    for text in ("cartpole", "PPO", "torch", f"{manifest['mean_return']:.2f}", "hf://user/cartpole-ppo",
                 "CheckpointPolicy", "library_name: puffer"):
        assert text in card, text
    assert "policy.onnx" in files  # exported from the checkpoint by puffer.export
    assert files["policy.onnx"][:2] != b"" and "puffer eval cartpole --policy policy.onnx" in card

    # loading back: the same code path a user runs, downloading into the (test's) Hugging Face cache
    assert main(["eval", "cartpole", "--checkpoint", "hf://user/cartpole-ppo", "--backend", "jax",
                 "--episodes", "4", "--num-envs", "4"]) == 0
    assert "cartpole on jax: mean return" in capsys.readouterr().out
    assert any(m == "GET" and "/resolve/" in p for m, p in fake_hub.requests)
    remote = CheckpointPolicy("hf://user/cartpole-ppo", backend="numpy")
    local, _ = checkpoint.load(run_dir)
    for k, v in local["params"].items():
        np.testing.assert_array_equal(np.asarray(remote.params[k]), v)
    assert Path(remote.meta["path"]).is_relative_to(Path(os.environ["HF_HOME"]))


def test_push_to_an_existing_repo(fake_hub, run_dir):
    hub.push(run_dir, "user/again")
    first = fake_hub.repos["user/again"]["sha"]
    hub.push(run_dir, "user/again", commit_message="second")  # the repo exists: no error, a new commit
    assert fake_hub.repos["user/again"]["sha"] == first  # same files: the same listing


def test_missing_repo_is_a_clear_error(fake_hub, capsys):
    assert main(["eval", "--checkpoint", "hf://user/does-not-exist"]) == 2
    err = capsys.readouterr().err
    assert f"{fake_hub.url}/user/does-not-exist" in err and "does not exist" in err


def test_bad_credentials_are_a_clear_error(fake_hub, run_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert main(["push", str(run_dir), "--repo", "user/x"]) == 2
    err = capsys.readouterr().err
    assert "rejected the credentials (HTTP 401)" in err and "HF_TOKEN" in err
    assert "user/x" not in fake_hub.repos


def test_no_credentials_is_a_clear_error(fake_hub, run_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(hub.HubError, match="HF_TOKEN"):
        hub.push(run_dir, "user/x")


def test_bad_references():
    with pytest.raises(hub.HubError, match="hf://user/name"):
        hub.parse_ref("hf://just-a-name")
    assert hub.parse_ref("hf://user/name@v1") == ("user/name", "v1")
    with pytest.raises(hub.HubError, match="user/name"):
        hub.push(".", "no-slash")
