"""Exported ONNX policies compute what the training backend computes.

For every training backend and every policy kind (MLP with discrete, multi-discrete, continuous and
mixed heads; LSTM over 50 steps of carried state), onnxruntime through `puffer.deploy` matches the
backend's own compiled forward within 1e-5 at batch sizes 1, 7 and 1024 (action, distribution
parameters, value, state, and the sampling graph's actions and log-probabilities for the same noise),
and `onnx.reference.ReferenceEvaluator` agrees with onnxruntime (every step at batch 1 and 7, the
first at 1024: the pure-numpy evaluator is slow).

Parameters are produced by the backend under test: the policy's seeded init followed by a real
PPO update (`puffer.algos.numerics.gradient_update` of PPO's loss: gradients, clipping, Adam) on a random minibatch
with a large learning rate, so every weight has moved by that backend's arithmetic. A full training
run per backend would make the suite minutes long without exercising any more of the exporter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from puffer import checkpoint, optim, spaces
from puffer.algos.numerics import gradient_update
from puffer.algos.ppo import LossStatic, hyper_arrays, ppo_loss
from puffer.policies import make_policy
from puffer.train import RunningNorm

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx.reference import ReferenceEvaluator  # noqa: E402 - after the importorskip above

from puffer.deploy import Policy  # noqa: E402
from puffer.export import export  # noqa: E402

TOL = 1e-5
BATCHES = (1, 7, 1024)
LSTM_STEPS = 50
OBS = spaces.Box(-3.0, 3.0, (5,), np.float32)
# name -> (policy kind, action space, observation normalization on)
CASES: dict[str, tuple[str, spaces.Space, bool]] = {
    "mlp-discrete": ("mlp", spaces.Discrete(4), False),
    "mlp-multidiscrete": ("mlp", spaces.MultiDiscrete([3, 2, 5]), False),
    "mlp-continuous": ("mlp", spaces.Box(-1.0, 1.0, (3,), np.float32), True),
    "mlp-mixed": ("mlp", spaces.Tuple((spaces.MultiDiscrete([2, 3]), spaces.Box(-1.0, 1.0, (2,), np.float32))),
                  False),
    "lstm-mixed": ("lstm", spaces.Tuple((spaces.MultiDiscrete([3, 2]), spaces.Box(-1.0, 1.0, (2,), np.float32))),
                   True),
}
HIDDEN = 16
UPDATES = 1


def _trained_params(be: Any, policy: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded init plus `UPDATES` PPO updates computed by `be` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    head = policy.head
    seqs, length = 8, 4 if policy.recurrent else 1
    actions = np.zeros((seqs, length, head.action_dim), np.float32)
    nvec = ([head.discrete.n] if hasattr(head.discrete, "n") else list(head.discrete.nvec)) if head.discrete else []
    for i, n in enumerate(nvec):
        actions[..., i] = rng.integers(0, n, (seqs, length))
    actions[..., len(nvec):] = rng.standard_normal((seqs, length, head.num_continuous))
    shape = (seqs, length)
    mb = {"obs": rng.standard_normal((*shape, policy.obs_dim)).astype(np.float32), "actions": actions,
          "logp": rng.uniform(-3, -0.5, shape).astype(np.float32), "values": rng.standard_normal(shape),
          "mask": np.ones(shape), "starts": np.zeros(shape), "adv": rng.standard_normal(shape),
          "returns": rng.standard_normal(shape)}
    mb = {k: be.asarray(np.asarray(v, np.float32)) for k, v in mb.items()}
    mb["state"] = policy.initial_state(be, seqs)
    params = policy.init(be, seed)
    opt_state = optim.adam.init(be, params)
    update = gradient_update(be, lambda p, mb, consts, hyper: ppo_loss(be, policy, LossStatic(), p, mb, hyper))
    if be.name == "jax":
        # eager jax compiles every primitive it dispatches; one jit of the whole update is cheaper
        update = be.compile(update)
    hyper = hyper_arrays(be, {"lr": 0.05, "clip_coef": 0.2, "vf_clip": 0.2, "vf_coef": 0.5, "ent_coef": 0.01,
                              "max_grad_norm": 0.5})
    for _ in range(UPDATES):
        params, opt_state, _ = update(params, opt_state, mb, {}, hyper)
    return {k: np.asarray(be.to_numpy(v), np.float32) for k, v in params.items()}


def _save_run(tmp: Path, be_name: str, kind: str, action_space: spaces.Space, params: dict[str, np.ndarray],
              obs_norm: dict[str, np.ndarray] | None) -> Path:
    groups = {"params": params}
    if obs_norm is not None:
        groups["obs_norm"] = obs_norm
    config = {"policy": kind, "hidden_size": HIDDEN, "num_layers": 2, "activation": "tanh", "env_kwargs": {}}
    meta = {"env": "parity", "backend": be_name, "config": config, "observation_space": OBS.to_json(),
            "action_space": action_space.to_json(), "structured_observation_space": None}
    return checkpoint.save(tmp / "run", 1, groups, meta)


def _backend_forward(be: Any, policy: Any) -> Any:
    """The backend's compiled forward: every quantity the exported graph outputs."""
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

    return be.compile(forward)


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    # the cheap check first: assert_allclose costs ~1 ms a call and runs thousands of times here
    if got.shape != want.shape or not np.all(np.abs(got - want) <= TOL + TOL * np.abs(want)):
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL, err_msg=what)


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_matches_training_backend(tbe: Any, case: str, tmp_path: Path) -> None:
    kind, action_space, use_norm = CASES[case]
    policy = make_policy(OBS, action_space, kind, HIDDEN, 2, "tanh")
    params = _trained_params(tbe, policy)
    rng = np.random.default_rng(1)
    norm = None
    if use_norm:
        norm = RunningNorm(OBS.shape[0])
        norm.update(rng.normal(0.5, 2.0, (256, OBS.shape[0])).astype(np.float32))
    path = export(_save_run(tmp_path, tbe.name, kind, action_space, params, None if norm is None else
                            norm.state_dict()), tmp_path / "policy.onnx", sample_graph=True)
    deployed = Policy.load(path)
    reference = ReferenceEvaluator(str(path))
    ref_names = [o.name for o in onnx.load(str(path)).graph.output]
    forward = _backend_forward(tbe, policy)
    bparams = {k: tbe.asarray(v) for k, v in params.items()}
    steps = LSTM_STEPS if policy.recurrent else 1
    for batch in BATCHES:
        b_state = policy.initial_state(tbe, batch)
        o_state = deployed.initial_state(batch)
        for t in range(steps):
            obs = rng.normal(0.5, 2.0, (batch, OBS.shape[0])).astype(np.float32)
            noise = policy.head.noise(rng, batch)
            x = obs if norm is None else norm(obs, np.empty_like(obs))
            b_out, b_state = forward(bparams, tbe.asarray(x), b_state, tbe.asarray(noise))
            got = deployed.forward(obs, o_state, noise)
            feeds = {"obs": obs, "noise": noise, **dict(zip(("h", "c"), o_state))}
            # the pure-numpy reference is slow: every step at batch 1 and 7, the first step at 1024
            check_ref = batch < 1024 or t == 0
            ref = dict(zip(ref_names, reference.run(None, feeds))) if check_ref else None
            where = f"{tbe.name} {case} batch {batch} step {t}"
            for name, value in b_out.items():
                _close(got[name], tbe.to_numpy(value), f"{name}: onnxruntime vs {where}")
                if check_ref:
                    _close(ref[name], got[name], f"{name}: ReferenceEvaluator vs onnxruntime, {where}")
            for i, (name, _) in enumerate(deployed.state_spec):
                _close(got[f"{name}_out"], tbe.to_numpy(b_state[i]), f"state {name}: onnxruntime vs {where}")
                if check_ref:
                    _close(ref[f"{name}_out"], got[f"{name}_out"], f"state {name}: ReferenceEvaluator, {where}")
            o_state = tuple(got[f"{name}_out"] for name, _ in deployed.state_spec)
