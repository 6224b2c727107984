// One VM: live charts (the REST history's last 60 s, then a poll every second merged
// into a sliding window), lifecycle events (history of the last 24 h + the live SSE
// stream), and its specification (devices table, full JSON).

import { POLL_MS, el, every, fmtBytes, fmtTime, getJSON, getNDJSON, health, showNotice, startHeader } from './common.js';
import { LiveChart, WINDOW_SECONDS } from './charts.js';
import {
  cpuSeries, diskBytesSeries, diskIopsSeries, memorySeries, mergeWindow, netBytesSeries,
  netPacketsSeries, orderSamples, swapSeries, vcpuCount, vcpuSeries,
} from './rates.js';

startHeader();

let id = new URLSearchParams(location.search).get('id') || '';
const chartsBox = document.getElementById('charts');
const CHARTS = [
  ['chart-cpu', 'CPU', '% of its vCPUs', 'pct', cpuSeries],
  ['chart-vcpu', 'Per vCPU: busy, steal (delay), wait', '% of one vCPU', 'pct', vcpuSeries],
  ['chart-memory', 'Memory', 'bytes', 'bytes', memorySeries],
  ['chart-swap', 'Swap', 'bytes/s', 'byteRate', swapSeries],
  ['chart-disk-bytes', 'Disk throughput', 'bytes/s per device', 'byteRate', diskBytesSeries],
  ['chart-disk-iops', 'Disk IOPS', 'requests/s per device', 'rate', diskIopsSeries],
  ['chart-net-bytes', 'Network throughput', 'bytes/s per interface', 'byteRate', netBytesSeries],
  ['chart-net-packets', 'Network packets', 'packets/s per interface', 'rate', netPacketsSeries],
].map(([cid, title, unit, format, series]) => ({ chart: new LiveChart(chartsBox, { id: cid, title, unit, format }), series }));

let samplesWindow = [];
let lastRendered = null;
let uuid = id;

/** Device names seen in the window (a partial sample may lack a group). */
function names(items) {
  const all = new Set();
  for (const s of samplesWindow) for (const d of items(s) || []) all.add(d.name);
  return [...all].join(', ') || '–';
}

