// Unit tests of the UI's counter/rate logic (rates.js): `node --test` (tests/ui_js.rs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseTime, counterRate, rateSeries, mergeWindow, cpuSeries, vcpuSeries, memorySeries,
  diskBytesSeries, netPacketsSeries, overviewRow, deviceRate, swapSeries, withEvent, stateAfterEvent,
} from '../rates.js';

const T0 = Date.parse('2026-01-01T00:00:00Z') / 1000;
const ts = (sec) => new Date((T0 + sec) * 1000).toISOString().replace('.000Z', '.250000Z');

/** A sample `sec` seconds after T0 with the given cumulative figures. */
function sample(sec, { cpu = 0, vcpus = 2, disk = {}, nic = {}, state = 'Running', mem } = {}) {
  return {
    name: 'vm1', state, state_reason: 'booted', timestamp: ts(sec),
    cpu: {
      usage: { cpu_time: cpu, user_time: cpu / 2, system_time: cpu / 4 },
      vcpus: { current: vcpus, maximum: vcpus },
      per_cpu_usage: [{ index: 0, vcpu_time: cpu, delay_time: cpu / 10, wait_time: 0 }],
    },
    diskio: Object.entries(disk).map(([name, [rd, wr]]) => ({ name, rd_bytes: rd, wr_bytes: wr, rd_reqs: rd / 512, wr_reqs: wr / 512 })),
    network: { interfaces: Object.entries(nic).map(([name, [rx, tx]]) => ({ name, rx_bytes: rx, tx_bytes: tx, rx_packets: rx / 100, tx_packets: tx / 100 })) },
    memory: mem,
  };
}

test('timestamps keep microseconds and accept offsets', () => {
  assert.equal(parseTime('2026-01-01T00:00:01.500001Z'), T0 + 1.500001);
  assert.equal(parseTime('2026-01-01T01:00:01+01:00'), T0 + 1);
  assert.ok(Number.isNaN(parseTime('yesterday')));
  assert.ok(Number.isNaN(parseTime(undefined)));
});

test('counter rate: normal, reset, missing, no time', () => {
  assert.equal(counterRate(100, 300, 2), 100);
  assert.equal(counterRate(300, 100, 1), null, 'a counter going backwards is a reset, not a negative rate');
  assert.equal(counterRate(undefined, 100, 1), null);
  assert.equal(counterRate(100, 100, 0), null);
  assert.equal(counterRate(0, 0, 1), 0);
});

test('a VM restart (counters back near zero) draws a gap, not a spike', () => {
  const samples = [
    sample(0, { cpu: 50_000, disk: { vda: [9e9, 9e9] } }),
    sample(1, { cpu: 50_500, disk: { vda: [9e9 + 1000, 9e9 + 2000] } }),
    // restarted: counters start again from small values
    sample(2, { cpu: 10, disk: { vda: [4096, 0] } }),
    sample(3, { cpu: 510, disk: { vda: [8192, 512] } }),
  ];
  const cpu = cpuSeries(samples);
  assert.deepEqual(cpu.times, [T0 + 1.25, T0 + 2.25, T0 + 3.25]);
  // 500 ms of CPU per second over 2 vCPUs = 25 %
  assert.deepEqual(cpu.values.total, [25, null, 25]);
  const disk = diskBytesSeries(samples);
  assert.deepEqual(disk.values['vda read'], [1000, null, 4096]);
  assert.deepEqual(disk.values['vda write'], [2000, null, 512]);
  for (const v of [...cpu.values.total, ...disk.values['vda read']]) {
    assert.ok(v === null || (v >= 0 && v <= 4096), `no spike: ${v}`);
  }
});

test('a long gap between samples breaks the line', () => {
  const s = cpuSeries([sample(0, { cpu: 0 }), sample(30, { cpu: 15_000 }), sample(31, { cpu: 15_200 })]);
  assert.deepEqual(s.values.total, [null, 10]);
});

test('devices that appear later start with a gap; sorted naturally', () => {
  const samples = [
    sample(0, { nic: { vnet10: [0, 0] } }),
    sample(1, { nic: { vnet10: [1000, 500], vnet2: [7e9, 7e9] } }),
    sample(2, { nic: { vnet10: [2000, 1000], vnet2: [7e9 + 100, 7e9 + 300] } }),
  ];
  const p = netPacketsSeries(samples);
  assert.deepEqual(Object.keys(p.values), ['vnet2 rx', 'vnet2 tx', 'vnet10 rx', 'vnet10 tx']);
  assert.deepEqual(p.values['vnet2 rx'], [null, 1]);
  assert.deepEqual(p.values['vnet10 rx'], [10, 10]);
});

test('per-vCPU busy and steal in %; memory in bytes; swap rate', () => {
  const mem = (sw) => ({ actual: 1024, available: 1000, unused: 400, rss: 900, swap_in: sw, swap_out: 0 });
  const samples = [sample(0, { cpu: 0, mem: mem(0) }), sample(1, { cpu: 800, mem: mem(4) })];
  const v = vcpuSeries(samples);
  assert.deepEqual(v.values['vCPU 0'], [80]);
  assert.deepEqual(v.values['vCPU 0 steal'], [8]);
  const m = memorySeries(samples);
  assert.deepEqual(m.values.used, [600 * 1024, 600 * 1024]);
  assert.deepEqual(m.values.balloon, [1024 * 1024, 1024 * 1024]);
  assert.deepEqual(swapSeries(samples).values['swap in'], [4096]);
});

