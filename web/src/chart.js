// One uPlot time-series chart.  Created once per mount; new data goes in
// with setData (no re-creation), and the width follows the container.
//
// data-points on the figure is the number of samples that carry a value in
// any series (what the chart has drawn), for people and tests alike.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import { pointCount } from './series.js';
import { html } from './ui.js';

export const COLORS = ['#1f6feb', '#d9480f', '#2b8a3e', '#ae3ec9', '#868e96'];

// series: [{label, values, format, scale?, range?, dash?, color?, log?,
// binary?, min?}]; time: seconds.  Series of one scale share an axis (the
// first scale on the left, a second one on the right).  log: a logarithmic
// scale (latencies spanning µs to ms); binary: ticks at powers of two
// (bytes); min: the least top of the range (so a flat zero line has sane
// ticks); range: a fixed [lo, hi].
export function Chart({ id, title, time, series, height = 200 }) {
  const box = useRef(null);
  const plot = useRef(null);
  // A log scale cannot show 0: such a point is a gap.
  const data = [time, ...series.map((s) => (s.log ? s.values.map((v) => (v > 0 ? v : null)) : s.values))];
  const points = Math.max(0, ...series.map((s) => pointCount(s.values)));
  useEffect(() => {
    const el = box.current;  // the ref is cleared before this effect's cleanup runs
    const scales = [...new Set(series.map((s) => s.scale || 'y'))];
    const first = (scale) => series.find((x) => (x.scale || 'y') === scale);
    const axisFor = (scale, side) => {
      const s = first(scale);
      return {
        scale,
        side,
        size: 72,
        grid: { show: side === 3 },
        incrs: s.binary ? POW2 : undefined,
        values: (u, vals) => vals.map((v) => (v === null ? '' : s.format(v))),
      };
    };
    const scaleFor = (scale) => {
      const s = first(scale);
      if (s.log) return { distr: 3 };
      return { range: s.range || ((u, min, max) => [0, Math.max(s.min || 1, (max || 0) * 1.1)]) };
    };
    const opts = {
      width: Math.max(240, el.clientWidth),
      height,
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true },
        ...Object.fromEntries(scales.map((sc) => [sc, scaleFor(sc)])),
      },
      axes: [{}, ...scales.map((sc, i) => axisFor(sc, i === 0 ? 3 : 1))],
      series: [{}, ...series.map((s, i) => ({
        label: s.label,
        scale: s.scale || 'y',
        stroke: s.color || COLORS[i % COLORS.length],
        width: 2,
        dash: s.dash,
        points: { show: true, size: 4 },
        value: (u, v) => (v === null || v === undefined ? '–' : s.format(v)),
      }))],
    };
    plot.current = new uPlot(opts, data, el);
    const ro = new ResizeObserver(() => {
      if (plot.current) plot.current.setSize({ width: Math.max(240, el.clientWidth), height });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, []);
  useEffect(() => {
    if (plot.current) plot.current.setData(data);
  });
  return html`
    <figure class="chart" id=${id} data-points=${points}>
      <figcaption>${title}</figcaption>
      <div ref=${box} class="plot"></div>
      ${points === 0 && html`<p class="muted empty">No samples with values yet.</p>`}
    </figure>`;
}

const POW2 = Array.from({ length: 51 }, (_, i) => 2 ** i);
