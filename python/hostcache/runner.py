"""main(): runs the test_* functions of a test script (those whose names
contain one of the words given on the command line, when some are), in
the order they are defined; prints one line each and a closing
'N passed, N failed' line.  Exit status 1 if anything failed, 2 if nothing
was selected.  Every process a test started is stopped (procs.PROCS)
before the next test runs."""

import os
import sys
import time
import traceback

from hostcache import paths
from hostcache.procs import PROCS


def main(namespace, argv=None):
    argv = sys.argv[1:] if argv is None else argv
    tests = [(n, f) for n, f in namespace.items()
             if n.startswith('test_') and callable(f)]
    names = [n for n, _ in tests]
    if argv:
        tests = [(n, f) for n, f in tests if any(a in n for a in argv)]
    if not tests:
        # A selection that runs nothing (a test renamed under a make target
        # that names it) must not pass.
        print(f'no test matches {" ".join(argv) or "(no selection)"}; the '
              f'tests are: {", ".join(names) or "none"}', file=sys.stderr)
        sys.exit(2)
    # the driver checks its indexes after every batch and aborts when one
    # is broken (a core and a clear message, not wrong data later)
    os.environ.setdefault('HOSTCACHE_CHECK_INDEX', '1')
    for b in (paths.QEMU_IO, paths.QEMU_IMG, paths.QSD):
        if not os.access(b, os.X_OK):
            print(f'missing {b}: run make first', file=sys.stderr)
            sys.exit(1)
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print(f'FAIL {name} ({time.monotonic() - t0:.1f}s)')
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f'ok   {name} ({time.monotonic() - t0:.1f}s)')
        finally:
            PROCS.stop_all()
        sys.stdout.flush()
    print(f'{passed} passed, {failed} failed')
    sys.exit(1 if failed else 0)
