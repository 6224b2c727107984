// Events page: the lifecycle events of every VM — the last 24 hours of history, then
// the live Server-Sent Events stream — filtered by type and domain in the page.

import { el, fmtTime, getJSON, getNDJSON, showNotice, startHeader, vmHref } from './common.js';
import { naturalCompare } from './rates.js';

startHeader();

const TYPES = ['Defined', 'Undefined', 'Started', 'Suspended', 'Resumed', 'Stopped', 'Shutdown', 'PMSuspended', 'Crashed', 'Unknown'];
const MAX_ROWS = 500;

const typesBox = document.getElementById('types');
const domainSelect = document.getElementById('domain');
const tbody = document.getElementById('events').tBodies[0];
const caption = document.getElementById('events-caption');
const status = document.getElementById('stream-status');

for (const t of TYPES) {
  const input = el('input', { type: 'checkbox', name: 'type', value: t, checked: true });
  typesBox.append(el('label', { class: `ev-${t}` }, input, ' ', t));
}
typesBox.addEventListener('change', render);
domainSelect.addEventListener('change', render);
document.getElementById('filters').addEventListener('submit', (e) => e.preventDefault());

const events = []; // newest first
const seen = new Set();
const domains = new Map(); // uuid -> name

function addDomain(uuid, name) {
  if (!uuid || domains.get(uuid) === name) return;
  domains.set(uuid, name || uuid);
  const selected = domainSelect.value;
  const options = [...domains.entries()].sort((a, b) => naturalCompare(a[1], b[1]))
    .map(([u, n]) => el('option', { value: u }, n));
  domainSelect.replaceChildren(el('option', { value: '' }, 'All domains'), ...options);
  domainSelect.value = selected;
}

function add(e) {
  const key = `${e.timestamp}|${e.domain_id}|${e.event_type}|${e.reason}`;
  if (seen.has(key)) return false;
  seen.add(key);
  addDomain(e.domain_id, e.domain_name);
  const at = events.findIndex((x) => x.timestamp < e.timestamp);
  events.splice(at < 0 ? events.length : at, 0, e);
  if (events.length > MAX_ROWS) events.length = MAX_ROWS;
  return true;
}

function render() {
  const types = new Set([...typesBox.querySelectorAll('input:checked')].map((i) => i.value));
  const domain = domainSelect.value;
  const shown = events.filter((e) => (types.has(e.event_type) || (!TYPES.includes(e.event_type) && types.has('Unknown')))
    && (!domain || e.domain_id === domain));
  tbody.replaceChildren(...shown.map((e) => el('tr', { class: `ev-${e.event_type}`, 'data-domain': e.domain_name },
    el('td', { class: 'mono' }, el('time', { datetime: e.timestamp }, fmtTime(e.timestamp))),
    el('th', { scope: 'row' }, el('a', { href: vmHref(e.domain_id) }, e.domain_name || e.domain_id)),
    el('td', {}, el('span', { class: 'ev' }, e.event_type)),
    el('td', {}, e.reason || '', e.reconciled ? el('span', { class: 'badge', title: 'found after a reconnect to libvirt' }, ' reconciled') : null))));
  caption.textContent = `${shown.length} of ${events.length} events (last 24 hours and live), newest first.`;
}

async function start() {
  // Domains known from the statistics, so a quiet VM can be selected too.
  getJSON('/api/v1.0/stats/').then((stats) => {
    for (const [uuid, samples] of Object.entries(stats)) {
      const last = samples[samples.length - 1];
      addDomain(uuid, last && last.name);
    }
  }).catch(() => {});
  let history;
  const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  try {
    history = await getNDJSON(`/api/v1.0/events?all_events=true&max_events=0&start_time=${encodeURIComponent(since)}`);
  } catch (e) {
    showNotice(e.status === 404
      ? 'This page needs the `events` collector and sink, which are not enabled.'
      : `Cannot read events: ${e.message}`);
    status.textContent = 'not connected';
    return;
  }
  const source = new EventSource('/api/v1.0/events?stream=true&all_events=true');
  source.addEventListener('lifecycle', (m) => {
    if (add(JSON.parse(m.data))) render();
  });
  source.addEventListener('open', () => { status.textContent = 'Live'; });
  source.addEventListener('error', () => { status.textContent = 'Stream interrupted; reconnecting…'; });
  addEventListener('pagehide', () => source.close());
  for (const e of history.slice(-MAX_ROWS)) add(e);
  render();
}

start();
