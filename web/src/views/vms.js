// VMs and disks: every VM with every disk, its policy and compliance;
// assign, change and unassign.
import { useState } from 'preact/hooks';
import * as api from '../api.js';
import { formatPercent, migrationView, progressRatio } from '../format.js';
import { diskHash } from '../route.js';
import { Badge, ErrorMessage, html, Loading, usePoll } from '../ui.js';

// Every VM with all its disks (GET /vms lists cached disks only).
async function loadVms() {
  const [vms, policies] = await Promise.all([api.listVms(), api.listPolicies()]);
  const full = await Promise.all(vms.map(async (v) => {
    if (!v.exists) return v;
    try {
      const vm = await api.getVm(v.uuid || v.name);
      // Where a migration is (only a VM with cached disks has one to show).
      if (vm.state === 'running' && (vm.disks || []).some((d) => d.policy)) {
        try {
          vm.migration = migrationView(await api.vmMigration(vm.uuid || vm.name));
        } catch {
          vm.migration = null;   // (an older hostcached, or no migrations here)
        }
      }
      return vm;
    } catch (err) {
      if (err.status === 404) return { ...v, gone: true };
      throw err;
    }
  }));
  return { vms: full, policies: policies.map((p) => p.name) };
}

// A migration's phase and progress (vm.migration: migrationView() of GET
// /vms/{vm}/migration: {phase, progress 0..1 or null, what}).
export function Migration({ m }) {
  if (!m || typeof m !== 'object') return null;
  const p = progressRatio(m.progress);
  return html`
    <p class="migration" role="status">
      Migration${m.destination ? html` to <code>${m.destination}</code>` : ''}:${' '}
      <strong>${m.phase || 'in progress'}</strong>
      ${p !== null && html` <progress max="1" value=${p}>${formatPercent(p, 0)}</progress> ${formatPercent(p, 0)} ${m.what || ''}`}
    </p>`;
}

function DiskRow({ vm, d, policies, onChanged }) {
  const current = d.policy || '';
  // The user's pick, or null: the select follows the assigned policy.  (Not
  // an effect that copies `current` in: one that runs after a quick pick,
  // as preact runs effects after the paint, would undo it.)
  const [picked, setPicked] = useState(null);
  const choice = picked ?? current;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const id = `policy-${vm.name}-${d.target}`;
  const run = async (fn) => {
    setBusy(true);
    setError(null);
    try {
      await fn();
      setPicked(null);
      onChanged();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const isDisk = !d.device || d.device === 'disk';
  const c = d.compliance;
  return html`
    <tr data-disk=${`${vm.name}/${d.target}`}>
      <th scope="row">${d.target}</th>
      <td class="source"><span class="path">${d.source || '–'}</span>
        ${d.device && html`<br /><small class="muted">${d.device}, ${d.bus}${d.format ? `, ${d.format}` : ''}${d.readonly ? ', read-only' : ''}</small>`}</td>
      <td>
        ${isDisk ? html`
          <label class="sr-only" for=${id}>Policy of ${vm.name} ${d.target}</label>
          <select id=${id} value=${choice} disabled=${busy}
            onChange=${(e) => setPicked(e.currentTarget.value)}>
            <option value="">none</option>
            ${policies.map((p) => html`<option key=${p} value=${p}>${p}</option>`)}
            ${current && !policies.includes(current) && html`<option value=${current}>${current}</option>`}
          </select>
          <span class="actions">
            <button type="button" disabled=${busy || !choice || choice === current}
              onClick=${() => run(() => api.assign(vm.name, d.target, choice))}>
              ${current ? 'Change' : 'Assign'}</button>
            ${current && html`<button type="button" class="secondary" disabled=${busy}
              onClick=${() => run(() => api.unassign(vm.name, d.target))}
              aria-label=${`Unassign the policy of ${vm.name} ${d.target}`}>Unassign</button>`}
          </span>` : html`<span class="muted">not a disk</span>`}
        ${busy && html`<span class="muted" role="status"> working…</span>`}
        <${ErrorMessage} error=${error} />
      </td>
      <td class="compliance">
        ${c ? html`<${Badge} value=${c.state} />
          ${c.reason && html`<div class="reason">${c.reason}</div>`}` : html`<span class="muted">–</span>`}
      </td>
      <td>${current && html`<a href=${diskHash(vm.name, d.target)}
        aria-label=${`Charts of ${vm.name} ${d.target}`}>Charts</a>`}</td>
    </tr>`;
}

function VmSection({ vm, policies, onChanged }) {
  const state = vm.gone ? 'missing' : vm.state;
  return html`
    <section class="vm" aria-labelledby=${`vm-${vm.uuid || vm.name}`} data-vm=${vm.name}>
      <h2 id=${`vm-${vm.uuid || vm.name}`}>${vm.name} <${Badge} value=${state} />
        ${vm.persistent === false && html` <small class="muted">transient</small>`}</h2>
      <${Migration} m=${vm.migration} />
      ${vm.disks.length === 0 ? html`<p class="muted">No disks.</p>` : html`
        <div class="scroll">
          <table class="disks">
            <thead><tr><th scope="col">Disk</th><th scope="col">Source</th><th scope="col">Policy</th>
              <th scope="col">Compliance</th><th scope="col"><span class="sr-only">Charts</span></th></tr></thead>
            <tbody>
              ${vm.disks.map((d) => html`
                <${DiskRow} key=${d.target} vm=${vm} d=${d} policies=${policies} onChanged=${onChanged} />`)}
            </tbody>
          </table>
        </div>`}
    </section>`;
}

export function Vms() {
  const [state, reload] = usePoll(loadVms, 5000);
  return html`
    <h1>VMs and disks</h1>
    <${Loading} state=${state} what="VMs" />
    ${state.data && state.data.vms.length === 0 && html`<p class="muted">libvirt has no VMs.</p>`}
    ${state.data && state.data.vms.map((vm) => html`
      <${VmSection} key=${vm.uuid || vm.name} vm=${vm} policies=${state.data.policies} onChanged=${reload} />`)}`;
}
