"""Failing with a message that says what went wrong.

TestFailure is what every helper of this package raises; check() and
check_eq() raise it, poll() waits for background work that must happen,
check_prometheus_text() runs promtool on a metrics text.
"""

import os
import subprocess
import time


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def _first_diff(got, want):
    """Describe where two byte strings (or sequences of them) differ."""
    if isinstance(got, (bytes, bytearray)) and isinstance(want,
                                                           (bytes, bytearray)):
        n = next((i for i in range(min(len(got), len(want)))
                  if got[i] != want[i]), min(len(got), len(want)))
        return (f'{len(got)} bytes vs {len(want)}, first difference at '
                f'byte {n}: {bytes(got[n:n + 8]).hex()} vs '
                f'{bytes(want[n:n + 8]).hex()}')
    if (isinstance(got, (list, tuple)) and isinstance(want, (list, tuple))
            and len(got) == len(want)):
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                return f'item {i}: {_first_diff(g, w)}'
    return f'got {got!r:.300}, want {want!r:.300}'


def check_eq(got, want, what):
    if got != want:
        raise TestFailure(f'{what}: {_first_diff(got, want)}')


def poll(what, fn, timeout=30.0, interval=0.05):
    """Call fn until it returns a true value and return that; fail after
    timeout seconds (a generous deadline for background work that must
    happen, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        check(time.monotonic() < deadline, f'timed out waiting for {what}')
        time.sleep(interval)


PROMTOOL = '/usr/bin/promtool'


def check_prometheus_text(text, what):
    """`promtool check metrics` (Debian package prometheus) on a Prometheus
    text exposition: the format parses and the names, HELP/TYPE lines and
    unit suffixes follow Prometheus' conventions.  Fails with its
    findings."""
    check(os.access(PROMTOOL, os.X_OK), f'{PROMTOOL} missing: '
          'scripts/setup-deps.sh installs it (Debian package prometheus)')
    r = subprocess.run([PROMTOOL, 'check', 'metrics'], input=text,
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
          f'promtool check metrics on {what} exited {r.returncode}:\n'
          f'{r.stdout}{r.stderr}--- the text ---\n{text[:4000]}')
