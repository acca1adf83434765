// Events, filterable by VM and kind (the filter is in the URL).
import { useState } from 'preact/hooks';
import * as api from '../api.js';
import { buildHash } from '../route.js';
import { html, Loading, usePoll } from '../ui.js';
import { EventRows } from './overview.js';

// The kinds the daemon records (docs/MANAGER.md, the OpenAPI Event schema).
const KINDS = ['assign', 'unassign', 'define', 'insert-live', 'reopen-live', 'replace-live',
  'repair-live', 'remove-live', 'verify', 'compliance', 'ssd', 'ssd-lost', 'ssd-forget',
  'ssd-stale', 'ssd-emptied', 'hot-unplug', 'unplug', 'migrate', 'migrate-drain', 'migrate-out',
  'migrated-away', 'migrate-in', 'warmed', 'adopt', 'policy-create', 'policy-update',
  'policy-delete', 'policy-sync', 'libvirt', 'start', 'stop'];

export function Events({ params }) {
  const vm = params.vm || '';
  const action = params.action || '';
  const [evs] = usePoll(() => api.events({ vm, action, limit: 200 }), 5000, [vm, action]);
  const [vms] = usePoll(api.listVms, 30000);
  // What is typed, applied on Enter or leaving the field; the filter in the
  // URL again once that changes (no effect: one after a quick edit undoes it).
  const [typed, setTyped] = useState({ action, text: action });
  const kindText = typed.action === action ? typed.text : action;
  const set = (change) => {
    window.location.hash = buildHash('/events', { vm, action, ...change });
  };
  const names = new Set((vms.data || []).map((v) => v.name));
  if (vm) names.add(vm);
  const kinds = new Set(KINDS);
  for (const e of evs.data || []) kinds.add(e.action);
  return html`
    <h1>Events</h1>
    <form class="filters" onSubmit=${(e) => {
      e.preventDefault();
      set({ action: e.currentTarget.elements.kind.value.trim() });
    }}>
      <div class="field">
        <label for="ev-vm">VM</label>
        <select id="ev-vm" value=${vm} onChange=${(e) => set({ vm: e.currentTarget.value })}>
          <option value="">all VMs</option>
          ${[...names].sort().map((n) => html`<option key=${n} value=${n}>${n}</option>`)}
        </select>
      </div>
      <div class="field">
        <label for="ev-kind">Kind</label>
        <input id="ev-kind" name="kind" list="ev-kinds" value=${kindText} placeholder="any"
          onInput=${(e) => setTyped({ action, text: e.currentTarget.value })}
          onChange=${(e) => set({ action: e.currentTarget.value.trim() })} />
        <datalist id="ev-kinds">${[...kinds].sort().map((k) => html`<option key=${k} value=${k} />`)}</datalist>
      </div>
      <div class="actions">
        <button type="submit">Filter</button>
        ${(vm || action) && html`<a href="#/events">Clear filters</a>`}
      </div>
    </form>
    <${Loading} state=${evs} what="events" />
    ${evs.data && html`
      <p class="muted" role="status">${evs.data.length} event(s)${vm ? ` of ${vm}` : ''}${action ? `, kind ${action}` : ''}, newest first.</p>
      <div class="scroll">
        <table class="events" id="events">
          <thead><tr><th scope="col">Time</th><th scope="col">Level</th><th scope="col">VM</th>
            <th scope="col">Kind</th><th scope="col">What happened</th></tr></thead>
          <tbody><${EventRows} events=${evs.data} /></tbody>
        </table>
      </div>`}`;
}
