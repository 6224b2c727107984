// Host overview: every domain of the REST history in a sortable table, refreshed every
// second; rates from each domain's two newest samples (rates.js), stale flag and
// collection errors from /healthz.

import { POLL_MS, el, every, fmtByteRate, fmtBytes, fmtNum, fmtPct, getJSON, health, hostInfo, showNotice, startHeader, vmHref } from './common.js';
import { naturalCompare, overviewRow, withEvent } from './rates.js';

startHeader();

const table = document.getElementById('domains');
const tbody = table.tBodies[0];
const summary = document.getElementById('summary');
const headers = [...table.tHead.rows[0].cells];
let sort = { key: 'name', dir: 1 };

const COLUMNS = [
  ['name', (r) => el('a', { href: vmHref(r.uuid) }, r.name || r.uuid)],
  ['state', (r) => el('span', { class: 'state' },
    el('span', { class: `dot ${stateClass(r.state)}`, 'aria-hidden': 'true' }), r.state || '?',
    r.reason ? el('span', { class: 'reason' }, `(${r.reason})`) : null)],
  ['vcpus', (r) => fmtNum(r.vcpus, 0)],
  ['cpu_vcpus', (r) => fmtPct(r.cpu_vcpus)],
  ['cpu_host', (r) => fmtPct(r.cpu_host)],
  ['mem_used', (r) => fmtBytes(r.mem_used)],
  ['mem_available', (r) => fmtBytes(r.mem_available)],
  ['disk_read', (r) => fmtByteRate(r.disk_read)],
  ['disk_write', (r) => fmtByteRate(r.disk_write)],
  ['disk_read_iops', (r) => fmtNum(r.disk_read_iops)],
  ['disk_write_iops', (r) => fmtNum(r.disk_write_iops)],
  ['net_rx', (r) => fmtByteRate(r.net_rx)],
  ['net_tx', (r) => fmtByteRate(r.net_tx)],
  ['stale', (r) => (r.stale ? el('span', { class: 'badge warn' }, 'stale') : el('span', { class: 'muted' }, 'no'))],
  ['errors', (r) => (r.errors ? el('span', { class: 'badge bad' }, String(r.errors)) : '0')],
];

function stateClass(state) {
  if (state === 'Running') return 'ok';
  if (state === 'Paused' || state === 'PMSuspended' || state === 'Blocked') return 'warn';
  return 'bad';
}

function compare(a, b) {
  const x = a[sort.key];
  const y = b[sort.key];
  const missing = (v) => v === null || v === undefined || Number.isNaN(v);
  if (missing(x) !== missing(y)) return missing(x) ? 1 : -1; // blanks last either way
  let c = 0;
  if (!missing(x)) c = typeof x === 'number' && typeof y === 'number' ? x - y : naturalCompare(x, y);
  return c * sort.dir || naturalCompare(a.name, b.name);
}

for (const th of headers) {
  th.querySelector('button').addEventListener('click', () => {
    const key = th.dataset.key;
    sort = { key, dir: sort.key === key ? -sort.dir : key === 'name' || key === 'state' ? 1 : -1 };
    render();
  });
}

let rows = [];
let baseRows = [];
const trs = new Map();
/** The newest lifecycle event per domain (from the live stream). */
const lastEvent = new Map();

function applyEvents() {
  rows = baseRows.map((r) => withEvent(r, lastEvent.get(r.uuid)));
}

function render() {
  for (const th of headers) {
    if (th.dataset.key === sort.key) th.setAttribute('aria-sort', sort.dir > 0 ? 'ascending' : 'descending');
    else th.removeAttribute('aria-sort');
  }
  rows.sort(compare);
  const seen = new Set();
  rows.forEach((r, i) => {
    seen.add(r.uuid);
    let tr = trs.get(r.uuid);
    if (!tr) {
      tr = el('tr', { 'data-uuid': r.uuid });
      COLUMNS.forEach(([key], c) => {
        const cell = c === 0 ? el('th', { scope: 'row' }) : el('td', { 'data-key': key });
        if (headers[c].classList.contains('num')) cell.classList.add('num');
        tr.append(cell);
      });
      trs.set(r.uuid, tr);
    }
    COLUMNS.forEach(([key, fmt], c) => {
      const v = fmt(r);
      const cell = tr.cells[c];
      const signature = v instanceof Node ? v.outerHTML : String(v);
      if (cell.dataset.sig !== signature) {
        cell.dataset.sig = signature;
        cell.replaceChildren(v);
      }
    });
    tr.dataset.state = r.state || '';
    if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] || null);
  });
  for (const [uuid, tr] of trs) {
    if (!seen.has(uuid)) {
      tr.remove();
      trs.delete(uuid);
    }
  }
  renderFacts();
  const n = rows.length;
  const running = rows.filter((r) => r.state === 'Running').length;
  const text = `${n} domain${n === 1 ? '' : 's'} (${running} running), refreshed every second. Select a column header to sort.`;
  if (summary.textContent !== text) summary.textContent = text;
}

let hostCpus = null;

function renderFacts() {
  const box = document.getElementById('host-facts');
  const sum = (k) => rows.reduce((a, r) => a + (Number.isFinite(r[k]) ? r[k] : 0), 0);
  const running = rows.filter((r) => r.state === 'Running').length;
  const items = [
    ['Domains', String(rows.length)],
    ['Running', String(running)],
    ['Paused or other', String(rows.length - running)],
    ['vCPUs allocated', String(sum('vcpus'))],
    ['Host CPUs', hostCpus ? String(hostCpus) : '–'],
    ['CPU used by VMs', fmtPct(sum('cpu_host')) + ' of host'],
    ['Disk I/O', `${fmtByteRate(sum('disk_read') + sum('disk_write'))}`],
    ['Network', `${fmtByteRate(sum('net_rx') + sum('net_tx'))}`],
  ];
  const key = JSON.stringify(items);
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(...items.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v))));
}

every(POLL_MS, async () => {
  const [stats, host] = await Promise.all([getJSON('/api/v1.0/stats/'), hostInfo()]);
  hostCpus = host.host_cpus;
  const domains = (health.value && health.value.domains) || {};
  baseRows = Object.entries(stats)
    .map(([uuid, samples]) => {
      const row = overviewRow(samples, host.host_cpus);
      if (!row) return null;
      const h = domains[uuid] || {};
      return { ...row, uuid, name: row.name || h.name, stale: h.stale ?? null, errors: h.collection_errors ?? 0 };
    })
    .filter(Boolean);
  applyEvents();
  showNotice(rows.length ? '' : 'No domain has been reported yet.');
  render();
}, (e) => {
  showNotice(e.status === 404
    ? 'The overview needs the `rest` sink (GET /api/v1.0/stats/), which is not enabled.'
    : `Cannot read the statistics: ${e.message}`);
});

// State changes show as soon as libvirt reports them (the stream of the `events`
// sink), before the next sample confirms them. Without that sink, the samples alone
// drive the table.
fetch('/api/v1.0/events?all_events=true&max_events=1', { cache: 'no-store' }).then(async (r) => {
  await r.text();
  if (!r.ok) return;
  const source = new EventSource('/api/v1.0/events?stream=true&all_events=true');
  source.addEventListener('lifecycle', (m) => {
    const e = JSON.parse(m.data);
    lastEvent.set(e.domain_id, e);
    applyEvents();
    render();
  });
  addEventListener('pagehide', () => source.close());
}).catch(() => {});
