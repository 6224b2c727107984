// Shared by every page: JSON fetching, number/time formatting, safe DOM building, and
// the agent health header (from /healthz, refreshed every second).

export const REFRESH_MS = 1000;
/**
 * Statistics are read twice per collection interval (1 s), so a new sample shows at
 * most half a second after it was collected.
 */
export const POLL_MS = 500;

/** GET a JSON document; throws an Error with the status on failure. */
export async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
  if (!r.ok) {
    const err = new Error(`${url}: HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

/** GET an NDJSON document (the events history) as an array of objects. */
export async function getNDJSON(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) {
    const err = new Error(`${url}: HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  const text = await r.text();
  return text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l));
}

/** Creates an element: `el('td', {class: 'num'}, 'text', child)`. Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function fmtBytes(v, decimals) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < BYTE_UNITS.length - 1) {
    x /= 1024;
    i++;
  }
  const digits = decimals ?? (i === 0 ? 0 : x < 10 ? 2 : x < 100 ? 1 : 0);
  return `${v < 0 ? '-' : ''}${x.toFixed(digits)} ${BYTE_UNITS[i]}`;
}

export const fmtByteRate = (v) => (Number.isFinite(v) ? `${fmtBytes(v)}/s` : '–');

export function fmtNum(v, digits) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(digits ?? 1)} M`;
  if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(digits ?? 1)} k`;
  return v.toFixed(digits ?? (Math.abs(v) >= 100 ? 0 : 1));
}

export const fmtPct = (v) => (Number.isFinite(v) ? `${v.toFixed(v >= 100 ? 0 : 1)} %` : '–');

/** `2026-12-02 07:30:04` (UTC) from seconds since the epoch or an RFC 3339 string. */
export function fmtTime(t) {
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, '').replace('Z', '');
}

export function showNotice(text) {
  const n = document.getElementById('notice');
  if (n && n.textContent !== text) n.textContent = text;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** The last /healthz answer, for pages that show per-domain health (stale, errors). */
export const health = { value: null };

function healthItem(cls, text, title) {
  return el('span', { title }, el('span', { class: `dot ${cls}`, 'aria-hidden': 'true' }), text);
}

async function refreshHealth(box) {
  let h;
  try {
    // verbose: the full inventory also when basic auth is on (the page is behind it).
    h = await getJSON('/healthz?verbose=true');
  } catch (e) {
    health.value = null;
    box.replaceChildren(healthItem('bad', 'agent unreachable', String(e)));
    return;
  }
  health.value = h;
  const lv = h.libvirt || {};
  const collectors = Object.entries(h.collectors || {});
  const failing = collectors.filter(([, c]) => !c.last_success).map(([id]) => id);
  const sinks = Object.entries(h.sinks || {});
  const dropped = sinks.reduce((a, [, s]) => a + (s.dropped_records || 0), 0);
  const parts = [
    healthItem(lv.connected ? 'ok' : 'bad', lv.connected ? 'libvirt connected' : 'libvirt disconnected',
      lv.last_error ? `last error: ${lv.last_error}` : `reconnects: ${lv.reconnects ?? 0}`),
    healthItem(failing.length ? 'bad' : 'ok',
      failing.length ? `collectors failing: ${failing.join(', ')}` : `${collectors.length} collectors ok`,
      collectors.map(([id, c]) => `${id}: ${c.runs} runs, ${c.errors} errors`).join('\n')),
  ];
  if (sinks.length) {
    parts.push(healthItem(dropped ? 'warn' : 'ok',
      dropped ? `sinks: ${dropped} records dropped` : `${sinks.length} sinks ok`,
      sinks.map(([id, s]) => `${id}: ${s.dropped_records || 0} dropped`).join('\n')));
  }
  // Only touch the live region when the text changes, so screen readers are not
  // interrupted every second.
  const key = parts.map((p) => p.textContent + '|' + p.title).join('/');
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.replaceChildren(...parts);
  }
}

/** Host facts (`/ui/api/host`), fetched once. */
let hostPromise = null;
export function hostInfo() {
  if (!hostPromise) {
    hostPromise = getJSON('/ui/api/host').catch(() => ({ host_cpus: null, hostname: '', version: '' }));
  }
  return hostPromise;
}

/** Starts the header: host name, version and agent health every second. */
export function startHeader() {
  hostInfo().then((h) => {
    const hn = document.getElementById('hostname');
    if (hn && h.hostname) setText(hn, `· ${h.hostname}`);
    const v = document.getElementById('version');
    if (v && h.version) setText(v, h.version);
  });
  const box = document.getElementById('health');
  const tick = () => refreshHealth(box).finally(() => setTimeout(tick, REFRESH_MS));
  tick();
}

/**
 * Runs `fn` now and then every `ms` after each run finishes (no overlapping runs); a
 * failed run is shown in the page's notice and the next one is tried as usual.
 */
export function every(ms, fn, onError = (e) => showNotice(String((e && e.message) || e))) {
  const run = async () => {
    try {
      await fn();
    } catch (e) {
      onError(e);
    } finally {
      setTimeout(run, ms);
    }
  };
  run();
}

/** The CSS custom property `name` of the page (theme colours for the charts). */
export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** The domain name and URL of a VM page. */
export const vmHref = (uuid) => `/ui/vm?id=${encodeURIComponent(uuid)}`;
