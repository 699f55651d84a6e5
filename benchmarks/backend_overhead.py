"""Overhead of puffer's backend layer: one PPO-shaped training step, puffer vs the same step written natively.

The step: MLP 8 -> 64 -> 64 -> (4 logits + 1 value), tanh, batch 1024, clipped-ratio + value +
entropy loss, backward, Adam. Puffer's version is single-source (puffer.nn, puffer.optim,
be.value_and_grad, be.compile); the natives are plain torch (nn.Module + torch.optim.Adam), plain
JAX (jax.jit of value_and_grad + hand-written Adam) and plain tinygrad (nn.optim.Adam + TinyJit).
The batch is already on the device for both; every step ends by reading the loss as a float. Steps
alternate puffer/native so drift hits both alike; it prints the median of each and their ratio.

    python benchmarks/backend_overhead.py [--steps 300] [--backends torch jax tinygrad]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import puffer
from puffer import nn, optim

B, SIZES, CLIP, VF, ENT, LR = 1024, [8, 64, 64, 5], 0.2, 0.5, 0.01, 2.5e-4


def make_batch(seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {"obs": g.normal(size=(B, 8)).astype(np.float32), "act": g.integers(0, 4, B).astype(np.int64),
            "logp": np.full(B, -np.log(4), np.float32) + g.normal(0, 0.1, B).astype(np.float32),
            "adv": g.normal(size=B).astype(np.float32), "ret": g.normal(size=B).astype(np.float32)}


def puffer_step(be):
    """A compiled puffer step and its initial state."""
    xp = be.xp

    def loss_fn(params, batch, hyper):
        out = nn.mlp.apply(be, params, batch["obs"], "tanh")
        logits, value = out[:, :4], out[:, 4]
        logp_all = be.log_softmax(logits, axis=-1)
        new_logp = xp.squeeze(be.take_along_axis(logp_all, xp.expand_dims(batch["act"], axis=-1), axis=-1), axis=-1)
        ratio = xp.exp(new_logp - batch["logp"])
        adv = (batch["adv"] - xp.mean(batch["adv"])) / (xp.std(batch["adv"]) + 1e-8)
        pg = xp.mean(xp.maximum(-adv * ratio, -adv * xp.clip(ratio, 1.0 - hyper["clip"], 1.0 + hyper["clip"])))
        v = 0.5 * xp.mean((value - batch["ret"]) ** 2)
        ent = xp.mean(-xp.sum(xp.exp(logp_all) * logp_all, axis=-1))
        return pg + VF * v - ENT * ent

    grad = be.value_and_grad(loss_fn)

    def step(params, opt_state, batch, hyper):
        loss, grads = grad(params, batch, hyper)
        params, opt_state = optim.adam.update(be, params, grads, opt_state, hyper["lr"])
        return params, opt_state, loss

    params = nn.mlp.init(be, 0, SIZES)
    state = {"params": params, "opt": optim.adam.init(be, params),
             "batch": {k: be.asarray(v) for k, v in make_batch().items()},
             "hyper": {"lr": be.asarray(np.float32(LR)), "clip": be.asarray(np.float32(CLIP))}}
    fn = be.compile(step, donate=(0, 1))

    def run():
        state["params"], state["opt"], loss = fn(state["params"], state["opt"], state["batch"], state["hyper"])
        return float(be.to_numpy(loss))

    return run


def native_torch():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 5))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    b = {k: torch.from_numpy(v) for k, v in make_batch().items()}

    def run():
        out = net(b["obs"])
        logits, value = out[:, :4], out[:, 4]
        logp_all = torch.log_softmax(logits, -1)
        ratio = torch.exp(logp_all.gather(-1, b["act"][:, None])[:, 0] - b["logp"])
        adv = (b["adv"] - b["adv"].mean()) / (b["adv"].std(correction=0) + 1e-8)
        pg = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - CLIP, 1 + CLIP)).mean()
        v = 0.5 * ((value - b["ret"]) ** 2).mean()
        ent = (-(logp_all.exp() * logp_all).sum(-1)).mean()
        loss = pg + VF * v - ENT * ent
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return run


def native_jax():
    import jax
    import jax.numpy as jnp

    params = {k: jnp.asarray(v) for k, v in nn.mlp.init(None, 0, SIZES).items()}
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    b = {k: jnp.asarray(x) for k, x in make_batch().items()}

    def loss_fn(p, b):
        h = jnp.tanh(b["obs"] @ p["0/w"] + p["0/b"])
        h = jnp.tanh(h @ p["1/w"] + p["1/b"])
        out = h @ p["2/w"] + p["2/b"]
        logits, value = out[:, :4], out[:, 4]
        logp_all = jax.nn.log_softmax(logits)
        ratio = jnp.exp(jnp.take_along_axis(logp_all, b["act"][:, None], -1)[:, 0] - b["logp"])
        adv = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
        pg = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - CLIP, 1 + CLIP)).mean()
        return pg + VF * 0.5 * ((value - b["ret"]) ** 2).mean() - ENT * (-(jnp.exp(logp_all) * logp_all).sum(-1)).mean()

    @jax.jit
    def step(p, m, v, t, b):
        loss, g = jax.value_and_grad(loss_fn)(p, b)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        c1, c2 = 1 - 0.9**t, 1 - 0.999**t
        p = jax.tree_util.tree_map(lambda p, m, v: p - LR * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), p, m, v)
        return p, m, v, t, loss

    state = [params, m, v, jnp.float32(0)]

    def run():
        *state[:], loss = step(*state, b)
        return float(loss)

    return run


def native_tinygrad():
    from tinygrad import Tensor, TinyJit
    from tinygrad import nn as tnn
    from tinygrad.helpers import Context

    p = nn.mlp.init(None, 0, SIZES)
    layers = [tnn.Linear(64 if i else 8, 64 if i < 2 else 5) for i in range(3)]
    for i, lyr in enumerate(layers):
        lyr.weight = Tensor(p[f"{i}/w"].T.copy()).realize()
        lyr.bias = Tensor(p[f"{i}/b"]).realize()
    params = [t for lyr in layers for t in (lyr.weight, lyr.bias)]
    opt = tnn.optim.Adam(params, lr=LR)
    b = {k: Tensor(x).realize() for k, x in make_batch().items()}

    @TinyJit
    def step():
        with Context(TRAINING=1):
            out = layers[2](layers[1](layers[0](b["obs"]).tanh()).tanh())
            logits, value = out[:, :4], out[:, 4]
            logp_all = logits.log_softmax(-1)
            ratio = (logp_all.gather(-1, b["act"].unsqueeze(-1))[:, 0] - b["logp"]).exp()
            adv = (b["adv"] - b["adv"].mean()) / (b["adv"].std(correction=0) + 1e-8)
            pg = (-adv * ratio).maximum(-adv * ratio.clip(1 - CLIP, 1 + CLIP)).mean()
            ent = (-(logp_all.exp() * logp_all).sum(-1)).mean()
            loss = pg + VF * 0.5 * ((value - b["ret"]) ** 2).mean() - ENT * ent
            opt.zero_grad()
            loss.backward()
            Tensor.realize(loss, *opt.schedule_step())
            return loss

    def run():
        return float(step().numpy())

    return run


NATIVE = {"torch": native_torch, "jax": native_jax, "tinygrad": native_tinygrad}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--backends", nargs="*", default=[b for b in NATIVE if b in puffer.backends.available()])
    a = p.parse_args()
    for name in a.backends:
        mine, native = puffer_step(puffer.backend(name)), NATIVE[name]()
        for _ in range(a.warmup):
            mine(), native()
        tm, tn = [], []
        for _ in range(a.steps):
            t0 = time.perf_counter()
            mine()
            t1 = time.perf_counter()
            native()
            t2 = time.perf_counter()
            tm.append(t1 - t0)
            tn.append(t2 - t1)
        m, n = statistics.median(tm), statistics.median(tn)
        print(f"{name}: puffer {m * 1e3:.3f} ms, native {n * 1e3:.3f} ms (median of {a.steps} steps)")
        print(f"overhead {name} {m / n:.3f}")


if __name__ == "__main__":
    main()
