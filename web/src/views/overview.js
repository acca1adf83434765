// Overview: the host at a glance (GET /summary) and the newest events.
import * as api from '../api.js';
import { formatBytes, formatNs, formatPercent, formatTime } from '../format.js';
import { Badge, ErrorMessage, html, Loading, usePoll } from '../ui.js';

const STATES = ['compliant', 'pending-restart', 'not-compliant', 'error', 'unknown'];

function Budget({ title, b, none }) {
  const pct = (v) => (b.budget > 0 ? Math.min(100, (100 * v) / b.budget) : 0);
  return html`
    <section class="card" aria-labelledby=${`budget-${title}`}>
      <h2 id=${`budget-${title}`}>${title}</h2>
      ${b.budget === 0 ? html`<p class="muted">${none}</p>` : html`
        <div class="bar" aria-hidden="true">
          <span class="reserved" style=${{ width: `${pct(b.reserved)}%` }}></span>
          <span class="used" style=${{ width: `${pct(b.used)}%` }}></span>
        </div>
        <dl class="figures">
          <div><dt>Used</dt><dd data-field="used">${formatBytes(b.used)}</dd></div>
          <div><dt>Reserved</dt><dd data-field="reserved">${formatBytes(b.reserved)}</dd></div>
          <div><dt>Free</dt><dd data-field="free">${formatBytes(b.free)}</dd></div>
          <div><dt>Budget</dt><dd>${formatBytes(b.budget)}</dd></div>
        </dl>`}
    </section>`;
}

export function EventRows({ events, showVm = true }) {
  return events.map((e) => html`
    <tr key=${e.id} class=${`level-${e.level}`}>
      <td class="nowrap"><time datetime=${e.time}>${formatTime(e.time)}</time></td>
      <td><${Badge} value=${e.level} /></td>
      ${showVm && html`<td>${e.vm}${e.target ? html`<span class="muted">/${e.target}</span>` : ''}</td>`}
      <td class="nowrap"><code>${e.action}</code></td>
      <td class="message">${e.message}</td>
    </tr>`);
}

export function Overview() {
  const [sum] = usePoll(api.summary, 5000);
  const [evs] = usePoll(() => api.events({ limit: 8 }), 5000);
  const s = sum.data;
  if (!s) return html`<h1>Overview</h1><${Loading} state=${sum} what="the summary" />`;
  const io = s.io;
  return html`
    <h1>Overview</h1>
    <${ErrorMessage} error=${sum.error} />
    ${s.libvirt !== 'connected' && html`
      <p class="error" role="alert">libvirtd cannot be reached: VMs and assignments cannot be
        checked or changed until it is back (hostcached reconnects by itself).</p>`}
    <div class="cards">
      <${Budget} title="Cache RAM" b=${s.ram} none="No RAM budget." />
      <${Budget} title="SSD tier" b=${s.ssd} none="No SSD budget (hostcached --ssd-budget is 0)." />
      <section class="card" aria-labelledby="ov-disks">
        <h2 id="ov-disks">Cached disks</h2>
        <p class="big" data-field="disks-total">${s.disks.total}</p>
        <ul class="states">
          ${STATES.filter((st) => st !== 'unknown' || s.disks.states[st] > 0).map((st) => html`
            <li key=${st}><${Badge} value=${st} /> <span data-state=${st}>${s.disks.states[st] || 0}</span></li>`)}
        </ul>
        <p><a href="#/vms">VMs and disks</a></p>
      </section>
      <section class="card" aria-labelledby="ov-reads">
        <h2 id="ov-reads">Reads</h2>
        <p class="big" data-field="hit-ratio">${formatPercent(io.hit_ratio)}</p>
        <p class="muted">${`hit ratio: ${io.read_hits.toLocaleString('en-US')} hits, ` +
          `${io.read_misses.toLocaleString('en-US')} misses on ${io.disks_sampled} disk(s), ` +
          'since each cache was attached'}</p>
        <table class="compact">
          <thead><tr><th scope="col">Latency</th><th scope="col">average</th><th scope="col">p99 (worst disk)</th></tr></thead>
          <tbody>
            <tr><th scope="row">hit</th><td data-field="hit-avg">${formatNs(io.hit_latency_avg_ns)}</td>
              <td>${formatNs(io.hit_latency_p99_ns || null)}</td></tr>
            <tr><th scope="row">miss</th><td data-field="miss-avg">${formatNs(io.miss_latency_avg_ns)}</td>
              <td>${formatNs(io.miss_latency_p99_ns || null)}</td></tr>
          </tbody>
        </table>
      </section>
      <section class="card" aria-labelledby="ov-policies">
        <h2 id="ov-policies">Policies</h2>
        <table class="compact" id="overview-policies">
          <thead><tr><th scope="col">Policy</th><th scope="col">Disks</th></tr></thead>
          <tbody>
            ${s.policies.map((p) => html`
              <tr key=${p.name}><td>${p.name}</td><td>${p.assigned_disks}</td></tr>`)}
          </tbody>
        </table>
        <p><a href="#/policies">Policies</a></p>
      </section>
    </div>
    <section aria-labelledby="ov-events">
      <h2 id="ov-events">Recent events</h2>
      <${ErrorMessage} error=${evs.error} />
      <div class="scroll">
        <table class="events">
          <thead><tr><th scope="col">Time</th><th scope="col">Level</th><th scope="col">VM</th>
            <th scope="col">Kind</th><th scope="col">What happened</th></tr></thead>
          <tbody><${EventRows} events=${evs.data || []} /></tbody>
        </table>
      </div>
      <p><a href="#/events">All events</a></p>
    </section>`;
}
