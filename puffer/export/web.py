"""`puffer export RUN --web DIR`: a static page in which the exported policy acts in the browser.

The page is self-contained: `policy.onnx`, onnxruntime-web's WASM build (copied from the npm package
at export time), `policy.json` (spaces, state layout, env) and a small script. Envs with a JavaScript
port (the built-in CartPole) are played on a canvas with the episode return shown; for any other env
the page says so and runs the policy on observations the user types in. Serve the directory with any
static file server (`python -m http.server -d DIR`); browsers do not run WASM from file:// URLs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from puffer import checkpoint
from puffer.deploy import META
from puffer.errors import ExportError

__all__ = ["ORT_WEB_VERSION", "npm_package", "onnxruntime_web", "write_site"]

# the onnxruntime-web release the page ships (and tests/test_runtimes.py runs); newest on npm when pinned
ORT_WEB_VERSION = "1.31.1"
# the WASM-only build: the CPU kernels every browser runs, without the WebGPU/WebGL bundles (~15 MB)
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs")
ASSETS = Path(__file__).with_name("web_assets")
# envs with a JavaScript port in web_assets/, and the env kwargs each port implements
PORTS = {"cartpole": ("cartpole.js", {"max_episode_steps"})}


def cache_dir() -> Path:
    """Where puffer keeps downloaded tools: $PUFFER_CACHE, else ~/.cache/puffer."""
    return Path(os.environ.get("PUFFER_CACHE") or Path.home() / ".cache" / "puffer")


def npm_package(name: str, version: str) -> Path:
    """The directory of npm package `name@version`, installed with npm into the cache when missing."""
    prefix = cache_dir() / "npm" / f"{name.replace('/', '_')}-{version}"
    package = prefix / "node_modules" / name
    if _installed_version(package) == version:
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise ExportError(f"{name} {version} comes from npm, which is not installed: install Node.js and npm "
                          f"(`sudo apt-get install npm` on Debian/Ubuntu), or `npm install {name}@{version}` "
                          f"with --prefix {prefix}")
    # installed next to the cache entry and renamed into place, so an interrupted install is never found
    partial = prefix.with_name(prefix.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # --ignore-scripts: the packages ship their CPU binaries; onnxruntime-node's install script only
    # fetches optional GPU builds from the network
    cmd = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save", "--prefix", str(partial),
           f"{name}@{version}"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    except subprocess.CalledProcessError as e:
        tail = "\n".join((e.stderr or "").strip().splitlines()[-5:])
        raise ExportError(f"`{' '.join(cmd)}` failed:\n{tail}") from e
    except subprocess.TimeoutExpired as e:
        raise ExportError(f"`{' '.join(cmd)}` did not finish in {e.timeout:.0f} s") from e
    if _installed_version(partial / "node_modules" / name) != version:
        raise ExportError(f"npm reported success but {partial} does not hold {name} {version}")
    shutil.rmtree(prefix, ignore_errors=True)  # a stale or broken earlier install
    partial.rename(prefix)
    return package


def _installed_version(package: Path) -> str | None:
    try:
        return json.loads((package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def onnxruntime_web() -> Path:
    """onnxruntime-web's `dist` directory: $PUFFER_ORT_WEB (a package directory) or the npm cache."""
    override = os.environ.get("PUFFER_ORT_WEB")
    package = Path(override) if override else npm_package("onnxruntime-web", ORT_WEB_VERSION)
    dist = package / "dist"
    missing = [f for f in ORT_WEB_FILES if not (dist / f).is_file()]
    if missing:
        raise ExportError(f"{dist} lacks onnxruntime-web's {', '.join(missing)}; point PUFFER_ORT_WEB at an "
                          f"onnxruntime-web package directory (npm install onnxruntime-web@{ORT_WEB_VERSION})")
    return dist


def _page_info(meta: dict[str, str]) -> dict[str, Any]:
    """What the page's script needs from the model's metadata, and whether the env has a JS port."""
    env = meta.get(META["env"], "")
    env_kwargs = json.loads(meta.get(META["env_kwargs"], "{}"))
    obs_space = json.loads(meta[META["observation_space"]])
    action_space = json.loads(meta[META["action_space"]])
    port, notice = None, None
    if env in PORTS:
        script, supported = PORTS[env]
        extra = sorted(set(env_kwargs) - supported)
        if extra:
            notice = f"the JavaScript port of {env} does not implement its options {', '.join(extra)}"
        else:
            port = script
    else:
        notice = f"the env {env!r} has no JavaScript port (only {', '.join(sorted(PORTS))} has)"
    return {"env": env, "env_kwargs": env_kwargs, "port": port, "notice": notice,
            "observation_space": obs_space, "action_space": action_space,
            "obs_dim": int(obs_space["shape"][0]), "obs_dtype": obs_space["dtype"],
            "head": json.loads(meta[META["head"]]), "state": json.loads(meta[META["state"]]),
            "sample_graph": json.loads(meta.get(META["sample_graph"], "false")),
            "opset": meta.get(META["opset"]), "puffer_version": meta.get(META["version"])}


def write_site(model_path: str | Path, site: str | Path) -> Path:
    """Write the static page for the exported model `model_path` into the directory `site`; returns its
    index.html."""
    import onnx

    model_path, site = Path(model_path), Path(site)
    if site.exists() and not site.is_dir():
        raise ExportError(f"--web {site}: exists and is not a directory")
    model = onnx.load(str(model_path))
    meta = {p.key: p.value for p in model.metadata_props}
    if META["format"] not in meta:
        raise ExportError(f"{model_path}: not a puffer export (no {META['format']} metadata)")
    dist = onnxruntime_web()
    info = _page_info(meta)
    site.mkdir(parents=True, exist_ok=True)
    files = {"policy.onnx": model_path.read_bytes(),
             "policy.json": json.dumps(info, indent=1).encode(),
             "index.html": (ASSETS / "index.html").read_bytes(),
             "puffer-web.js": (ASSETS / "puffer-web.js").read_bytes()}
    if info["port"]:
        files[info["port"]] = (ASSETS / info["port"]).read_bytes()
    files.update({f: (dist / f).read_bytes() for f in ORT_WEB_FILES})
    for name, data in files.items():
        checkpoint.write_atomic(site / name, data)
        os.chmod(site / name, 0o644)  # a web server running as another user must read the page
    return site / "index.html"
