// Turns the REST history (cumulative counters and gauges per sample) into chart series:
// per-second rates from counters, with no spike when a counter goes backwards (the VM
// restarted, a device was re-plugged) or when samples are missing for a while.
// Pure functions only, unit-tested by tests/rates.test.js (node --test).

/** A gap between two samples longer than this many seconds breaks the line. */
export const MAX_GAP_SECONDS = 5;

/**
 * States of a domain that is not running a guest. Its counters are not the guest's
 * (libvirt may report the process's last totals, or other accounting): no rate is drawn
 * to or from such a sample.
 */
export const INACTIVE_STATES = new Set(['Shutoff', 'Crashed', 'NoState']);

/** Whether a sample is of an active domain (running, paused, …). */
export const isActive = (s) => !!s && !INACTIVE_STATES.has(s.state);

/** Seconds since the epoch of an RFC 3339 timestamp (microseconds kept). */
export function parseTime(ts) {
  if (typeof ts !== 'string') return NaN;
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$/.exec(ts);
  if (!m) return NaN;
  const whole = Date.parse(m[1] + m[3]);
  return whole / 1000 + (m[2] ? parseFloat('0' + m[2]) : 0);
}

/**
 * Rate of a counter between two readings `seconds` apart; `null` when it cannot be
 * known: a reading is missing, time did not advance, or the counter went backwards
 * (a reset: the new value counts from an unknown start, so no rate is drawn).
 */
export function counterRate(prev, cur, seconds) {
  if (!Number.isFinite(prev) || !Number.isFinite(cur) || !(seconds > 0)) return null;
  if (cur < prev) return null;
  return (cur - prev) / seconds;
}

/** Samples with a valid timestamp, oldest first, one per timestamp. */
export function orderSamples(samples) {
  const byTime = new Map();
  for (const s of samples || []) {
    const t = parseTime(s && s.timestamp);
    if (Number.isFinite(t)) byTime.set(t, s);
  }
  return [...byTime.entries()].sort((a, b) => a[0] - b[0]).map(([t, s]) => ({ t, s }));
}

/** Merges new samples into a window, keeping those within `seconds` of the newest. */
export function mergeWindow(window, samples, seconds) {
  const merged = orderSamples([...(window || []), ...(samples || [])]);
  if (merged.length === 0) return [];
  const newest = merged[merged.length - 1].t;
  return merged.filter((x) => x.t >= newest - seconds).map((x) => x.s);
}

/**
 * Per-second rates of counters. `extract(sample)` returns `{key: counter}`; the result
 * has one time per sample after the first (`times`, seconds) and, per key seen, one
 * value per time (`null` where no rate is known), each multiplied by `scale`.
 */
export function rateSeries(samples, extract, scale = 1) {
  const ordered = orderSamples(samples);
  const times = [];
  const rows = [];
  const keys = new Set();
  for (let i = 1; i < ordered.length; i++) {
    const prev = ordered[i - 1];
    const cur = ordered[i];
    const dt = cur.t - prev.t;
    const a = extract(prev.s) || {};
    const b = extract(cur.s) || {};
    const row = {};
    const usable = dt <= MAX_GAP_SECONDS && isActive(prev.s) && isActive(cur.s);
    for (const [k, v] of Object.entries(b)) {
      keys.add(k);
      const r = usable ? counterRate(a[k], v, dt) : null;
      row[k] = r === null ? null : r * scale;
    }
    times.push(cur.t);
    rows.push(row);
  }
  return toSeries(times, rows, keys);
}

/** Gauges as series: `extract(sample)` returns `{key: value}`, times are every sample. */
export function gaugeSeries(samples, extract, scale = 1) {
  const ordered = orderSamples(samples);
  const times = [];
  const rows = [];
  const keys = new Set();
  for (const { t, s } of ordered) {
    const row = {};
    for (const [k, v] of Object.entries(extract(s) || {})) {
      keys.add(k);
      row[k] = Number.isFinite(v) ? v * scale : null;
    }
    times.push(t);
    rows.push(row);
  }
  return toSeries(times, rows, keys);
}

function toSeries(times, rows, keys) {
  const values = {};
  for (const k of [...keys].sort(naturalCompare)) {
    values[k] = rows.map((r) => (k in r ? r[k] : null));
  }
  return { times, values };
}

