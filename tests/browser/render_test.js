#!/usr/bin/env node
// The HTML pages of compress/report/html.h in a real browser: headless Chromium (Debian's chromium package,
// installed by tools/setup.sh --tests) renders a report of the real compress binary on models/cnn.onnx
// (INT8 with calibration, evaluation and per-layer SQNR), a pruned and fine-tuned run (the loss chart) and a
// compare/auto document built from real per-recipe reports. For each page:
//   - no console message at all (the pages have no script, so any message - an error, a blocked load - is a
//     fault): Chromium with --enable-logging=stderr prints each one as a line "...:CONSOLE...] "text",
//     source: URL (line)";
//   - no network request: Chromium runs with every host name unresolvable and writes its net log
//     (--log-net-log); a request made for the page carries the page's initiator, unlike the browser's own
//     background requests ("initiator": "not an origin"); the file itself must hold no URL either;
//   - the screenshot is not blank: a decoded PNG (zlib from node's standard library) with a reasonable
//     share of non-background pixels, several distinct colours, and the charts' own fill colours.
// First a canary page with a console error and an image from the network must be caught by both
// detectors, so a detector that sees nothing fails the test instead of passing it.
// A missing Chromium fails the test (CI installs it). Uses node's standard library only.
//
//   node tests/browser/render_test.js --compress BIN --html-tool BIN --source DIR [--keep DIR]
'use strict';

const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const zlib = require('zlib');

let failures = 0;
function fail(message) {
  failures++;
  console.error('FAIL: ' + message);
}
function check(condition, message) {
  if (!condition) fail(message);
  return condition;
}

function parseArgs() {
  const args = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      console.error('usage: render_test.js --compress BIN --html-tool BIN --source DIR [--keep DIR]');
      process.exit(2);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const required of ['compress', 'html-tool', 'source']) {
    if (!args[required]) {
      console.error('render_test.js: --' + required + ' is required');
      process.exit(2);
    }
  }
  return args;
}

function findChromium() {
  const names = process.env.CHROMIUM ? [process.env.CHROMIUM] : ['chromium', 'chromium-browser'];
  for (const name of names) {
    if (name.includes('/')) {
      if (fs.existsSync(name)) return name;
      continue;
    }
    for (const dir of (process.env.PATH || '').split(':')) {
      const candidate = path.join(dir || '.', name);
      try {
        fs.accessSync(candidate, fs.constants.X_OK);
        return candidate;
      } catch (e) {
        // not here
      }
    }
  }
  return null;
}

function run(argv, options = {}) {
  const started = Date.now();
  const r = spawnSync(argv[0], argv.slice(1), {
    encoding: 'utf8',
    timeout: options.timeout || 120000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 << 20,
  });
  r.seconds = (Date.now() - started) / 1000;
  if (r.error) throw new Error(argv[0] + ': ' + r.error.message);
  return r;
}

// ---------------------------------------------------------------------------------------------------
// Reports of the real binary, and a compare/auto document built from them (the compress.compare/1 contract).

function compressReport(args, tmp, name, model, options) {
  const out = path.join(tmp, name + '.onnx');
  const report = path.join(tmp, name + '.json');
  const r = run([args.compress, model, '-o', out, '--report', report, '-q', ...options]);
  if (r.status !== 0) {
    throw new Error('compress ' + options.join(' ') + ' exited ' + r.status + ': ' + r.stderr);
  }
  return JSON.parse(fs.readFileSync(report, 'utf8'));
}

function rowFromReport(recipe, passes, rep, model) {
  const e = rep.evaluation;
  const bytes = rep.output.bytes;
  const macs = rep.macs.after.total;
  const drop = -e.top1_change_pts;
  return {
    recipe, source: 'preset', passes, status: 'ok', error: null, output: rep.output.path,
    bytes, zstd_bytes: rep.zstd.output_bytes, size_ratio: bytes / model.bytes,
    parameters: rep.parameters.after.total, macs, macs_ratio: macs / model.macs,
    top1: e.top1_after, top1_change_pts: e.top1_change_pts, agreement: e.agreement,
    sqnr_db: e.sqnr_db, sqnr_db_infinite: e.sqnr_db === null,
    ms_per_sample: rep.timings.latency.after_ms_per_sample,
    gate: { passed: drop <= 5, value: drop, threshold: 5, margin: 5 - drop },
    pareto_size: false, pareto_macs: false, chosen: false, skipped_reason: null, report: rep,
  };
}

