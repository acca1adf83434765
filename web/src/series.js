// From the statistics API's samples (GET /vms/{vm}/disks/{target}/stats:
// series[] of {time_ms, counters}) to the columns the disk charts draw.
// Pure functions, unit-tested in test/series.test.js.
//
// The driver's counters are cumulative since its filter was opened, so
// rates, the hit ratio and the average latencies are computed per interval
// between two samples.  A counter that went down means the filter was
// opened again (a replaced filter, a restarted VM): that interval has no
// value (null, a gap in the chart).  The p99 latencies are the driver's own,
// over every request since the filter was opened (it keeps a histogram, not
// its history).

function num(counters, name) {
  const v = counters ? counters[name] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

// d = b - a of a cumulative counter; null when unknown or after a reset.
function delta(a, b, name) {
  const x = num(a, name);
  const y = num(b, name);
  if (x === null || y === null || y < x) return null;
  return y - x;
}

// The average over one interval of a cumulative average weighted by a
// cumulative count: (avg1 * n1 - avg0 * n0) / (n1 - n0).
export function intervalAverage(avg0, n0, avg1, n1) {
  if ([avg0, n0, avg1, n1].some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
    return null;
  }
  const dn = n1 - n0;
  if (dn <= 0) return null;
  const v = (avg1 * n1 - avg0 * n0) / dn;
  // The driver's averages are integers (truncated): never below 0.
  return v < 0 ? 0 : v;
}

// samples: [{time_ms, counters}], oldest first.  Returns arrays of equal
// length (one entry per sample; the first sample's interval values are
// null), ready for uPlot (time in seconds).
export function chartColumns(samples) {
  const cols = {
    time: [],
    readIops: [],
    writeIops: [],
    hitRatio: [],
    hitAvgNs: [],
    missAvgNs: [],
    hitP99Ns: [],
    missP99Ns: [],
    dirtyBytes: [],
    destageRate: [],
    ramUsed: [],
    ssdUsed: [],
    ssdSize: [],
  };
  let prev = null;
  for (const s of samples || []) {
    const c = s.counters || {};
    cols.time.push(s.time_ms / 1000);
    const dt = prev ? (s.time_ms - prev.time_ms) / 1000 : 0;
    const p = prev ? prev.counters || {} : null;
    const ok = p !== null && dt > 0;
    const dHits = ok ? delta(p, c, 'read-hits') : null;
    const dMisses = ok ? delta(p, c, 'read-misses') : null;
    const dWrites = ok ? delta(p, c, 'writes') : null;
    cols.readIops.push(dHits !== null && dMisses !== null ? (dHits + dMisses) / dt : null);
    cols.writeIops.push(dWrites !== null ? dWrites / dt : null);
    cols.hitRatio.push(dHits !== null && dMisses !== null && dHits + dMisses > 0
      ? dHits / (dHits + dMisses) : null);
    cols.hitAvgNs.push(ok && dHits !== null
      ? intervalAverage(num(p, 'hit-latency-avg-ns'), num(p, 'read-hits'),
        num(c, 'hit-latency-avg-ns'), num(c, 'read-hits')) : null);
    cols.missAvgNs.push(ok && dMisses !== null
      ? intervalAverage(num(p, 'miss-latency-avg-ns'), num(p, 'read-misses'),
        num(c, 'miss-latency-avg-ns'), num(c, 'read-misses')) : null);
    cols.hitP99Ns.push(positiveOrNull(num(c, 'hit-latency-p99-ns')));
    cols.missP99Ns.push(positiveOrNull(num(c, 'miss-latency-p99-ns')));
    cols.dirtyBytes.push(num(c, 'dirty-bytes'));
    const dDestaged = ok ? delta(p, c, 'destaged-blocks') : null;
    const bs = num(c, 'block-size');
    cols.destageRate.push(dDestaged !== null && bs !== null ? (dDestaged * bs) / dt : null);
    cols.ramUsed.push(num(c, 'ram-used'));
    cols.ssdUsed.push(num(c, 'ssd-used'));
    cols.ssdSize.push(num(c, 'ssd-size'));
    prev = s;
  }
  return cols;
}

function positiveOrNull(v) {
  return v !== null && v > 0 ? v : null;
}

// How many points of a column carry a value (the charts' "drew points").
export function pointCount(column) {
  return (column || []).filter((v) => v !== null && v !== undefined).length;
}

// The newest non-null value of a column, or null.
export function lastValue(column) {
  for (let i = (column || []).length - 1; i >= 0; i--) {
    if (column[i] !== null && column[i] !== undefined) return column[i];
  }
  return null;
}