/** Compares strings with embedded numbers naturally (`vda` < `vdb`, `vCPU 2` < `vCPU 10`). */
export function naturalCompare(a, b) {
  return String(a).localeCompare(String(b), 'en', { numeric: true });
}

// ---- What the pages chart, from vAdvisor's sample shape (docs/api.md).

const list = (v) => (Array.isArray(v) ? v : []);

/** CPU use in % of the VM's vCPUs: total, user, system (cpu times are milliseconds). */
export function cpuSeries(samples) {
  return rateSeries(samples, (s) => {
    const u = (s.cpu && s.cpu.usage) || {};
    const n = vcpuCount(s);
    const pct = (ms) => (Number.isFinite(ms) && n > 0 ? ms / 10 / n : undefined);
    const out = {};
    if (u.cpu_time !== undefined) out.total = pct(u.cpu_time);
    if (u.user_time !== undefined) out.user = pct(u.user_time);
    if (u.system_time !== undefined) out.system = pct(u.system_time);
    return out;
  });
}

/** Per vCPU: busy % and delay % (time runnable but not running: steal), `wait` %. */
export function vcpuSeries(samples) {
  return rateSeries(samples, (s) => {
    const out = {};
    for (const c of list(s.cpu && s.cpu.per_cpu_usage)) {
      const i = c.index;
      if (Number.isFinite(c.vcpu_time)) out[`vCPU ${i}`] = c.vcpu_time;
      if (Number.isFinite(c.delay_time)) out[`vCPU ${i} steal`] = c.delay_time;
      if (Number.isFinite(c.wait_time)) out[`vCPU ${i} wait`] = c.wait_time;
    }
    return out;
  }, 0.1);
}

/** Memory in bytes: balloon, available, used (available − unused), rss (KiB in the API). */
export function memorySeries(samples) {
  return gaugeSeries(samples, (s) => {
    const m = s.memory || {};
    const out = {};
    if (Number.isFinite(m.actual)) out.balloon = m.actual;
    if (Number.isFinite(m.available)) out.available = m.available;
    if (Number.isFinite(m.available) && Number.isFinite(m.unused)) out.used = m.available - m.unused;
    if (Number.isFinite(m.rss)) out.rss = m.rss;
    return out;
  }, 1024);
}

/** Swap traffic in bytes/s (cumulative KiB in the API). */
export function swapSeries(samples) {
  return rateSeries(samples, (s) => {
    const m = s.memory || {};
    const out = {};
    if (Number.isFinite(m.swap_in)) out['swap in'] = m.swap_in;
    if (Number.isFinite(m.swap_out)) out['swap out'] = m.swap_out;
    return out;
  }, 1024);
}

function perDevice(samples, items, fields) {
  return rateSeries(samples, (s) => {
    const out = {};
    for (const d of items(s)) {
      for (const [field, label] of fields) {
        if (Number.isFinite(d[field])) out[`${d.name} ${label}`] = d[field];
      }
    }
    return out;
  });
}

const disks = (s) => list(s.diskio);
const nics = (s) => list(s.network && s.network.interfaces);

export const diskBytesSeries = (samples) =>
  perDevice(samples, disks, [['rd_bytes', 'read'], ['wr_bytes', 'write']]);
export const diskIopsSeries = (samples) =>
  perDevice(samples, disks, [['rd_reqs', 'read'], ['wr_reqs', 'write']]);
export const netBytesSeries = (samples) =>
  perDevice(samples, nics, [['rx_bytes', 'rx'], ['tx_bytes', 'tx']]);
export const netPacketsSeries = (samples) =>
  perDevice(samples, nics, [['rx_packets', 'rx'], ['tx_packets', 'tx']]);

/** The VM's vCPU count (current, else the per-vCPU entries). */
export function vcpuCount(s) {
  const v = s && s.cpu && s.cpu.vcpus;
  if (v && Number.isFinite(v.current) && v.current > 0) return v.current;
  return list(s && s.cpu && s.cpu.per_cpu_usage).length;
}

/**
 * Sum over devices of per-device rates of `field` between two samples. Only devices in
 * both samples count, and a device whose counter went backwards adds nothing: a device
 * plugged in or re-created between samples never shows as a spike. `null` when no
 * device gives a rate.
 */
