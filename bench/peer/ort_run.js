#!/usr/bin/env node
'use strict';
// Runs an ONNX model with ONNX Runtime's CPU provider, the peer that edgeserve
// is compared with and measured against.
//
//   node ort_run.js MODEL.onnx [--input NAME=FILE.pb]... [--random]
//        [--threads N] [--warmup N] [--iters N] [--save-outputs DIR] [--json]
//
// Inputs are TensorProto files (.pb). --random fills the inputs not given
// with seeded random data (float: standard normal, int: [0, 100), symbolic
// dims: 1). --save-outputs writes DIR/output_<i>.pb, graph output i in the
// model's output order, each TensorProto named after its output (the layout
// of the ONNX backend test data). The outputs saved are those of the first
// run. Latency is wall time of session.run(), so it includes the Node
// binding's per-call overhead (tens of microseconds).

const fs = require('fs');
const path = require('path');
const { decodeTensor, encodeTensor } = require('./tensor_proto');

const USAGE = 'usage: node ort_run.js MODEL.onnx [--input NAME=FILE.pb]... [--random] ' +
  '[--threads N] [--warmup N] [--iters N] [--save-outputs DIR] [--json]';

function die(msg, code = 2) {
  process.stderr.write(`ort_run: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const opt = { model: null, inputs: [], random: false, threads: 1, warmup: 5,
    iters: 20, saveOutputs: null, json: false };
  const intArg = (name, v, min) => {
    if (v === undefined || !/^\d+$/.test(v) || Number(v) < min) {
      die(`${name} needs an integer >= ${min}, got '${v}'`);
    }
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--input': {
        const v = argv[++i];
        const eq = v ? v.indexOf('=') : -1;
        if (eq <= 0) die(`--input needs NAME=FILE, got '${v}'`);
        opt.inputs.push([v.slice(0, eq), v.slice(eq + 1)]);
        break;
      }
      case '--random': opt.random = true; break;
      case '--threads': opt.threads = intArg(a, argv[++i], 1); break;
      case '--warmup': opt.warmup = intArg(a, argv[++i], 0); break;
      case '--iters': opt.iters = intArg(a, argv[++i], 1); break;
      case '--save-outputs':
        opt.saveOutputs = argv[++i];
        if (!opt.saveOutputs) die('--save-outputs needs a directory');
        break;
      case '--json': opt.json = true; break;
      case '-h': case '--help': process.stdout.write(USAGE + '\n'); process.exit(0); break;
      default:
        if (a.startsWith('-')) die(`unknown option '${a}'\n${USAGE}`);
        if (opt.model) die(`more than one model given ('${opt.model}', '${a}')`);
        opt.model = a;
    }
  }
  if (!opt.model) die(USAGE);
  return opt;
}

// Small deterministic generator (mulberry32 + Box-Muller), so --random inputs
// are the same on every run.
function rng(seed) {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
  return { u, normal };
}

function randomTensor(ort, meta, seed) {
  if (!meta || !meta.isTensor) die(`input '${meta && meta.name}' is not a tensor; give it with --input`);
  const dims = meta.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : 1));
  const n = dims.reduce((a, b) => a * b, 1);
  const g = rng(seed);
  const make = {
    float32: () => Float32Array.from({ length: n }, g.normal),
    float64: () => Float64Array.from({ length: n }, g.normal),
    int64: () => BigInt64Array.from({ length: n }, () => BigInt(Math.floor(g.u() * 100))),
    int32: () => Int32Array.from({ length: n }, () => Math.floor(g.u() * 100)),
    bool: () => Uint8Array.from({ length: n }, () => (g.u() < 0.5 ? 1 : 0)),
  }[meta.type];
  if (!make) die(`--random cannot make input '${meta.name}' of type ${meta.type}`);
  return new ort.Tensor(meta.type, make(), dims);
}

function percentile(sorted, p) { // nearest rank
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[k];
}

async function main() {
  const opt = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    die(`cannot load onnxruntime-node (run bench/peer/setup first): ${e.message}`);
  }
  if (!fs.existsSync(opt.model)) die(`model '${opt.model}' not found`);

  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(opt.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: opt.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  const createMs = Number(process.hrtime.bigint() - t0) / 1e6;

  const feeds = {};
  for (const [name, file] of opt.inputs) {
    if (!session.inputNames.includes(name)) {
      die(`model has no input '${name}' (inputs: ${session.inputNames.join(', ')})`);
    }
    let t;
    try {
      t = decodeTensor(fs.readFileSync(file));
    } catch (e) {
      die(`input '${name}' from '${file}': ${e.message}`);
    }
    feeds[name] = new ort.Tensor(t.type, t.data, t.dims);
  }
  session.inputNames.forEach((name, i) => {
    if (feeds[name]) return;
    if (!opt.random) die(`input '${name}' not given (use --input ${name}=FILE.pb or --random)`);
    const meta = (session.inputMetadata || []).find((m) => m.name === name);
    feeds[name] = randomTensor(ort, meta, 1234 + i);
  });

  let firstOutputs = null;
  const runOnce = async () => {
    const s = process.hrtime.bigint();
    const out = await session.run(feeds);
    const ms = Number(process.hrtime.bigint() - s) / 1e6;
    if (!firstOutputs) firstOutputs = out;
    return ms;
  };
  const warmupMs = [];
  for (let i = 0; i < opt.warmup; i++) warmupMs.push(await runOnce());
  const lat = [];
  for (let i = 0; i < opt.iters; i++) lat.push(await runOnce());
  const sorted = [...lat].sort((a, b) => a - b);
  const mean = lat.reduce((a, b) => a + b, 0) / lat.length;

  const outputs = session.outputNames.map((name) => {
    const t = firstOutputs[name];
    return { name, type: t.type, dims: [...t.dims], tensor: t };
  });
  if (opt.saveOutputs) {
    fs.mkdirSync(opt.saveOutputs, { recursive: true });
    outputs.forEach((o, i) => {
      fs.writeFileSync(path.join(opt.saveOutputs, `output_${i}.pb`),
        encodeTensor({ name: o.name, type: o.type, dims: o.dims, data: o.tensor.data }));
    });
  }

  const result = {
    runtime: 'onnxruntime-node',
    version: ort.env.versions ? ort.env.versions.node : undefined,
    model: opt.model,
    threads: opt.threads,
    session_create_ms: createMs,
    first_run_ms: warmupMs.length ? warmupMs[0] : lat[0],
    warmup: opt.warmup,
    iters: opt.iters,
    p50_ms: percentile(sorted, 50),
    p90_ms: percentile(sorted, 90),
    p99_ms: percentile(sorted, 99),
    mean_ms: mean,
    min_ms: sorted[0],
    max_ms: sorted[sorted.length - 1],
    inputs: session.inputNames.map((n) => ({ name: n, type: feeds[n].type, dims: [...feeds[n].dims] })),
    outputs: outputs.map(({ name, type, dims }) => ({ name, type, dims })),
  };
  if (opt.json) {
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  const f = (x) => x.toFixed(3);
  const shapes = (list) => list.map((t) => `${t.name} ${t.type}[${t.dims.join(',')}]`).join(', ');
  process.stdout.write(
    `model          ${opt.model}\n` +
    `runtime        onnxruntime-node ${result.version} cpu, ${opt.threads} thread(s), opt level all\n` +
    `inputs         ${shapes(result.inputs)}\n` +
    `outputs        ${shapes(result.outputs)}\n` +
    `session create ${f(createMs)} ms\n` +
    `first run      ${f(result.first_run_ms)} ms\n` +
    `latency        p50 ${f(result.p50_ms)} ms  p90 ${f(result.p90_ms)} ms  ` +
    `p99 ${f(result.p99_ms)} ms  (mean ${f(mean)}, min ${f(sorted[0])}, ${opt.iters} iters ` +
    `after ${opt.warmup} warmup)\n` +
    (opt.saveOutputs ? `saved          ${outputs.length} output(s) to ${opt.saveOutputs}\n` : ''));
}

main().catch((e) => die(e && e.message ? e.message : String(e), 1));
