// Live charts over the vendored uPlot (a global from vendor/uPlot.iife.min.js): one
// chart per figure, a 60 s sliding window, theme colours from the CSS, and a text
// summary of the newest values for screen readers. The figure's `data-newest`
// attribute holds the newest point's time (seconds), for tests and curious users.

import { cssVar, el, fmtByteRate, fmtNum, fmtPct, fmtBytes } from './common.js';

export const WINDOW_SECONDS = 60;

const FORMATS = {
  pct: { axis: (v, d) => `${fmtNum(v, d)} %`, text: fmtPct },
  bytes: { axis: (v, d) => fmtBytes(v, d), text: fmtBytes },
  byteRate: { axis: (v, d) => fmtBytes(v, d), text: fmtByteRate },
  rate: { axis: (v, d) => fmtNum(v, d), text: (v) => (Number.isFinite(v) ? `${fmtNum(v)}/s` : '–') },
};

/** Axis labels with the fewest decimals that keep every tick's label distinct. */
function axisLabels(fmt, vals) {
  for (let d = 0; d < 4; d++) {
    const labels = vals.map((v) => fmt(v, d));
    if (new Set(labels).size === labels.length) return labels;
  }
  return vals.map((v) => fmt(v, 4));
}

function palette() {
  return [1, 2, 3, 4, 5, 6, 7, 8].map((i) => cssVar(`--c${i}`) || '#888');
}

/** A chart in `parent`: `{title, unit, format}`; call `update(series)` with rates.js output. */
export class LiveChart {
  constructor(parent, { id, title, unit, format }) {
    this.format = FORMATS[format];
    this.keys = null;
    this.plot = null;
    this.box = el('div', { class: 'chart-box', 'aria-hidden': 'true' });
    this.summary = el('p', { class: 'sr-only' });
    this.empty = el('div', { class: 'chart-empty' }, 'waiting for data…');
    this.figure = el('figure', { class: 'chart', id, 'aria-labelledby': `${id}-cap`, 'data-newest': '' },
      el('figcaption', { id: `${id}-cap` }, title, ' ', el('span', { class: 'unit' }, `(${unit})`)),
      this.empty, this.box, this.summary);
    parent.append(this.figure);
    this.last = null;
    this.hover = false;
    this.box.addEventListener('mouseenter', () => { this.hover = true; });
    this.box.addEventListener('mouseleave', () => {
      this.hover = false;
      this.showLatest();
    });
    new ResizeObserver(() => this.resize()).observe(this.box);
    matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => this.rebuild());
  }

  size() {
    return { width: Math.max(200, this.box.clientWidth), height: 200 };
  }

  resize() {
    if (this.plot) this.plot.setSize(this.size());
  }

  rebuild() {
    if (this.plot) {
      this.plot.destroy();
      this.plot = null;
    }
    if (this.last) this.update(this.last);
  }

  create(keys) {
    const colours = palette();
    const text = cssVar('--text');
    const grid = cssVar('--grid');
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const fmt = this.format;
    const dashed = (k) => / (steal|wait|write|tx|swap out)$/.test(k);
    const opts = {
      ...this.size(),
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: {
        x: { time: true, range: (u, min, max) => [max - WINDOW_SECONDS, max] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { ...axis, values: (u, vals) => vals.map((v) => new Date(v * 1000).toISOString().slice(11, 19)) },
        { ...axis, size: 74, values: (u, vals) => axisLabels(fmt.axis, vals) },
      ],
      series: [
        { value: (u, v) => (v === null ? '–' : new Date(v * 1000).toISOString().slice(11, 19)) },
        ...keys.map((k, i) => ({
          label: k,
          stroke: colours[i % colours.length],
          width: 1.5,
          dash: dashed(k) ? [5, 3] : undefined,
          spanGaps: false,
          points: { show: false },
          value: (u, v) => fmt.text(v),
        })),
      ],
    };
    this.box.replaceChildren();
    // eslint-disable-next-line no-undef
    this.plot = new uPlot(opts, [[], ...keys.map(() => [])], this.box);
    this.keys = keys;
  }

  /** Without a pointer over the chart, the legend shows the newest values. */
  showLatest() {
    if (!this.plot || this.hover || !this.last) return;
    const n = this.last.times.length - 1;
    if (n >= 0) this.plot.setLegend({ idx: n });
  }

  /** `series` = `{times, values: {key: [...]}}`. */
  update(series) {
    this.last = series;
    const keys = Object.keys(series.values);
    if (series.times.length === 0 || keys.length === 0) return;
    if (!this.plot || this.keys.join('\u0000') !== keys.join('\u0000')) this.create(keys);
    this.empty.hidden = true;
    this.plot.setData([series.times, ...keys.map((k) => series.values[k])]);
    const n = series.times.length - 1;
    this.showLatest();
    this.figure.dataset.newest = String(series.times[n]);
    const latest = keys.map((k) => `${k} ${this.format.text(series.values[k][n])}`).join(', ');
    const text = `Latest: ${latest}.`;
    if (this.summary.textContent !== text) this.summary.textContent = text;
  }
}