export function deviceRate(items, prev, cur, field, seconds) {
  const before = new Map(items(prev).map((d) => [d.name, d[field]]));
  let total = null;
  for (const d of items(cur)) {
    const r = counterRate(before.get(d.name), d[field], seconds);
    if (r !== null) total = (total || 0) + r;
  }
  return total;
}

/** Pairs of samples looked back over when the newest sample lacks a figure. */
export const HOLD_SAMPLES = 5;

/** The overview's figures from one pair of consecutive samples (`prev` may be null). */
function pairFigures(prev, cur, hostCpus) {
  const s = cur.s;
  const vcpus = vcpuCount(s);
  const dt = prev ? cur.t - prev.t : 0;
  const ok = prev && dt <= MAX_GAP_SECONDS && isActive(prev.s) && isActive(s);
  const cpuTime = (x) => x && x.cpu && x.cpu.usage && x.cpu.usage.cpu_time;
  const cpuMsPerS = ok ? counterRate(cpuTime(prev.s), cpuTime(s), dt) : null;
  const m = (isActive(s) && s.memory) || {};
  const dev = (items, field) => (ok ? deviceRate(items, prev.s, s, field, dt) : null);
  return {
    vcpus: vcpus > 0 ? vcpus : null,
    cpu_vcpus: cpuMsPerS === null || !(vcpus > 0) ? null : cpuMsPerS / 10 / vcpus,
    cpu_host: cpuMsPerS === null || !(hostCpus > 0) ? null : cpuMsPerS / 10 / hostCpus,
    mem_used: Number.isFinite(m.available) && Number.isFinite(m.unused) ? (m.available - m.unused) * 1024 : null,
    mem_available: Number.isFinite(m.available) ? m.available * 1024 : null,
    disk_read: dev(disks, 'rd_bytes'),
    disk_write: dev(disks, 'wr_bytes'),
    disk_read_iops: dev(disks, 'rd_reqs'),
    disk_write_iops: dev(disks, 'wr_reqs'),
    net_rx: dev(nics, 'rx_bytes'),
    net_tx: dev(nics, 'tx_bytes'),
  };
}

/**
 * One overview row from a domain's newest samples: state, CPU % of its vCPUs and of
 * the host, memory, and disk/network rates summed over devices ([`deviceRate`]). A
 * figure missing from the newest sample (a partial collection: the guest was busy) is
 * taken from the newest of the last `HOLD_SAMPLES` pairs that has it, so the table
 * does not flicker; the row's stale flag and error count tell that data is partial.
 */
export function overviewRow(samples, hostCpus) {
  const ordered = orderSamples(samples);
  if (ordered.length === 0) return null;
  const last = ordered[ordered.length - 1];
  const row = { name: last.s.name, state: last.s.state, reason: last.s.state_reason, time: last.t };
  // A stopped domain uses nothing: only its vCPU count is shown, nothing is held.
  const first = isActive(last.s) ? Math.max(0, ordered.length - HOLD_SAMPLES) : ordered.length - 1;
  for (let i = ordered.length - 1; i >= first; i--) {
    const figures = pairFigures(i > 0 ? ordered[i - 1] : null, ordered[i], hostCpus);
    for (const [k, v] of Object.entries(figures)) {
      if (row[k] === undefined || row[k] === null) row[k] = v;
    }
  }
  return row;
}

// ---- Lifecycle events between samples

/** The domain state a lifecycle event leads to (`null`: the state does not change). */
export function stateAfterEvent(eventType) {
  switch (eventType) {
    case 'Started':
    case 'Resumed':
      return 'Running';
    case 'Suspended':
      return 'Paused';
    case 'Stopped':
    case 'Shutdown':
      return 'Shutoff';
    case 'PMSuspended':
      return 'PMSuspended';
    case 'Crashed':
      return 'Crashed';
    default:
      return null;
  }
}

/**
 * A row's state with the newest lifecycle event applied: an event received after the
 * row's newest sample shows at once (the next sample comes up to a second later); a
 * sample newer than the event wins.
 */
export function withEvent(row, event) {
  if (!row || !event) return row;
  const state = stateAfterEvent(event.event_type);
  const t = parseTime(event.timestamp);
  if (state === null || !(t > row.time)) return row;
  return { ...row, state, reason: event.reason ? String(event.reason).toLowerCase() : row.reason };
}
