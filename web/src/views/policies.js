// Policies: list, create, edit, delete.  The API validates; its message is
// shown next to the field it names.
import { useState } from 'preact/hooks';
import * as api from '../api.js';
import { formatBytes, formatSizeExact } from '../format.js';
import { fieldOfProblem } from '../problems.js';
import { ErrorMessage, html, Loading, usePoll } from '../ui.js';

// The rules, as docs/MANAGER.md (Policies) describes them.
const RULES = [
  { name: 'mode', label: 'Mode', kind: 'select',
    options: ['pass-through', 'write-around', 'write-through', 'write-back'], def: 'write-through' },
  { name: 'ram-size', label: 'RAM size', kind: 'size', def: '256M' },
  { name: 'block-size', label: 'Block size', kind: 'size', def: '4k', hint: 'power of two, 512 to 2M' },
  { name: 'admit-after', label: 'Admit after (misses)', kind: 'int', def: '1' },
  { name: 'seq-cutoff', label: 'Sequential cut-off', kind: 'size', def: '4M', hint: '0 = off' },
  { name: 'max-dirty', label: 'Max dirty (write-back)', kind: 'size', def: '0', hint: '0 = ram-size/2' },
  { name: 'max-dirty-age-ms', label: 'Max dirty age (ms)', kind: 'int', def: '5000' },
  { name: 'ssd-size', label: 'SSD tier size', kind: 'size', def: '0', hint: '0 = no SSD tier' },
  { name: 'ssd-dir', label: 'SSD tier directory', kind: 'text', def: '', hint: 'absolute path' },
];

const FIELDS = [
  { name: 'name', words: ['name'] },
  { name: 'description', words: ['description'] },
  ...RULES.map((r) => ({ name: r.name, words: [r.name] })),
];

function ruleText(rule, value) {
  if (value === undefined || value === null) return '';
  if (rule.kind === 'size') return formatSizeExact(value);
  return String(value);
}

function formFrom(policy) {
  const rules = {};
  for (const r of RULES) rules[r.name] = policy ? ruleText(r, policy.rules[r.name]) : '';
  return { name: policy ? policy.name : '', description: policy ? policy.description || '' : '', rules };
}

// The request body: only the rules that were filled in (the API keeps the
// others at their defaults, or at their current values for an update).
export function policyBody(form, creating) {
  const rules = {};
  for (const r of RULES) {
    const v = (form.rules[r.name] || '').trim();
    if (v === '') continue;
    rules[r.name] = r.kind === 'int' && /^\d+$/.test(v) ? Number(v) : v;
  }
  const body = { description: form.description, rules };
  if (creating) body.name = form.name.trim();
  return body;
}

function Field({ id, label, error, hint, children }) {
  const errId = `${id}-error`;
  return html`
    <div class=${`field${error ? ' invalid' : ''}`}>
      <label for=${id}>${label}</label>
      ${children(error ? errId : hint ? `${id}-hint` : undefined)}
      ${hint && !error && html`<small id=${`${id}-hint`} class="muted">${hint}</small>`}
      ${error && html`<p id=${errId} class="field-error" role="alert">${error}</p>`}
    </div>`;
}

