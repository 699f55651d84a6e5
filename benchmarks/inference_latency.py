"""Inference latency of the CartPole MLP policy: puffer.deploy against every framework, in one run.

    .venv/bin/python benchmarks/inference_latency.py [--run RUN_DIR] [--repeats 7] [--opsets 17,18]

Every contender computes the same deterministic action from the same weights (the CartPole MLP:
4 -> 64 -> 64 -> 2 actor and 4 -> 64 -> 64 -> 1 critic, tanh), starting from a numpy observation and
ending with numpy actions, so host<->device conversion is included where a framework needs it:
- puffer.deploy `Policy.act` (onnxruntime, pre-bound IOBinding buffers, 1 intra-op thread);
- torch eager under `torch.inference_mode`, jax.jit, tinygrad TinyJit and plain numpy, each running
  puffer's single-source forward (`policy.step` + `head.mode`) through its backend's `compile`;
- onnxruntime `InferenceSession.run` on the exported model, and the floor: `run_with_iobinding`
  with inputs and outputs bound once to preallocated buffers (no copy, no Python work per call), and
  the floor plus the one write any real call makes (a fresh observation into the bound buffer).
A last table compares the same policy exported at each of `--opsets` (default: the exporter's default
17 against 18) at batch 1, timed in one interleaved loop: puffer.deploy `act` and the IOBinding floor.
A figure is the best of `--repeats` timed loops (the least disturbed by other processes), in µs per
call. Ratios are against puffer.deploy; the targets at batch 1 are <= 0.25x torch eager and <= 1.5x
the IOBinding floor.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import puffer
from puffer import checkpoint, spaces
from puffer.policies import make_policy

OBS = spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT = spaces.Discrete(2)


def timeit(fns: dict[str, Callable[[], object]], repeats: int, budget: float = 0.1) -> dict[str, float]:
    """Best-of-`repeats` µs per call of each function; repeats interleave the functions, so a burst of
    load from other processes hits all of them alike instead of skewing one ratio."""
    loops = {}
    for label, fn in fns.items():
        for _ in range(20):
            fn()
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < 0.02:
            fn()
            n += 1
        loops[label] = max(10, int(n * budget / 0.02))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for label, fn in fns.items():
            t = time.perf_counter()
            for _ in range(loops[label]):
                fn()
            best[label] = min(best[label], (time.perf_counter() - t) / loops[label])
    return {label: us * 1e6 for label, us in best.items()}


def backend_actor(name: str, policy: Any, params: dict[str, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """numpy obs -> numpy actions through puffer's forward compiled by the backend `name`."""
    be = puffer.backend(name)
    p = {k: be.asarray(v) for k, v in params.items()}

    def forward(params, obs):
        dist, _, _ = policy.step(be, params, obs, ())
        return policy.head.mode(be, dist)

    step = be.compile(forward)
    if name == "torch":
        import torch

        def act(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return be.to_numpy(step(p, be.asarray(obs)))
        return act
    return lambda obs: be.to_numpy(step(p, be.asarray(obs)))


def measure(batch: int, deployed: Any, policy: Any, params: dict[str, np.ndarray], model: Path,
            repeats: int) -> dict[str, float]:
    """µs per call of every contender at `batch`."""
    import onnxruntime as ort

    obs = np.random.default_rng(0).standard_normal((batch, 4)).astype(np.float32)
    expected = deployed.act(obs)
    fns: dict[str, Callable[[], object]] = {"puffer.deploy act": lambda: deployed.act(obs)}
    for name, label in (("torch", "torch eager (inference_mode)"), ("jax", "jax.jit"),
                        ("tinygrad", "tinygrad TinyJit"), ("numpy", "numpy")):
        if name not in puffer.backends.available():
            continue
        act = backend_actor(name, policy, params)
        got = act(obs)[:, 0].astype(np.int64)
        assert np.array_equal(got, expected), f"{label} disagrees with puffer.deploy"
        fns[label] = lambda act=act: act(obs)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    fns["ORT InferenceSession.run"] = lambda: sess.run(["action"], {"obs": obs})
    binding = sess.io_binding()
    out = np.empty((batch, 1), np.float32)
    binding.bind_input("obs", "cpu", 0, np.float32, obs.shape, obs.ctypes.data)
    binding.bind_output("action", "cpu", 0, np.float32, out.shape, out.ctypes.data)
    fns["ORT pre-bound IOBinding (floor)"] = lambda: sess.run_with_iobinding(binding)
    # what any real call adds to the floor: writing a fresh observation into the bound buffer
    fresh = obs.copy()
    fns["floor + np.copyto(obs)"] = lambda: (np.copyto(obs, fresh), sess.run_with_iobinding(binding))
    return timeit(fns, repeats)


def measure_opsets(run: Path, opsets: list[int], tmp: Path, repeats: int) -> dict[str, float]:
    """µs per batch-1 call of puffer.deploy and the IOBinding floor for the policy exported at each opset."""
    import onnxruntime as ort

    from puffer.deploy import Policy
    from puffer.export import export

    obs = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    fns: dict[str, Callable[[], object]] = {}
    expected = None
    for opset in opsets:
        model = export(run, tmp / f"policy-opset{opset}.onnx", opset=opset)
        deployed = Policy.load(model)
        got = deployed.act(obs)
        expected = got if expected is None else expected
        assert np.array_equal(got, expected), f"opset {opset} disagrees with opset {opsets[0]}"
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        binding = sess.io_binding()
        out = np.empty((1, 1), np.float32)
        binding.bind_input("obs", "cpu", 0, np.float32, obs.shape, obs.ctypes.data)
        binding.bind_output("action", "cpu", 0, np.float32, out.shape, out.ctypes.data)
        fns[f"puffer.deploy act, opset {opset}"] = lambda deployed=deployed: deployed.act(obs)
        fns[f"ORT IOBinding floor, opset {opset}"] = lambda sess=sess, binding=binding: sess.run_with_iobinding(
            binding)
    return timeit(fns, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a trained CartPole run directory (default: seeded init)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--opsets", default="17,18", help="opsets to compare at batch 1 (comma-separated)")
    args = parser.parse_args()

    import onnxruntime as ort

    from puffer.deploy import Policy
    from puffer.export import export

    tmp = Path(tempfile.mkdtemp(prefix="puffer-latency-"))
    run = args.run
    if run is None:
        policy = make_policy(OBS, ACT, "mlp", 64, 2, "tanh")
        config = {"policy": "mlp", "hidden_size": 64, "num_layers": 2, "activation": "tanh", "env_kwargs": {}}
        meta = {"env": "cartpole", "backend": "numpy", "config": config, "observation_space": OBS.to_json(),
                "action_space": ACT.to_json(), "structured_observation_space": None}
        run = checkpoint.save(tmp / "run", 0, {"params": policy.init(None, 0)}, meta)
    groups, manifest = checkpoint.load(run)
    cfg = manifest["config"]
    policy = make_policy(spaces.from_json(manifest["observation_space"]), spaces.from_json(manifest["action_space"]),
                         cfg["policy"], cfg["hidden_size"], cfg["num_layers"], cfg["activation"])
    params = groups["params"]
    model = export(run, tmp / "policy.onnx")
    deployed = Policy.load(model)
    print(f"onnxruntime {ort.__version__}; installed backends: {puffer.backends.available()}")

    for batch in (1, 1024):
        results = measure(batch, deployed, policy, params, model, args.repeats)
        ours = results["puffer.deploy act"]
        print(f"\nbatch {batch}: µs per call (best of {args.repeats}), ratio = puffer.deploy / other")
        for label, us in results.items():
            print(f"  {label:34s} {us:10.1f} µs   ratio {ours / us:6.2f}x")
        if batch == 1:
            torch_us = results.get("torch eager (inference_mode)")
            floor = results["ORT pre-bound IOBinding (floor)"]
            if torch_us is not None:
                print(f"  target puffer.deploy <= 0.25x torch eager: {ours / torch_us:.2f}x "
                      f"{'met' if ours <= 0.25 * torch_us else 'NOT met'}")
            print(f"  target puffer.deploy <= 1.5x IOBinding floor: {ours / floor:.2f}x "
                  f"{'met' if ours <= 1.5 * floor else 'NOT met'}")

    opsets = [int(o) for o in args.opsets.split(",") if o.strip()]
    results = measure_opsets(Path(run), opsets, tmp, args.repeats)
    print(f"\nbatch 1 by export opset: µs per call (best of {args.repeats}, one interleaved loop)")
    for label, us in results.items():
        print(f"  {label:34s} {us:10.1f} µs")


if __name__ == "__main__":
    main()
