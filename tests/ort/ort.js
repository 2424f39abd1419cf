#!/usr/bin/env node
// ONNX Runtime as the reference the test suite and the benchmarks compare compress against.
//
//   node tests/ort/ort.js run   MODEL OUTDIR IN0.npy [IN1.npy ...] [--threads N]
//       runs the model once; writes OUTDIR/output_K.npy for each output, in the model's order.
//   node tests/ort/ort.js runlist JOBS.json [--threads N]
//       JOBS.json is [{"model", "inputs": [npy...], "out": dir}, ...]; runs each like `run` in one process and
//       prints one JSON line per job: {"index", "ok", "error"} (a model ONNX Runtime rejects is not fatal).
//   node tests/ort/ort.js eval  MODEL IMAGES.npy [LABELS.npy] [--batch B] [--threads N] [--preds OUT.npy]
//       top-1 over all rows of IMAGES (single-input models); prints JSON.
//   node tests/ort/ort.js bench MODEL IMAGES.npy [--batch B] [--threads N] [--min-seconds S]
//       repeated runs on the first B rows; prints JSON with the median and mean seconds per run.
//   node tests/ort/ort.js optimize MODEL OUT.onnx
//       writes the graph ONNX Runtime runs after its portable optimizations (level "extended": constant
//       folding, QDQ fusion into integer kernels; no hardware-specific layouts).
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));

