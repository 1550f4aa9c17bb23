// Bulwark dashboard: a small single-page app with no dependencies. Every
// value from the server is put in the page with textContent or as an
// attribute value, never as markup.

const SVG = 'http://www.w3.org/2000/svg';
const PAGES = ['topology', 'identities', 'policies', 'denials', 'audit'];
const TITLES = { topology: 'Topology', identities: 'Identities', policies: 'Policies', denials: 'Denials and alerts', audit: 'Audit log' };

const state = {
  me: null,
  page: '',
  window: '15m',
  ns: '',
  edges: null,
  proxies: null,
  services: null,
  denials: null,
  alerts: null,
  ca: null,
  seenDenials: new Set(),
  namespaces: [],
  selected: null,
  layout: { key: '', pos: new Map() },
};

// h builds an HTML element: h('td', {class: 'x'}, 'text', child...).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

// s builds an SVG element.
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

// fill replaces el's children (nested arrays flattened, null skipped).
function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

class HTTPError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: 'application/json' } });
  if (!r.ok) {
    let msg = r.status + ' ' + r.statusText;
    try { const b = await r.json(); if (b.error) msg = b.error; } catch { /* not JSON */ }
    throw new HTTPError(r.status, msg);
  }
  return r.json();
}

// may says whether the operator holds the read right on kind somewhere.
function may(kind) {
  const r = state.me && state.me.rights && state.me.rights[kind];
  return !!r && (r.everywhere || (r.namespaces || []).length > 0);
}

// listAll lists a resource kind in every namespace the operator may list
// it in: one request mesh-wide, or one per namespace.
async function listAll(plural, kind) {
  const r = state.me.rights[kind];
  if (!r) return [];
  if (r.everywhere) return (await getJSON('api/v1/' + plural)).items || [];
  const lists = await Promise.all(r.namespaces.map((ns) => getJSON('api/v1/' + plural + '?namespace=' + encodeURIComponent(ns))));
  return lists.flatMap((l) => l.items || []);
}

// ---------- time helpers ----------

function ago(iso) {
  if (!iso) return '';
  const d = (Date.now() - Date.parse(iso)) / 1000;
  return relative(-d);
}

function relative(seconds) {
  const a = Math.abs(seconds);
  let txt;
  if (a < 60) txt = Math.round(a) + 's';
  else if (a < 3600) txt = Math.round(a / 60) + 'm';
  else if (a < 86400) txt = (a / 3600).toFixed(1) + 'h';
  else txt = (a / 86400).toFixed(1) + 'd';
  return seconds >= 0 ? 'in ' + txt : txt + ' ago';
}

function clock(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleTimeString();
}

// ---------- graph model ----------

function nsOf(id) {
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\//.exec(id);
  if (m) return m[1];
  const i = id.indexOf('/');
  return i > 0 && !id.includes(':') ? id.slice(0, i) : '';
}

function serviceFromIdentity(id) {
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  return m ? m[1] + '/' + m[2] : '';
}

// model aggregates the Edge items into service-level nodes and edges.
function model() {
  const nodes = new Map();
  const known = new Set();
  for (const p of state.proxies || []) if (p.status && p.status.service) known.add(p.status.service);
  for (const sv of state.services || []) known.add(sv.metadata.namespace + '/' + sv.metadata.name);
  const node = (id) => {
    if (!nodes.has(id)) nodes.set(id, { id, ns: nsOf(id), external: !known.has(id), proxies: [] });
    return nodes.get(id);
  };
  for (const id of known) node(id);
  for (const p of state.proxies || []) if (p.status && p.status.service) node(p.status.service).proxies.push(p);
  const edges = new Map();
  for (const e of state.edges || []) {
    const st = e.status;
    const src = st.sourceService || serviceFromIdentity(st.source) || st.source;
    const dst = st.destination;
    node(src);
    node(dst);
    const key = src + '\u0000' + dst;
    let agg = edges.get(key);
    if (!agg) {
      agg = { key, source: src, destination: dst, requests: 0, errors: 0, denied: 0, dryRunDenied: 0, rps: 0, p99: 0, mtls: true, paths: [] };
      edges.set(key, agg);
    }
    agg.requests += st.requests; agg.errors += st.errors; agg.denied += st.denied;
    agg.dryRunDenied += st.dryRunDenied || 0; agg.rps += st.rps;
    agg.p99 = Math.max(agg.p99, st.p99ms || 0);
    agg.mtls = agg.mtls && !!st.mtls;
    agg.paths.push(st);
  }
  for (const n of nodes.values()) if (n.ns === '' && !n.external) n.external = true;
  return { nodes, edges };
}