test('samples are ordered and deduplicated; the window keeps the last seconds', () => {
  const a = sample(0, { cpu: 0 });
  const b = sample(1, { cpu: 100 });
  const c = sample(2, { cpu: 200 });
  const s = rateSeries([c, a, b, b], (x) => ({ t: x.cpu.usage.cpu_time }));
  assert.deepEqual(s.values.t, [100, 100]);
  const w = mergeWindow([a, b], [b, c], 1);
  assert.deepEqual(w.map((x) => x.timestamp), [b.timestamp, c.timestamp]);
});

test('overview row: rates of the two newest samples; resets and new devices are not spikes', () => {
  const samples = [
    sample(0, { cpu: 1000, vcpus: 2, disk: { vda: [1000, 0] }, nic: { vnet0: [5e9, 5e9] } }),
    sample(1, { cpu: 2000, vcpus: 2, disk: { vda: [3000, 512], vdb: [8e9, 8e9] }, nic: { vnet0: [10, 20] } }),
  ];
  const row = overviewRow(samples, 4);
  assert.equal(row.cpu_vcpus, 50);
  assert.equal(row.cpu_host, 25);
  assert.equal(row.disk_read, 2000, 'vdb appeared: not counted');
  assert.equal(row.disk_write, 512);
  assert.equal(row.net_rx, null, 'vnet0 was reset');
  assert.equal(row.state, 'Running');
  assert.equal(row.vcpus, 2);
  assert.equal(overviewRow([samples[1]], 4).cpu_vcpus, null, 'one sample: no rate yet');
  assert.equal(overviewRow([], 4), null);
  const items = (s) => s.diskio;
  assert.equal(deviceRate(items, samples[0], samples[1], 'rd_bytes', 0.5), 4000);
});

test('overview row: a figure missing from the newest (partial) sample comes from the pair before', () => {
  const full = [
    sample(0, { cpu: 0, disk: { vda: [0, 0] }, mem: { available: 1000, unused: 400 } }),
    sample(1, { cpu: 100, disk: { vda: [1000, 0] }, mem: { available: 1000, unused: 400 } }),
  ];
  const partial = sample(2, { cpu: 200 });
  delete partial.diskio;
  const row = overviewRow([...full, partial], 1);
  assert.equal(row.cpu_host, 10, 'CPU from the newest pair');
  assert.equal(row.disk_read, 1000, 'disk from the pair before');
  assert.equal(row.mem_used, 600 * 1024);
  // Older than HOLD_SAMPLES pairs: not held.
  const old = [sample(0, { disk: { vda: [0, 0] } }), sample(1, { disk: { vda: [5, 0] } })];
  const later = [2, 3, 4, 5, 6, 7].map((t) => { const x = sample(t, {}); delete x.diskio; return x; });
  assert.equal(overviewRow([...old, ...later], 1).disk_read, null);
});

test('no rate to or from a stopped domain (its counters are not the guest\'s)', () => {
  const samples = [
    sample(0, { cpu: 100, disk: { vda: [0, 0] } }),
    sample(1, { cpu: 200, disk: { vda: [100, 0] } }),
    // destroyed: libvirt reported other totals
    sample(2, { cpu: 36_420, state: 'Shutoff', disk: { vda: [9e9, 9e9] }, mem: { available: 10, unused: 1 } }),
  ];
  assert.deepEqual(cpuSeries(samples).values.total, [5, null]);
  assert.deepEqual(diskBytesSeries(samples).values['vda read'], [100, null]);
  const row = overviewRow(samples, 2);
  assert.equal(row.state, 'Shutoff');
  assert.equal(row.cpu_vcpus, null);
  assert.equal(row.cpu_host, null);
  assert.equal(row.disk_read, null, 'not held from before the stop');
  assert.equal(row.mem_used, null);
  assert.equal(row.vcpus, 2);
});

test('a lifecycle event newer than the newest sample sets the state until a newer sample', () => {
  const row = overviewRow([sample(0, { cpu: 0 }), sample(1, { cpu: 100 })], 1);
  const suspended = { event_type: 'Suspended', reason: 'Paused', timestamp: ts(1.5) };
  const shown = withEvent(row, suspended);
  assert.equal(shown.state, 'Paused');
  assert.equal(shown.reason, 'paused');
  assert.equal(shown.cpu_host, row.cpu_host, 'figures are kept');
  assert.equal(withEvent(row, { ...suspended, timestamp: ts(0.5) }).state, 'Running', 'older than the sample');
  assert.equal(withEvent(row, { event_type: 'Defined', reason: 'Updated', timestamp: ts(2) }).state, 'Running');
  assert.equal(stateAfterEvent('Stopped'), 'Shutoff');
  assert.equal(stateAfterEvent('Resumed'), 'Running');
  assert.equal(withEvent(row, null), row);
});