function PolicyForm({ policy, onDone, onCancel }) {
  const creating = !policy;
  const [form, setForm] = useState(() => formFrom(policy));
  const [errors, setErrors] = useState({});
  const [general, setGeneral] = useState(null);
  const [busy, setBusy] = useState(false);
  const setRule = (name, v) => setForm((f) => ({ ...f, rules: { ...f.rules, [name]: v } }));
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setErrors({});
    setGeneral(null);
    try {
      const body = policyBody(form, creating);
      const saved = creating ? await api.createPolicy(body) : await api.updatePolicy(policy.name, body);
      onDone(saved, creating);
    } catch (err) {
      const field = err.status === 400 ? fieldOfProblem(err.detail, FIELDS) : null;
      if (field) {
        setErrors({ [field]: err.detail });
        const el = document.getElementById(`pf-${field}`);
        if (el) el.focus();
      } else {
        setGeneral(err);
      }
    } finally {
      setBusy(false);
    }
  };
  const title = creating ? 'New policy' : `Edit policy ${policy.name}`;
  return html`
    <form class="panel policy-form" onSubmit=${submit} aria-labelledby="pf-title" noValidate>
      <h2 id="pf-title">${title}</h2>
      <${ErrorMessage} error=${general} />
      <div class="grid">
        <${Field} id="pf-name" label="Name" error=${errors.name}
          hint=${creating ? 'letters, digits, . _ -' : 'a policy cannot be renamed'}>
          ${(desc) => html`<input id="pf-name" name="name" value=${form.name} readOnly=${!creating}
            required=${creating} aria-describedby=${desc} aria-invalid=${errors.name ? 'true' : undefined}
            onInput=${(e) => setForm({ ...form, name: e.currentTarget.value })} />`}
        <//>
        <${Field} id="pf-description" label="Description" error=${errors.description}>
          ${(desc) => html`<input id="pf-description" name="description" value=${form.description}
            aria-describedby=${desc} aria-invalid=${errors.description ? 'true' : undefined}
            onInput=${(e) => setForm({ ...form, description: e.currentTarget.value })} />`}
        <//>
        ${RULES.map((r) => html`
          <${Field} key=${r.name} id=${`pf-${r.name}`} label=${r.label} error=${errors[r.name]}
            hint=${r.hint}>
            ${(desc) => (r.kind === 'select' ? html`
              <select id=${`pf-${r.name}`} name=${r.name} value=${form.rules[r.name]}
                aria-describedby=${desc} aria-invalid=${errors[r.name] ? 'true' : undefined}
                onChange=${(e) => setRule(r.name, e.currentTarget.value)}>
                <option value="">${creating ? `default (${r.def})` : 'unchanged'}</option>
                ${r.options.map((o) => html`<option key=${o} value=${o}>${o}</option>`)}
              </select>` : html`
              <input id=${`pf-${r.name}`} name=${r.name} value=${form.rules[r.name]}
                placeholder=${r.def} inputMode=${r.kind === 'int' ? 'numeric' : undefined}
                aria-describedby=${desc} aria-invalid=${errors[r.name] ? 'true' : undefined}
                onInput=${(e) => setRule(r.name, e.currentTarget.value)} />`)}
          <//>`)}
      </div>
      <p class="muted">${'Sizes are bytes or take k, M, G, T (binary). Empty fields keep ' +
        `${creating ? 'the default' : 'their current value'}.`}</p>
      <div class="actions">
        <button type="submit" disabled=${busy}>${busy ? 'Saving…' : creating ? 'Create policy' : 'Save changes'}</button>
        <button type="button" class="secondary" onClick=${onCancel}>Cancel</button>
      </div>
    </form>`;
}

function PolicyRow({ p, onEdit, onDeleted, onError }) {
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const del = async () => {
    setBusy(true);
    try {
      await api.deletePolicy(p.name);
      onDeleted(p.name);
    } catch (err) {
      onError(p.name, err);
    } finally {
      setBusy(false);
      setConfirming(false);
    }
  };
  const r = p.rules;
  return html`
    <tr data-policy=${p.name}>
      <th scope="row">${p.name}</th>
      <td class="message">${p.description}</td>
      <td class="nowrap">${r.mode}</td>
      <td class="nowrap">${formatBytes(r['ram-size'])}</td>
      <td class="nowrap">${formatBytes(r['block-size'])}</td>
      <td class="nowrap">${r['ssd-size'] ? formatBytes(r['ssd-size']) : '–'}</td>
      <td data-field="disks">${p.assigned_disks}</td>
      <td><div class="actions nowrap">
        ${confirming ? html`
          <button type="button" class="danger" disabled=${busy} onClick=${del}
            aria-label=${`Really delete policy ${p.name}`}>Delete ${p.name}</button>
          <button type="button" class="secondary" onClick=${() => setConfirming(false)}>Cancel</button>` : html`
          <button type="button" class="secondary" onClick=${() => onEdit(p)}
            aria-label=${`Edit policy ${p.name}`}>Edit</button>
          <button type="button" class="secondary" onClick=${() => setConfirming(true)}
            aria-label=${`Delete policy ${p.name}`}>Delete</button>`}
      </div></td>
    </tr>`;
}

export function Policies() {
  const [state, reload] = usePoll(api.listPolicies, 10000);
  const [editing, setEditing] = useState(null);  // null, 'new' or a policy
  const [notice, setNotice] = useState(null);
  const [problem, setProblem] = useState(null);
  const done = (saved, created) => {
    setEditing(null);
    setProblem(null);
    setNotice(`Policy ${saved.name} ${created ? 'created' : 'saved'}` +
      (!created && saved.disks && saved.disks.length ? `; re-applied to ${saved.disks.length} disk(s).` : '.'));
    reload();
  };
  return html`
    <h1>Policies</h1>
    ${notice && html`<p class="notice" role="status">${notice}</p>`}
    ${problem && html`<p class="error" role="alert" id="policy-problem">Cannot delete ${problem.name}: ${problem.err.detail}</p>`}
    ${editing === null && html`
      <p><button type="button" onClick=${() => { setNotice(null); setEditing('new'); }}>New policy</button></p>`}
    ${editing !== null && html`
      <${PolicyForm} key=${editing === 'new' ? '' : editing.name}
        policy=${editing === 'new' ? null : editing} onDone=${done} onCancel=${() => setEditing(null)} />`}
    <${Loading} state=${state} what="policies" />
    ${state.data && html`
      <div class="scroll">
        <table id="policies">
          <thead><tr><th scope="col">Name</th><th scope="col">Description</th><th scope="col">Mode</th>
            <th scope="col">RAM</th><th scope="col">Block</th><th scope="col">SSD</th>
            <th scope="col">Disks</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            ${state.data.map((p) => html`
              <${PolicyRow} key=${p.name} p=${p}
                onEdit=${(x) => { setNotice(null); setEditing(x); }}
                onDeleted=${(name) => { setProblem(null); setNotice(`Policy ${name} deleted.`); reload(); }}
                onError=${(name, err) => { setNotice(null); setProblem({ name, err }); }} />`)}
          </tbody>
        </table>
      </div>`}`;
}
