// nabla playground: browser front end for `nabla serve`.
// Plain JavaScript, no build step. Charts use the vendored uPlot (window.uPlot).
// The server validates every setting; this page sends what was typed and shows
// the server's {"error": "..."} message in #error.
'use strict';

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- state ----

let session = null;      // the POST /api/sessions response, plus `key` (settings as JSON)
let events = null;       // EventSource of the current session
let lastSnapshot = null; // latest `update` event
let queue = Promise.resolve(); // user actions run one after another
const MAX_POINTS = 2000; // per chart series; halved when exceeded
// chart columns: step, train loss, test loss, train acc %, test acc %
let cols = [[], [], [], [], []];
let lossChart = null;
let accChart = null;
// backprop inspector
let graph = null;          // POST .../inspect response
let nodeById = new Map();
let gradParts = new Map(); // node id -> number of gradient contributions received
let runningBackward = false;

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd',
  '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

// ------------------------------------------------------------- helpers ----

/** Create an element: el('td', {class: 'x'}, 'text', child, ...). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
/** 3 significant digits, "–" when absent. */
function sig3(v) {
  if (!isNum(v)) return '–';
  return v === 0 ? '0' : String(Number(v.toPrecision(3)));
}
/** Loss-style number: 4 significant digits. */
function fmtNum(v) {
  return isNum(v) ? String(Number(v.toPrecision(4))) : '–';
}
/** Fraction 0..1 as "93.4%". */
function fmtPct(v) {
  return isNum(v) ? (v * 100).toFixed(1) + '%' : '–';
}
function fmtBytes(b) {
  if (!isNum(b)) return '–';
  if (b < 1024) return `${b} B`;
  if (b < 1024 ** 2) return `${(b / 1024).toFixed(1)} KiB`;
  if (b < 1024 ** 3) return `${(b / 1024 ** 2).toFixed(1)} MiB`;
  return `${(b / 1024 ** 3).toFixed(2)} GiB`;
}
/** Stats object {mean,std,min,max} as "mean ± std, [min, max]". */
function fmtStats(s) {
  if (!s) return '';
  return `${sig3(s.mean)} ± ${sig3(s.std)}, [${sig3(s.min)}, ${sig3(s.max)}]`;
}
function fmtShape(shape) {
  if (!Array.isArray(shape)) return '';
  return shape.length ? shape.join('×') : 'scalar';
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function showError(msg) {
  const e = $('error');
  e.textContent = msg || '';
  e.hidden = !msg;
}
function clearError() { showError(''); }

/** Call the API. Resolves to the parsed JSON (or null), rejects with the server's message. */
async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new Error(`cannot reach the server (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!res.ok) {
    const msg = data && typeof data.error === 'string'
      ? data.error
      : (text.trim() || `${res.status} ${res.statusText}`);
    throw new Error(msg);
  }
  clearError();
  return data;
}

/** Wrap an async handler so that actions run in click order and failures land in #error. */
function action(fn) {
  return () => {
    queue = queue.then(fn).catch((err) => showError(err && err.message ? err.message : String(err)));
    return queue;
  };
}

function requireSession() {
  if (!session) throw new Error('start or step a run first');
  return session;
}
const sessionPath = (suffix) => `/api/sessions/${encodeURIComponent(session.id)}${suffix || ''}`;

// ------------------------------------------------------------ settings ----

/** A number when the text parses as one, else the raw text (the server rejects it). */
function numberOrRaw(s) {
  const v = Number(s);
  return (s.trim() !== '' && Number.isFinite(v)) ? v : s;
}
/** "16,16" -> [16, 16]; "" -> []; anything unparsable is sent as typed. */
function parseHidden(s) {
  if (s.trim() === '') return [];
  const items = s.split(',').map((t) => t.trim());
  const nums = items.map(Number);
  return items.every((t, i) => t !== '' && Number.isFinite(nums[i])) ? nums : s;
}
/** Read the form into the POST /api/sessions body. */
async function readSettings() {
  const s = {
    dataset: $('dataset').value,
    points: numberOrRaw($('points').value),
    noise: numberOrRaw($('noise').value),
    test_fraction: numberOrRaw($('test-fraction').value),
    hidden: parseHidden($('hidden').value),
    activation: $('activation').value,
    loss: $('loss').value,
    optimizer: $('optimizer').value,
    lr: numberOrRaw($('lr').value),
    batch_size: numberOrRaw($('batch').value),
    seed: numberOrRaw($('seed').value),
    steps_per_second: Number($('speed').value),
  };
  if (s.dataset === 'csv') {
    s.task = $('task').value;
    const file = $('csv-file').files[0];
    if (file) s.csv = await file.text(); // no file: `csv` is left out and the server says so
  }
  return s;
}

function onDatasetChange() {
  const ds = $('dataset').value;
  $('csv-row').hidden = ds !== 'csv';
  const loss = $('loss');
  if (ds === 'sine') loss.value = 'mse';
  else if (ds !== 'csv' && loss.value === 'mse') loss.value = 'cross_entropy';
}

// ------------------------------------------------------------- session ----

/** Make sure a session exists for the current settings; recreate it when they changed. */
async function ensureSession() {
  const settings = await readSettings();
  // The speed is not part of what a run computes: changing it does not start a new run.
  const key = JSON.stringify(Object.assign({}, settings, { steps_per_second: null }));
  if (session && session.key === key) return session;
  if (session) {
    const old = sessionPath();
    dropSession();
    try { await fetch(old, { method: 'DELETE' }); } catch (_) { /* ignored */ }
  }
  const created = await api('POST', '/api/sessions', settings);
  session = Object.assign({}, created, { id: String(created.id), key });
  onNewSession();
  return session;
}

function dropSession() {
  if (events) events.close();
  events = null;
  session = null;
  lastSnapshot = null;
  $('state').textContent = 'no session';
  $('command').textContent = '';
  clearSeries();
  drawRegions();
  drawLegend();
}

function onNewSession() {
  lastSnapshot = null;
  $('command').textContent = session.command || '';
  const regression = session.task === 'regression';
  $('accuracy-chart').hidden = regression;
  $('accuracy-note').hidden = !regression;
  for (const id of ['step-count', 'epoch', 'train-loss', 'test-loss', 'train-accuracy', 'test-accuracy']) {
    $(id).textContent = '–';
  }
  $('state').textContent = 'paused';
  $('layers').tBodies[0].replaceChildren();
  clearSeries();
  resetInspector();
  drawRegions();
  drawLegend();
  openStream(session.id);
}

function openStream(id) {
  if (events) events.close();
  events = new EventSource(`/api/sessions/${encodeURIComponent(id)}/events`);
  events.addEventListener('update', (e) => {
    if (!session || session.id !== id) return; // a stale stream
    let snap;
    try { snap = JSON.parse(e.data); } catch (_) { return; }
    onSnapshot(snap);
  });
  events.onerror = () => console.warn('event stream interrupted; the browser retries');
}

async function control(act) {
  const r = await api('POST', sessionPath('/control'), { action: act });
  if (r && r.state) $('state').textContent = r.state;
  return r;
}

/** Update every display from one `update` event. */
function onSnapshot(snap) {
  lastSnapshot = snap;
  $('state').textContent = snap.state || '–';
  $('step-count').textContent = isNum(snap.step) ? String(snap.step) : '–';
  $('epoch').textContent = isNum(snap.epoch) ? String(snap.epoch) : '–';
  $('train-loss').textContent = fmtNum(snap.train_loss);
  $('test-loss').textContent = fmtNum(snap.test_loss);
  $('train-accuracy').textContent = fmtPct(snap.train_accuracy);
  $('test-accuracy').textContent = fmtPct(snap.test_accuracy);
  if (snap.error) showError(snap.error);
  pushSeries(snap);
  updateCharts();
  drawRegions();
  renderLayers(snap.layers);
}

function renderLayers(layers) {
  const rows = (layers || []).map((l) => el('tr', {},
    el('td', {}, l.name), el('td', {}, sig3(l.weight_norm)), el('td', {}, sig3(l.grad_norm))));
  $('layers').tBodies[0].replaceChildren(...rows);
}

// -------------------------------------------------------------- charts ----

function clearSeries() {
  cols = [[], [], [], [], []];
  updateCharts();
}

/** Append one snapshot to the chart columns (replace on a repeated step, restart on reset). */
function pushSeries(snap) {
  if (!isNum(snap.step)) return;
  const steps = cols[0];
  if (steps.length && snap.step < steps[steps.length - 1]) cols = [[], [], [], [], []];
  const pct = (v) => (isNum(v) ? v * 100 : null);
  const row = [snap.step, isNum(snap.train_loss) ? snap.train_loss : null,
    isNum(snap.test_loss) ? snap.test_loss : null, pct(snap.train_accuracy), pct(snap.test_accuracy)];
  const n = cols[0].length;
  if (n && cols[0][n - 1] === snap.step) {
    row.forEach((v, k) => { cols[k][n - 1] = v; });
  } else {
    row.forEach((v, k) => cols[k].push(v));
  }
  if (cols[0].length > MAX_POINTS) {
    // drop every other point; the newest one (even index after an odd count) stays
    cols = cols.map((c) => c.filter((_, i) => i % 2 === 0));
  }
}

function makeChart(container, title, labels, colors, yRange) {
  if (!window.uPlot) {
    container.textContent = 'charts unavailable (uPlot did not load)';
    return null;
  }
  const opts = {
    title,
    width: Math.max(280, container.clientWidth || 440),
    height: 180,
    scales: { x: { time: false }, y: yRange ? { range: yRange } : {} },
    series: [
      { label: 'step' },
      ...labels.map((label, i) => ({
        label, stroke: colors[i], width: 1.5, spanGaps: true,
        value: (u, v) => (v == null ? '–' : fmtNum(v)),
      })),
    ],
    axes: [{}, { size: 50 }],
  };
  return new window.uPlot(opts, [[], ...labels.map(() => [])], container);
}

function updateCharts() {
  if (lossChart) lossChart.setData([cols[0], cols[1], cols[2]]);
  if (accChart) {
    const regression = session && session.task === 'regression';
    accChart.setData(regression ? [[], [], []] : [cols[0], cols[3], cols[4]]);
  }
}

function resizeCharts() {
  for (const [chart, id] of [[lossChart, 'loss-chart'], [accChart, 'accuracy-chart']]) {
    const w = $(id).clientWidth;
    if (chart && w > 0) chart.setSize({ width: w, height: 180 });
  }
}

// ------------------------------------------------------------- regions ----

function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}
const classColor = (c) => PALETTE[((c | 0) % PALETTE.length + PALETTE.length) % PALETTE.length];

function canvasMessage(ctx, W, H, text) {
  ctx.lineWidth = 1; ctx.strokeStyle = '#bbb'; ctx.strokeRect(0.5, 0.5, W - 1, H - 1);
  ctx.fillStyle = '#666';
  ctx.font = '15px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.fillText(text, W / 2, H / 2);
}

/** Draw the decision regions (classification) or the fitted curve (regression), then the data. */
function drawRegions() {
  const cv = $('regions');
  const ctx = cv.getContext('2d');
  const W = cv.width, H = cv.height;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, W, H);
  if (!session) return canvasMessage(ctx, W, H, 'press Start or Step to load the data');
  const b = session.bounds;
  const regression = session.task === 'regression';
  if (!Array.isArray(b) || b.length !== 4) {
    return canvasMessage(ctx, W, H, regression ? 'the fit plot needs 1 feature' : 'decision regions need 2 features');
  }
  const [xmin, xmax, ymin, ymax] = b;
  const px = (x) => ((x - xmin) / (xmax - xmin || 1)) * W;
  const py = (y) => H - ((y - ymin) / (ymax - ymin || 1)) * H;
  const snap = lastSnapshot;

  if (!regression && snap && snap.grid) drawGrid(ctx, snap.grid, W, H);
  if (regression) drawZeroLines(ctx, px, py, W, H, b);

  // data: train filled, test with a white ring and a black outline
  const dot = (p, test) => {
    const color = regression ? (test ? PALETTE[1] : PALETTE[0]) : classColor(p[2]);
    ctx.beginPath();
    ctx.arc(px(p[0]), py(p[1]), test ? 3.5 : 3, 0, 2 * Math.PI);
    ctx.fillStyle = color;
    ctx.fill();
    if (test) {
      ctx.lineWidth = 1.5; ctx.strokeStyle = '#fff'; ctx.stroke();
      ctx.beginPath(); ctx.arc(px(p[0]), py(p[1]), 4.5, 0, 2 * Math.PI);
      ctx.lineWidth = 1; ctx.strokeStyle = '#000'; ctx.stroke();
    } else {
      ctx.lineWidth = 0.5; ctx.strokeStyle = 'rgba(0,0,0,0.45)'; ctx.stroke();
    }
  };
  for (const p of session.train || []) dot(p, false);
  for (const p of session.test || []) dot(p, true);

  if (regression && snap && Array.isArray(snap.curve) && snap.curve.length) {
    const pts = snap.curve.slice().sort((a, c) => a[0] - c[0]);
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(px(p[0]), py(p[1])) : ctx.moveTo(px(p[0]), py(p[1]))));
    ctx.lineWidth = 2.5; ctx.strokeStyle = PALETTE[3]; ctx.stroke();
  }
  ctx.lineWidth = 1; ctx.strokeStyle = '#bbb'; ctx.strokeRect(0.5, 0.5, W - 1, H - 1);
}

/** Grid cells colored by predicted class; alpha grows with confidence above chance. */
function drawGrid(ctx, grid, W, H) {
  const n = grid.n | 0;
  if (!n || !grid.class) return;
  const k = Math.max(2, session.classes | 0);
  const chance = 1 / k;
  const rgb = PALETTE.map(hexToRgb);
  for (let i = 0; i < n; i++) {          // row i: y from ymin (bottom) upward
    const y0 = Math.round(H - ((i + 1) * H) / n), y1 = Math.round(H - (i * H) / n);
    for (let j = 0; j < n; j++) {
      const idx = i * n + j;
      const c = grid.class[idx] | 0;
      const conf = grid.confidence ? grid.confidence[idx] : 1;
      const a = Math.min(1, Math.max(0, (conf - chance) / (1 - chance)));
      const [r, g, bl] = rgb[((c % rgb.length) + rgb.length) % rgb.length];
      ctx.fillStyle = `rgba(${r},${g},${bl},${(0.08 + 0.5 * a).toFixed(3)})`;
      const x0 = Math.round((j * W) / n), x1 = Math.round(((j + 1) * W) / n);
      ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
    }
  }
}

function drawZeroLines(ctx, px, py, W, H, [xmin, xmax, ymin, ymax]) {
  ctx.strokeStyle = '#ddd'; ctx.lineWidth = 1;
  ctx.beginPath();
  if (xmin < 0 && xmax > 0) { ctx.moveTo(px(0), 0); ctx.lineTo(px(0), H); }
  if (ymin < 0 && ymax > 0) { ctx.moveTo(0, py(0)); ctx.lineTo(W, py(0)); }
  ctx.stroke();
}

function drawLegend() {
  const box = $('regions-legend');
  box.replaceChildren();
  if (!session) return;
  const swatch = (color) => el('span', { class: 'swatch', style: `background:${color}` });
  if (session.task === 'regression') {
    box.append(swatch(PALETTE[0]), ' train ', swatch(PALETTE[1]), ' test (ringed) ', swatch(PALETTE[3]), ' model');
  } else {
    for (let c = 0; c < (session.classes | 0); c++) box.append(swatch(classColor(c)), ` class ${c} `);
    box.append(' · filled = train, ringed = test');
  }
  if (Array.isArray(session.bounds)) {
    const [a, b, c, d] = session.bounds.map(sig3);
    box.append(el('div', {}, `x ∈ [${a}, ${b}], y ∈ [${c}, ${d}]`));
  }
}

// ---------------------------------------------------------- inspector ----

function resetInspector() {
  graph = null;
  nodeById = new Map();
  gradParts = new Map();
  runningBackward = false;
  $('ops').tBodies[0].replaceChildren();
  $('backward-log').replaceChildren();
  $('saved-total').textContent = '';
  $('inspect-summary').textContent = '';
  $('backward-status').textContent = '';
  $('graph-svg').replaceChildren();
  $('graph-svg').setAttribute('width', '0');
  $('graph-svg').setAttribute('height', '0');
  $('step-backward').disabled = false;
  $('run-backward').disabled = false;
  $('run-backward').textContent = 'Run backward';
}

async function inspect() {
  requireSession();
  const g = await api('POST', sessionPath('/inspect'), {});
  resetInspector();
  graph = g;
  nodeById = new Map((g.nodes || []).map((n) => [n.id, n]));
  const t = g.totals || {};
  $('saved-total').textContent = `kept for backward: ${fmtBytes(t.saved_bytes)}; ` +
    `a no_grad forward holds at most ${fmtBytes(t.no_grad_peak_bytes)} at once; ${t.ops} ops`;
  $('inspect-summary').textContent = `batch of ${g.batch} rows, loss ${fmtNum(g.loss)}; ` +
    `parameters and inputs (leaves) hold ${fmtBytes(t.leaf_bytes)}`;
  renderOps(g);
  renderGraphSvg(g);
  $('backward-status').textContent = `${(g.backward_order || []).length} backward steps to go`;
}

/** One row per node, in node (topological) order, under one header row per group. */
function renderOps(g) {
  const groups = new Map(); // insertion order = first appearance
  for (const n of g.nodes || []) {
    const name = n.group || '(no group)';
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(n);
  }
  const body = $('ops').tBodies[0];
  // Groups in the order their first op runs forward (input, layers.0, …, loss); a group of
  // leaves only (the input) comes first.
  const firstOp = (nodes) => {
    const ids = nodes.filter((n) => n.op).map((n) => n.id);
    return ids.length ? Math.min(...ids) : -1;
  };
  const ordered = [...groups].sort((a, b) => {
    const fa = firstOp(a[1]), fb = firstOp(b[1]);
    return fa === fb ? a[1][0].id - b[1][0].id : fa - fb;
  });
  for (const [name, nodes] of ordered) {
    body.append(el('tr', { class: 'group' }, el('th', { colspan: 7 }, name)));
    for (const n of nodes) {
      const isOp = n.op != null;
      const kind = isOp ? n.op : (n.requires_grad ? 'parameter' : 'input');
      body.append(el('tr', { class: isOp ? 'op' : 'leaf', 'data-id': n.id },
        el('td', {}, n.id),
        el('td', {}, kind),
        el('td', {}, n.label || ''),
        el('td', {}, fmtShape(n.shape)),
        isOp ? el('td', { class: 'num', 'data-saved': isNum(n.saved_bytes) ? n.saved_bytes : 0 }, fmtBytes(n.saved_bytes))
          : el('td', { class: 'num' }, ''),
        el('td', {}, fmtStats(n.value)),
        el('td', { class: 'grad' }, n.grad ? fmtStats(n.grad) : '')));
    }
  }
}

const opRow = (id) => $('ops').querySelector(`tbody tr[data-id="${CSS.escape(String(id))}"]`);
const svgNode = (id) => $('graph-svg').querySelector(`g[data-node="${CSS.escape(String(id))}"]`);

async function stepBackward() {
  requireSession();
  const r = await api('POST', sessionPath('/inspect/step'), {});
  applyStep(r);
  return r;
}

/** Show one backward step: highlight the op, fill gradients, log the flow. */
function applyStep(r) {
  for (const row of $('ops').querySelectorAll('tr.current')) row.classList.remove('current');
  for (const g of $('graph-svg').querySelectorAll('g.g-current')) g.classList.remove('g-current');
  const row = opRow(r.node);
  if (row) {
    row.classList.add('current', 'done');
    row.querySelector('td.grad').textContent = fmtStats(r.grad_in);
    row.scrollIntoView({ block: 'nearest' });
  }
  const gn = svgNode(r.node);
  if (gn) gn.classList.add('g-current', 'g-done');

  // leaves never get a step of their own: show what flows into them
  const stepped = new Set(graph ? graph.backward_order || [] : []);
  for (const s of r.sent || []) {
    if (stepped.has(s.to)) continue;
    const parts = (gradParts.get(s.to) || 0) + 1;
    gradParts.set(s.to, parts);
    const target = opRow(s.to);
    if (target) {
      target.classList.add('reached');
      target.querySelector('td.grad').textContent =
        parts === 1 ? fmtStats(s.grad) : `sum of ${parts} parts; last: ${fmtStats(s.grad)}`;
    }
    const tg = svgNode(s.to);
    if (tg) tg.classList.add('g-done');
  }

  const node = nodeById.get(r.node);
  const name = [r.op || (node && node.op) || 'node', node && node.label].filter(Boolean).join(' ');
  const sent = (r.sent || []).map((s) => `#${s.to} (‖·‖=${sig3(s.grad && s.grad.l2)})`);
  const text = `${name}: received grad ‖g‖=${sig3(r.grad_in && r.grad_in.l2)}, ` +
    (sent.length ? `sent to ${sent.join(', ')}` : 'sent nothing (no input needs a gradient)');
  const li = el('li', { 'data-id': r.node }, text);
  $('backward-log').append(li);
  li.scrollIntoView({ block: 'nearest' });

  if (r.done) {
    $('step-backward').disabled = true;
    $('run-backward').disabled = true;
    $('backward-status').textContent = 'backward complete';
  } else {
    $('backward-status').textContent = `${r.remaining} backward steps to go`;
  }
}

/** Step every 150 ms until done; a second click stops it. */
async function runBackward() {
  if (runningBackward) { runningBackward = false; return; }
  try {
    requireSession();
    runningBackward = true;
    $('run-backward').textContent = 'Stop';
    while (runningBackward) {
      const r = await stepBackward();
      if (r.done) break;
      await sleep(150);
    }
  } catch (err) {
    showError(err.message || String(err));
  } finally {
    runningBackward = false;
    $('run-backward').textContent = 'Run backward';
  }
}

/** Small graph: a column per depth (ops by longest path from the leaves), edges input -> op. */
function renderGraphSvg(g) {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = $('graph-svg');
  const nodes = g.nodes || [];
  const col = new Map();
  for (const n of nodes) {
    const ins = (n.inputs || []).filter((i) => col.has(i));
    col.set(n.id, ins.length ? 1 + Math.max(...ins.map((i) => col.get(i))) : 0);
  }
  // leaves sit just left of their first consumer
  for (const n of nodes) {
    if (n.op != null) continue;
    const uses = nodes.filter((m) => (m.inputs || []).includes(n.id)).map((m) => col.get(m.id));
    if (uses.length) col.set(n.id, Math.max(0, Math.min(...uses) - 1));
  }
  const BW = 104, BH = 24, DX = 128, DY = 32, PAD = 6;
  const rowsUsed = new Map();
  const pos = new Map();
  for (const n of nodes) {
    const c = col.get(n.id);
    const r = rowsUsed.get(c) || 0;
    rowsUsed.set(c, r + 1);
    pos.set(n.id, { x: PAD + c * DX, y: PAD + r * DY });
  }
  const width = PAD * 2 + (Math.max(0, ...col.values()) * DX) + BW;
  const height = PAD * 2 + (Math.max(1, ...rowsUsed.values()) - 1) * DY + BH;
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const mk = (tag, attrs) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  };
  for (const n of nodes) {               // edges first, under the boxes
    const to = pos.get(n.id);
    for (const i of n.inputs || []) {
      const from = pos.get(i);
      if (!from) continue;
      const x1 = from.x + BW, y1 = from.y + BH / 2, x2 = to.x, y2 = to.y + BH / 2;
      const mx = (x1 + x2) / 2;
      svg.append(mk('path', { class: 'g-edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    const isOp = n.op != null;
    const grp = mk('g', { class: isOp ? 'g-op' : 'g-leaf', 'data-node': n.id, transform: `translate(${p.x},${p.y})` });
    grp.append(mk('rect', { width: BW, height: BH, rx: isOp ? 4 : 11 }));
    const text = mk('text', { x: BW / 2, y: BH / 2 + 4, 'text-anchor': 'middle' });
    const name = isOp ? `#${n.id} ${n.op}` : (n.label || `#${n.id}`);
    text.textContent = name.length > 16 ? name.slice(0, 15) + '…' : name;
    const title = mk('title', {});
    title.textContent = `#${n.id} ${n.op || 'leaf'} ${n.label || ''} [${fmtShape(n.shape)}]`;
    grp.append(text, title);
    svg.append(grp);
  }
}

// ---------------------------------------------------------------- misc ----

async function copyCommand() {
  requireSession();
  const text = $('command').textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // clipboard API unavailable or denied: fall back to a selected textarea
    const ta = el('textarea', { style: 'position:fixed;left:-9999px' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  }
  const btn = $('copy-command');
  btn.textContent = 'Copied';
  setTimeout(() => { btn.textContent = 'Copy command'; }, 1200);
}

function showTab(name) {
  const inspector = name === 'inspector';
  $('playground').hidden = inspector;
  $('inspector').hidden = !inspector;
  for (const [id, on] of [['tab-playground', !inspector], ['tab-inspector', inspector]]) {
    $(id).classList.toggle('active', on);
    $(id).setAttribute('aria-selected', String(on));
  }
  if (!inspector) resizeCharts();
}

// --------------------------------------------------------------- wiring ----

function init() {
  $('start').addEventListener('click', action(async () => {
    await ensureSession();
    await control('start');
  }));
  $('pause').addEventListener('click', action(async () => {
    requireSession();
    await control('pause');
  }));
  $('step').addEventListener('click', action(async () => {
    await ensureSession();
    await control('step');
  }));
  $('reset').addEventListener('click', action(async () => {
    requireSession();
    await control('reset');
    clearSeries();
    resetInspector();
  }));
  $('save').addEventListener('click', action(async () => {
    requireSession();
    // Fetch first, so a failure shows its message here instead of replacing the page.
    const r = await fetch(sessionPath('/checkpoint'));
    if (!r.ok) {
      let msg = `${r.status} ${r.statusText}`;
      try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    const url = URL.createObjectURL(await r.blob());
    const a = el('a', { href: url, download: `nabla-${session.dataset || 'run'}.safetensors` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }));
  $('speed').addEventListener('change', action(async () => {
    if (!session) return; // applies to the next run
    const r = await api('POST', sessionPath('/control'),
      { action: 'speed', steps_per_second: Number($('speed').value) });
    if (r && r.state) $('state').textContent = r.state;
  }));
  $('copy-command').addEventListener('click', action(copyCommand));
  $('inspect').addEventListener('click', action(inspect));
  $('step-backward').addEventListener('click', action(stepBackward));
  $('run-backward').addEventListener('click', () => { runBackward(); });
  $('tab-playground').addEventListener('click', () => showTab('playground'));
  $('tab-inspector').addEventListener('click', () => showTab('inspector'));
  $('dataset').addEventListener('change', onDatasetChange);
  window.addEventListener('resize', resizeCharts);

  onDatasetChange();
  lossChart = makeChart($('loss-chart'), 'loss', ['train loss', 'test loss'], [PALETTE[0], PALETTE[3]]);
  accChart = makeChart($('accuracy-chart'), 'accuracy (%)', ['train accuracy', 'test accuracy'],
    [PALETTE[0], PALETTE[3]], [0, 100]);
  drawRegions();
}

init();
