#!/usr/bin/env python3
"""The test scripts' runner (hostcache.runner.main) itself: a selection on
the command line that matches no test fails instead of passing with
'0 passed, 0 failed', and every selection the Makefile passes to a test
script (make soak) still names a test.  The sample script imports the
package through the PYTHONPATH meson's test environment sets."""

import os
import re
import subprocess
import sys
import tempfile

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))

SCRIPT = '''
from hostcache.check import check
from hostcache.runner import main

def test_alpha():
    pass

def test_beta_fails():
    check(False, 'beta failed on purpose')

if __name__ == '__main__':
    main(globals())
'''


def run(script, *args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          timeout=120)


def check(cond, what):
    if not cond:
        print(f'FAIL {what}')
        sys.exit(1)
    print(f'ok   {what}')


def main():
    with tempfile.TemporaryDirectory(prefix='hc-runner-test-') as d:
        script = os.path.join(d, 'test_sample.py')
        with open(script, 'w') as f:
            f.write(SCRIPT)
        r = run(script, 'no_such_test')
        check(r.returncode == 2, f'a selection matching nothing fails (exit {r.returncode}, '
                                 f'{r.stdout.strip()!r})')
        check('no test matches no_such_test' in r.stderr and 'test_alpha' in r.stderr,
              f'and says which tests there are ({r.stderr.strip()!r})')
        check('0 passed' not in r.stdout, 'and does not report a pass')
        r = run(script, 'alpha')
        check(r.returncode == 0 and '1 passed, 0 failed' in r.stdout,
              f'a matching selection runs (exit {r.returncode}, {r.stdout.strip()!r})')
        r = run(script)
        check(r.returncode == 1 and '1 passed, 1 failed' in r.stdout,
              f'no selection runs everything (exit {r.returncode}, {r.stdout.strip()!r})')
    # Every "tests/.../test_x.py WORD" in the Makefile (make soak) selects
    # a test of that script.
    with open(os.path.join(SRC, 'Makefile')) as f:
        makefile = f.read()
    calls = re.findall(r'(tests/\S+/test_\w+\.py)((?:[ \t]+[A-Za-z_]\w*)+)', makefile)
    for path, words in calls:
        with open(os.path.join(SRC, path)) as f:
            names = re.findall(r'^def (test_\w+)\(', f.read(), re.M)
        for word in words.split():
            check(any(word in n for n in names), f'make\'s "{path} {word}" selects a test')


if __name__ == '__main__':
    main()
