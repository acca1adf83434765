// Shared view pieces: htm bound to preact, a polling hook, badges and
// messages.  Every server-provided string reaches the DOM as text (htm and
// preact escape it); nothing here sets innerHTML.
import { h } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';

export const html = htm.bind(h);

// Runs load() now and every intervalMs until the view goes away or deps
// change.  Returns [{data, error, loading}, reload]; a failed refresh keeps
// the last data and shows the error.  Data loaded for other deps (say the
// events of another filter) is never returned.
export function usePoll(load, intervalMs, deps = []) {
  const key = JSON.stringify(deps);
  const [state, setState] = useState({ key, data: null, error: null, loading: true });
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    let live = true;
    let timer = null;
    const tick = async () => {
      try {
        const data = await load();
        if (live) setState({ key, data, error: null, loading: false });
      } catch (error) {
        if (live) {
          setState((s) => ({ key, data: s.key === key ? s.data : null, error, loading: false }));
        }
      }
      if (live && intervalMs > 0) timer = setTimeout(tick, intervalMs);
    };
    tick();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [...deps, generation]);
  const current = state.key === key ? state : { data: null, error: null, loading: true };
  return [current, () => setGeneration((g) => g + 1)];
}

const STATE_CLASS = {
  compliant: 'ok',
  'pending-restart': 'warn',
  'not-compliant': 'warn',
  error: 'bad',
  unknown: 'muted',
  running: 'ok',
  'shut-off': 'muted',
  missing: 'bad',
  info: 'muted',
  warning: 'warn',
};

export function Badge({ value, title }) {
  return html`<span class=${`badge ${STATE_CLASS[value] || 'muted'}`} title=${title || ''}>${value}</span>`;
}

export function ErrorMessage({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.detail || error.message || String(error)}</p>`;
}

export function Loading({ state, what }) {
  if (state.loading && !state.data) return html`<p class="muted">Loading ${what}…</p>`;
  return html`<${ErrorMessage} error=${state.error} />`;
}
