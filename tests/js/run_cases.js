// Runs exported puffer policies for fixed inputs on an onnxruntime JavaScript package (onnxruntime-web in a
// browser, onnxruntime-node in Node), carrying recurrent state from step to step as puffer.deploy does.
// Used by tests/test_runtimes.py through runtimes.html (browser) and run_node.js (Node).
"use strict";

async function runCases(ort, spec, loadModel, sessionOptions) {
  const results = {};
  for (const [name, c] of Object.entries(spec.cases)) {
    const session = await ort.InferenceSession.create(await loadModel(c.model), sessionOptions);
    const tensor = (data, dims) => new ort.Tensor("float32", Float32Array.from(data), dims);
    let state = c.state.map(([, h]) => tensor(new Array(c.batch * h).fill(0), [c.batch, h]));
    const steps = [];
    for (let t = 0; t < c.obs.length; t++) {
      const feeds = { obs: tensor(c.obs[t], [c.batch, c.obs_dim]) };
      if (c.noise) feeds.noise = tensor(c.noise[t], [c.batch, c.noise_dim]);
      c.state.forEach(([n], i) => { feeds[n] = state[i]; });
      const out = await session.run(feeds);
      const record = {};
      // int64 outputs arrive as BigInt64Array; Number() makes them JSON numbers
      for (const k of session.outputNames) record[k] = Array.from(out[k].data, Number);
      state = c.state.map(([n]) => out[`${n}_out`]);
      steps.push(record);
    }
    results[name] = steps;
  }
  return results;
}

if (typeof module !== "undefined") module.exports = { runCases };
