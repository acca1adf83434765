// The one module that talks to hostcached (the only `fetch` of the page).
// Views call these functions and render what they return.
//
// The bearer token lives in sessionStorage (this tab only, gone when it
// closes).  Any 401 forgets it and tells the app (onUnauthorized), which
// shows the login form again.

const BASE = '/api/v1';
const KEY = 'hostcache.token';

let unauthorizedHandler = () => {};

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.code = code || '';
  }
}

export function getToken() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function setToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

async function call(method, path, body, token = getToken()) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(BASE + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, `hostcached cannot be reached (${e.message}); is it running?`);
  }
  const type = resp.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await resp.json().catch(() => null) : await resp.text();
  if (resp.ok) return data;
  const detail = data && typeof data === 'object' && data.detail
    ? data.detail : `${resp.status} ${resp.statusText}`;
  const err = new ApiError(resp.status, detail, data && data.code);
  if (resp.status === 401) {
    clearToken();
    unauthorizedHandler(err);
  }
  throw err;
}

const seg = encodeURIComponent;

// Checks a token before it is kept (the login form); throws ApiError.
export async function checkToken(token) {
  await call('GET', '/summary', undefined, token);
}

export const summary = () => call('GET', '/summary');
export const health = () => call('GET', '/health');

export const listPolicies = () => call('GET', '/policies').then((r) => r.policies);
export const getPolicy = (name) => call('GET', `/policies/${seg(name)}`);
export const createPolicy = (p) => call('POST', '/policies', p);
export const updatePolicy = (name, p) => call('PUT', `/policies/${seg(name)}`, p);
export const deletePolicy = (name) => call('DELETE', `/policies/${seg(name)}`);

export const listVms = () => call('GET', '/vms').then((r) => r.vms);
export const getVm = (vm) => call('GET', `/vms/${seg(vm)}`);
export const vmMigration = (vm) => call('GET', `/vms/${seg(vm)}/migration`);

export const assign = (vm, target, policy) =>
  call('PUT', `/vms/${seg(vm)}/disks/${seg(target)}/policy`, { policy });
export const unassign = (vm, target) =>
  call('DELETE', `/vms/${seg(vm)}/disks/${seg(target)}/policy`);
export const diskPolicy = (vm, target) =>
  call('GET', `/vms/${seg(vm)}/disks/${seg(target)}/policy`);
export const diskStats = (vm, target, points) =>
  call('GET', `/vms/${seg(vm)}/disks/${seg(target)}/stats?points=${seg(points)}`);

export function events({ vm = '', action = '', limit = 100 } = {}) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (vm) q.set('vm', vm);
  if (action) q.set('action', action);
  return call('GET', `/events?${q}`).then((r) => r.events);
}