function setFacts(s) {
  const facts = document.getElementById('facts');
  const h = (health.value && health.value.domains && health.value.domains[uuid]) || {};
  const items = [
    ['State', `${s.state || '?'}${s.state_reason ? ` (${s.state_reason})` : ''}`, 'fact-state'],
    ['vCPUs', String(vcpuCount(s) || '–')],
    ['Balloon', fmtBytes(s.memory && Number.isFinite(s.memory.actual) ? s.memory.actual * 1024 : null)],
    ['Disks', names((x) => x.diskio)],
    ['Interfaces', names((x) => x.network && x.network.interfaces)],
    ['Stale', h.stale === undefined ? '–' : h.stale ? 'yes' : 'no'],
    ['Collection errors', String(h.collection_errors ?? '–')],
    ['UUID', uuid],
  ];
  const key = JSON.stringify(items);
  if (facts.dataset.key === key) return;
  facts.dataset.key = key;
  facts.replaceChildren(...items.map(([k, v, fid]) => el('div', {}, el('dt', {}, k), el('dd', { id: fid }, v))));
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function pollStats() {
  if (!UUID_RE.test(id)) await resolveId();
  let body;
  try {
    body = await getJSON(`/api/v1.0/stats/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e.status === 503) {
      showNotice('Waiting for the agent’s first collection…');
      return;
    }
    if (e.status === 404) {
      showNotice(`No samples for domain “${id}” in the last ${WINDOW_SECONDS} s: it is not running, or the rest sink is not enabled.`);
      return;
    }
    throw e;
  }
  const [key, samples] = Object.entries(body)[0] || [];
  if (!key) return;
  uuid = key;
  samplesWindow = mergeWindow(samplesWindow, samples, WINDOW_SECONDS + 1);
  const ordered = orderSamples(samplesWindow);
  const newest = ordered[ordered.length - 1].s;
  showNotice('');
  const title = newest.name || uuid;
  if (document.getElementById('title').textContent !== title) {
    document.getElementById('title').textContent = title;
    document.title = `${title} · vadvisor`;
  }
  setFacts(newest);
  if (newest.timestamp === lastRendered) return;
  lastRendered = newest.timestamp;
  for (const { chart, series } of CHARTS) chart.update(series(samplesWindow));
}

/**
 * `id` may be a name or a UUID in another spelling: find the domain in the history
 * (the stats endpoint takes the UUID as the agent spells it). True when found.
 */
async function resolveId() {
  const all = await getJSON('/api/v1.0/stats/');
  const want = id.toLowerCase().replace(/[{}-]|^urn:uuid:/g, '');
  for (const [u, samples] of Object.entries(all)) {
    const last = samples[samples.length - 1] || {};
    if (last.name === id || u.replace(/-/g, '') === want) {
      id = u;
      return true;
    }
  }
  return false;
}

// ---- Lifecycle events

const timeline = document.getElementById('timeline');
const eventsStatus = document.getElementById('events-status');
const seenEvents = new Set();

function addEvent(e, live) {
  const key = `${e.timestamp}|${e.event_type}|${e.reason}`;
  if (seenEvents.has(key)) return;
  seenEvents.add(key);
  const li = el('li', { class: `ev-${e.event_type}`, 'data-type': e.event_type },
    el('time', { datetime: e.timestamp }, fmtTime(e.timestamp)), ' ',
    el('span', { class: 'ev' }, e.event_type), ' ',
    el('span', {}, e.reason || ''),
    e.reconciled ? el('span', { class: 'badge', title: 'found after a reconnect to libvirt' }, 'reconciled') : null);
  // Newest first: insert before the first older entry.
  const older = [...timeline.children].find((x) => x.querySelector('time').getAttribute('datetime') < e.timestamp);
  timeline.insertBefore(li, older || null);
  while (timeline.children.length > 200) timeline.lastElementChild.remove();
  if (live) eventsStatus.textContent = 'Live: new events appear at the top.';
}

async function startEvents() {
  const domain = encodeURIComponent(id);
  // The stream first, then the history: an event between the two is shown once.
  let history;
  const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  try {
    history = await getNDJSON(`/api/v1.0/events?all_events=true&max_events=0&domain=${domain}&start_time=${encodeURIComponent(since)}`);
  } catch (e) {
    eventsStatus.textContent = e.status === 404
      ? 'Events need the `events` collector and sink, which are not enabled.'
      : `Cannot read events: ${e.message}`;
    return;
  }
  const source = new EventSource(`/api/v1.0/events?stream=true&all_events=true&domain=${domain}`);
  source.addEventListener('lifecycle', (m) => addEvent(JSON.parse(m.data), true));
  source.addEventListener('open', () => {
    eventsStatus.textContent = timeline.children.length
      ? 'Live: new events appear at the top.'
      : 'No event in the last 24 hours; new events appear here live.';
  });
  source.addEventListener('error', () => { eventsStatus.textContent = 'Event stream interrupted; reconnecting…'; });
  addEventListener('pagehide', () => source.close());
  for (const e of history) addEvent(e, false);
  eventsStatus.textContent = timeline.children.length
    ? 'Live: new events appear at the top.'
    : 'No event in the last 24 hours; new events appear here live.';
}

// ---- Specification

function describe(dev, keys) {
  for (const k of keys) {
    const v = dev[k];
    if (v === undefined) continue;
    if (typeof v !== 'object') return `${k}=${v}`;
    const inner = Object.entries(v).filter(([, x]) => typeof x !== 'object').map(([a, x]) => `${a}=${x}`);
    if (inner.length) return `${k}: ${inner.join(' ')}`;
  }
  return '';
}

async function loadSpec() {
  const status = document.getElementById('spec-status');
  let spec;
  try {
    spec = await getJSON(`/api/v1.0/specs/${encodeURIComponent(id)}`);
  } catch (e) {
    status.textContent = e.status === 404
      ? 'No specification: the `specs` collector is not enabled, or the domain is unknown.'
      : `Cannot read the specification: ${e.message}`;
    return;
  }
  const d = spec.domain || {};
  const devices = Array.isArray(d.devices) ? d.devices : [];
  status.textContent = `${devices.length} devices; machine ${(d.os && d.os.type && d.os.type.machine) || '?'}, type ${d.type || '?'}.`;
  const tbody = document.getElementById('devices').tBodies[0];
  tbody.replaceChildren(...devices.map((dev) => {
    const typeModel = [dev.type, dev.model && (dev.model.type || dev.model.name || (typeof dev.model === 'string' ? dev.model : '')), dev.device]
      .filter((x) => x && typeof x !== 'object').join(' / ');
    return el('tr', {},
      el('th', { scope: 'row' }, dev.family || '?'),
      el('td', {}, typeModel || '–'),
      el('td', { class: 'mono' }, describe(dev, ['target', 'alias']) || '–'),
      el('td', { class: 'mono' }, describe(dev, ['source', 'mac', 'address']) || '–'));
  }));
  document.getElementById('spec-json').textContent = JSON.stringify(spec, null, 2);
}

if (!id) {
  showNotice('No VM selected: open a VM from the overview.');
} else {
  every(POLL_MS, pollStats, (e) => showNotice(`Cannot read the statistics: ${e.message}`));
  startEvents();
  loadSpec();
}
