// node run_node.js DIR: runs DIR/spec.json's cases on onnxruntime-node (resolved through NODE_PATH) and
// writes DIR/node_results.json.
"use strict";
const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");
const { runCases } = require("./run_cases.js");

const dir = process.argv[2];
const spec = JSON.parse(fs.readFileSync(path.join(dir, "spec.json"), "utf8"));
runCases(ort, spec, async (f) => fs.readFileSync(path.join(dir, f)), { executionProviders: ["cpu"] })
  .then((results) => fs.writeFileSync(path.join(dir, "node_results.json"), JSON.stringify({ ok: true, results })))
  .catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
