// The page's state in the URL fragment ("#/events?vm=web&action=assign"),
// and the login link's token ("#token=..."), which is taken out of the
// address bar as soon as the page has read it.  Pure functions, unit-tested
// in test/route.test.js.

// "#token=abc" -> {token: 'abc', path: '/', params: {}};
// "#/disk/web/vda?points=120" -> {token: null, path: '/disk/web/vda', params: {points: '120'}}.
export function parseHash(hash) {
  let h = (hash || '').replace(/^#/, '');
  let token = null;
  if (/^token=/.test(h)) {
    const p = new URLSearchParams(h);
    token = p.get('token') || null;
    h = '';
  }
  const q = h.indexOf('?');
  const path = (q < 0 ? h : h.slice(0, q)) || '/';
  const params = {};
  if (q >= 0) {
    for (const [k, v] of new URLSearchParams(h.slice(q + 1))) {
      if (k === 'token') token = v || null;
      else params[k] = v;
    }
  }
  return { token, path: path.startsWith('/') ? path : `/${path}`, params };
}

// ('/events', {vm: 'web', action: ''}) -> "#/events?vm=web" (empty values left out).
export function buildHash(path, params = {}) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  }
  const qs = p.toString();
  return `#${path}${qs ? `?${qs}` : ''}`;
}

// The link to one disk's page.
export function diskHash(vm, target) {
  return `#/disk/${encodeURIComponent(vm)}/${encodeURIComponent(target)}`;
}

// A path -> the page it shows: {page: 'overview'|'policies'|'vms'|'events'|'disk'|'notfound', ...}.
export function routeOf(path) {
  const segs = path.split('/').filter((s) => s !== '');
  let dec;
  try {
    dec = segs.map((s) => decodeURIComponent(s));
  } catch {
    return { page: 'notfound' };
  }
  if (dec.length === 0 || (dec.length === 1 && dec[0] === 'overview')) return { page: 'overview' };
  if (dec.length === 1 && ['policies', 'vms', 'events'].includes(dec[0])) return { page: dec[0] };
  if (dec.length === 3 && dec[0] === 'disk') return { page: 'disk', vm: dec[1], target: dec[2] };
  return { page: 'notfound' };
}
