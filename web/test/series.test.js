import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chartColumns, intervalAverage, lastValue, pointCount } from '../src/series.js';

const sample = (t, c) => ({ time_ms: t, counters: c });

test('rates and the hit ratio are per interval', () => {
  const cols = chartColumns([
    sample(10_000, { 'read-hits': 100, 'read-misses': 100, writes: 10 }),
    sample(12_000, { 'read-hits': 180, 'read-misses': 120, writes: 30 }),
    sample(14_000, { 'read-hits': 180, 'read-misses': 120, writes: 30 }),
  ]);
  assert.deepEqual(cols.time, [10, 12, 14]);
  assert.deepEqual(cols.readIops, [null, 50, 0]);
  assert.deepEqual(cols.writeIops, [null, 10, 0]);
  assert.deepEqual(cols.hitRatio, [null, 0.8, null], 'no reads in an interval: no ratio');
});

test('average latency per interval from cumulative averages', () => {
  // 100 hits averaging 2 µs, then 100 more averaging 4 µs: cumulative 3 µs.
  assert.equal(intervalAverage(2000, 100, 3000, 200), 4000);
  assert.equal(intervalAverage(2000, 100, 2000, 100), null, 'no new hits');
  assert.equal(intervalAverage(null, 100, 2000, 200), null);
  assert.equal(intervalAverage(3000, 100, 2900, 101), 0, 'truncated averages never go below 0');
  const cols = chartColumns([
    sample(0, { 'read-hits': 100, 'hit-latency-avg-ns': 2000, 'read-misses': 10,
      'miss-latency-avg-ns': 5e6, 'hit-latency-p99-ns': 9000, 'miss-latency-p99-ns': 8e6 }),
    sample(1000, { 'read-hits': 200, 'hit-latency-avg-ns': 3000, 'read-misses': 10,
      'miss-latency-avg-ns': 5e6, 'hit-latency-p99-ns': 9500, 'miss-latency-p99-ns': 0 }),
  ]);
  assert.deepEqual(cols.hitAvgNs, [null, 4000]);
  assert.deepEqual(cols.missAvgNs, [null, null]);
  assert.deepEqual(cols.hitP99Ns, [9000, 9500], 'p99 is the driver\'s, per sample');
  assert.deepEqual(cols.missP99Ns, [8e6, null], 'a p99 of 0 (no misses) is no value');
});

test('a counter that went down (filter reopened) leaves a gap', () => {
  const cols = chartColumns([
    sample(0, { 'read-hits': 500, 'read-misses': 50, writes: 9, 'destaged-blocks': 10, 'block-size': 4096 }),
    sample(1000, { 'read-hits': 3, 'read-misses': 1, writes: 0, 'destaged-blocks': 0, 'block-size': 4096 }),
    sample(2000, { 'read-hits': 7, 'read-misses': 1, writes: 2, 'destaged-blocks': 4, 'block-size': 4096 }),
  ]);
  assert.deepEqual(cols.readIops, [null, null, 4]);
  assert.deepEqual(cols.writeIops, [null, null, 2]);
  assert.deepEqual(cols.destageRate, [null, null, 4 * 4096]);
  assert.deepEqual(cols.hitRatio, [null, null, 1]);
});

test('gauges are taken as they are; missing counters are null', () => {
  const cols = chartColumns([
    sample(0, { 'dirty-bytes': 8192, 'ram-used': 1 << 20, 'ssd-used': 0, 'ssd-size': 1 << 30 }),
    sample(1000, { mode: 'write-through' }),
  ]);
  assert.deepEqual(cols.dirtyBytes, [8192, null]);
  assert.deepEqual(cols.ramUsed, [1 << 20, null]);
  assert.deepEqual(cols.ssdUsed, [0, null]);
  assert.deepEqual(cols.ssdSize, [1 << 30, null]);
  assert.deepEqual(cols.destageRate, [null, null]);
});

test('samples at the same time give no rate; empty input gives empty columns', () => {
  const cols = chartColumns([sample(5, { 'read-hits': 1, 'read-misses': 0 }),
    sample(5, { 'read-hits': 9, 'read-misses': 0 })]);
  assert.deepEqual(cols.readIops, [null, null]);
  const none = chartColumns([]);
  assert.deepEqual(none.time, []);
  assert.deepEqual(chartColumns(undefined).readIops, []);
});

test('pointCount and lastValue skip gaps', () => {
  assert.equal(pointCount([null, 1, 0, undefined, 3]), 3);
  assert.equal(pointCount(undefined), 0);
  assert.equal(lastValue([1, 2, null]), 2);
  assert.equal(lastValue([null]), null);
  assert.equal(lastValue([]), null);
});
