// Formatting of the numbers the API returns, for people.  Pure functions
// (no DOM), unit-tested in test/format.test.js.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

// 1536 -> "1.5 KiB"; null/undefined -> "–".
export function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  let v = Math.abs(n);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = i === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${n < 0 ? '-' : ''}${trimZeros(v.toFixed(digits))} ${UNITS[i]}`;
}

// Bytes per second.
export function formatRate(bytesPerSecond) {
  if (bytesPerSecond === null || bytesPerSecond === undefined) return '–';
  return `${formatBytes(bytesPerSecond)}/s`;
}

// The exact size as the API's sizes are written: 268435456 -> "256M",
// 4096 -> "4k", 1000 -> "1000" (the inverse of the daemon's ParseSize).
export function formatSizeExact(n) {
  if (!Number.isInteger(n) || n < 0) return String(n);
  if (n === 0) return '0';
  const suffixes = [['T', 2 ** 40], ['G', 2 ** 30], ['M', 2 ** 20], ['k', 2 ** 10]];
  for (const [s, m] of suffixes) {
    if (n % m === 0) return `${n / m}${s}`;
  }
  return String(n);
}

// Nanoseconds -> "850 ns", "12.3 µs", "4.56 ms", "1.2 s".
export function formatNs(ns) {
  if (ns === null || ns === undefined || !Number.isFinite(ns)) return '–';
  const steps = [['s', 1e9], ['ms', 1e6], ['µs', 1e3]];
  for (const [unit, div] of steps) {
    if (ns >= div) return `${threeDigits(ns / div)} ${unit}`;
  }
  return `${Math.round(ns)} ns`;
}

// 0.8734 -> "87.3%"; null -> "–".
export function formatPercent(ratio, digits = 1) {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return '–';
  return `${trimZeros((ratio * 100).toFixed(digits))}%`;
}

// Operations per second: 0.5 -> "0.5", 1234.5 -> "1,235".
export function formatOps(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  if (v < 10) return trimZeros(v.toFixed(1));
  return Math.round(v).toLocaleString('en-US');
}

// An ISO time -> "14:03:22" today, else "2026-12-07 14:03".
export function formatTime(iso, now = new Date()) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (x) => String(x).padStart(2, '0');
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const sameDay = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() &&
    d.getDate() === now.getDate();
  if (sameDay) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms.slice(0, 5)}`;
}

// A progress as the API may give it (0..1, or a percentage above 1) -> 0..1;
// null when it is not a number.
export function progressRatio(p) {
  if (typeof p !== 'number' || !Number.isFinite(p) || p < 0) return null;
  return Math.min(1, p > 1 ? p / 100 : p);
}

function threeDigits(v) {
  return trimZeros(v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
}

function trimZeros(s) {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

// What the VMs page shows of GET /vms/{vm}/migration: null when the VM is
// not migrating, else {phase, progress 0..1 or null, what}: the write-back
// data drained while it migrates, the warm-up's blocks after (as
// hostcachectl vm migration draws it).
export function migrationView(m) {
  if (!m || typeof m !== 'object' || !m.phase || m.phase === 'none') return null;
  let part = 0;
  let whole = 0;
  for (const d of Array.isArray(m.disks) ? m.disks : []) {
    if (!d || !d.reported) continue;
    if (m.phase === 'warming-up') {
      part += Number(d.warm_up?.done) || 0;
      whole += Number(d.warm_up?.blocks) || 0;
    } else {
      const drained = Number(d.drained_bytes) || 0;
      part += drained;
      whole += drained + (Number(d.dirty_bytes) || 0);
    }
  }
  const measured = whole > 0 && m.phase !== 'incoming';
  return {
    phase: m.phase,
    progress: measured ? Math.min(1, part / whole) : null,
    what: measured ? (m.phase === 'warming-up' ? 'blocks warmed' : 'dirty data written back') : '',
  };
}