// layout places namespaces on a grid of clusters and each namespace's
// services on a circle; positions are kept while the set of nodes stays.
function layout(nodes) {
  const ids = [...nodes.keys()].sort();
  const key = ids.join('\n');
  if (state.layout.key === key) return state.layout;
  const groups = new Map();
  for (const id of ids) {
    const n = nodes.get(id);
    const g = n.external ? '(outside)' : n.ns;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(id);
  }
  const names = [...groups.keys()].sort((a, b) => (a === '(outside)') - (b === '(outside)') || a.localeCompare(b));
  const radius = (n) => (n <= 1 ? 0 : Math.max(70, (n * 46) / (2 * Math.PI)));
  const rmax = Math.max(70, ...names.map((g) => radius(groups.get(g).length)));
  const cell = 2 * rmax + 160;
  const cols = Math.max(1, Math.ceil(Math.sqrt(names.length)));
  const pos = new Map();
  const labels = [];
  names.forEach((g, i) => {
    const cx = (i % cols) * cell + cell / 2;
    const cy = Math.floor(i / cols) * cell + cell / 2;
    const members = groups.get(g);
    const r = radius(members.length);
    labels.push({ name: g, x: cx, y: cy - r - 34 });
    members.forEach((id, j) => {
      const a = (2 * Math.PI * j) / members.length - Math.PI / 2;
      pos.set(id, { x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
    });
  });
  const rows = Math.ceil(names.length / cols);
  state.layout = { key, pos, labels, width: cols * cell, height: Math.max(rows, 1) * cell };
  return state.layout;
}

const PALETTE = ['#8ecae6', '#ffb703', '#90be6d', '#f4a6c1', '#cdb4db', '#f9c74f', '#a8dadc', '#e9c46a', '#b7e4c7', '#ffd6a5'];

// colour gives each namespace of the graph its own colour, in the order of
// their names.
function colour(ns) {
  const i = state.namespaces.indexOf(ns);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
}

function label(id) {
  if (id.startsWith('spiffe://')) return serviceFromIdentity(id) || id;
  const i = id.indexOf('/');
  return i > 0 ? id.slice(i + 1) : id;
}

// ---------- pages ----------

function section(name) {
  const el = h('section', { id: 'page-' + name, 'aria-labelledby': 'h-' + name }, h('h1', { id: 'h-' + name }, TITLES[name]));
  return el;
}

function ready(name) {
  if (state.page === name) document.body.dataset.ready = name;
}

function renderTopology(main) {
  let sec = document.getElementById('page-topology');
  if (!sec) {
    sec = section('topology');
    const filter = h('select', { id: 'ns-filter', onchange: (e) => { state.ns = e.target.value; drawGraph(); } }, h('option', { value: '' }, 'all namespaces'));
    const win = h('select', {
      id: 'window',
      onchange: async (e) => {
        state.window = e.target.value;
        if (may('Edge')) state.edges = (await getJSON('api/v1/edges?since=' + state.window)).items || [];
        drawGraph();
      },
    }, ['5m', '15m', '1h'].map((w) => h('option', { value: w, selected: w === state.window }, 'last ' + w)));
    sec.append(
      h('div', { class: 'toolbar' },
        h('label', { for: 'ns-filter' }, 'Namespace'), filter,
        h('label', { for: 'window' }, 'Window'), win,
        h('div', { class: 'legend', 'aria-label': 'Legend' },
          h('span', { class: 'l-mtls' }, 'mTLS'), h('span', { class: 'l-plain' }, 'not all mTLS'), h('span', { class: 'l-denied' }, 'denied requests'))),
      h('div', { class: 'topology' },
        s('svg', { id: 'graph', role: 'group', 'aria-label': 'Service graph' }),
        h('aside', { id: 'details', 'aria-live': 'polite' }, h('h2', {}, 'Details'), h('p', { class: 'muted' }, 'Select a service or an edge (click, or Tab then Enter).'))));
    fill(main, sec);
  }
  drawGraph();
  ready('topology');
}

function drawGraph() {
  const svg = document.getElementById('graph');
  if (!svg) return;
  const { nodes, edges } = model();
  // namespace filter options
  const filter = document.getElementById('ns-filter');
  const namespaces = [...new Set([...nodes.values()].filter((n) => !n.external).map((n) => n.ns))].sort();
  state.namespaces = namespaces;
  const have = [...filter.options].map((o) => o.value).slice(1).join('\n');
  if (have !== namespaces.join('\n')) {
    fill(filter, h('option', { value: '' }, 'all namespaces'), namespaces.map((ns) => h('option', { value: ns, selected: ns === state.ns }, ns)));
  }
  const shown = (id) => !state.ns || nodes.get(id).ns === state.ns;
  const visEdges = [...edges.values()].filter((e) => shown(e.source) || shown(e.destination));
  const visIds = new Set();
  for (const n of nodes.values()) if (shown(n.id)) visIds.add(n.id);
  for (const e of visEdges) { visIds.add(e.source); visIds.add(e.destination); }
  const vis = new Map([...visIds].map((id) => [id, nodes.get(id)]));
  const lay = layout(vis);
  svg.setAttribute('viewBox', `0 0 ${Math.max(lay.width, 400)} ${Math.max(lay.height, 300)}`);
  const defs = s('defs', {},
    s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 24, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#5b6472' })));
  const gEdges = s('g', { class: 'edges' });
  for (const e of visEdges) {
    const a = lay.pos.get(e.source);
    const b = lay.pos.get(e.destination);
    if (!a || !b) continue;
    const cls = ['edge', e.denied > 0 ? 'denied' : '', e.mtls ? 'mtls' : 'plain', state.selected === 'e:' + e.key ? 'selected' : ''].filter(Boolean).join(' ');
    const errRate = e.requests ? ((100 * e.errors) / e.requests).toFixed(1) : '0.0';
    const text = `${e.source} to ${e.destination}: ${e.rps.toFixed(2)} req/s, ${errRate}% errors, p99 ${e.p99.toFixed(1)} ms, ${e.denied} denied, ${e.mtls ? 'mTLS' : 'not all mTLS'}`;
    const width = Math.min(6, 1.2 + Math.log10(1 + e.rps * 10));
    const g = s('g', {
      class: cls, tabindex: 0, role: 'button', 'aria-label': text,
      'data-source': e.source, 'data-destination': e.destination, 'data-denied': String(e.denied > 0), 'data-mtls': String(e.mtls),
    },
    s('title', {}, text),
    s('line', { class: 'hit', x1: a.x, y1: a.y, x2: b.x, y2: b.y }),
    s('line', { class: 'vis', x1: a.x, y1: a.y, x2: b.x, y2: b.y, 'stroke-width': width.toFixed(1), 'marker-end': 'url(#arrow)' }));
    activate(g, () => select('e:' + e.key, () => edgeDetails(e)));
    gEdges.append(g);
  }
  const gNodes = s('g', { class: 'nodes' });
  for (const n of vis.values()) {
    const p = lay.pos.get(n.id);
    const cls = ['node', n.external ? 'external' : '', state.selected === 'n:' + n.id ? 'selected' : ''].filter(Boolean).join(' ');
    const g = s('g', { class: cls, tabindex: 0, role: 'button', 'data-id': n.id, 'aria-label': `service ${n.id}${n.external ? ' (outside your view)' : ''}` },
      s('title', {}, n.id),
      s('circle', { cx: p.x, cy: p.y, r: 14, fill: n.external ? '#ffffff' : colour(n.ns) }),
      s('text', { x: p.x, y: p.y + 30, 'text-anchor': 'middle' }, label(n.id)));
    activate(g, () => select('n:' + n.id, () => nodeDetails(n, edges)));
    gNodes.append(g);
  }
  const gLabels = s('g', {}, (lay.labels || []).filter((l) => [...vis.values()].some((n) => (n.external ? '(outside)' : n.ns) === l.name))
    .map((l) => s('text', { class: 'nslabel', x: l.x, y: l.y, 'text-anchor': 'middle' }, l.name === '(outside)' ? 'outside your view' : 'namespace ' + l.name)));
  fill(svg, defs, gLabels, gEdges, gNodes);
  // Keep the details of a selection fresh.
  if (state.selected && state.selected.startsWith('e:')) {
    const e = edges.get(state.selected.slice(2));
    if (e) edgeDetails(e);
  }
}

function activate(el, fn) {
  el.addEventListener('click', fn);
  el.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); fn(); }
  });
}

