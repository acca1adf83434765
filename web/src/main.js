// The dashboard: login, navigation and the pages.  Served by hostcached at
// / (see docs/MANAGER.md, Dashboard).
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import 'uplot/dist/uPlot.min.css';
import './style.css';
import * as api from './api.js';
import { parseHash, routeOf } from './route.js';
import { html } from './ui.js';
import { Login } from './views/login.js';
import { Overview } from './views/overview.js';
import { Policies } from './views/policies.js';
import { Vms } from './views/vms.js';
import { Disk } from './views/disk.js';
import { Events } from './views/events.js';

// A login link (#token=...): keep the token for this tab and take it out of
// the address bar and the history (replaceState: no entry keeps it).
// Returns whether there was one.
function takeToken() {
  const { token } = parseHash(window.location.hash);
  if (!token) return false;
  api.setToken(token);
  window.history.replaceState(null, '', `${window.location.pathname}#/overview`);
  return true;
}
takeToken();  // before anything else runs

const NAV = [
  ['overview', '#/overview', 'Overview'],
  ['policies', '#/policies', 'Policies'],
  ['vms', '#/vms', 'VMs and disks'],
  ['events', '#/events', 'Events'],
];

// The fragment, followed; a login link opened in this tab logs in.
function useHash(onToken) {
  const [hash, setHash] = useState(window.location.hash);
  useEffect(() => {
    const on = () => {
      if (takeToken()) onToken();
      setHash(window.location.hash);
    };
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return parseHash(hash);
}

function Page({ route, params }) {
  switch (route.page) {
    case 'overview': return html`<${Overview} />`;
    case 'policies': return html`<${Policies} />`;
    case 'vms': return html`<${Vms} />`;
    case 'events': return html`<${Events} params=${params} />`;
    case 'disk': return html`<${Disk} vm=${route.vm} target=${route.target} params=${params} />`;
    default: return html`<p>No such page. <a href="#/overview">Overview</a></p>`;
  }
}

function App() {
  const [loggedIn, setLoggedIn] = useState(!!api.getToken());
  const [message, setMessage] = useState('');
  const { path, params } = useHash(() => {
    setMessage('');
    setLoggedIn(true);
  });
  const route = routeOf(path);
  useEffect(() => {
    api.onUnauthorized(() => {
      setMessage('hostcached refused the token (it may have been restarted with another ' +
        'token). Log in again.');
      setLoggedIn(false);
    });
  }, []);
  useEffect(() => {
    const title = NAV.find(([p]) => p === route.page);
    document.title = `${title ? title[2] : route.page === 'disk' ? `${route.vm}/${route.target}` : 'hostcache'} · hostcache`;
  }, [path]);
  if (!loggedIn) {
    return html`<${Login} message=${message} onLogin=${() => { setMessage(''); setLoggedIn(true); }} />`;
  }
  const current = route.page === 'disk' ? 'vms' : route.page;
  const logout = () => {
    api.clearToken();
    setMessage('Logged out.');
    setLoggedIn(false);
  };
  return html`
    <header class="top">
      <a class="brand" href="#/overview">hostcache</a>
      <nav aria-label="Pages">
        <ul>
          ${NAV.map(([p, href, label]) => html`
            <li><a href=${href} aria-current=${current === p ? 'page' : undefined}>${label}</a></li>`)}
        </ul>
      </nav>
      <button type="button" class="link" onClick=${logout}>Log out</button>
    </header>
    <main id="main"><${Page} route=${route} params=${params} /></main>`;
}

render(html`<${App} />`, document.getElementById('app'));
