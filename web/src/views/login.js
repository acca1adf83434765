// The login form: the only thing shown without a token.
import { useState } from 'preact/hooks';
import * as api from '../api.js';
import { html } from '../ui.js';

export function Login({ message, onLogin }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) {
      setError('Enter the token.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await api.checkToken(t);
      api.setToken(t);
      onLogin();
    } catch (err) {
      setError(err.status === 401 ? 'hostcached refused this token.' : err.detail);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <main class="login">
      <h1>hostcache</h1>
      <form onSubmit=${submit} aria-labelledby="login-title">
        <h2 id="login-title">Log in</h2>
        ${message && html`<p class="notice" role="status">${message}</p>`}
        <p class="muted">
          Open the link hostcached writes to its log
          (<code>dashboard: http://…/#token=…</code>; <code>make demo</code> prints it too),
          or paste the token from its token file.
        </p>
        <label for="login-token">Access token</label>
        <input id="login-token" name="token" type="password" autocomplete="off"
          value=${token} onInput=${(e) => setToken(e.currentTarget.value)}
          aria-describedby=${error ? 'login-error' : undefined} aria-invalid=${error ? 'true' : undefined} />
        ${error && html`<p id="login-error" class="error" role="alert">${error}</p>`}
        <button type="submit" disabled=${busy}>${busy ? 'Checking…' : 'Log in'}</button>
      </form>
    </main>`;
}
