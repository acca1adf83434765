import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildHash, diskHash, parseHash, routeOf } from '../src/route.js';

test('the login link gives the token and no page', () => {
  assert.deepEqual(parseHash('#token=abc123'), { token: 'abc123', path: '/', params: {} });
  assert.deepEqual(parseHash('#token='), { token: null, path: '/', params: {} });
  assert.equal(parseHash('#/overview?token=xyz').token, 'xyz');
  assert.deepEqual(parseHash('#/overview?token=xyz').params, {}, 'the token is not view state');
});

test('view state round-trips through the fragment', () => {
  const h = buildHash('/events', { vm: 'web 1', action: 'assign', empty: '' });
  assert.equal(h, '#/events?vm=web+1&action=assign');
  assert.deepEqual(parseHash(h), { token: null, path: '/events', params: { vm: 'web 1', action: 'assign' } });
  assert.deepEqual(parseHash(''), { token: null, path: '/', params: {} });
  assert.deepEqual(parseHash('#events').path, '/events');
});

test('routes', () => {
  assert.deepEqual(routeOf('/'), { page: 'overview' });
  assert.deepEqual(routeOf('/overview'), { page: 'overview' });
  assert.deepEqual(routeOf('/policies'), { page: 'policies' });
  assert.deepEqual(routeOf('/vms'), { page: 'vms' });
  assert.deepEqual(routeOf('/events'), { page: 'events' });
  assert.deepEqual(routeOf(diskHash('we/b', 'vda').slice(1)), { page: 'disk', vm: 'we/b', target: 'vda' });
  assert.deepEqual(routeOf('/disk/web'), { page: 'notfound' });
  assert.deepEqual(routeOf('/disk/%E0%A4%A/vda'), { page: 'notfound' }, 'bad encoding');
  assert.deepEqual(routeOf('/nope'), { page: 'notfound' });
});
