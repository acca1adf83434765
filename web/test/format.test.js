import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatBytes, formatNs, formatOps, formatPercent, formatRate, formatSizeExact, formatTime,
  migrationView, progressRatio,
} from '../src/format.js';

test('formatBytes picks binary units and trims zeros', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1024), '1 KiB');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(256 * 2 ** 20), '256 MiB');
  assert.equal(formatBytes(10.5 * 2 ** 30), '10.5 GiB');
  assert.equal(formatBytes(2 ** 60), '1024 PiB');
  assert.equal(formatBytes(-2048), '-2 KiB');
  assert.equal(formatBytes(null), '–');
  assert.equal(formatBytes(undefined), '–');
  assert.equal(formatBytes(NaN), '–');
  assert.equal(formatRate(3 * 2 ** 20), '3 MiB/s');
  assert.equal(formatRate(null), '–');
});

test('formatSizeExact writes what the API accepts back', () => {
  assert.equal(formatSizeExact(256 * 2 ** 20), '256M');
  assert.equal(formatSizeExact(4096), '4k');
  assert.equal(formatSizeExact(2 ** 30), '1G');
  assert.equal(formatSizeExact(3 * 2 ** 40), '3T');
  assert.equal(formatSizeExact(1536 * 2 ** 20), '1536M');
  assert.equal(formatSizeExact(1000), '1000');
  assert.equal(formatSizeExact(0), '0');
  assert.equal(formatSizeExact(-1), '-1');
  assert.equal(formatSizeExact(1.5), '1.5');
});

test('formatNs chooses ns, µs, ms, s with three significant digits', () => {
  assert.equal(formatNs(850), '850 ns');
  assert.equal(formatNs(0), '0 ns');
  assert.equal(formatNs(12345), '12.3 µs');
  assert.equal(formatNs(4_560_000), '4.56 ms');
  assert.equal(formatNs(5_000_000), '5 ms');
  assert.equal(formatNs(123_400_000), '123 ms');
  assert.equal(formatNs(1.2e9), '1.2 s');
  assert.equal(formatNs(null), '–');
});

test('formatPercent and formatOps', () => {
  assert.equal(formatPercent(0.8734), '87.3%');
  assert.equal(formatPercent(1), '100%');
  assert.equal(formatPercent(0), '0%');
  assert.equal(formatPercent(0.5, 0), '50%');
  assert.equal(formatPercent(null), '–');
  assert.equal(formatOps(0.5), '0.5');
  assert.equal(formatOps(0), '0');
  assert.equal(formatOps(1234.5), '1,235');
  assert.equal(formatOps(undefined), '–');
});

test('formatTime shows the time of day today, the date otherwise', () => {
  const now = new Date(2026, 11, 7, 15, 0, 0);
  assert.equal(formatTime(new Date(2026, 11, 7, 14, 3, 22).toISOString(), now), '14:03:22');
  assert.equal(formatTime(new Date(2026, 11, 6, 9, 5, 0).toISOString(), now), '2026-12-06 09:05');
  assert.equal(formatTime('', now), '–');
  assert.equal(formatTime('not a time', now), 'not a time');
});

test('progressRatio takes a ratio or a percentage', () => {
  assert.equal(progressRatio(0.25), 0.25);
  assert.equal(progressRatio(1), 1);
  assert.equal(progressRatio(40), 0.4);
  assert.equal(progressRatio(250), 1);
  assert.equal(progressRatio(-1), null);
  assert.equal(progressRatio('50'), null);
  assert.equal(progressRatio(undefined), null);
});

test('migrationView: what GET /vms/{vm}/migration says, as a phase and a ratio', () => {
  assert.equal(migrationView(null), null);
  assert.equal(migrationView({ vm: 'web', phase: 'none', disks: [] }), null);
  const d = (drained, dirty, extra = {}) => ({
    target: 'vda', reported: true, dirty_bytes: dirty, drained_bytes: drained,
    warm_up: { state: 'none', blocks: 0, done: 0 }, ...extra,
  });
  // Draining: what was written back of what was dirty, over every disk.
  assert.deepEqual(migrationView({ phase: 'draining', disks: [d(300, 100), d(0, 400)] }),
    { phase: 'draining', progress: 0.375, what: 'dirty data written back' });
  // A disk QEMU did not report counts for nothing.
  assert.deepEqual(migrationView({ phase: 'migrating', disks: [d(1, 1), { target: 'vdb', reported: false }] }),
    { phase: 'migrating', progress: 0.5, what: 'dirty data written back' });
  // Warming up: blocks done of the hot list.
  const w = d(0, 0, { warm_up: { state: 'running', blocks: 200, done: 50 } });
  assert.deepEqual(migrationView({ phase: 'warming-up', disks: [w] }),
    { phase: 'warming-up', progress: 0.25, what: 'blocks warmed' });
  // Nothing to measure: the phase alone.
  assert.deepEqual(migrationView({ phase: 'incoming', disks: [w] }),
    { phase: 'incoming', progress: null, what: '' });
  assert.deepEqual(migrationView({ phase: 'switch-over', disks: [d(0, 0)] }),
    { phase: 'switch-over', progress: null, what: '' });
});