function select(key, show) {
  state.selected = key;
  for (const el of document.querySelectorAll('#graph .selected')) el.classList.remove('selected');
  show();
  const q = key.startsWith('n:') ? `#graph .node[data-id="${CSS.escape(key.slice(2))}"]` : null;
  if (q) { const el = document.querySelector(q); if (el) el.classList.add('selected'); }
}

function details(...children) {
  const d = document.getElementById('details');
  if (d) fill(d, ...children);
}

function edgeDetails(e) {
  const errRate = e.requests ? ((100 * e.errors) / e.requests).toFixed(1) : '0.0';
  details(
    h('h2', {}, 'Edge'),
    h('p', {}, h('span', { class: 'mono' }, e.source), ' → ', h('span', { class: 'mono' }, e.destination)),
    h('p', {}, `${e.rps.toFixed(2)} req/s · ${errRate}% errors · p99 ${e.p99.toFixed(1)} ms · `,
      h('span', { class: e.mtls ? 'ok' : 'warn' }, e.mtls ? 'mTLS with verified SVIDs' : 'not all requests over mTLS')),
    e.denied > 0 ? h('p', { class: 'bad' }, `${e.denied} request(s) denied`) : null,
    e.dryRunDenied > 0 ? h('p', { class: 'warn' }, `${e.dryRunDenied} request(s) a dry-run policy would deny`) : null,
    h('table', {},
      h('thead', {}, h('tr', {}, ['Method', 'Path', 'Requests', 'Errors', 'Denied', 'p50 ms', 'p99 ms', 'mTLS'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, e.paths.map((p) => h('tr', {},
        h('td', {}, p.method), h('td', { class: 'mono' }, p.path || '(tcp)'), h('td', {}, p.requests), h('td', {}, p.errors),
        h('td', { class: p.denied ? 'bad' : '' }, p.denied), h('td', {}, (p.p50ms || 0).toFixed(1)), h('td', {}, (p.p99ms || 0).toFixed(1)),
        h('td', {}, p.mtls ? 'yes' : 'no'))))));
}

function nodeDetails(n, edges) {
  const ins = [...edges.values()].filter((e) => e.destination === n.id);
  const outs = [...edges.values()].filter((e) => e.source === n.id);
  const list = (es, other) => (es.length === 0 ? h('p', { class: 'muted' }, 'none') :
    h('ul', {}, es.map((e) => h('li', { class: e.denied ? 'bad' : '' }, h('span', { class: 'mono' }, e[other]), ` ${e.rps.toFixed(2)} req/s${e.denied ? `, ${e.denied} denied` : ''}`))));
  details(
    h('h2', {}, 'Service'),
    h('p', { class: 'mono' }, n.id),
    n.external ? h('p', { class: 'muted' }, 'Outside the namespaces you may see, or outside the mesh.') : null,
    h('h3', {}, `Proxies (${n.proxies.length})`),
    n.proxies.length === 0 ? h('p', { class: 'muted' }, 'none connected') :
      h('ul', {}, n.proxies.map((p) => h('li', {}, h('span', { class: 'mono' }, p.metadata.name), p.status.connected ? ' connected' : ' disconnected'))),
    h('h3', {}, 'Called by'), list(ins, 'source'),
    h('h3', {}, 'Calls'), list(outs, 'destination'));
}

function expiryClass(iso) {
  if (!iso) return 'ok';
  const left = (Date.parse(iso) - Date.now()) / 1000;
  if (left <= 0) return 'expired';
  if (left < 600) return 'soon';
  return 'ok';
}

function syncText(st) {
  if (!st.connected) return ['disconnected', 'bad'];
  if (st.lastNack) return ['NACK: ' + st.lastNack, 'bad'];
  if ((st.ackedVersion || 0) < (st.snapshotVersion || 0)) return [`behind (acked ${st.ackedVersion || 0} of ${st.snapshotVersion})`, 'warn'];
  return [`in sync (v${st.snapshotVersion || 0})`, 'ok'];
}

async function renderIdentities(main) {
  const sec = section('identities');
  fill(main, sec);
  const caBox = h('div', { id: 'ca-status', class: 'panel' });
  sec.append(h('h2', {}, 'Certificate authority'), caBox);
  const table = h('table', { id: 'proxies' });
  sec.append(h('h2', {}, 'Proxies'), table);
  drawCA();
  drawProxies();
  ready('identities');
}

function drawCA() {
  const box = document.getElementById('ca-status');
  if (!box) return;
  if (!may('CA')) {
    fill(box, h('p', { class: 'muted' }, 'You may not read the CA status (it needs get on CA mesh-wide).'));
    return;
  }
  const ca = state.ca;
  if (!ca) { fill(box, h('p', { class: 'muted' }, 'loading…')); return; }
  box.dataset.phase = ca.phase;
  const cert = (c, what) => h('li', {}, `${what} ${c.serial ? c.serial.slice(0, 16) : ''}… expires ${relative((Date.parse(c.notAfter) - Date.now()) / 1000)}${c.signing ? ' (signing)' : ''}`);
  fill(box,
    h('p', {}, 'Trust domain ', h('strong', { class: 'mono' }, ca.trustDomain), ' · bundle version ', h('strong', {}, ca.bundleVersion),
      ' · root rotation phase ', h('strong', { class: ca.phase === 'idle' ? 'ok' : 'warn' }, ca.phase)),
    ca.waitingFor ? h('p', { class: 'warn' }, 'Waiting for: ' + ca.waitingFor) : null,
    h('ul', {}, (ca.roots || []).map((r) => cert(r, 'root')), ca.intermediate ? cert(ca.intermediate, 'intermediate') : null),
    h('p', { class: 'muted' }, `${(ca.proxies && ca.proxies.connected) || 0} connected proxies`));
}

function drawProxies() {
  const table = document.getElementById('proxies');
  if (!table) return;
  if (!may('Proxy')) {
    fill(table, h('caption', {}, 'You may not list proxies.'));
    return;
  }
  const rows = [...(state.proxies || [])].sort((a, b) => (a.status.service + a.metadata.name).localeCompare(b.status.service + b.metadata.name));
  fill(table,
    h('caption', { class: 'muted' }, `${rows.length} proxies`),
    h('thead', {}, h('tr', {}, ['Service', 'Instance', 'SPIFFE ID', 'SVID expires', 'Bundle', 'Sync', 'Last seen'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows.map((p) => {
      const st = p.status;
      const exp = expiryClass(st.svidExpiry);
      const [sync, syncCls] = syncText(st);
      return h('tr', { 'data-identity': st.identity, 'data-expiry': exp },
        h('td', {}, st.service), h('td', { class: 'mono' }, p.metadata.name), h('td', { class: 'mono' }, st.identity),
        h('td', { class: exp }, st.svidExpiry ? `${relative((Date.parse(st.svidExpiry) - Date.now()) / 1000)} (${exp})` : 'unknown'),
        h('td', {}, st.bundleVersion || ''), h('td', { class: syncCls }, sync + (st.draining ? ', draining' : '')),
        h('td', {}, st.connected ? 'now' : ago(st.lastSeen)));
    })));
}

async function renderPolicies(main) {
  const sec = section('policies');
  fill(main, sec);
  if (!may('AuthorizationPolicy')) {
    sec.append(h('p', { class: 'muted' }, 'You may not list AuthorizationPolicies.'));
    ready('policies');
    return;
  }
  const form = h('form', { id: 'whatif', 'aria-label': 'What if' },
    field('whatif-from', 'From service', 'default/web'),
    field('whatif-to', 'To service', 'default/api'),
    field('whatif-method', 'Method', 'GET', 'GET'),
    field('whatif-path', 'Path', '/', '/'),
    field('whatif-header', 'Header (optional)', 'x-env: prod'),
    h('div', {}, h('button', { type: 'submit' }, 'Explain')));
  const result = h('div', { id: 'whatif-result', 'aria-live': 'polite' });
  form.addEventListener('submit', (ev) => { ev.preventDefault(); explain(result); });
  sec.append(h('h2', {}, 'What if?'), h('p', { class: 'muted' }, 'Decide one request with the live policies, as policy explain does.'), form, result);
  const list = h('div', { id: 'policies' }, h('p', { class: 'muted' }, 'loading…'));
  sec.append(h('h2', {}, 'Policies'), list);
  const [summary, raw] = await Promise.all([getJSON('api/v1/policy/summary'), listAll('authorizationpolicies', 'AuthorizationPolicy')]);
  const byRef = new Map(raw.map((p) => [p.metadata.namespace + '/' + p.metadata.name, p]));
  const items = summary.items || [];
  fill(list, items.length === 0 ? h('p', {}, 'No policies: nothing is allowed (deny by default).') : '',
    items.map((p) => policyArticle(p, byRef.get(p.policy))));
  ready('policies');
}

function field(id, text, placeholder, value) {
  return h('div', {}, h('label', { for: id }, text), h('input', { id, name: id, placeholder, value, autocomplete: 'off' }));
}

function edgeList(title, es, cls) {
  if (!es || es.length === 0) return null;
  return [h('h4', {}, title), h('ul', {}, es.map((e) => h('li', { class: cls },
    h('span', { class: 'mono' }, e.sourceService || e.source), ' → ', h('span', { class: 'mono' }, e.destination), ` ${e.method} `,
    h('span', { class: 'mono' }, e.path), ` (${e.requests} requests)`)))];
}

function policyArticle(p, raw) {
  const action = h('span', { class: 'badge ' + (p.action === 'DENY' ? 'bad' : 'ok') }, p.action);
  return h('article', { class: 'policy', 'data-policy': p.policy },
    h('h3', {}, h('span', { class: 'mono' }, p.policy), ' ', action, p.dryRun ? [' ', h('span', { class: 'badge warn' }, 'dry run')] : null),
    h('p', {}, 'Selects ', p.selects, '.'),
    h('ul', {}, p.rules.map((r) => h('li', {}, r))),
    edgeList('Observed traffic it allows (last 15 minutes)', p.allowsObserved, 'ok'),
    p.allowsObserved.length === 0 && p.action !== 'DENY' ? h('p', { class: 'muted' }, 'No observed traffic allowed by it in the last 15 minutes.') : null,
    edgeList('Observed traffic it denies', p.deniesObserved, 'bad'),
    edgeList('Would deny if enforced', p.wouldDeny, 'warn'),
    p.truncated ? h('p', { class: 'muted' }, 'Lists cut at 200 edges.') : null,
    raw ? h('details', {}, h('summary', {}, 'Policy as stored'), h('pre', {}, JSON.stringify(raw.spec, null, 2))) : null);
}

async function explain(result) {
  const v = (id) => document.getElementById(id).value.trim();
  const body = { from: v('whatif-from'), to: v('whatif-to'), method: v('whatif-method') || 'GET', path: v('whatif-path') || '/' };
  const hdr = v('whatif-header');
  if (hdr) {
    const i = hdr.indexOf(':');
    if (i > 0) body.headers = { [hdr.slice(0, i).trim()]: hdr.slice(i + 1).trim() };
  }
  if (!body.from) delete body.from;
  result.dataset.decision = '';
  fill(result, h('p', { class: 'muted' }, 'deciding…'));
  let r;
  try {
    const resp = await fetch('api/v1/policy/explain', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    r = await resp.json();
    if (!resp.ok) throw new Error(r.error || resp.statusText);
  } catch (err) {
    result.dataset.decision = 'error';
    fill(result, h('p', {}, h('strong', {}, 'Error: '), String(err.message || err)));
    return;
  }
  result.dataset.decision = r.decision;
  fill(result,
    h('p', {}, h('strong', {}, r.decision.toUpperCase()), ' — ', r.reason, r.policy ? [' by ', h('span', { class: 'mono' }, r.policy), ` rule ${r.rule}`] : null),
    r.nearest ? h('div', {}, h('p', {}, 'Nearest ALLOW rule: ', h('span', { class: 'mono' }, r.nearest.policy), ` rule ${r.nearest.rule}; it would match if:`),
      h('ul', {}, r.nearest.changes.map((c) => h('li', {}, c)))) : null,
    r.explanation ? h('details', {}, h('summary', {}, 'Full explanation'), h('pre', {}, r.explanation)) : null);
}

function renderDenials(main) {
  let sec = document.getElementById('page-denials');
  if (!sec) {
    sec = section('denials');
    sec.append(
      h('h2', {}, 'Denials per minute, last hour'),
      s('svg', { id: 'denial-chart', role: 'img', 'aria-label': 'Denials per minute over the last hour', viewBox: '0 0 600 110', preserveAspectRatio: 'none' }),
      h('p', { id: 'chart-caption', class: 'muted' }),
      h('div', { class: 'feeds' },
        h('div', {}, h('h2', {}, 'Denials'), may('Denial') ? h('ol', { id: 'denial-feed', class: 'feed', 'aria-live': 'polite' }) : h('p', { class: 'muted' }, 'You may not list denials.')),
        h('div', {}, h('h2', {}, 'Alerts'), may('Alert') ? h('ol', { id: 'alert-feed', class: 'feed', 'aria-live': 'polite' }) : h('p', { class: 'muted' }, 'You may not list alerts.'))));
    fill(main, sec);
  }
  drawDenials();
  drawAlerts();
  ready('denials');
}

function denialKey(d) {
  const st = d.status;
  return [st.direction, st.source, st.destination, st.method, st.path, st.reason, st.lastSeen, st.count].join('\u0000');
}

function drawDenials() {
  const feed = document.getElementById('denial-feed');
  const items = [...(state.denials || [])].sort((a, b) => Date.parse(b.status.lastSeen) - Date.parse(a.status.lastSeen));
  if (feed) {
    const first = state.seenDenials.size === 0;
    fill(feed, ...items.slice(0, 200).map((d) => {
      const st = d.status;
      const key = denialKey(d);
      const fresh = !first && !state.seenDenials.has(key);
      return h('li', { class: 'denial' + (fresh ? ' fresh' : ''), 'data-source': st.source, 'data-destination': st.destination },
        h('strong', { class: 'bad' }, `${st.httpStatus} denied`), ` ${clock(st.lastSeen)} · `,
        h('span', { class: 'mono' }, st.source), ' → ', h('span', { class: 'mono' }, st.destination), ` ${st.method} `, h('span', { class: 'mono' }, st.path),
        h('br'), h('span', { class: 'muted' }, `${st.reason}${st.policy ? ` · ${st.policy} rule ${st.rule}` : ''} · ${st.direction} · ×${st.count}`));
    }));
    if (items.length === 0) feed.append(h('li', { class: 'muted' }, 'No denials in the last hour.'));
  }
  for (const d of items) state.seenDenials.add(denialKey(d));
  drawChart(items);
}

function drawChart(items) {
  const svg = document.getElementById('denial-chart');
  if (!svg) return;
  const now = Date.now();
  const buckets = new Array(60).fill(0);
  for (const d of items) {
    const age = Math.floor((now - Date.parse(d.status.lastSeen)) / 60000);
    if (age >= 0 && age < 60) buckets[59 - age] += d.status.count || 1;
  }
  const max = Math.max(1, ...buckets);
  const bars = buckets.map((n, i) => {
    const hgt = (100 * n) / max;
    return s('rect', { x: i * 10 + 1, y: 105 - hgt, width: 8, height: hgt }, s('title', {}, `${n} denied, ${59 - i} min ago`));
  });
  fill(svg, ...bars);
  const cap = document.getElementById('chart-caption');
  if (cap) cap.textContent = `60 minutes ago → now; peak ${max} denied per minute; ${buckets.reduce((a, b) => a + b, 0)} in the hour.`;
}

function drawAlerts() {
  const feed = document.getElementById('alert-feed');
  if (!feed) return;
  const items = [...(state.alerts || [])].sort((a, b) => Date.parse(b.status.firedAt) - Date.parse(a.status.firedAt));
  fill(feed, ...items.slice(0, 200).map((a) => {
    const st = a.status;
    return h('li', { class: 'alert' },
      h('span', { class: 'badge ' + (st.severity === 'critical' ? 'bad' : 'warn') }, st.severity || 'alert'), ` ${st.detector} · ${clock(st.firedAt)}`,
      h('br'), h('span', { class: 'mono' }, st.subject), st.count ? ` (${st.count})` : '');
  }));
  if (items.length === 0) feed.append(h('li', { class: 'muted' }, 'No alerts in the last 24 hours.'));
}

async function renderAudit(main) {
  const sec = section('audit');
  fill(main, sec);
  if (!may('AuditLog')) {
    sec.append(h('p', { class: 'muted' }, 'You may not read the audit log (it needs get on AuditLog mesh-wide).'));
    ready('audit');
    return;
  }
  const verify = h('div', { id: 'audit-verify', class: 'panel', role: 'status' }, 'verifying the chain…');
  const table = h('table', { id: 'audit-log' });
  sec.append(verify, table);
  const [log, rep] = await Promise.all([getJSON('api/v1/audit?limit=200'), getJSON('api/v1/audit/verify')]);
  verify.dataset.ok = String(!!rep.ok);
  fill(verify, rep.ok ?
    h('p', { class: 'ok' }, h('strong', {}, 'Chain verified: '), `${rep.entries} entries, ${rep.checkpoints} signed checkpoint(s), the last at entry ${rep.lastCheckpoint}.`) :
    h('p', { class: 'bad' }, h('strong', {}, 'Chain verification FAILED: '), rep.problem || (rep.problems || []).join('; ')));
  const items = [...(log.items || [])].reverse();
  fill(table,
    h('caption', { class: 'muted' }, `last ${items.length} of ${log.head} entries`),
    h('thead', {}, h('tr', {}, ['#', 'Time', 'Who', 'From', 'What', 'Resource', 'Outcome', 'Detail'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, items.map((e) => h('tr', { 'data-seq': e.seq },
      h('td', {}, e.seq), h('td', {}, new Date(e.time).toLocaleString()), h('td', { class: 'mono' }, e.actor), h('td', {}, e.source),
      h('td', {}, e.action + (e.count > 1 ? ` ×${e.count}` : '')), h('td', { class: 'mono' }, [e.kind, e.namespace && e.name ? `${e.namespace}/${e.name}` : e.name].filter(Boolean).join(' ')),
      h('td', { class: e.outcome === 'failed' ? 'bad' : '' }, e.outcome), h('td', {}, e.detail)))));
  ready('audit');
}

// ---------- data and routing ----------

async function loadBase() {
  const jobs = [];
  if (may('Proxy')) jobs.push(listAll('proxies', 'Proxy').then((x) => { state.proxies = x; }));
  if (may('Service')) jobs.push(listAll('services', 'Service').then((x) => { state.services = x; }));
  if (may('Edge')) jobs.push(getJSON('api/v1/edges?since=' + state.window).then((x) => { state.edges = x.items || []; }));
  if (may('Denial')) jobs.push(getJSON('api/v1/denials?since=1h').then((x) => { state.denials = x.items || []; }));
  if (may('Alert')) jobs.push(getJSON('api/v1/alerts?since=24h').then((x) => { state.alerts = x.items || []; }));
  if (may('CA')) jobs.push(getJSON('api/v1/ca').then((x) => { state.ca = x; }));
  await Promise.all(jobs);
}

async function route() {
  const name = (location.hash.replace(/^#\/?/, '') || 'topology');
  const page = PAGES.includes(name) ? name : 'topology';
  state.page = page;
  delete document.body.dataset.ready;
  document.title = TITLES[page] + ' · Bulwark';
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  state.selected = null;
  try {
    if (page === 'topology') { fill(main); renderTopology(main); }
    if (page === 'identities') await renderIdentities(main);
    if (page === 'policies') await renderPolicies(main);
    if (page === 'denials') { fill(main); renderDenials(main); }
    if (page === 'audit') await renderAudit(main);
  } catch (err) {
    fill(main, h('p', { class: 'bad' }, 'Could not load this page: ' + String(err.message || err)));
    ready(page);
  }
}

// live applies a Server-Sent Event to the state and redraws what shows it.
function live() {
  const el = document.getElementById('live');
  const es = new EventSource('api/events');
  es.addEventListener('open', () => { el.dataset.live = 'open'; el.textContent = 'live'; });
  es.addEventListener('error', () => { el.dataset.live = 'closed'; el.textContent = 'reconnecting'; });
  const on = (name, apply) => es.addEventListener(name, (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch { return; }
    apply(data);
  });
  on('denials', (d) => { state.denials = d.items || []; if (state.page === 'denials') drawDenials(); });
  on('alerts', (d) => { state.alerts = d.items || []; if (state.page === 'denials') drawAlerts(); });
  on('edges', (d) => { if (state.window === '15m') { state.edges = d.items || []; if (state.page === 'topology') drawGraph(); } });
  on('proxies', (d) => { state.proxies = d.items || []; if (state.page === 'topology') drawGraph(); if (state.page === 'identities') drawProxies(); });
  on('ca', (d) => { state.ca = d; if (state.page === 'identities') drawCA(); });
  es.addEventListener('logout', () => { es.close(); loggedOut('Your session ended.'); });
}

function loggedOut(msg) {
  fill(document.getElementById('main'), h('div', { class: 'loggedout' }, h('h1', {}, 'Logged out'),
    h('p', {}, msg), h('p', {}, 'Run ', h('code', {}, 'bulwark dashboard login'), ' for a new link, or use your operator certificate.')));
  const el = document.getElementById('live');
  el.dataset.live = 'closed';
  el.textContent = 'offline';
}

async function main() {
  document.getElementById('logout').addEventListener('click', async () => {
    await fetch('logout', { method: 'POST' });
    loggedOut('You logged out.');
  });
  try {
    state.me = await getJSON('api/me');
  } catch (err) {
    loggedOut('Not signed in: ' + String(err.message || err));
    return;
  }
  document.getElementById('whoami').textContent = state.me.operator;
  await loadBase();
  window.addEventListener('hashchange', route);
  await route();
  live();
}

main();
