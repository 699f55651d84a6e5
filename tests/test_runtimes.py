"""Exported policies on the runtimes a device may have, against the training backend (<= 1e-5).

One set of exports (default opset; MLP with discrete, continuous and mixed heads, and an LSTM over
carried state, each with its sampling graph) runs on fixed observations and noise in:
- the oldest onnxruntime wheel that installs for this Python, and 1.20.0 (an optimizer of which once
  refused our models), each `pip install --target` into a cache with a numpy it works with, through
  `puffer.deploy` in an interpreter without site-packages;
- today's onnxruntime (this venv's), through `puffer.deploy`;
- onnxruntime-node from npm: the oldest release that loads opset 17 (1.12.1) and a current one;
- onnxruntime-web (WASM) from npm in headless Chromium: 1.12.1 and the release `puffer export --web`
  ships.
Every runtime's outputs must match torch's compiled forward of the same parameters. Tools are
installed by the tests themselves (cached); a machine that cannot install them fails with a message
saying how, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import puffer
from puffer import checkpoint, spaces
from puffer.policies import make_policy
from puffer.train import RunningNorm

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from browser import npm_package, run_page  # noqa: E402 - tests/ helper module

from puffer.export import export  # noqa: E402
from puffer.export.web import ORT_WEB_VERSION  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JS = Path(__file__).with_name("js")
CACHE = Path(os.environ.get("PUFFER_TEST_CACHE") or Path.home() / ".cache" / "puffer-test")
TOL = 1e-5
BATCH = 7
LSTM_STEPS = 5
OBS = spaces.Box(-3.0, 3.0, (5,), np.float32)
# the oldest onnxruntime with a wheel for each Python (`pip index versions onnxruntime`), and a numpy
# that wheel works with (onnxruntime before 1.19 does not load under numpy 2); each loaded the default
# opset-17 export here (3.11 in this suite; 3.10, 3.12 and 3.13 by hand with pyenv's interpreters)
OLDEST_ONNXRUNTIME = {(3, 10): ("1.12.0", "1.26.4"), (3, 11): ("1.15.0", "1.26.4"), (3, 12): ("1.17.0", "1.26.4"),
                      (3, 13): ("1.20.0", "2.1.3")}
# 1.20.0's GatherSliceToSplitFusion refused models whose nodes are unnamed ("two nodes with same node
# name"); the exporter names every node, and this keeps it so
QUIRKY_ONNXRUNTIME = ("1.20.0", "2.1.3")
# onnxruntime-node and -web: the oldest release that loads the default opset 17 (node 1.11.0 refuses
# it; measured) and the newest at the time of writing (the one `puffer export --web` ships)
ORT_NODE_VERSIONS = ("1.12.1", "1.31.1")
ORT_WEB_VERSIONS = ("1.12.1", ORT_WEB_VERSION)
# name -> (policy kind, action space, observation normalization on)
CASES: dict[str, tuple[str, spaces.Space, bool]] = {
    "mlp-discrete": ("mlp", spaces.Discrete(4), False),
    "mlp-continuous": ("mlp", spaces.Box(-1.0, 1.0, (3,), np.float32), True),
    "mlp-mixed": ("mlp", spaces.Tuple((spaces.MultiDiscrete([2, 3]), spaces.Box(-1.0, 1.0, (2,), np.float32))),
                  False),
    "lstm-mixed": ("lstm", spaces.Tuple((spaces.MultiDiscrete([3, 2]), spaces.Box(-1.0, 1.0, (2,), np.float32))),
                   True),
}

# puffer.deploy on whichever onnxruntime the interpreter finds first; argv: cases dir, extra sys.path entries
DEPLOY_RUNNER = textwrap.dedent("""
    import json, sys
    sys.path[:0] = sys.argv[2:]
    import numpy as np
    import onnxruntime
    from puffer.deploy import Policy

    d = sys.argv[1]
    spec = json.load(open(d + "/spec.json"))
    results = {}
    for name, c in spec["cases"].items():
        policy = Policy.load(d + "/" + c["model"])
        state, steps = policy.initial_state(c["batch"]), []
        for t, obs in enumerate(c["obs"]):
            obs = np.asarray(obs, np.float32).reshape(c["batch"], c["obs_dim"])
            noise = np.asarray(c["noise"][t], np.float32).reshape(c["batch"], c["noise_dim"])
            out = policy.forward(obs, state, noise)
            state = tuple(out[n + "_out"] for n, _ in c["state"])
            steps.append({k: v.ravel().tolist() for k, v in out.items()})
        results[name] = steps
    print(json.dumps({"ok": True, "version": onnxruntime.__version__, "numpy": np.__version__,
                      "results": results}))
