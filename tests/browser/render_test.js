#!/usr/bin/env node
// The HTML pages of compress/report/html.h in a real browser: headless Chromium (Debian's chromium package,
// installed by tools/setup.sh --tests) renders the pages the real commands write with --report-html: the
// main job on models/cnn.onnx (INT8 with calibration, evaluation and per-layer SQNR), `compress compare` of
// four recipes on models/cnn.onnx and `compress auto` on models/mlp.onnx (rows the search skipped, the
// chosen one). Each page must be byte for byte what compress_html_tool formats from the JSON the same run
// wrote with --report: the document whose numbers tests/report/html_test.cc checks against the page.
// For each page:
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

const { spawn, spawnSync } = require('child_process');
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

// The pages the real commands write, and the JSON each wrote beside its page.

// Runs compress with `argv` plus --report NAME.json and --report-html NAME.html in `tmp`, in the background
// (the runs are independent: they overlap). Resolves to the paths, the parsed JSON and the run's seconds;
// rejects when compress does not exit 0.
function compressWrites(args, tmp, name, argv) {
  const json = path.join(tmp, name + '.json');
  const html = path.join(tmp, name + '.html');
  const full = [...argv, '--report', json, '--report-html', html, '-q'];
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(args.compress, full, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(args.compress + ': ' + e.message));
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      if (status !== 0) {
        reject(new Error(`compress ${full.join(' ')} exited ${status} (signal ${signal}): ${stderr}`));
        return;
      }
      resolve({
        name, json, html, seconds: (Date.now() - started) / 1000,
        doc: JSON.parse(fs.readFileSync(json, 'utf8')),
      });
    });
  });
}

// The page the command wrote must be the formatter's page of the JSON it wrote: compress_html_tool on that
// JSON gives the same bytes.
function sameAsFormatter(args, tmp, written) {
  const again = path.join(tmp, written.name + '.from-json.html');
  const t = run([args['html-tool'], written.json, again]);
  if (!check(t.status === 0, `${written.name}: compress_html_tool exited ${t.status}: ${t.stderr}`)) return;
  const a = fs.readFileSync(written.html);
  const b = fs.readFileSync(again);
  if (a.equals(b)) return;
  let at = 0;
  while (at < a.length && at < b.length && a[at] === b[at]) at++;
  fail(`${written.name}: the page compress wrote (${a.length} bytes) differs from compress_html_tool's ` +
       `page of its JSON (${b.length} bytes) at byte ${at}:\n  written: ` +
       JSON.stringify(a.toString('utf8', Math.max(0, at - 40), at + 60)) + '\n  from JSON: ' +
       JSON.stringify(b.toString('utf8', Math.max(0, at - 40), at + 60)));
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

async function main() {
  const args = parseArgs();
  const started = Date.now();
  const chromium = findChromium();
  if (!chromium) {
    fail('Chromium not found (chromium or chromium-browser in PATH, or CHROMIUM=path): install it with ' +
         'tools/setup.sh --tests (Debian package chromium)');
    return;
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'compress-browser-'));
  let runs = null;
  try {
    // The real commands, in the background while the canary renders.
    const cnn = path.join(args.source, 'models/cnn.onnx');
    const mlp = path.join(args.source, 'models/mlp.onnx');
    const calib = path.join(args.source, 'models/calib');
    const t0 = Date.now();
    runs = Promise.allSettled([
      compressWrites(args, tmp, 'report',
        [cnn, '-o', path.join(tmp, 'report.onnx'), '--int8', '--calib', calib, '--eval', calib]),
      compressWrites(args, tmp, 'compare',
        ['compare', cnn, '--recipe', 'fp16', '--recipe', 'int8', '--recipe', 'prune50+int8', '--recipe',
         'lowrank50', '--calib', calib, '--eval', calib, '--out-dir', path.join(tmp, 'compare-models')]),
      compressWrites(args, tmp, 'auto',
        ['auto', mlp, '--calib', calib, '--eval', calib, '--max-accuracy-drop', '1',
         '--out-dir', path.join(tmp, 'auto-models'), '-o', path.join(tmp, 'auto-best.onnx')]),
    ]);

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

    const settled = await runs;
    for (const r of settled) {
      if (r.status === 'rejected') throw r.reason;
    }
    const [report, compare, auto] = settled.map((r) => r.value);
    const wall = (Date.now() - t0) / 1000;
    console.log(`compress: main job ${report.seconds.toFixed(1)} s, compare ${compare.seconds.toFixed(1)} s, ` +
                `auto ${auto.seconds.toFixed(1)} s (overlapping: ${wall.toFixed(1)} s)`);
    // What the pages are to show: per-layer SQNR; four recipes that ran; rows the search skipped and the
    // chosen one.
    check(report.doc.schema === 'compress.report/1' && report.doc.layers.length > 10,
      'the INT8 report has no per-layer SQNR');
    check(compare.doc.schema === 'compress.compare/1' && compare.doc.command === 'compare' &&
          compare.doc.rows.length === 4 && compare.doc.rows.every((r) => r.status === 'ok'),
      'compare: ' + JSON.stringify(compare.doc.rows.map((r) => [r.recipe, r.status, r.error])));
    check(auto.doc.schema === 'compress.compare/1' && auto.doc.command === 'auto' &&
          typeof auto.doc.chosen === 'string', 'auto chose nothing: ' + auto.doc.stop_reason);
    check(auto.doc.rows.some((r) => r.status === 'skipped' && typeof r.skipped_reason === 'string'),
      'auto: no skipped row');
    for (const written of [report, compare, auto]) sameAsFormatter(args, tmp, written);

    const pages = [
      // The page, and colours that must be painted: the chart's bars (≥ 30 dB green, identical layers blue).
      {
        written: report,
        colours: { '#2e7d32': 'SQNR bars of 30 dB or more', '#1565c0': 'bars of identical layers' },
      },
      {
        written: compare,
        colours: {
          '#1565c0': 'Pareto points and line', '#9e9e9e': 'dominated points', '#212121': 'the original model',
        },
      },
      {
        written: auto,
        colours: {
          '#1565c0': 'Pareto points and line', '#e65100': 'the chosen recipe', '#9e9e9e': 'dominated points',
          '#212121': 'the original model', '#c62828': 'the gate lines and their labels',
          '#757575': 'badges of skipped rows',
        },
      },
    ];
    for (const page of pages) {
      page.name = page.written.name;
      const html = page.written.html;
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
    if (runs) await runs;  // no compress run still writing into tmp
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

main()
  .catch((e) => fail(e.stack || String(e)))
  .then(() => {
    process.exitCode = failures === 0 ? 0 : 1;
  });