function markPareto(doc, x, flag, list) {
  doc.pareto[list] = [];
  const ok = doc.rows.filter((r) => r.status === 'ok');
  for (const a of ok) {
    const dominated = ok.some((b) =>
      b !== a && b[x] <= a[x] && b.top1 >= a.top1 && (b[x] < a[x] || b.top1 > a.top1));
    a[flag] = !dominated;
    if (!dominated) doc.pareto[list].push(a.recipe);
  }
}

function compareDoc(reports, calib) {
  const base = reports.int8;
  const model = {
    path: 'models/cnn.onnx', bytes: base.input.bytes, zstd_bytes: base.zstd.input_bytes,
    parameters: base.parameters.before.total, macs: base.macs.before.total,
  };
  const doc = {
    schema: 'compress.compare/1', command: 'auto', tool: base.tool, model,
    baseline: { top1: base.evaluation.top1_before, ms_per_sample: base.timings.latency.before_ms_per_sample },
    data: {
      calib: {
        dir: calib, sha256: base.calibration.data_sha256, samples: base.calibration.samples, calibration_runs: 1,
        note: 'statistics of the original model (after clean-up), shared by every recipe',
      },
      eval: {
        dir: calib, sha256: base.evaluation.data_sha256, samples: base.evaluation.samples, labelled: true,
      },
      finetune: { dir: calib, samples: 256, teacher_runs: 1 },
    },
    gate: { metric: 'top1_drop_pts', threshold: 5 },
    objective: 'size',
    rows: [
      rowFromReport('int8', ['quantize'], reports.int8, model),
      rowFromReport('fp16', ['fp16'], reports.fp16, model),
      rowFromReport('pruned', ['prune'], reports.prune, model),
      rowFromReport('pruned-finetuned', ['prune', 'finetune'], reports.finetune, model),
      {
        recipe: 'low-rank', source: 'preset', passes: ['low_rank'], status: 'error',
        error: 'low_rank: no Conv or Gemm weight of rank > 1 <in> "this" model', output: null, bytes: null,
        zstd_bytes: null, size_ratio: null, parameters: null, macs: null, macs_ratio: null, top1: null,
        top1_change_pts: null, agreement: null, sqnr_db: null, sqnr_db_infinite: false, ms_per_sample: null,
        gate: null, pareto_size: false, pareto_macs: false, chosen: false, skipped_reason: null,
      },
    ],
    pareto: {},
    chosen: 'int8',
    stop_reason: 'every candidate ran; int8 is the smallest that passes the gate',
    timings: { total_seconds: 4.2 },
  };
  doc.rows[0].chosen = true;
  markPareto(doc, 'bytes', 'pareto_size', 'size');
  markPareto(doc, 'macs', 'pareto_macs', 'macs');
  return doc;
}

// ---------------------------------------------------------------------------------------------------
// PNG decoding (8-bit RGB or RGBA, not interlaced: what Chromium writes).

function decodePng(buf) {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (buf.length < 8 || !buf.subarray(0, 8).equals(signature)) throw new Error('not a PNG');
  let pos = 8;
  let width = 0, height = 0, depth = 0, type = 0, interlace = 0;
  const idat = [];
  while (pos + 8 <= buf.length) {
    const len = buf.readUInt32BE(pos);
    const kind = buf.toString('latin1', pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (kind === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      depth = data[8];
      type = data[9];
      interlace = data[12];
    } else if (kind === 'IDAT') {
      idat.push(data);
    } else if (kind === 'IEND') {
      break;
    }
    pos += 12 + len;
  }
  if (depth !== 8 || (type !== 2 && type !== 6) || interlace !== 0) {
    throw new Error(`unsupported PNG: depth ${depth}, colour type ${type}, interlace ${interlace}`);
  }
  const bpp = type === 6 ? 4 : 3;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  if (raw.length < height * (stride + 1)) throw new Error('PNG data too short');
  const px = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const row = y * stride;
    const prev = row - stride;
    for (let i = 0; i < stride; i++) {
      const x = raw[src + i];
      const a = i >= bpp ? px[row + i - bpp] : 0;
      const b = y > 0 ? px[prev + i] : 0;
      const c = i >= bpp && y > 0 ? px[prev + i - bpp] : 0;
      let v;
      switch (filter) {
        case 0: v = x; break;
        case 1: v = x + a; break;
        case 2: v = x + b; break;
        case 3: v = x + ((a + b) >> 1); break;
        case 4: {
          const p = a + b - c;
          const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
          v = x + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
          break;
        }
        default: throw new Error('bad PNG filter ' + filter);
      }
      px[row + i] = v & 0xff;
    }
  }
  return { width, height, bpp, px };
}