""")


def _reference(policy: Any, params: dict[str, np.ndarray], obs: list[np.ndarray],
               noise: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """torch's compiled forward (the training backend) for each step, state carried."""
    be = puffer.backend("torch")
    head = policy.head

    def forward(params, obs, state, noise):
        dist, value, state = policy.step(be, params, obs, state)
        logits, mean, log_std = dist
        out = {"action": head.mode(be, dist), "value": value}
        if logits is not None:
            out["logits"] = logits
        if mean is not None:
            out["mean"], out["log_std"] = mean, log_std + be.xp.zeros_like(mean)
        out["sample_action"], out["sample_log_prob"] = head.sample(be, dist, noise)
        return out, state

    step = be.compile(forward)
    p = {k: be.asarray(v) for k, v in params.items()}
    state, steps = policy.initial_state(be, BATCH), []
    for o, n in zip(obs, noise):
        out, state = step(p, be.asarray(o), state, be.asarray(n))
        record = {k: be.to_numpy(v) for k, v in out.items()}
        record.update({f"{name}_out": be.to_numpy(s) for name, s in zip(("h", "c"), state)})
        steps.append(record)
    return steps


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict[str, np.ndarray]]]]:
    """The exported models and spec.json in one directory, and the training backend's outputs."""
    d = tmp_path_factory.mktemp("runtimes")
    rng = np.random.default_rng(0)
    spec, reference = {"cases": {}}, {}
    for name, (kind, action_space, use_norm) in CASES.items():
        policy = make_policy(OBS, action_space, kind, 16, 2, "tanh")
        # seeded init moved off it, so that no weight is a special value (zero biases, orthogonal rows)
        params = {k: (v + rng.normal(0, 0.2, v.shape)).astype(np.float32) for k, v in policy.init(None, 1).items()}
        groups: dict[str, Any] = {"params": params}
        norm = None
        if use_norm:
            norm = RunningNorm(OBS.shape[0])
            norm.update(rng.normal(0.5, 2.0, (256, OBS.shape[0])).astype(np.float32))
            groups["obs_norm"] = norm.state_dict()
        config = {"policy": kind, "hidden_size": 16, "num_layers": 2, "activation": "tanh", "env_kwargs": {}}
        meta = {"env": "runtimes", "backend": "torch", "config": config, "observation_space": OBS.to_json(),
                "action_space": action_space.to_json(), "structured_observation_space": None}
        export(checkpoint.save(d / f"run-{name}", 1, groups, meta), d / f"{name}.onnx", sample_graph=True)
        steps = LSTM_STEPS if policy.recurrent else 1
        obs = [rng.normal(0.5, 2.0, (BATCH, OBS.shape[0])).astype(np.float32) for _ in range(steps)]
        noise = [policy.head.noise(rng, BATCH) for _ in range(steps)]
        host_obs = [o if norm is None else norm(o, np.empty_like(o)) for o in obs]
        reference[name] = _reference(policy, params, host_obs, noise)
        spec["cases"][name] = {
            "model": f"{name}.onnx", "batch": BATCH, "obs_dim": OBS.shape[0], "noise_dim": policy.head.noise_dim,
            "obs": [o.ravel().tolist() for o in obs], "noise": [n.ravel().tolist() for n in noise],
            "state": [[n, 16] for n in (("h", "c") if policy.recurrent else ())]}
    (d / "spec.json").write_text(json.dumps(spec))
    return d, reference


def _check(got: dict[str, Any], reference: dict[str, list[dict[str, np.ndarray]]], runtime: str) -> None:
    assert got.get("ok"), f"{runtime} failed: {got.get('error')}"
    results = got["results"]
    assert set(results) == set(reference)
    for name, steps in reference.items():
        assert len(results[name]) == len(steps), f"{runtime} {name}: {len(results[name])} steps"
        for t, (want, have) in enumerate(zip(steps, results[name])):
            for key, value in want.items():
                assert key in have, f"{runtime} {name} step {t}: no output {key!r} (has {sorted(have)})"
                np.testing.assert_allclose(np.asarray(have[key], np.float64).reshape(value.shape), value,
                                           rtol=TOL, atol=TOL, err_msg=f"{key}: {runtime} vs torch, {name} step {t}")