const DTYPES = {
  '<f4': ['float32', Float32Array], '<f8': ['float64', Float64Array], '<i8': ['int64', BigInt64Array],
  '<i4': ['int32', Int32Array], '<i2': ['int16', Int16Array], '|i1': ['int8', Int8Array],
  '|u1': ['uint8', Uint8Array], '<u2': ['uint16', Uint16Array], '|b1': ['bool', Uint8Array],
  '<f2': ['float16', Uint16Array],
};

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.readUInt32BE(0) !== 0x934e554d) throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter((s) => s)
      .map(Number);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order not supported`);
  const [type, Ctor] = DTYPES[descr] || [];
  if (!type) throw new Error(`${file}: unsupported dtype ${descr}`);
  const offset = start + headerLen;
  const bytes = buf.subarray(offset);
  const data = new Ctor(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  return {type, shape, data: type === 'bool' ? Uint8Array.from(data) : data};
}

const DESCR_OF = {float32: '<f4', float64: '<f8', int64: '<i8', int32: '<i4', int16: '<i2', int8: '|i1',
  uint8: '|u1', uint16: '<u2', bool: '|b1', float16: '<f2'};

function writeNpy(file, type, shape, data) {
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${DESCR_OF[type]}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const pre = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(pre);
  pre.writeUInt16LE(header.length, 8);
  const body = type === 'bool' ? Buffer.from(Uint8Array.from(data, (v) => (v ? 1 : 0))) :
                                 Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
}

function toOrtTensor(npy) {
  if (npy.type === 'float16') return new ort.Tensor('float16', npy.data, npy.shape);
  if (npy.type === 'bool') return new ort.Tensor('bool', npy.data, npy.shape);
  return new ort.Tensor(npy.type, npy.data, npy.shape);
}

function parseArgs(argv) {
  const opts = {threads: 1, batch: 64, minSeconds: 2, preds: null};
  const pos = [];
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a === '--threads') opts.threads = Number(argv[++i]);
    else if (a === '--batch') opts.batch = Number(argv[++i]);
    else if (a === '--min-seconds') opts.minSeconds = Number(argv[++i]);
    else if (a === '--preds') opts.preds = argv[++i];
    else pos.push(a);
  }
  return {opts, pos};
}

async function session(model, threads) {
  return ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all', logSeverityLevel: 3,
  });
}

function rows(npy, first, count) {
  const rowSize = npy.shape.slice(1).reduce((a, b) => a * b, 1);
  const n = Math.min(count, npy.shape[0] - first);
  const data = npy.data.subarray(first * rowSize, (first + n) * rowSize);
  return new ort.Tensor(npy.type, data, [n, ...npy.shape.slice(1)]);
}

async function runOne(model, inputs, outDir, threads) {
  const s = await session(model, threads);
  const feeds = {};
  s.inputNames.forEach((name, i) => { feeds[name] = toOrtTensor(readNpy(inputs[i])); });
  const result = await s.run(feeds);
  fs.mkdirSync(outDir, {recursive: true});
  s.outputNames.forEach((name, k) => {
    const t = result[name];
    writeNpy(path.join(outDir, `output_${k}.npy`), t.type, t.dims, t.data);
  });
}

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  const {opts, pos} = parseArgs(rest);
  if (cmd === 'run') {
    const [model, outDir, ...inputs] = pos;
    await runOne(model, inputs, outDir, opts.threads);
  } else if (cmd === 'runlist') {
    const jobs = JSON.parse(fs.readFileSync(pos[0], 'utf8'));
    for (let i = 0; i < jobs.length; ++i) {
      try {
        await runOne(jobs[i].model, jobs[i].inputs, jobs[i].out, opts.threads);
        console.log(JSON.stringify({index: i, ok: true}));
      } catch (e) {
        console.log(JSON.stringify({index: i, ok: false, error: String(e.message || e).split('\n')[0]}));
      }
    }
  } else if (cmd === 'eval') {
    const [model, imagesFile, labelsFile] = pos;
    const s = await session(model, opts.threads);
    const images = readNpy(imagesFile);
    const labels = labelsFile ? readNpy(labelsFile) : null;
    const n = images.shape[0];
    const preds = new BigInt64Array(n);
    let correct = 0;
    const t0 = process.hrtime.bigint();
    for (let first = 0; first < n; first += opts.batch) {
      const out = (await s.run({[s.inputNames[0]]: rows(images, first, opts.batch)}))[s.outputNames[0]];
      const classes = out.dims[out.dims.length - 1];
      for (let r = 0; r < out.dims[0]; ++r) {
        let best = 0;
        for (let c = 1; c < classes; ++c) if (out.data[r * classes + c] > out.data[r * classes + best]) best = c;
        preds[first + r] = BigInt(best);
        if (labels && BigInt(labels.data[first + r]) === BigInt(best)) ++correct;
      }
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (opts.preds) writeNpy(opts.preds, 'int64', [n], preds);
    console.log(JSON.stringify({samples: n, top1: labels ? correct / n : null, correct, seconds,
      samples_per_second: n / seconds}));
  } else if (cmd === 'bench') {
    const [model, imagesFile] = pos;
    const s = await session(model, opts.threads);
    const images = readNpy(imagesFile);
    let input = rows(images, 0, opts.batch);
    if (input.dims[0] < opts.batch) throw new Error(`need at least ${opts.batch} rows in ${imagesFile}`);
    const feeds = {[s.inputNames[0]]: input};
    for (let i = 0; i < 3; ++i) await s.run(feeds);  // warm-up
    const times = [];
    const start = process.hrtime.bigint();
    while (times.length < 5 || Number(process.hrtime.bigint() - start) / 1e9 < opts.minSeconds) {
      const t0 = process.hrtime.bigint();
      await s.run(feeds);
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    times.sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    console.log(JSON.stringify({batch: opts.batch, threads: opts.threads, runs: times.length,
      median_seconds: times[Math.floor(times.length / 2)], mean_seconds: mean, min_seconds: times[0]}));
  } else if (cmd === 'optimize') {
    const [model, out] = pos;
    await ort.InferenceSession.create(model, {
      intraOpNumThreads: 1, graphOptimizationLevel: 'extended', logSeverityLevel: 3, optimizedModelFilePath: out,
    });
  } else {
    console.error('usage: ort.js run|runlist|eval|bench|optimize ...');
    process.exit(2);
  }
}

main().catch((e) => { console.error(`ort.js: ${e.message}`); process.exit(1); });