// Colour counts (RGB, alpha ignored), the background (the most common colour) and its share.
function pixelStats(img) {
  const counts = new Map();
  for (let i = 0; i < img.px.length; i += img.bpp) {
    const key = (img.px[i] << 16) | (img.px[i + 1] << 8) | img.px[i + 2];
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  let background = 0, most = -1;
  for (const [key, n] of counts) {
    if (n > most) {
      most = n;
      background = key;
    }
  }
  const total = img.width * img.height;
  return { counts, background, total, nonBackground: (total - most) / total };
}

const hex = (rgb) => '#' + rgb.toString(16).padStart(6, '0');

// ---------------------------------------------------------------------------------------------------
// Rendering in Chromium.

function render(chromium, tmp, htmlPath, name, height) {
  const png = path.join(tmp, name + '.png');
  const netlog = path.join(tmp, name + '.netlog.json');
  const argv = [
    chromium, '--headless=new', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--mute-audio',
    '--user-data-dir=' + path.join(tmp, 'profile-' + name),
    '--enable-logging=stderr', '--v=0',
    // No host name resolves: nothing can leave the machine even if a request were made.
    '--host-resolver-rules=MAP * ~NOTFOUND',
    // Fewer background requests of the browser itself (they are told apart in the net log anyway).
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-extensions',
    '--no-first-run', '--no-default-browser-check', '--disable-default-apps',
    '--log-net-log=' + netlog,
    '--screenshot=' + png, `--window-size=1280,${height}`,
    'file://' + path.resolve(htmlPath),
  ];
  const r = run(argv, { timeout: 60000 });
  const consoleLines = (r.stderr || '').split('\n').filter((l) => /:CONSOLE\b/.test(l) || /Uncaught/.test(l));
  let requests = null;
  try {
    const log = JSON.parse(fs.readFileSync(netlog, 'utf8'));
    const startJob = log.constants.logEventTypes.URL_REQUEST_START_JOB;
    requests = log.events
      .filter((e) => e.type === startJob && e.params && e.params.url)
      .filter((e) => e.params.initiator !== 'not an origin')
      .map((e) => e.params.url + ' (initiator ' + e.params.initiator + ')');
  } catch (e) {
    fail(`${name}: cannot read Chromium's net log ${netlog}: ${e.message}`);
  }
  return {
    status: r.status, signal: r.signal, seconds: r.seconds, stderr: r.stderr, consoleLines, requests, png,
  };
}

// No URL, script or anything that loads a resource in the file itself (the JSON given here holds none).
function staticChecks(name, html) {
  const lower = html.toLowerCase();
  for (const bad of ['<script', 'http:', 'https:', '//', 'xmlns', 'src=', 'href=', 'url(', '@import', '<link',
                     '<img', '<iframe', '<object', '<embed', 'javascript:']) {
    const at = lower.indexOf(bad);
    check(at < 0, `${name}: the file holds "${bad}" near: ${html.slice(Math.max(0, at - 60), at + 60)}`);
  }
  check(lower.startsWith('<!doctype html>'), `${name}: no doctype`);
  check(html.includes('<meta charset="utf-8">'), `${name}: no charset`);
}

function main() {
  const args = parseArgs();
  const started = Date.now();
  const chromium = findChromium();
  if (!chromium) {
    fail('Chromium not found (chromium or chromium-browser in PATH, or CHROMIUM=path): install it with ' +
         'tools/setup.sh --tests (Debian package chromium)');
    return;
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'compress-browser-'));
  try {
    // The canary: both detectors must see its faults.
    const canary = path.join(tmp, 'canary.html');
    fs.writeFileSync(canary,
      '<!doctype html><html><head><meta charset="utf-8"><title>canary</title></head><body>' +
      '<h1>canary</h1><img src="http://compress-canary.invalid/x.png" alt="">' +
      '<script>console.error("canary console error"); notDefinedAnywhere();</script></body></html>');
    const c = render(chromium, tmp, canary, 'canary', 400);
    check(c.consoleLines.some((l) => l.includes('canary console error')),
      'the console detector missed the canary\'s console.error; Chromium printed:\n' + c.stderr);
    check(c.consoleLines.some((l) => l.includes('Uncaught')),
      'the console detector missed the canary\'s exception');
    check(c.requests !== null && c.requests.some((u) => u.includes('compress-canary.invalid')),
      'the network detector missed the canary\'s image request: ' + JSON.stringify(c.requests));
    console.log(`canary: ${c.consoleLines.length} console lines and ${c.requests ? c.requests.length : 0} page ` +
                `requests detected (${c.seconds.toFixed(1)} s)`);

    // Real reports.
    const model = path.join(args.source, 'models/cnn.onnx');
    const calib = path.join(args.source, 'models/calib');
    const t0 = Date.now();
    const reports = {
      int8: compressReport(args, tmp, 'int8', model,
        ['--int8', '--calib', calib, '--eval', calib, '--max-accuracy-drop', '5']),
      fp16: compressReport(args, tmp, 'fp16', model, ['--fp16', '--eval', calib]),
      prune: compressReport(args, tmp, 'prune', model, ['--prune', '0.5', '--eval', calib]),
      finetune: compressReport(args, tmp, 'finetune', model,
        ['--prune', '0.5', '--finetune', calib, '--epochs', '2', '--eval', calib]),
    };
    check(reports.int8.layers.length > 10, 'the INT8 report has no per-layer SQNR');
    fs.writeFileSync(path.join(tmp, 'compare.json'), JSON.stringify(compareDoc(reports, calib), null, 1));
    console.log(`compress: 4 reports in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const pages = [
      // name, JSON, colours that must be painted: the chart's bars (≥ 30 dB green, identical layers blue).
      {
        name: 'report', json: 'int8.json',
        colours: { '#2e7d32': 'SQNR bars of 30 dB or more', '#1565c0': 'bars of identical layers' },
      },
      { name: 'finetune', json: 'finetune.json', colours: { '#c62828': 'SQNR bars below 20 dB' } },
      {
        name: 'compare', json: 'compare.json',
        colours: {
          '#1565c0': 'Pareto points and line', '#e65100': 'the chosen recipe', '#9e9e9e': 'dominated points',
          '#212121': 'the original model',
        },
      },
    ];
    for (const page of pages) {
      const html = path.join(tmp, page.name + '.html');
      const t = run([args['html-tool'], path.join(tmp, page.json), html]);
      if (!check(t.status === 0, `${page.name}: compress_html_tool exited ${t.status}: ${t.stderr}`)) {
        continue;
      }
      staticChecks(page.name, fs.readFileSync(html, 'utf8'));
      const r = render(chromium, tmp, html, page.name, 2000);
      check(r.status === 0, `${page.name}: Chromium exited ${r.status} (signal ${r.signal}):\n${r.stderr}`);
      check(r.consoleLines.length === 0, `${page.name}: console messages:\n${r.consoleLines.join('\n')}`);
      check(r.requests !== null && r.requests.length === 0,
        `${page.name}: network requests: ${JSON.stringify(r.requests)}`);
      if (!check(fs.existsSync(r.png), `${page.name}: no screenshot`)) continue;
      const img = decodePng(fs.readFileSync(r.png));
      check(img.width === 1280 && img.height === 2000, `${page.name}: screenshot ${img.width}x${img.height}`);
      const s = pixelStats(img);
      // Distinct colours covering at least 50 pixels each: text antialiasing alone gives greys; the charts
      // and badges add real colours.
      const colours = [...s.counts.values()].filter((n) => n >= 50).length;
      check(s.nonBackground >= 0.03,
        `${page.name}: only ${(s.nonBackground * 100).toFixed(2)}% of the pixels differ from the background`);
      check(hex(s.background) === '#ffffff', `${page.name}: background ${hex(s.background)}`);
      check(colours >= 8, `${page.name}: only ${colours} colours cover 50 pixels or more`);
      for (const [colour, what] of Object.entries(page.colours)) {
        const n = s.counts.get(parseInt(colour.slice(1), 16)) || 0;
        check(n >= 100, `${page.name}: ${what} (${colour}) cover ${n} pixels`);
      }
      const painted = Object.keys(page.colours)
        .map((k) => k + ' ' + (s.counts.get(parseInt(k.slice(1), 16)) || 0)).join(', ');
      console.log(`${page.name}: ${(s.nonBackground * 100).toFixed(1)}% non-background pixels, ${colours} colours ` +
                  `of 50+ pixels, chart colours ${painted} ` +
                  `(${r.seconds.toFixed(1)} s in Chromium)`);
    }
  } catch (e) {
    fail(e.stack || String(e));
  } finally {
    if (args.keep) {
      fs.mkdirSync(args.keep, { recursive: true });
      for (const f of fs.readdirSync(tmp)) {
        if (/\.(html|png|json)$/.test(f) && !f.includes('netlog')) {
          fs.copyFileSync(path.join(tmp, f), path.join(args.keep, f));
        }
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`${failures === 0 ? 'PASS' : 'FAIL'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main();
process.exitCode = failures === 0 ? 0 : 1;
