// One disk: its assignment and live charts of the statistics series
// (refreshed every few seconds, no page reload).
import * as api from '../api.js';
import { Chart, COLORS } from '../chart.js';
import { formatBytes, formatNs, formatOps, formatPercent, formatRate, formatTime } from '../format.js';
import { buildHash } from '../route.js';
import { chartColumns, lastValue } from '../series.js';
import { Badge, ErrorMessage, html, Loading, usePoll } from '../ui.js';

const POINTS = [60, 120, 360, 720];
const REFRESH_MS = 3000;

async function load(vm, target, points) {
  const [stats, assignment] = await Promise.all([
    api.diskStats(vm, target, points), api.diskPolicy(vm, target)]);
  return { stats, assignment };
}

function Figure({ label, value, field }) {
  return html`<div><dt>${label}</dt><dd data-field=${field}>${value}</dd></div>`;
}

export function Disk({ vm, target, params }) {
  const points = POINTS.includes(Number(params.points)) ? Number(params.points) : 120;
  const [state] = usePoll(() => load(vm, target, points), REFRESH_MS, [vm, target, points]);
  const heading = html`<h1><a href="#/vms">VMs</a> / ${vm} / ${target}</h1>`;
  if (!state.data) return html`${heading}<${Loading} state=${state} what="statistics" />`;
  const { stats, assignment } = state.data;
  const cols = chartColumns(stats.series);
  const cur = stats.current;
  const c = cur ? cur.counters : {};
  const a = assignment.compliance;
  const setPoints = (e) => {
    window.location.hash = buildHash(`/disk/${encodeURIComponent(vm)}/${encodeURIComponent(target)}`,
      { points: e.currentTarget.value });
  };
  return html`
    ${heading}
    <${ErrorMessage} error=${state.error} />
    <div class="disk-head">
      <p>Policy <strong data-field="policy">${assignment.policy}</strong>${' '}
        <${Badge} value=${a.state} /> ${a.reason && html`<span class="reason">${a.reason}</span>`}</p>
      <p class="muted">${cur
        ? html`Newest sample <time datetime=${cur.time}>${formatTime(cur.time)}</time>${
          `, ${stats.series.length} samples; refreshed every ${REFRESH_MS / 1000} s.`}`
        : 'No samples yet: the VM is not running, or the first sample is not in.'}</p>
      <label for="disk-points">Samples shown</label>
      <select id="disk-points" value=${String(points)} onChange=${setPoints}>
        ${POINTS.map((p) => html`<option key=${p} value=${String(p)}>${p}</option>`)}
      </select>
    </div>
    <dl class="figures wide">
      <${Figure} label="Hit ratio (since attached)" field="hit-ratio" value=${formatPercent(cur ? cur.hit_ratio : null)} />
      <${Figure} label="Reads/s" field="read-iops" value=${formatOps(lastValue(cols.readIops))} />
      <${Figure} label="Writes/s" value=${formatOps(lastValue(cols.writeIops))} />
      <${Figure} label="Hit latency" value=${formatNs(c['hit-latency-avg-ns'] || null)} />
      <${Figure} label="Miss latency" value=${formatNs(c['miss-latency-avg-ns'] || null)} />
      <${Figure} label="RAM used" value=${`${formatBytes(c['ram-used'])} of ${formatBytes(c['ram-limit'])}`} />
      <${Figure} label="Dirty" value=${formatBytes(c['dirty-bytes'] ?? 0)} />
      <${Figure} label="Mode" value=${c.mode || '–'} />
    </dl>
    <div class="charts">
      <${Chart} id="chart-iops" title="I/O operations per second" time=${cols.time} series=${[
        { label: 'reads/s', values: cols.readIops, format: formatOps },
        { label: 'writes/s', values: cols.writeIops, format: formatOps },
      ]} />
      <${Chart} id="chart-hit-ratio" title="Hit ratio (per interval)" time=${cols.time} series=${[
        { label: 'hit ratio', values: cols.hitRatio, format: (v) => formatPercent(v, 0), scale: 'ratio', range: [0, 1] },
      ]} />
      <${Chart} id="chart-latency" title="Read latency: average per interval, p99 since attached" time=${cols.time} series=${[
        { label: 'hit avg', values: cols.hitAvgNs, format: formatNs, log: true, color: COLORS[0] },
        { label: 'miss avg', values: cols.missAvgNs, format: formatNs, log: true, color: COLORS[1] },
        { label: 'hit p99', values: cols.hitP99Ns, format: formatNs, log: true, color: COLORS[0], dash: [4, 4] },
        { label: 'miss p99', values: cols.missP99Ns, format: formatNs, log: true, color: COLORS[1], dash: [4, 4] },
      ]} />
      <${Chart} id="chart-dirty" title="Dirty data and write-back rate" time=${cols.time} series=${[
        { label: 'dirty', values: cols.dirtyBytes, format: formatBytes, binary: true, min: 1 << 20 },
        { label: 'written back', values: cols.destageRate, format: formatRate, scale: 'rate', binary: true, min: 1 << 20 },
      ]} />
      <${Chart} id="chart-use" title="Cache use" time=${cols.time} series=${[
        { label: 'RAM used', values: cols.ramUsed, format: formatBytes, binary: true, min: 1 << 20 },
        { label: 'SSD tier used', values: cols.ssdUsed, format: formatBytes },
        { label: 'SSD tier size', values: cols.ssdSize, format: formatBytes, dash: [4, 4] },
      ]} />
    </div>`;
}
