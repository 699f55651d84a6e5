// The page of `puffer export --web`: runs policy.onnx on onnxruntime-web (WASM) and plays the env's JavaScript
// port on a canvas, or, for envs without a port, runs the policy on observations typed into the page.
// URL options: ?episodes=N plays N episodes, ?fast=1 skips the 50 fps animation, ?seed=S seeds resets,
// ?report=1 POSTs the results as JSON to ./result (how tests/test_runtimes.py reads them).
"use strict";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

// typed array and onnxruntime type of each observation dtype puffer exports
const DTYPES = {
  float32: ["float32", (a) => Float32Array.from(a)], float64: ["float64", (a) => Float64Array.from(a)],
  int32: ["int32", (a) => Int32Array.from(a)], int64: ["int64", (a) => BigInt64Array.from(a, (v) => BigInt(v))],
  uint8: ["uint8", (a) => Uint8Array.from(a)],
};

function mulberry32(seed) {  // a small seeded uniform generator for env resets
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.body.appendChild(s);
  });
}

async function report(result) {
  if (params.get("report")) await fetch("result", { method: "POST", body: JSON.stringify(result) });
}

// A batch-of-`batch` view of the exported policy that carries its recurrent state between calls.
class Policy {
  constructor(session, info) {
    this.session = session;
    this.info = info;
    this.batch = 1;
    this.reset(1);
  }

  reset(batch) {
    this.batch = batch;
    // puffer.state lists [name, [trailing dims...]] (older exports: [name, width])
    this.state = this.info.state.map(([, dims]) => {
      const shape = [batch, ...[].concat(dims)];
      return new ort.Tensor("float32", new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    });
  }

  async run(rows) {  // rows: list of observations -> every model output, row-major
    if (rows.length !== this.batch) this.reset(rows.length);
    const [type, make] = DTYPES[this.info.obs_dtype];
    const feeds = { obs: new ort.Tensor(type, make(rows.flat()), [rows.length, this.info.obs_dim]) };
    this.info.state.forEach(([n], i) => { feeds[n] = this.state[i]; });
    if (this.info.sample_graph) {  // the deterministic outputs ignore the sampler's noise
      const d = this.info.head.noise_dim;
      feeds.noise = new ort.Tensor("float32", new Float32Array(rows.length * d), [rows.length, d]);
    }
    const out = await this.session.run(feeds);
    this.state = this.info.state.map(([n]) => out[`${n}_out`]);
    const result = {};
    for (const k of this.session.outputNames) result[k] = Array.from(out[k].data, Number);
    return result;
  }
}

async function play(policy, info) {
  $("play").hidden = false;
  const ctx = $("env").getContext("2d");
  const random = mulberry32(Number(params.get("seed") ?? Math.floor(Math.random() * 2 ** 31)));
  const env = window.pufferEnvs[info.env](random, info.env_kwargs);
  const episodes = Number(params.get("episodes") ?? Infinity);
  const fast = Boolean(params.get("fast"));
  const returns = [];
  const show = (ret, steps) => {
    const done = returns.length ? ` · finished episodes: ${returns.join(", ")}` : "";
    $("status").textContent = `episode ${returns.length + 1} · return ${ret} (step ${steps})${done}`;
  };
  while (returns.length < episodes) {
    let obs = env.reset();
    policy.reset(1);
    let ret = 0, steps = 0;
    for (;;) {
      const action = Math.round((await policy.run([obs])).action[0]);
      const r = env.step(action);
      obs = r.obs;
      ret += r.reward;
      steps += 1;
      if (!fast || r.terminated || r.truncated) {
        env.draw(ctx);
        show(ret, steps);
        if (!fast) await new Promise((resolve) => setTimeout(resolve, 20));  // tau = 0.02 s: real time
      }
      if (r.terminated || r.truncated) break;
    }
    returns.push(ret);
    show(ret, steps);
  }
  await report({ ok: true, mode: "play", returns });
}

async function manual(policy, info) {
  $("manual").hidden = false;
  $("notice").textContent = `No JavaScript port of this env, so nothing is drawn: ${info.notice}. ` +
    "The policy runs on the observations you enter below.";
  $("obs").value = JSON.stringify([new Array(info.obs_dim).fill(0)]);
  const run = async () => {
    let rows = JSON.parse($("obs").value);
    if (!Array.isArray(rows[0])) rows = [rows];
    if (rows.some((r) => r.length !== info.obs_dim)) throw new Error(`each observation needs ${info.obs_dim} numbers`);
    const out = await policy.run(rows);
    $("out").textContent = Object.entries(out).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join("\n");
    return out;
  };
  $("run").onclick = () => run().catch((e) => { $("out").textContent = `error: ${e.message}`; });
  $("reset").onclick = () => policy.reset(policy.batch);
  if (params.get("report")) await report({ ok: true, mode: "manual", notice: $("notice").textContent,
                                           outputs: await run() });
}

(async () => {
  try {
    ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which plain static servers lack
    ort.env.wasm.wasmPaths = "./";
    const info = await (await fetch("policy.json")).json();
    const session = await ort.InferenceSession.create("policy.onnx", { executionProviders: ["wasm"] });
    $("meta").textContent = `env ${info.env} · action space ${info.action_space.type} · opset ${info.opset} · ` +
      `onnxruntime-web ${ort.env.versions.web} (WASM)`;
    const policy = new Policy(session, info);
    if (info.port) {
      await loadScript(info.port);
      await play(policy, info);
    } else {
      await manual(policy, info);
    }
  } catch (e) {
    $("meta").textContent = `error: ${e.message || e}`;
    await report({ ok: false, error: String((e && e.stack) || e) });
  }
})();