def _old_onnxruntimes() -> list[tuple[str, str]]:
    """(onnxruntime, numpy) versions to test on this Python: its oldest wheel and the quirky 1.20.0."""
    key = sys.version_info[:2]
    if key not in OLDEST_ONNXRUNTIME:
        return [("unknown", "")]  # the test fails, saying how to record this Python's oldest wheel
    return list(dict.fromkeys([OLDEST_ONNXRUNTIME[key], QUIRKY_ONNXRUNTIME]))


def _install_onnxruntime(version: str, numpy_version: str) -> Path:
    """onnxruntime `version` and numpy `numpy_version`, installed with pip --target into the cache."""
    key = sys.version_info[:2]
    if version == "unknown":
        pytest.fail(f"no oldest onnxruntime is recorded for Python {key[0]}.{key[1]}: find it with "
                    "`pip index versions onnxruntime` and add it to OLDEST_ONNXRUNTIME in tests/test_runtimes.py")
    target = CACHE / f"onnxruntime-{version}-py{key[0]}{key[1]}"
    if (target / "onnxruntime" / "__init__.py").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
           "--target", str(partial), f"onnxruntime=={version}", f"numpy=={numpy_version}"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as e:
        stderr = getattr(e, "stderr", "") or ""
        pytest.fail(f"could not install onnxruntime {version} for the old-runtime test ({e}):\n{stderr[-1500:]}\n"
                    f"install it by hand (needs network access to PyPI): {' '.join(cmd)} && mv {partial} {target}")
    partial.rename(target)  # only a complete install is ever found at `target`
    return target


def _run_deploy(cases_dir: Path, python_args: list[str], paths: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, *python_args, "-c", DEPLOY_RUNNER, str(cases_dir), *paths],
                         capture_output=True, text=True, timeout=300, cwd=cases_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize("version, numpy_version", _old_onnxruntimes())
def test_old_onnxruntime_matches_training_backend(cases: Any, version: str, numpy_version: str) -> None:
    cases_dir, reference = cases
    target = _install_onnxruntime(version, numpy_version)
    # -I -S: no site-packages, so the device's view: only the old onnxruntime, its numpy and puffer
    got = _run_deploy(cases_dir, ["-I", "-S"], [str(target), str(ROOT)])
    assert got["version"] == version
    _check(got, reference, f"onnxruntime {version}")


def test_todays_onnxruntime_matches_training_backend(cases: Any) -> None:
    import onnxruntime

    cases_dir, reference = cases
    got = _run_deploy(cases_dir, [], [str(ROOT)])
    assert got["version"] == onnxruntime.__version__
    _check(got, reference, f"onnxruntime {got['version']}")


@pytest.mark.parametrize("version", ORT_NODE_VERSIONS)
def test_onnxruntime_node_matches_training_backend(cases: Any, version: str) -> None:
    cases_dir, reference = cases
    node = shutil.which("node")
    if node is None:
        pytest.fail("onnxruntime-node needs Node.js: `sudo apt-get install nodejs npm` (./dev.sh test installs it)")
    package = npm_package("onnxruntime-node", version)
    out = subprocess.run([node, str(JS / "run_node.js"), str(cases_dir)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "NODE_PATH": str(package.parent)})
    assert out.returncode == 0, out.stderr[-3000:]
    _check(json.loads((cases_dir / "node_results.json").read_text()), reference, f"onnxruntime-node {version}")


@pytest.mark.parametrize("version", ORT_WEB_VERSIONS)
def test_onnxruntime_web_in_chromium_matches_training_backend(cases: Any, version: str, tmp_path: Path) -> None:
    cases_dir, reference = cases
    site = tmp_path / "site"
    shutil.copytree(cases_dir, site, ignore=shutil.ignore_patterns("run-*"))
    dist = npm_package("onnxruntime-web", version) / "dist"
    # the WASM-only build: its script and the .wasm/.mjs files it loads (their names changed across releases)
    for f in [dist / "ort.wasm.min.js", *dist.glob("ort-wasm*.wasm"), *dist.glob("ort-wasm*.mjs")]:
        shutil.copy(f, site / f.name)
    for f in ("runtimes.html", "run_cases.js"):
        shutil.copy(JS / f, site / f)
    got = run_page(site, "runtimes.html")
    assert got.get("ok"), got
    assert got["version"] == (None if version == "1.12.1" else version)  # 1.12 does not report its version
    _check(got, reference, f"onnxruntime-web {version} (WASM, Chromium)")
